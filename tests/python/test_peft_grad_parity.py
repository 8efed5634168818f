#!/usr/bin/env python3
"""test_peft_grad_parity.py: one training step of `loragen train` against transformers + PEFT: the loss, the
gradient of every LoRA A and B, and the trained adapter loaded unchanged by PEFT (issue 11's PEFT parity test).

For a small random Llama (untied head, llama3 RoPE scaling, random norm weights) and a small random Qwen2 (q/k/v
biases, tied embeddings), shaped for the CUDA backend's kernels (head_dim 64, feature sizes multiples of 64,
rank 16) and written by save_pretrained in bf16 (so the CUDA backend uses exactly the stored weights, with no
rounding of its own, and the CPU backend and the reference see the same values upcast exactly):
  1. an initial PEFT adapter (r 16, alpha 32, dropout 0, all seven targets) with random non-zero A and B,
     bf16-representable (the GPU's bf16 copies of the fp32 masters are then exact), saved by save_pretrained;
  2. the reference, in float64 on the CPU: every training sample run on its own (nothing attends across
     samples), loss = the sum of every target token's cross-entropy (HF's causal shift, labels -100 ignored)
     over the count of such tokens in the global batch, as runtime/train/train_loop.c weights it; its LoRA
     gradients by autograd;
  3. `loragen train` from that adapter (adapters[1].init_adapter), one optimizer step over one global batch of
     five packed samples of different lengths in one microbatch. AdamW's first step with weight_decay 0,
     grad_clip 0 and no warm-up moves each parameter by d = -lr*g/(|g|+eps) (m_hat = g, v_hat = g^2; eps
     outside the square root: runtime/ref/adamw.c, templates/decoder/adamw.cuh), so the written adapter minus
     the initial one gives g = -sign(d)*eps*|d|/(lr-|d|). eps = 1 (the schema's largest) keeps |g| << eps, so
     the inversion is well conditioned; lr is chosen so the largest |d| is about 0.5, far above the fp32
     rounding of the parameters. The step's loss and gradient norm come from metrics.jsonl;
  4. PEFT loads loragen's output adapter unchanged (PeftModel.from_pretrained); its loss on held-out samples,
     together and one sample at a time, equals `loragen eval`'s, which must differ from the base model's.
Tolerances: --backend cpu is fp32 with double accumulation (1e-5 relative on losses, 1e-4 relative L2 on
gradients); --backend cuda keeps bf16 weights and activations: bf16's unit roundoff is 2^-8 = 3.9e-3, and a
gradient passes some ten bf16 roundings on its way through two layers, random in sign, so its relative L2 error
is expected near 1e-2: we allow 3e-2 and cosine > 0.999 (1 - cos ~ rel^2 / 2); losses average thousands of
roundings, 5e-3 relative.
Usage: test_peft_grad_parity.py BUILD_DIR [--backend cpu|cuda]   (default cuda)
Exits 77 (skipped) where torch, transformers or peft is missing or, for cuda, where torch sees no GPU.
"""
import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import warnings

ap = argparse.ArgumentParser(description="one loragen training step against transformers + PEFT")
ap.add_argument("build", help="the build directory holding the loragen binary")
ap.add_argument("--backend", choices=["cpu", "cuda"], default="cuda")
ap.add_argument("--keep", action="store_true", help="keep the working directory (printed)")
args = ap.parse_args()
try:
    import torch
    if args.backend == "cuda" and not torch.cuda.is_available():
        print("skipped: --backend cuda and torch sees no GPU")
        sys.exit(77)
    import transformers
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file
except (ImportError, OSError) as e:
    print(f"skipped: torch, transformers and peft are needed ({e})")
    sys.exit(77)

LORAGEN = os.path.abspath(os.path.join(args.build, "loragen"))
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA, EPS = 16, 32, 1.0
TOL = {"cpu": dict(loss=1e-5, rel=1e-4, cos=1 - 1e-8), "cuda": dict(loss=5e-3, rel=3e-2, cos=0.999)}[args.backend]
TRAIN_LENGTHS, MASKED = [41, 7, 64, 23, 52], {3: 10}  # sample 3's first 10 labels are -100 (a prompt)
VAL_LENGTHS = [30, 48, 15]
CAPACITY = 256  # every training sample fits one microbatch
transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()
warnings.filterwarnings("ignore", category=FutureWarning)


def run(*cmd):
    p = subprocess.run([LORAGEN, *cmd], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"loragen {' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout


def write_rows(path, lengths, vocab, seed, masked=None):
    rng = random.Random(seed)
    rows = []
    for i, n in enumerate(lengths):
        ids = [rng.randrange(vocab) for _ in range(n)]
        labels = list(ids)
        for t in range((masked or {}).get(i, 0)):
            labels[t] = -100
        rows.append({"input_ids": ids, "labels": labels})
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return rows


def build_model(config, path, seed):
    """Random weights (std 0.02), random norm weights and biases so that they matter, saved in bf16."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model.to(torch.bfloat16).save_pretrained(path, safe_serialization=True)


def load_base(path):
    """The saved bf16 weights, upcast exactly to float64, eager attention."""
    m = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    return m.double()


def make_init_adapter(model_dir, out_dir, seed):
    base = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS, bias="none")
    pm = get_peft_model(base, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_((0.05 * torch.randn(p.shape, generator=g)).to(torch.bfloat16).float())
    pm.save_pretrained(out_dir)


def key_of(name):
    """(layer, module, 'A' or 'B') of a PEFT parameter or file tensor name."""
    m = re.search(r"layers\.(\d+)\..*?\.(\w+_proj)\.lora_([AB])\.", name)
    if not m:
        sys.exit(f"unexpected LoRA tensor name {name}")
    return int(m.group(1)), m.group(2), m.group(3)


def loss_sum(model, rows):
    """Summed cross-entropy and target count over the rows, each sample on its own."""
    total, count = 0.0, 0
    for r in rows:
        ids = torch.tensor([r["input_ids"]])
        labels = torch.tensor(r["labels"][1:])
        logits = model(input_ids=ids).logits[0, :-1]
        total = total + torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
        count += int((labels != -100).sum())
    return total, count


def reference_step(model_dir, init_dir, rows):
    pm = PeftModel.from_pretrained(load_base(model_dir), init_dir, is_trainable=True).double()
    total, count = loss_sum(pm, rows)
    loss = total / count
    loss.backward()
    grads = {key_of(n): p.grad.detach().clone() for n, p in pm.named_parameters() if p.requires_grad}
    if len(grads) != 2 * len(TARGETS) * pm.config.num_hidden_layers:
        sys.exit(f"reference: {len(grads)} LoRA gradients")
    return loss.item(), grads


def peft_loss(model_dir, adapter_dir, rows):
    """The loss of base + adapter (the base model alone where adapter_dir is None)."""
    pm = load_base(model_dir)
    if adapter_dir:
        pm = PeftModel.from_pretrained(pm, adapter_dir).double()
    with torch.no_grad():
        total, count = loss_sum(pm, rows)
    return total.item() / count


def eval_loss(job, *extra):
    out = run("eval", job, "--backend", args.backend, *extra)
    return float(re.search(r"loss ([-0-9.naif]+)", out).group(1))


def recovered_grads(init_dir, out_dir, lr):
    a = {key_of(k): v.double() for k, v in load_file(os.path.join(init_dir, "adapter_model.safetensors")).items()}
    b = {key_of(k): v.double() for k, v in load_file(os.path.join(out_dir, "adapter_model.safetensors")).items()}
    if a.keys() != b.keys():
        sys.exit(f"{out_dir}: the trained adapter's tensors are not the initial adapter's")
    out = {}
    for k in a:
        d = b[k] - a[k]
        if not (d.abs() < lr).all():
            sys.exit(f"{k}: a step of {d.abs().max().item():g} is not below lr = {lr:g}: not AdamW's first step")
        out[k] = -torch.sign(d) * EPS * d.abs() / (lr - d.abs())
    return out


def compare(ref, got):
    """Worst cosine and relative L2 error over the tensors, with the tensor they belong to."""
    worst_cos, worst_rel = (2.0, None), (-1.0, None)
    for k, r in ref.items():
        g = got[k]
        if g.shape != r.shape:
            sys.exit(f"{k}: loragen wrote shape {tuple(g.shape)}, PEFT has {tuple(r.shape)}")
        cos = torch.nn.functional.cosine_similarity(r.flatten(), g.flatten(), dim=0).item()
        rel = ((g - r).norm() / r.norm()).item()
        if not (r.abs() > 0).all():
            sys.exit(f"reference gradient of {k} has zeros: the initial adapter must make every gradient live")
        if not cos >= worst_cos[0]:
            worst_cos = (cos, k)
        if not rel <= worst_rel[0]:
            worst_rel = (rel, k)
    return worst_cos, worst_rel


def rel_err(a, b):
    return abs(a - b) / max(abs(b), 1e-12) if math.isfinite(a) else math.inf


def check(name, config, tmp):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    model_dir, init_dir, out_dir = (os.path.join(d, x) for x in ("model", "init", "out"))
    build_model(config, model_dir, seed=11)
    make_init_adapter(model_dir, init_dir, seed=12)
    rows = write_rows(os.path.join(d, "train.jsonl"), TRAIN_LENGTHS, config.vocab_size, 13, MASKED)
    val = write_rows(os.path.join(d, "val.jsonl"), VAL_LENGTHS, config.vocab_size, 14)
    for i, r in enumerate(val):
        with open(os.path.join(d, f"val{i}.jsonl"), "w") as f:
            f.write(json.dumps(r) + "\n")

    ref_loss, ref = reference_step(model_dir, init_dir, rows)
    gmax = max(g.abs().max().item() for g in ref.values())
    lr = min(512.0, 2.0 ** math.floor(math.log2(0.5 * EPS / gmax)))  # a power of two: exact as loragen's float
    job = os.path.join(d, "job.lua")
    with open(job, "w") as f:
        f.write(f"return {{ name = 'grad_parity', model = {{ path = 'model' }}, batching = {{ capacity = {CAPACITY} }},\n"
                f"  training = {{ backend = '{args.backend}', output = 'out', log_every = 1 }},\n"
                f"  adapters = {{ {{ name = 'toy', dataset = 'train.jsonl', validation = 'val.jsonl',\n"
                f"    global_batch = {len(rows)}, rank = {RANK}, alpha = {ALPHA}, dropout = 0, lr = {lr!r},\n"
                f"    eps = {EPS!r}, weight_decay = 0, grad_clip = 0, warmup = 0, schedule = 'constant',\n"
                f"    steps = 1, seed = 5, init_adapter = '{init_dir}' }} }} }}\n")
    mbs = re.search(r"microbatches\s+(\d+)", run("plan", job))
    if not mbs or int(mbs.group(1)) != 1:
        sys.exit(f"{name}: loragen plan does not put the global batch in one microbatch")
    run("train", job, "--quiet", "--backend", args.backend)
    trained = os.path.join(out_dir, "toy")
    steps = [json.loads(line) for line in open(os.path.join(trained, "metrics.jsonl")) if '"loss"' in line]
    if len(steps) != 1 or steps[0]["step"] != 1:
        sys.exit(f"{name}: metrics.jsonl records {len(steps)} training steps, expected exactly one")
    got = recovered_grads(init_dir, trained, lr)
    (cos, cos_k), (rel, rel_k) = compare(ref, got)
    ref_norm = math.sqrt(sum(float((g * g).sum()) for g in ref.values()))

    val_ref = peft_loss(model_dir, trained, val)
    val_ours = eval_loss(job)
    one_ref = [peft_loss(model_dir, trained, [r]) for r in val]
    one_ours = [eval_loss(job, "--dataset", os.path.join(d, f"val{i}.jsonl")) for i in range(len(val))]
    base_ours, base_ref = eval_loss(job, "--base"), peft_loss(model_dir, None, val)
    eval_worst = max(rel_err(o, r) for o, r in zip([val_ours] + one_ours, [val_ref] + one_ref))
    # a random model's logits are nearly uniform, so the loss moves little with the adapter: its effect, the
    # change from the base model's loss, is compared too, at the gradients' tolerance
    effect_err = rel_err(val_ours - base_ours, val_ref - base_ref)

    fails = []
    checks = [("train loss", rel_err(steps[0]["loss"], ref_loss), TOL["loss"]),
              ("grad norm", rel_err(steps[0]["grad_norm"], ref_norm), TOL["rel"]),
              (f"rel L2 {rel_k}", rel, TOL["rel"]), ("eval loss", eval_worst, TOL["loss"]),
              ("base model loss", rel_err(base_ours, base_ref), TOL["loss"]),
              ("adapter's effect on the eval loss", effect_err, TOL["rel"])]
    for what, err, tol in checks:
        if not err <= tol:
            fails.append(f"{what}: error {err:.3g} > {tol:g}")
    if not cos >= TOL["cos"]:
        fails.append(f"cosine {cos_k}: {cos:.9f} < {TOL['cos']}")
    if not abs(val_ref - base_ref) > 1e-3 * abs(base_ref):
        fails.append(f"eval: the adapter's loss {val_ref:.6f} is too close to the base model's {base_ref:.6f} "
                     "to test anything")
    print(f"{name:6} | loss loragen {steps[0]['loss']:.6f} PEFT {ref_loss:.6f} | grad norm {steps[0]['grad_norm']:.4g} "
          f"vs {ref_norm:.4g} | lr {lr:.3g}\n"
          f"{'':6} | worst cosine {cos:.6f} (1 - cos {1 - cos:.1e}, {cos_k[1]} L{cos_k[0]} {cos_k[2]}) | worst rel L2 {rel:.2e} "
          f"({rel_k[1]} L{rel_k[0]} {rel_k[2]})\n"
          f"{'':6} | eval loragen {val_ours:.6f} PEFT {val_ref:.6f} (base {base_ours:.6f}, effect err "
          f"{effect_err:.2e}), per sample "
          f"{' '.join(f'{o:.4f}/{r:.4f}' for o, r in zip(one_ours, one_ref))}, worst rel {eval_worst:.2e} | "
          f"{'ok' if not fails else 'MISMATCH'}")
    for f in fails:
        print(f"{name}: {f}")
    return not fails


LLAMA = transformers.LlamaConfig(
    hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    head_dim=64, vocab_size=512, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=500000.0,
    tie_word_embeddings=False, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                             "high_freq_factor": 4.0, "original_max_position_embeddings": 32})
QWEN2 = transformers.Qwen2Config(
    hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    vocab_size=512, max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True)

tmp = tempfile.mkdtemp(prefix="lg_grad_parity")
print(f"PEFT gradient parity, loragen --backend {args.backend}: tolerances loss {TOL['loss']:g}, "
      f"rel L2 {TOL['rel']:g}, cosine {TOL['cos']}")
ok = all([check("llama", LLAMA, tmp), check("qwen2", QWEN2, tmp)])
if args.keep:
    print(f"kept {tmp}")
else:
    shutil.rmtree(tmp, ignore_errors=True)
print("PEFT gradient parity: " + ("losses, LoRA gradients and the trained adapters agree" if ok else "MISMATCH"))
sys.exit(0 if ok else 1)
