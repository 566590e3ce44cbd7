"""Does distillation help the 784-32-10 MLP on Fashion-MNIST? T x alpha over 3 seeds.

    python benchmarks/kd_grid_fmnist.py        # ~3 min on 2 cores

The setting of bench_engine.py (CNN teacher 3 epochs, MLP 784-32-10 student 5 epochs, batch 128,
Adam 1e-3). Per seed the teacher and the baseline are trained once and reused by every cell, so
each cell's gain is paired with the same baseline. The cell to recommend is chosen on the
VALIDATION split; test gains are reported for every cell, chosen or not.
"""
from __future__ import annotations

import statistics
import time

import torch

from bench_engine import CFG
from kdcore import LossConfig, replace, run_experiment
from kdcore.data import load_data

TEMPS, ALPHAS, SEEDS = (1.0, 2.0, 4.0), (0.1, 0.5, 0.9), (0, 1, 2)


def main() -> None:
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    data = load_data(CFG.data)
    gains: dict[tuple[float, float], list[tuple[float, float]]] = {}
    for seed in SEEDS:
        cfg = replace(CFG, seed=seed)
        base = run_experiment(replace(cfg, loss=LossConfig(temperature=1.0, alpha=1.0)), data=data)
        reuse = {"teacher": base.models["teacher"], "baseline": base.models["baseline"]}
        b_val, b_test = base.history["baseline"][-1]["val_acc"], base.metrics["baseline"]["accuracy"]
        for T in TEMPS:
            for a in ALPHAS:
                r = run_experiment(replace(cfg, loss=LossConfig(temperature=T, alpha=a)), data=data, reuse=reuse)
                gains.setdefault((T, a), []).append(
                    (r.history["distilled"][-1]["val_acc"] - b_val, r.metrics["distilled"]["accuracy"] - b_test))
    print(f"Fashion-MNIST, {len(SEEDS)} seeds, {time.perf_counter() - t0:.0f}s; gain of the distilled "
          "student over the baseline, points (mean ± std over seeds)\n")
    print("| T | α | validation gain | test gain |\n|---|---|---|---|")
    for (T, a), v in sorted(gains.items()):
        gv, gt = [100 * x[0] for x in v], [100 * x[1] for x in v]
        print(f"| {T:g} | {a:g} | {statistics.mean(gv):+.2f} ± {statistics.stdev(gv):.2f} | "
              f"{statistics.mean(gt):+.2f} ± {statistics.stdev(gt):.2f} |")
    best = max(gains, key=lambda k: statistics.mean(x[0] for x in gains[k]))
    gt = [100 * x[1] for x in gains[best]]
    print(f"\nchosen on validation: T = {best[0]:g}, α = {best[1]:g}; its test gain "
          f"{statistics.mean(gt):+.2f} ± {statistics.stdev(gt):.2f} points (per seed: "
          + ", ".join(f"{g:+.2f}" for g in gt) + ")")


if __name__ == "__main__":
    main()
