#!/usr/bin/env python3
"""gemm_torch.py: torch's bf16 matmuls on the frozen GEMMs of a LoRA step, for bench_gemm's side-by-side ratios.

The same shapes and layouts as loragen's layers (row-major, the weight W [M, K] as Hugging Face stores it):
forward Y[n, M] = X[n, K] . W^T (torch.nn.functional.linear) and dX[n, K] = dY[n, M] . W (torch.matmul), for every
Llama-3.1-8B projection and the merged q/k/v and gate/up, at --tokens rows. Timed with CUDA events: warm-up, then
the median of --reps runs. Writes CSV rows "name,dir,n,K,M,ms" (dir: fwd or dx), which bench_gemm --torch-csv
reads.

usage: python3 bench/gemm_torch.py [--tokens 8192] [--reps 30] [--csv FILE]
"""
import argparse
import statistics
import sys

# Llama-3.1-8B: hidden 4096, 32 q heads and 8 kv heads of 128, intermediate 14336
SHAPES = [("q_proj", 4096, 4096), ("k_proj", 4096, 1024), ("v_proj", 4096, 1024), ("o_proj", 4096, 4096),
          ("gate_proj", 4096, 14336), ("up_proj", 4096, 14336), ("down_proj", 14336, 4096),
          ("qkv_merged", 4096, 6144), ("gate_up_merged", 4096, 28672)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--csv")
    a = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("gemm_torch: torch is not installed: skipped", file=sys.stderr)
        return 77
    if not torch.cuda.is_available():
        print("gemm_torch: no GPU: skipped", file=sys.stderr)
        return 77
    dev, dt, n = "cuda", torch.bfloat16, a.tokens
    g = torch.Generator(device=dev).manual_seed(1)
    rows = []

    def timed(fn):
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(a.reps):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            ts.append(s.elapsed_time(e))
        return statistics.median(ts)

    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}, {n} tokens, bf16")
    print(f"{'layer':16} {'K':>6} {'M':>6} {'fwd ms':>8} {'dX ms':>8}")
    for name, K, M in SHAPES:
        x = torch.randn(n, K, device=dev, dtype=dt, generator=g)
        w = torch.randn(M, K, device=dev, dtype=dt, generator=g) * 0.02
        dy = torch.randn(n, M, device=dev, dtype=dt, generator=g)
        y = torch.empty(n, M, device=dev, dtype=dt)
        dx = torch.empty(n, K, device=dev, dtype=dt)
        tf = timed(lambda: torch.matmul(x, w.t(), out=y))
        tb = timed(lambda: torch.matmul(dy, w, out=dx))
        rows += [(name, "fwd", n, K, M, tf), (name, "dx", n, K, M, tb)]
        print(f"{name:16} {K:6} {M:6} {tf:8.3f} {tb:8.3f}")
        del x, w, dy, y, dx
    if a.csv:
        with open(a.csv, "w") as f:
            f.write("name,dir,n,K,M,ms\n")
            for r in rows:
                f.write(f"{r[0]},{r[1]},{r[2]},{r[3]},{r[4]},{r[5]:.5f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
