"""Decoding an image folder with and without DataLoader worker processes (kdcore.data.own).

    python benchmarks/fmnist_to_folder.py --out /tmp/fmnist_png     # once: 70,000 PNG files
    python benchmarks/bench_decode.py --folder /tmp/fmnist_png --workers 0 2 --read-ahead 0 2

For each ``KD_DATA_WORKERS`` value, interleaved, median of ``--repeats``: loading the folder into
memory (decode + resize + normalise every image) and one student epoch (MLP 784-32-10, batch 128,
or ``--student cnn``) over the training split streamed from disk (``data.memory_mb = 0``) with each
``--read-ahead`` value (batches decoded ahead of the step, ``kdcore.data.own.READ_AHEAD``), beside
the same epoch on the set held in memory. Prints markdown.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from kdcore import from_dict
from kdcore.data import load_data
from kdcore.data import own
from kdcore.data.own import close_decoders

STUDENTS = {"mlp": ("mlp", {"hidden": [32]}), "cnn": ("cnn", {"width": 8, "hidden": 64})}


def student_epoch(data, student: str = "mlp") -> float:
    from kdcore.config import OptimConfig
    from kdcore.models import build_model
    from kdcore.train.trainer import Alone, fit

    torch.manual_seed(0)
    name, params = STUDENTS[student]
    m = build_model(name, in_shape=tuple(data.in_shape), num_classes=len(data.classes), params=params)
    return fit(Alone(m), data, OptimConfig(epochs=1, lr=1e-3, batch_size=128), phase="bench", seed=0).epochs[0]["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", default="/tmp/fmnist_png")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--read-ahead", type=int, nargs="+", default=[own.READ_AHEAD])
    ap.add_argument("--student", choices=sorted(STUDENTS), default="mlp")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=28, help="data.image_size")
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    data = {"name": "image_folder", "path": args.folder, "image_size": args.size}
    times: dict[tuple[int, str], list[float]] = {}
    n = 0
    for _ in range(args.repeats):
        for w in args.workers:
            os.environ["KD_DATA_WORKERS"] = str(w)
            close_decoders()
            t0 = time.perf_counter()
            mem = load_data(from_dict({"data": data}).data)
            times.setdefault((w, "load"), []).append(time.perf_counter() - t0)
            n = len(mem.y_train) + len(mem.y_val) + len(mem.y_test)
            times.setdefault((w, "memory epoch"), []).append(student_epoch(mem, args.student))
            del mem
            streamed = load_data(from_dict({"data": {**data, "memory_mb": 0}}).data)
            for ra in args.read_ahead:
                own.READ_AHEAD = ra
                times.setdefault((w, f"streamed {ra}"), []).append(student_epoch(streamed, args.student))
            print(f"  repeat done: workers {w}, load average {os.getloadavg()[0]:.1f}", flush=True)
    close_decoders()
    print(f"\n{n} images at {args.size} px; median of {args.repeats} interleaved repeats (s)\n")
    print(f"student: {args.student}\n")
    print("| KD_DATA_WORKERS | load into memory | epoch, in memory | "
          + " | ".join(f"epoch, streamed, read-ahead {ra}" for ra in args.read_ahead) + " | streamed / in memory |")
    print("|---" * (4 + len(args.read_ahead)) + "|")
    for w in args.workers:
        load, mem_e = (statistics.median(times[(w, k)]) for k in ("load", "memory epoch"))
        st = [statistics.median(times[(w, f"streamed {ra}")]) for ra in args.read_ahead]
        print(f"| {w} | {load:.1f} | {mem_e:.2f} | " + " | ".join(f"{e:.2f}" for e in st)
              + f" | {' / '.join(f'{e / mem_e:.1f}x' for e in st)} |")
    print(f"\nload average at the end {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
