#!/usr/bin/env python3
"""Summarises an `ncu --csv --metrics gpu__time_duration.sum` log: mean duration per kernel name, in the
order kernels first appear. usage: ncu_summary.py NCU_CSV"""
import csv
import sys
from collections import OrderedDict

rows = OrderedDict()
with open(sys.argv[1], newline="") as f:
    lines = [l for l in f if l.startswith('"')]
for r in csv.DictReader(lines):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    name = r["Kernel Name"][:60]
    val = float(r["Metric Value"].replace(",", ""))
    unit = r.get("Metric Unit", "ns")
    us = val / 1000.0 if unit in ("nsecond", "ns") else val if unit in ("usecond", "us") else val * 1000.0
    rows.setdefault(name, []).append(us)
for name, v in rows.items():
    print(f"{name:60s} n={len(v):3d} mean={sum(v)/len(v):9.2f} us")
