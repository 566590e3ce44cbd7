"""Every distillation method against the baseline student on the real Fashion-MNIST, over seeds.

    python benchmarks/methods_fmnist.py --threads 1          # measured: 26 min on a busy shared
                                                             # 2-core machine (load ~7)
    python benchmarks/methods_fmnist.py --seeds 1 --methods kd,dkd --subset 2000   # a quick look
    python benchmarks/methods_fmnist.py --methods dkd,dkd_warmup,fitnets,fitnets_2stage  # schedules

Setting (defaults): a 10,000-image seeded training subset (validation: 6,000 held-out images;
test: the official 10,000), teacher ``cnn`` width 8 / hidden 128 (~105k parameters, 10 epochs),
student ``cnn`` width 4 / hidden 32 (~14k parameters, 10 epochs; a conv net, so attention
transfer applies), Adam with a cosine schedule from lr 3e-3, batch 128, T = 4, alpha = 0.5, every
method with its default knobs. Per seed the teacher and the baseline student are trained once
and reused by every method (same seed, so every distilled student starts from the baseline's
initial weights and sees the same batches); multi-teacher KD adds a second ``cnn`` teacher
trained from another seed. Each run goes through ``run_experiment``, the path the CLI and the
dashboard use. Prints a markdown table; ``--out FILE`` also writes it, ``--csv FILE`` the raw runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from kdcore import (METHOD_INFO, DataConfig, LossConfig, ModelConfig, OptimConfig,
                    RunConfig, replace, run_experiment)
from kdcore.data import load_data

METHODS = ["kd", "dkd", "logit_std", "fitnets", "at", "sp", "rkd", "adversarial", "multi_teacher"]
# schedule variants, run only when named in --methods: (loss.name, loss.params, table title)
VARIANTS = {
    "dkd_warmup": ("dkd", {"warmup": 3}, "DKD with its linear warm-up over 3 epochs"),
    "fitnets_2stage": ("fitnets", {"hint_epochs": 3}, "FitNets, two stages: 3 hint-only epochs first"),
}


def config(args, seed: int) -> RunConfig:
    return RunConfig(
        data=DataConfig(name="fashion_mnist", train_subset=args.subset),
        teacher=ModelConfig("cnn", {"width": 8, "hidden": 128}),
        student=ModelConfig("cnn", {"width": 4, "hidden": 32}),
        loss=LossConfig(name="kd", temperature=4.0, alpha=0.5),
        optim=OptimConfig(epochs=args.epochs, lr=3e-3, batch_size=128, schedule="cosine"),
        teacher_optim=OptimConfig(epochs=args.teacher_epochs, lr=3e-3, batch_size=128, schedule="cosine"),
        seed=seed, name="methods_fmnist")


def method_config(base: RunConfig, method: str) -> RunConfig:
    if method == "multi_teacher":
        return replace(base, extra_teachers=(base.teacher,))
    if method in VARIANTS:
        name, params, _ = VARIANTS[method]
        return replace(base, loss=replace(base.loss, name=name, params=params))
    return replace(base, loss=replace(base.loss, name=method))


def pm(xs: list[float], scale: float = 100.0) -> str:
    m = statistics.mean(xs) * scale
    s = statistics.stdev(xs) * scale if len(xs) > 1 else 0.0
    return f"{m:.2f} ± {s:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--subset", type=int, default=10000, help="training images (seeded subset)")
    ap.add_argument("--epochs", type=int, default=10, help="student epochs")
    ap.add_argument("--teacher-epochs", type=int, default=10)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="also write the markdown table here")
    ap.add_argument("--csv", help="write one row per (method, seed) here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    t_start = time.perf_counter()
    data = load_data(config(args, 0).data)
    rows, base_acc, teacher_acc = [], {}, {}
    for seed in range(args.seeds):
        base = config(args, seed)
        reuse: dict = {}
        for method in methods:
            cfg = method_config(base, method)
            t0 = time.perf_counter()
            res = run_experiment(cfg, data=data, reuse=dict(reuse))
            secs = time.perf_counter() - t0
            if res.status != "completed":
                print(f"seed {seed} {method}: {res.status}: {res.message}", file=sys.stderr)
                continue
            reuse.setdefault("teacher", res.models["teacher"])
            reuse.setdefault("baseline", res.models["baseline"])
            base_acc[seed] = res.metrics["baseline"]["accuracy"]
            teacher_acc[seed] = res.metrics["teacher"]["accuracy"]
            m = res.metrics
            rows.append({"method": method, "seed": seed, "distilled": m["distilled"]["accuracy"],
                         "baseline": m["baseline"]["accuracy"], "teacher": m["teacher"]["accuracy"],
                         "ensemble": m.get("ensemble", {}).get("accuracy"),
                         "gain": m["distilled"]["accuracy"] - m["baseline"]["accuracy"],
                         "distill_seconds": sum(e["seconds"] for e in res.history.get("distilled", [])),
                         "run_seconds": secs})
            print(f"seed {seed} {method:14s} distilled {m['distilled']['accuracy']:.4f} "
                  f"baseline {m['baseline']['accuracy']:.4f} ({secs:.0f}s)", file=sys.stderr, flush=True)
    total = time.perf_counter() - t_start

    seeds = sorted(base_acc)
    lines = [
        f"Fashion-MNIST, {args.subset} training images, student {args.epochs} epochs, teacher "
        f"{args.teacher_epochs} epochs, seeds {', '.join(map(str, seeds))}; test accuracy (%) mean ± std "
        f"over seeds. Total {total / 60:.1f} min on {args.threads} CPU threads.",
        "",
        f"Teacher (cnn w8/h128): {pm([teacher_acc[s] for s in seeds])}; "
        f"baseline student (cnn w4/h32, trained alone): {pm([base_acc[s] for s in seeds])}",
        "",
        "| method | loss.name / setting | distilled student | gain over baseline (points) | distill time (s/run) |",
        "|---|---|---|---|---|",
    ]
    for method in methods:
        rs = [r for r in rows if r["method"] == method]
        if not rs:
            lines.append(f"| {method} | | failed | | |")
            continue
        if method in VARIANTS:
            name, params, title = VARIANTS[method]
            setting = f"{name} {params}"
        elif method in METHOD_INFO:
            title, setting = METHOD_INFO[method].title, method
        else:
            title = f"multi-teacher: 2 x cnn, equal weights (ensemble {pm([r['ensemble'] for r in rs])})"
            setting = "kd + extra_teachers"
        lines.append(f"| {title} | `{setting}` | {pm([r['distilled'] for r in rs])} | "
                     f"{pm([r['gain'] for r in rs])} | {statistics.mean(r['distill_seconds'] for r in rs):.1f} |")
    cmd = "python benchmarks/methods_fmnist.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines += ["", f"Command: `{cmd.strip()}`"]
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    if args.csv:
        import pandas as pd

        pd.DataFrame(rows).to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
