#!/usr/bin/env python3
"""test_peft_parity.py: loragen against transformers + PEFT on the same files, on the CPU (fp32).

For a small random Llama (untied, llama3 RoPE scaling) and a small random Qwen2 (q/k/v biases, tied
embeddings), written by transformers' save_pretrained:
  1. `loragen train` fine-tunes a LoRA adapter on a toy task (CPU backend);
  2. PEFT loads loragen's adapter directory unchanged (PeftModel.from_pretrained);
  3. the validation loss transformers+PEFT computes equals `loragen eval`'s (the whole forward: embedding,
     RMSNorm, RoPE, GQA attention over one sample at a time, SwiGLU, LM head, the causal shift, LoRA's scale);
  4. `loragen merge` writes a model transformers loads whose loss equals PEFT's base + adapter.
Usage: test_peft_parity.py BUILD_DIR. Exits 77 (skipped) where torch, transformers or peft is missing.
"""
import json
import math
import os
import re
import subprocess
import sys
import tempfile

try:
    import torch
    import transformers
    from peft import PeftModel
except (ImportError, OSError) as e:
    print(f"skipped: {e}")
    sys.exit(77)

build = sys.argv[1] if len(sys.argv) > 1 else "build"
loragen = os.path.abspath(os.path.join(build, "loragen"))
tmp = tempfile.mkdtemp(prefix="lg_peft_parity")
torch.manual_seed(0)


def sample_ids(rng, n):
    t = rng.randrange(64)
    out = []
    for _ in range(n):
        out.append(t)
        t = (5 * t + 3) % 64
    return out


def write_data(path, count, seed):
    import random
    rng = random.Random(seed)
    rows = [sample_ids(rng, rng.randint(12, 40)) for _ in range(count)]
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps({"input_ids": r}) + "\n")
    return rows


def run(*args):
    p = subprocess.run([loragen, *args], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"loragen {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout


def hf_loss(model, rows):
    """Token-weighted mean loss over the rows, one sample at a time, as loragen eval computes it."""
    total, count = 0.0, 0
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r])
            logits = model(input_ids=ids).logits[0, :-1].double()
            target = ids[0, 1:]
            total += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
            count += target.numel()
    return total / count


def check(name, config):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    model = transformers.AutoModelForCausalLM.from_config(config).float()
    model.save_pretrained(os.path.join(d, "model"), safe_serialization=True)
    train_rows = write_data(os.path.join(d, "train.jsonl"), 48, 1)
    val_rows = write_data(os.path.join(d, "val.jsonl"), 8, 2)
    with open(os.path.join(d, "job.lua"), "w") as f:
        f.write("return { name = 'parity', model = { path = 'model' }, batching = { capacity = 256 },\n"
                "  training = { backend = 'cpu', output = 'out' },\n"
                "  adapters = { { name = 'toy', dataset = 'train.jsonl', validation = 'val.jsonl', global_batch = 8,\n"
                "    rank = 8, alpha = 16, dropout = 0, lr = 1e-2, steps = 6, seed = 3 } } }\n")
    run("train", os.path.join(d, "job.lua"), "--quiet")
    out = run("eval", os.path.join(d, "job.lua"))
    ours = float(re.search(r"loss ([0-9.]+)", out).group(1))
    base = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(d, "model"), dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, os.path.join(d, "out", "toy"))
    theirs = hf_loss(peft_model, val_rows)
    print(f"{name}: validation loss loragen {ours:.6f}, transformers+PEFT {theirs:.6f}")
    assert abs(ours - theirs) < 2e-5 * max(1.0, abs(theirs)), (name, ours, theirs)
    run("merge", os.path.join(d, "model"), os.path.join(d, "out", "toy"), os.path.join(d, "merged"))
    merged = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(d, "merged"), dtype=torch.float32)
    m = hf_loss(merged, val_rows)
    print(f"{name}: merged model loss {m:.6f}")
    assert abs(m - theirs) < 1e-4 * max(1.0, abs(theirs)), (name, m, theirs)


llama = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, head_dim=16, vocab_size=96, max_position_embeddings=256,
                                 rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
                                 rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                               "high_freq_factor": 4.0, "original_max_position_embeddings": 32})
qwen = transformers.Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=96, max_position_embeddings=256, rms_norm_eps=1e-6,
                                rope_theta=1000000.0, tie_word_embeddings=True)
check("llama", llama)
check("qwen2", qwen)
print("PEFT parity: adapters load unchanged; losses and merged models agree")
