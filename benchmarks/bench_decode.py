"""Decoding an image folder with and without DataLoader worker processes (kdcore.data.own).

    python benchmarks/fmnist_to_folder.py --out /tmp/fmnist_png     # once: 70,000 PNG files
    python benchmarks/bench_decode.py --folder /tmp/fmnist_png --workers 0 2

For each ``KD_DATA_WORKERS`` value, interleaved, median of ``--repeats``: loading the folder into
memory (decode + resize + normalise every image) and one student epoch (MLP 784-32-10, batch 128)
over the training split streamed from disk (``data.memory_mb = 0``), beside the same epoch on the
set held in memory. Prints markdown.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from kdcore import from_dict
from kdcore.data import load_data
from kdcore.data.own import close_decoders


def student_epoch(data) -> float:
    from kdcore.config import OptimConfig
    from kdcore.models import build_model
    from kdcore.train.trainer import Alone, fit

    torch.manual_seed(0)
    m = build_model("mlp", in_shape=tuple(data.in_shape), num_classes=len(data.classes), params={"hidden": [32]})
    return fit(Alone(m), data, OptimConfig(epochs=1, lr=1e-3, batch_size=128), phase="bench", seed=0).epochs[0]["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", default="/tmp/fmnist_png")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
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
            times.setdefault((w, "memory epoch"), []).append(student_epoch(mem))
            del mem
            streamed = load_data(from_dict({"data": {**data, "memory_mb": 0}}).data)
            times.setdefault((w, "streamed epoch"), []).append(student_epoch(streamed))
            print(f"  repeat done: workers {w}, load average {os.getloadavg()[0]:.1f}", flush=True)
    close_decoders()
    print(f"\n{n} images at {args.size} px; median of {args.repeats} interleaved repeats (s)\n")
    print("| KD_DATA_WORKERS | load into memory | epoch, in memory | epoch, streamed | streamed / in memory |")
    print("|---|---|---|---|---|")
    for w in args.workers:
        load, mem_e, st_e = (statistics.median(times[(w, k)]) for k in ("load", "memory epoch", "streamed epoch"))
        print(f"| {w} | {load:.1f} | {mem_e:.2f} | {st_e:.2f} | {st_e / mem_e:.1f}x |")
    print(f"\nload average at the end {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
