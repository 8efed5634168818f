#!/usr/bin/env python3
"""bench_peft_patch.py: HF transformers + PEFT training steps, unpatched vs loragen.patch_peft, in one run.

Llama-3.1-8B's shape (random bf16 weights built in memory from transformers' LlamaConfig: nothing is
downloaded), LoRA r = 16 on all seven linear projections, 4 x 2048 tokens per step, AdamW on the LoRA
parameters, one GPU. Validates first (eval-mode loss of both paths on one batch), then times whole steps
(forward, backward, optimizer) with CUDA events, the two variants interleaved round by round on the same model
(loragen.set_fused toggles the path), and prints tokens/s, the ratio and each variant's peak memory, plus
what the A/B refresh costs per step (version checks vs copying every layer).

    python3 bench/bench_peft_patch.py [--layers 32] [--rounds 6] [--dropout 0.1] [--seq 2048 --batch 4]
    python3 bench/bench_peft_patch.py --smoke-cpu   # the program's own check: tiny shapes, CPU, reference backend
Exit status: 0 when validated (the ratio is reported, not enforced), 1 on a mismatch, 77 without torch/GPU."""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

try:
    import torch
    import peft  # noqa: F401
    import transformers  # noqa: F401
except ImportError as e:
    print(f"skipped: {e}")
    sys.exit(77)
SMOKE = "--smoke-cpu" in sys.argv
if not SMOKE and not torch.cuda.is_available():
    print("skipped: no CUDA GPU")
    sys.exit(77)
DEV = "cpu" if SMOKE else "cuda"

import loragen  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

LLAMA_31_8B = dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8,
                   head_dim=128, vocab_size=128256, max_position_embeddings=131072, rms_norm_eps=1e-5,
                   rope_theta=500000.0, tie_word_embeddings=False,
                   rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                     original_max_position_embeddings=8192))
TINY = dict(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            vocab_size=512)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build(args):
    cfg = LlamaConfig(num_hidden_layers=args.layers, **{**LLAMA_31_8B, **(TINY if SMOKE else {})})
    torch.manual_seed(0)
    t0 = time.time()
    with torch.device(DEV):
        base = LlamaForCausalLM._from_config(cfg, dtype=torch.bfloat16)
    base.config.use_cache = False
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=args.dropout, target_modules=TARGETS))
    with torch.no_grad():  # PEFT starts B at zero; a live B makes the validation see the LoRA term
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    sync()
    params = sum(p.numel() for p in base.parameters())
    print(f"model: Llama-3.1-8B shape{' (smoke: tiny)' if SMOKE else ''}, {args.layers} layers, {params / 1e9:.2f} B parameters (bf16), "
          f"built in {time.time() - t0:.1f} s")
    return model


def batch(args, step):
    g = torch.Generator().manual_seed(1000 + step)
    vocab = (TINY if SMOKE else LLAMA_31_8B)["vocab_size"]
    return torch.randint(0, vocab, (args.batch, args.seq), generator=g).to(DEV)


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


class Timer:
    """CUDA events on the GPU (the smoke run times with the host clock)."""

    def __enter__(self):
        if DEV == "cuda":
            self.a, self.b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.a.record()
        else:
            self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if DEV == "cuda":
            self.b.record()
            self.b.synchronize()
            self.ms = self.a.elapsed_time(self.b)
        else:
            self.ms = (time.perf_counter() - self.t) * 1e3


def validate(model, args):
    ids = batch(args, -1)
    model.eval()
    with torch.no_grad():
        loragen.set_fused(model, False)
        want = model(input_ids=ids, labels=ids).loss.item()
        loragen.set_fused(model, True)
        got = model(input_ids=ids, labels=ids).loss.item()
    model.train()
    rel = abs(got - want) / abs(want)
    print(f"validate: eval loss PEFT {want:.6f}, patched {got:.6f} (rel diff {rel:.2e})")
    return rel < 5e-3


def step_fn(model, opt, args):
    def run(step):
        ids = batch(args, step)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return run


def time_steps(model, run, args):
    variants = {"unpatched (PEFT)": False, "patched (loragen)": True}
    times = {k: [] for k in variants}
    peak = {k: 0 for k in variants}
    step = 0
    for rnd in range(args.warmup + args.rounds):
        for name, fused in variants.items():
            loragen.set_fused(model, fused)
            sync()
            if DEV == "cuda":
                torch.cuda.reset_peak_memory_stats()
            with Timer() as t:
                run(step)
            step += 1
            if rnd >= args.warmup:
                times[name].append(t.ms)
                peak[name] = max(peak[name], torch.cuda.max_memory_allocated() if DEV == "cuda" else 1)
    return times, peak


def refresh_cost(model, dropout, reps=5):
    layers = [(n, l) for n, l in loragen.fused_layers(model) if l.spec.dropout == dropout]  # the training ones
    pairs = []
    for name, layer in layers:
        m = model.get_submodule(name)
        adapter = next(iter(m.lora_A))
        pairs.append((layer, m.lora_A[adapter].weight, m.lora_B[adapter].weight))
    out = {}
    for label, force in (("version check", False), ("copy every layer", True)):
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            for layer, a, b in pairs:
                layer.refresh(a, b, force=force)
        sync()
        out[label] = (time.perf_counter() - t0) / reps * 1e3
    return len(pairs), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--smoke-cpu", action="store_true")
    args = ap.parse_args()
    if SMOKE:
        from loragen import reference
        loragen.set_backend(reference.ReferenceBackend(devices=("cpu",)))
        args.layers, args.batch, args.seq, args.rounds, args.warmup = 2, 2, 64, 2, 1
    t_all = time.time()
    gpu = torch.cuda.get_device_name() if DEV == "cuda" else "none (smoke run on the CPU)"
    print(f"GPU: {gpu}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"peft {peft.__version__}, libloragen {loragen.library_path()}")
    model = build(args)
    rep = loragen.patch_peft(model)
    print(f"patched {len(rep.patched)} LoRA layers, {len(rep.skipped)} left to PEFT")
    if not validate(model, args):
        print("MISMATCH: the patched loss differs from PEFT's")
        return 1
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    times, peak = time_steps(model, step_fn(model, opt, args), args)
    tokens = args.batch * args.seq
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{tokens} tokens/step ({args.batch} x {args.seq}), r = 16, all linear, lora_dropout = {args.dropout}, "
          f"median of {args.rounds} interleaved rounds after {args.warmup} warm-up")
    for k in times:
        print(f"  {k:18s} {med[k]:8.1f} ms/step  {tokens / med[k] * 1e3:9.0f} tokens/s  "
              f"peak {peak[k] / 2**30:6.1f} GiB (torch allocator)")
    ratio = med["unpatched (PEFT)"] / med["patched (loragen)"]
    print(f"  speedup patched/unpatched: {ratio:.3f}x (target >= 1.15x); peak memory "
          f"{peak['patched (loragen)'] / peak['unpatched (PEFT)']:.2f}x")
    n, cost = refresh_cost(model, args.dropout)
    print(f"A/B refresh of {n} layers: version check {cost['version check']:.3f} ms, copying every layer "
          f"{cost['copy every layer']:.3f} ms (refresh='version' copies once per optimizer step; "
          f"refresh='always' would copy at every forward and backward)")
    print(f"bench_peft_patch: total {time.time() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
