"""Write the real Fashion-MNIST out as PNG files, one folder per class: a real "own data" image folder.

    python benchmarks/fmnist_to_folder.py [--out /tmp/fmnist_png] [--per-class N]

Reads Debian's ``dataset-fashion-mnist`` IDX files (``/usr/share/datasets/fashion-mnist``, or
``--idx DIR``) and writes ``<out>/train/<class>/<index>.png`` (60,000) and
``<out>/test/<class>/<index>.png`` (10,000), keeping the official split, so
``--set data.name=image_folder --set data.path=<out>`` uses the same test set as the built-in
``fashion_mnist``. Class folder names are the dataset's class names with ``/`` made ``_``.
Prints how many files it wrote, their size and the time taken.
"""
from __future__ import annotations

import argparse
import gzip
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from kdcore.data import DATASETS, DEBIAN_FASHION_MNIST


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally .gz) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(idx_dir: Path, name: str) -> Path:
    for p in (idx_dir / name, idx_dir / f"{name}.gz"):
        if p.is_file():
            return p
    raise SystemExit(f"{name} not found in {idx_dir}; apt-get install dataset-fashion-mnist or pass --idx")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/fmnist_png", help="folder to write (default /tmp/fmnist_png)")
    ap.add_argument("--idx", default=DEBIAN_FASHION_MNIST, help="folder with the IDX files")
    ap.add_argument("--per-class", type=int, default=0, help="at most N images per class and split (0 = all)")
    args = ap.parse_args()
    classes = [c.replace("/", "_") for c in DATASETS.get("fashion_mnist").classes]
    out, idx = Path(args.out), Path(args.idx)
    t0 = time.perf_counter()
    n = size = 0
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx(find(idx, f"{prefix}-images-idx3-ubyte"))
        y = read_idx(find(idx, f"{prefix}-labels-idx1-ubyte"))
        seen = [0] * len(classes)
        for c in classes:
            (out / split / c).mkdir(parents=True, exist_ok=True)
        for i, (img, label) in enumerate(zip(x, y)):
            if args.per_class and seen[label] >= args.per_class:
                continue
            seen[label] += 1
            path = out / split / classes[label] / f"{i:05d}.png"
            Image.fromarray(img, "L").save(path, optimize=False)
            n += 1
            size += os.path.getsize(path)
    print(f"wrote {n} PNG files ({size / 2**20:.1f} MiB) into {out}/{{train,test}}/<class>/ "
          f"in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
