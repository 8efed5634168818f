#!/usr/bin/env python3
"""toy_dataset.py: the small synthetic dataset the README's first command trains on (specs/jobs/data/toy-*.jsonl).

Each sample is a run of token ids in which every token is followed by (5 t + 3) mod 64: a fixed successor
function a LoRA adapter on a random tiny base model learns within a few dozen steps, so the loss curve shows
training working without downloading a model or a tokenizer. Samples vary in length (16..96 tokens), so the
scheduler packs several into each microbatch. The output is deterministic for a seed.

    python3 tools/toy_dataset.py --samples 240 --seed 1 > specs/jobs/data/toy-train.jsonl
    python3 tools/toy_dataset.py --samples 32 --seed 2 > specs/jobs/data/toy-val.jsonl

With --lengths FILE (a length trace, one length a line, as bench/gen_traces writes) the samples have those
lengths, in that order (the benchmarks' mixed-length datasets).
"""
import argparse
import json
import random
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=240)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--modulus", type=int, default=64, help="token ids used: 0..modulus-1")
    ap.add_argument("--min-len", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=96)
    ap.add_argument("--lengths", help="a length trace: one sample length per line (overrides the others)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    lengths = None
    if args.lengths:
        lengths = []
        with open(args.lengths) as f:
            for no, line in enumerate(f, 1):
                if not line.strip() or line.startswith("#"):
                    continue
                try:
                    n = int(line)
                except ValueError:
                    sys.exit(f"{args.lengths}:{no}: not a sample length: {line.strip()!r}")
                if n < 1:
                    sys.exit(f"{args.lengths}:{no}: sample length {n} is not positive")
                lengths.append(n)
    for i in range(len(lengths) if lengths is not None else args.samples):
        t = rng.randrange(args.modulus)
        ids = []
        for _ in range(lengths[i] if lengths is not None else rng.randint(args.min_len, args.max_len)):
            ids.append(t)
            t = (5 * t + 3) % args.modulus
        sys.stdout.write(json.dumps({"input_ids": ids}) + "\n")


if __name__ == "__main__":
    main()
