#!/usr/bin/env python3
"""attention_torch.py: torch's scaled-dot-product attention on bench_attention's shapes, for side-by-side ratios.

Causal GQA 32/8, d = 128, bf16, 8192 tokens: 4 x 2048, 1 x 8192 and the lognormal pack whose lengths
bench_attention --print-lens gives (--mix). Two backends: FLASH_ATTENTION (flash-attention-2 inside torch) and
CUDNN_ATTENTION. Equal-length packs run as [B, H, S, D] SDPA with is_causal; the lognormal pack runs as a packed
varlen call where torch offers one (aten::_flash_attention_forward with cumulative lengths; nested jagged
tensors for cuDNN), and otherwise as one SDPA call per sample (labelled "loop"). GQA uses enable_gqa where
torch has it, else K/V repeated to 32 heads outside the timed region.

Forward, backward (torch.autograd.grad of the saved graph) and forward+backward are timed with CUDA events:
warm-up, then the median of --reps runs. Prints a table and writes CSV rows "shape,backend,fwd_ms,bwd_ms,
fwdbwd_ms,how" (-1 where a backend cannot run the shape), which bench_attention --torch-csv reads.

usage: python3 bench/attention_torch.py --mix 582,587,... [--csv FILE] [--reps N]
"""
import argparse
import statistics
import sys

HQ, HKV, HD = 32, 8, 128


def timed(fn, reps, warmup=3):
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def causal_flops(lens):
    fwd = sum(2.0 * 2.0 * l * l * HD * HQ / 2.0 for l in lens)
    return fwd, 2.5 * fwd


def make_inputs(total, torch):
    g = torch.Generator(device="cuda").manual_seed(0)
    mk = lambda h, s: (torch.rand(total, h, HD, device="cuda", generator=g, dtype=torch.float32) * 2 - 1).mul_(s)
    q, k, v = mk(HQ, 2.0), mk(HKV, 1.0), mk(HKV, 1.0)
    dout = mk(HQ, 1.0)
    return [t.to(torch.bfloat16) for t in (q, k, v, dout)]


def sdpa_runner(lens, backend, torch, reps):
    """Equal lengths: one batched SDPA call; returns (fwd, bwd, both, how) in ms."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    be = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[backend]
    B, S = len(lens), lens[0]
    q, k, v, dout = make_inputs(B * S, torch)
    # [tokens, H, D] -> [B, H, S, D] views, as a packed batch is laid out
    view = lambda t: t.view(B, S, t.shape[1], HD).transpose(1, 2)
    qb, kb, vb, db = view(q), view(k), view(v), view(dout)
    gqa = {"enable_gqa": True}
    try:
        with sdpa_kernel(be):
            F.scaled_dot_product_attention(qb[:, :, :16], kb[:, :, :16], vb[:, :, :16], is_causal=True, **gqa)
        how = "batched, enable_gqa"
    except Exception:
        gqa = {}
        kb = kb.repeat_interleave(HQ // HKV, dim=1).contiguous()
        vb = vb.repeat_interleave(HQ // HKV, dim=1).contiguous()
        how = "batched, K/V repeated"
    qb, kb, vb = (t.detach().requires_grad_(True) for t in (qb, kb, vb))

    def fwd():
        with sdpa_kernel(be):
            return F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, **gqa)

    out = fwd()
    bwd = lambda: torch.autograd.grad(out, (qb, kb, vb), db, retain_graph=True)

    def both():
        o = fwd()
        torch.autograd.grad(o, (qb, kb, vb), db)

    return timed(fwd, reps), timed(bwd, reps), timed(both, reps), how


def varlen_flash(lens, torch, reps):
    """Packed lengths through aten::_flash_attention_forward (torch's FA2 varlen entry), with autograd."""
    q, k, v, dout = make_inputs(sum(lens), torch)
    cu = torch.tensor([0] + list(__import__("itertools").accumulate(lens)), device="cuda", dtype=torch.int32)
    m = max(lens)
    q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))

    def fwd():
        return torch.ops.aten._flash_attention_forward(q, k, v, cu, cu, m, m, 0.0, True, False)[0]

    out = fwd()
    bwd = lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)

    def both():
        o = fwd()
        torch.autograd.grad(o, (q, k, v), dout)

    return timed(fwd, reps), timed(bwd, reps), timed(both, reps), "varlen (aten::_flash_attention_forward)"


def varlen_njt(lens, backend, torch, reps):
    """Packed lengths as a nested jagged tensor through SDPA."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    be = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[backend]
    q, k, v, dout = make_inputs(sum(lens), torch)
    off = torch.tensor([0] + list(__import__("itertools").accumulate(lens)), device="cuda", dtype=torch.int64)
    k = k.repeat_interleave(HQ // HKV, dim=1).contiguous()
    v = v.repeat_interleave(HQ // HKV, dim=1).contiguous()
    q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))
    nj = lambda t: torch.nested.nested_tensor_from_jagged(t, off).transpose(1, 2)
    dn = nj(dout)

    def fwd():
        with sdpa_kernel(be):
            return F.scaled_dot_product_attention(nj(q), nj(k), nj(v), is_causal=True)

    out = fwd()
    bwd = lambda: torch.autograd.grad(out, (q, k, v), dn, retain_graph=True)

    def both():
        o = fwd()
        torch.autograd.grad(o, (q, k, v), dn)

    return timed(fwd, reps), timed(bwd, reps), timed(both, reps), "varlen (nested jagged, K/V repeated)"


def per_sample_loop(lens, backend, torch, reps):
    """One SDPA call per sample (what a framework without varlen support does)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    be = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[backend]
    q, k, v, dout = make_inputs(sum(lens), torch)
    k = k.repeat_interleave(HQ // HKV, dim=1).contiguous()
    v = v.repeat_interleave(HQ // HKV, dim=1).contiguous()
    q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))
    starts = [0] + list(__import__("itertools").accumulate(lens))
    piece = lambda t, i: t[starts[i]:starts[i + 1]].transpose(0, 1).unsqueeze(0)

    def fwd():
        with sdpa_kernel(be):
            return [F.scaled_dot_product_attention(piece(q, i), piece(k, i), piece(v, i), is_causal=True)
                    for i in range(len(lens))]

    outs = fwd()
    douts = [piece(dout, i) for i in range(len(lens))]
    bwd = lambda: torch.autograd.grad(outs, (q, k, v), douts, retain_graph=True)

    def both():
        o = fwd()
        torch.autograd.grad(o, (q, k, v), douts)

    return timed(fwd, reps), timed(bwd, reps), timed(both, reps), "per-sample loop, K/V repeated"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mix", required=True, help="the lognormal pack's lengths (bench_attention --print-lens)")
    ap.add_argument("--csv")
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("attention_torch: torch is not installed: skipping")
        return 0
    if not torch.cuda.is_available():
        print("attention_torch: no CUDA device: skipping")
        return 0
    print(f"attention_torch: torch {torch.__version__}, {torch.cuda.get_device_name()}, "
          f"cuDNN {torch.backends.cudnn.version()}")
    shapes = [("4x2048", [2048] * 4), ("1x8192", [8192]), ("lognormal-8192", [int(x) for x in a.mix.split(",")])]
    rows = []
    print(f"{'shape':15} {'backend':7} | {'fwd ms':>8} {'TF/s':>6} | {'bwd ms':>8} {'TF/s':>6} | "
          f"{'f+b ms':>8} {'TF/s':>6} | how")
    for name, lens in shapes:
        ff, fb = causal_flops(lens)
        equal = len(set(lens)) == 1
        for be in ("flash", "cudnn"):
            tries = [lambda: sdpa_runner(lens, be, torch, a.reps)] if equal else []
            if not equal:
                if be == "flash":
                    tries.append(lambda: varlen_flash(lens, torch, a.reps))
                tries += [lambda: varlen_njt(lens, be, torch, a.reps), lambda: per_sample_loop(lens, be, torch, a.reps)]
            res, why = None, ""
            for t in tries:
                try:
                    res = t()
                    break
                except Exception as e:  # a backend that cannot run this shape: try the next way
                    why = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
                    torch.cuda.synchronize()
            if res is None:
                print(f"{name:15} {be:7} | not available: {why}")
                rows.append((name, be, -1, -1, -1, "n/a: " + why.replace(",", ";")))
                continue
            f, b, fbk, how = res
            print(f"{name:15} {be:7} | {f:8.3f} {ff / f / 1e9:6.1f} | {b:8.3f} {fb / b / 1e9:6.1f} | "
                  f"{fbk:8.3f} {(ff + fb) / fbk / 1e9:6.1f} | {how}")
            rows.append((name, be, f, b, fbk, how))
    if a.csv:
        with open(a.csv, "w") as out:
            for r in rows:
                out.write(f"{r[0]},{r[1]},{r[2]:.4f},{r[3]:.4f},{r[4]:.4f},{r[5]}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
