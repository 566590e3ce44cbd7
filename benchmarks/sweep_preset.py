"""Time the preset α × T sweep (kdcore.train.sweep.PRESET) on real Fashion-MNIST. Prints a markdown report.

    python benchmarks/sweep_preset.py                 # the preset as the Sweep page runs it
    python benchmarks/sweep_preset.py --json out.json
    python benchmarks/sweep_preset.py --student 256,256          # the same grid, a bigger student

The teacher (CNN) and the baseline student (MLP 784-32-10) train once, in the first cell; every
other cell trains one distilled student and reuses them (kdcore.train.sweep.run_sweep). The budget the
issue sets: under 5 minutes on 2 CPU cores, start to last cell.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from kdcore import RunStore, to_dict
from kdcore.lab import teaching as tg
from kdapp.live import worker_threads
from kdcore.train.sweep import PRESET, preset_plan, run_sweep

BUDGET_S = 300


def markdown(grid, fmt: str) -> str:
    """An α x T grid as a markdown table (no tabulate dependency)."""
    head = "| α \\ T | " + " | ".join(f"{t:g}" for t in grid.columns) + " |"
    rule = "|---|" + "---:|" * len(grid.columns)
    rows = [f"| {a:g} | " + " | ".join("" if v != v else format(v, fmt) for v in grid.loc[a]) + " |"
            for a in grid.index]
    return "\n".join([head, rule, *rows])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=worker_threads(),
                    help="torch intra-op threads (default: what a dashboard worker uses)")
    ap.add_argument("--student", default=None, help="MLP student widths instead of the preset's, e.g. 256,256")
    ap.add_argument("--alphas", default=None, help="α values instead of the preset's, e.g. 0.1,0.5")
    ap.add_argument("--temps", default=None, help="T values instead of the preset's, e.g. 1,2.5,4,8,16")
    ap.add_argument("--runs-dir", default=None, help="keep the cells in this history (default: a temp dir)")
    ap.add_argument("--json", default=None, help="write the cells and the timing here")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    over = {}
    if a.student:
        over["student"] = ("mlp", {"hidden": [int(h) for h in a.student.split(",")]})
    if a.alphas:
        over["alphas"] = tuple(float(v) for v in a.alphas.split(","))
    if a.temps:
        over["temps"] = tuple(float(v) for v in a.temps.split(","))
    plan = preset_plan(**over)
    tmp = None if a.runs_dir else tempfile.TemporaryDirectory()
    store = RunStore(a.runs_dir or tmp.name)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    t0 = time.perf_counter()
    times = []
    res = run_sweep(plan, store=store, on_cell=lambda c: times.append(time.perf_counter() - t0))
    seconds = time.perf_counter() - t0
    frame = tg.sweep_frame(res.cells)
    acc = tg.sweep_grid(frame, "distilled", alphas=plan.alphas, temps=plan.temps)
    gain = tg.sweep_grid(frame, "gain", alphas=plan.alphas, temps=plan.temps)
    best = tg.best_cell(frame)

    print(f"## Preset α × T sweep: {len(res.cells)} cells, {res.status}, {seconds:.0f} s "
          f"({'within' if seconds < BUDGET_S else 'OVER'} the {BUDGET_S} s budget)\n")
    print(f"{'The preset' if not over else 'The preset with ' + ', '.join(over)}: Fashion-MNIST, "
          f"training subset {PRESET['train_subset']}; teacher {PRESET['teacher'][0]} "
          f"({PRESET['teacher_epochs']} epochs), student MLP {plan.base.student.params['hidden']} "
          f"({PRESET['epochs']} epochs), Adam lr {PRESET['lr']:g}, batch {PRESET['batch_size']}; "
          f"{a.threads} torch thread(s); load average at start {load:.1f} on {os.cpu_count()} CPUs.")
    if res.cells:
        first = res.cells[0]
        print(f"Teacher test accuracy {first['teacher']:.2%}, baseline student {first['baseline']:.2%}; "
              f"first cell (teacher + baseline + distilled) {times[0]:.0f} s, the other cells "
              f"{(times[-1] - times[0]) / max(len(times) - 1, 1):.1f} s each on average.\n")
    print("Distilled-student test accuracy (%), rows α (weight of the hard-label CE), columns T:\n")
    print(markdown(acc * 100, ".2f"))
    print("\nGain over the baseline (points):\n")
    print(markdown(gain * 100, "+.2f"))
    if best:
        print(f"\nBest cell: α = {best['alpha']:g}, T = {best['T']:g}: {best['distilled']:.2%} "
              f"({best['gain'] * 100:+.2f} points over the baseline). One seed: differences under "
              "about half a point are within seed-to-seed noise.")
    print(f"\nCommand: python benchmarks/sweep_preset.py {' '.join(sys.argv[1:])}".rstrip())
    if a.json:
        Path(a.json).write_text(json.dumps({
            "seconds": seconds, "status": res.status, "threads": a.threads, "load_avg": load,
            "cells": res.cells, "cell_times": times, "best": best,
            "base_config": to_dict(plan.base), "alphas": plan.alphas, "temps": plan.temps}, indent=2,
            default=float))
    if tmp is not None:
        tmp.cleanup()
    return 0 if res.status == "completed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
