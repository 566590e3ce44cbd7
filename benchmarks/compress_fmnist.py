"""Compression after distillation on real Fashion-MNIST. Prints a markdown report.

    python benchmarks/compress_fmnist.py                      # the documented setting
    python benchmarks/compress_fmnist.py --student-params '{"hidden": [64]}' --epochs 3

A CNN teacher trains on Fashion-MNIST, then the student (an MLP, whose Linear layers are what
dynamic int8 quantization converts) is trained alone and distilled (KD, T = 4, α = 0.5). The
distilled student is then compressed with :func:`kdcore.ship.compress.compression_table`: int8 dynamic
quantization, global magnitude pruning at several shares, and both. Every row is measured on the
full 10,000-image test set; latency is one batch on this machine's CPU (median of repeats).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from kdcore import DataConfig, LossConfig, ModelConfig, OptimConfig, RunConfig, run_experiment
from kdcore.ship.compress import compression_table
from kdcore.data import load_data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student-params", default='{"hidden": [128]}', help="mlp student params (JSON)")
    ap.add_argument("--epochs", type=int, default=5, help="student epochs")
    ap.add_argument("--teacher-epochs", type=int, default=5)
    ap.add_argument("--prune", default="0.5,0.8,0.9", help="pruning shares")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RunConfig(data=DataConfig(name="fashion_mnist"),
                    teacher=ModelConfig("cnn", {}),
                    student=ModelConfig("mlp", json.loads(args.student_params)),
                    loss=LossConfig("kd", temperature=4.0, alpha=0.5),
                    optim=OptimConfig(epochs=args.epochs, lr=1e-3, batch_size=128),
                    teacher_optim=OptimConfig(epochs=args.teacher_epochs, lr=1e-3, batch_size=128),
                    seed=args.seed)
    t0 = time.perf_counter()
    res = run_experiment(cfg)
    if res.status != "completed":
        print(f"run {res.status}: {res.message}", file=sys.stderr)
        return 1
    train_s = time.perf_counter() - t0
    data = load_data(cfg.data)
    t = compression_table(res.models["distilled"], data,
                          prune_amounts=[float(a) for a in args.prune.split(",") if a])
    m = res.metrics
    print("# Compression after distillation: Fashion-MNIST\n")
    print(f"Teacher `cnn` ({m['teacher']['params']:,} parameters): {m['teacher']['accuracy']:.2%} test "
          f"accuracy. Student `mlp {args.student_params}` ({m['distilled']['params']:,} parameters): "
          f"alone {m['baseline']['accuracy']:.2%}, distilled (KD T=4, α=0.5) "
          f"{m['distilled']['accuracy']:.2%}. {args.epochs} student / {args.teacher_epochs} teacher "
          f"epochs, seed {args.seed}; training took {train_s:.0f} s on {torch.get_num_threads()} "
          "CPU thread(s).\n")
    print("The distilled student, compressed (test set of 10,000; latency = one batch of 128 on the "
          "CPU):\n")
    print("| variant | size (MiB) | gzip size (MiB) | sparsity | latency (ms) | speed-up | test accuracy "
          "| change (points) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in t.itertuples():
        print(f"| {r.variant} | {r.size_mb:.3f} | {r.size_gzip_mb:.3f} | {r.sparsity:.0%} | "
              f"{r.latency_ms:.3f} | {r.speedup:.2f}× | {r.accuracy:.2%} | {r.accuracy_change:+.2f} |")
    print(f"\nCommand: `python benchmarks/compress_fmnist.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
