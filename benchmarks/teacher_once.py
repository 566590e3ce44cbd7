"""A teacher is trained once: the scenario of issue 13, end to end through the CLI.

Run 1 trains a CNN teacher on a 10,000-image Fashion-MNIST subset, then the baseline and the
distilled MLP 784-32-10 student. Run 2 changes only T: its teacher (same architecture, data,
optimiser and seed) is found in the history and loaded, so only the students train. Both are
whole `python -m kdcore run` processes (start-up included), timed by wall clock.

    python benchmarks/teacher_once.py                 # 5 teacher + 5 student epochs
    python benchmarks/teacher_once.py --epochs 20     # the issue's 20 + 20

Prints both times, the ratio and the load average; the last line is `second_run_speedup=<x>`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=5, help="teacher epochs and student epochs")
    p.add_argument("--subset", type=int, default=10000)
    args = p.parse_args()
    cfg = {"data": {"name": "fashion_mnist", "train_subset": args.subset},
           "teacher": {"name": "cnn", "params": {}}, "student": {"name": "mlp", "params": {"hidden": [32]}},
           "optim": {"epochs": args.epochs, "lr": 1e-3, "batch_size": 128},
           "teacher_optim": {"epochs": args.epochs, "lr": 1e-3, "batch_size": 128},
           "loss": {"temperature": 4.0, "alpha": 0.5}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.json"
        path.write_text(json.dumps(cfg))
        times, outs = [], []
        for extra in ([], ["--set", "loss.temperature=2"]):
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "kdcore", "--runs-dir", str(Path(tmp) / "runs"), "run",
                                str(path), *extra], cwd=ROOT, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if r.returncode != 0:
                print(r.stdout[-2000:], r.stderr[-2000:])
                return 1
            outs.append(r.stdout.strip().splitlines()[-1])
            print(f"run {len(times)}: {times[-1]:.1f} s (load average {load:.1f} before)")
    print(f"run 2 said: {outs[1]}")
    print(f"CNN teacher + MLP 784-32-10 students, {args.epochs} + {args.epochs} epochs, {args.subset:,} images: "
          f"first run {times[0]:.1f} s, second (only T changed) {times[1]:.1f} s")
    print(f"second_run_speedup={times[0] / times[1]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
