"""Write small IDX files in torchvision's layout, so image loading is tested without downloads."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import torch


def write_idx(path: Path, t: torch.Tensor) -> None:
    """IDX file: magic 0x0000 08 <ndim> (unsigned byte), big-endian dims, then the bytes."""
    data = struct.pack(">I", 0x0800 | t.dim()) + struct.pack(f">{t.dim()}I", *t.shape)
    data += t.to(torch.uint8).numpy().tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_fashion_idx(root: Path, *, n_train: int, n_test: int, folder: str = "FashionMNIST",
                      seed: int = 0) -> Path:
    """Random-but-learnable 28x28 images (class c brightens row band c) under root/folder/raw."""
    g = torch.Generator().manual_seed(seed)
    raw = Path(root) / folder / "raw"
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = torch.arange(n) % 10
        x = torch.randint(0, 60, (n, 28, 28), generator=g)
        for i, c in enumerate(y.tolist()):
            x[i, 2 * c + 4: 2 * c + 7, :] += 180
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
    return Path(root)
