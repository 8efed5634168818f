#!/usr/bin/env python3
"""Summarises an `ncu --csv --metrics ...` log of bench_layer (bench/ncu_layer.sh): one row per kernel launch
shape (name, grid, block) in the order first seen, with its launch count, mean and total time, registers per
thread, achieved occupancy and DRAM throughput (where the log has those metrics), and each row's share of all
kernel time. usage: ncu_layer.py NCU_CSV [STEPS]   (STEPS: the bench's step count, for the per-step total)"""
import csv
import sys
from collections import OrderedDict

METRICS = {
    "gpu__time_duration.sum": "us",
    "launch__registers_per_thread": "regs",
    "sm__warps_active.avg.pct_of_peak_sustained_active": "occ%",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed": "dram%",
}


def value(r):
    v = float(r["Metric Value"].replace(",", ""))
    if r["Metric Name"] == "gpu__time_duration.sum":
        unit = r.get("Metric Unit", "ns")
        v = v / 1000.0 if unit in ("nsecond", "ns") else v if unit in ("usecond", "us") else v * 1000.0
    return v


def main():
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    with open(sys.argv[1], newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    launches = OrderedDict()
    for r in csv.DictReader(lines):
        m = METRICS.get(r.get("Metric Name"))
        if m is None:
            continue
        launches.setdefault(r["ID"], {"key": (r["Kernel Name"], r["Grid Size"], r["Block Size"])})[m] = value(r)
    groups = OrderedDict()
    for l in launches.values():
        groups.setdefault(l["key"], []).append(l)
    total = sum(l.get("us", 0.0) for l in launches.values())
    print(f"{len(launches)} launches, {total / 1000.0:.3f} ms of kernel time, {total / 1000.0 / steps:.3f} ms per step")
    print("| kernel | grid | block | n | mean us | per step us | share | regs | occ% | dram% |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for (name, grid, block), ls in groups.items():
        def mean(m):
            v = [l[m] for l in ls if m in l]
            return sum(v) / len(v) if v else float("nan")
        t = sum(l.get("us", 0.0) for l in ls)
        rows.append((t, f"| {name[:70]} | {grid} | {block} | {len(ls)} | {mean('us'):.1f} | {t / steps:.1f} | "
                        f"{100.0 * t / total:.1f}% | {mean('regs'):.0f} | {mean('occ%'):.0f} | {mean('dram%'):.0f} |"))
    for _, row in sorted(rows, key=lambda x: -x[0]):
        print(row)


if __name__ == "__main__":
    main()
