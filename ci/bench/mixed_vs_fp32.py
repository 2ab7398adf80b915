#!/usr/bin/env python3
"""Compares two run folders of the same experiment in fp32 and in mixed precision (issue 15):
the loss curves over the first N iterations (running means over a window, relative difference)
and the final mAP@0.5. Usage: mixed_vs_fp32.py FP32_RUN_DIR MIXED_RUN_DIR [N] [WINDOW]"""
import csv
import json
import sys


def losses(run):
    with open(f"{run}/tables/iterations.csv") as f:
        rows = list(csv.DictReader(f))
    return [float(r["loss"]) for r in rows], [r.get("skipped") == "true" for r in rows], [r.get("loss_scale") for r in rows]


def final_map(run):
    with open(f"{run}/tables/epochs.csv") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["map50"]) if rows else float("nan")


def running_mean(v, w):
    out, s = [], 0.0
    for i, x in enumerate(v):
        s += x
        if i >= w:
            s -= v[i - w]
        out.append(s / min(i + 1, w))
    return out


fp32, mixed = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 200
w = int(sys.argv[4]) if len(sys.argv) > 4 else 20
lf, _, _ = losses(fp32)
lm, skipped, scales = losses(mixed)
n = min(n, len(lf), len(lm))
rf, rm = running_mean(lf[:n], w), running_mean(lm[:n], w)
rel = [abs(a - b) / abs(a) for a, b in zip(rf, rm)]
print(json.dumps({
    "iterations_compared": n,
    "window": w,
    "worst_running_mean_rel_diff": max(rel),
    "mean_running_mean_rel_diff": sum(rel) / n,
    "final_loss_running_mean": {"fp32": rf[-1], "mixed": rm[-1]},
    "mixed_skipped_steps": sum(skipped),
    "mixed_loss_scale_first_last": [scales[0], scales[-1]],
    "final_map50": {"fp32": final_map(fp32), "mixed": final_map(mixed)},
    "final_map50_abs_diff": abs(final_map(fp32) - final_map(mixed)),
}, indent=1))
