"""Datasets held in memory as tensors: synthetic 2-D sets and torchvision image sets.

Every dataset is a ``DatasetSpec`` in ``DATASETS``; ``load_data(cfg)`` returns a ``DataBundle``
with train/val/test tensors (x float32, normalised; y int64).

Splits, the same rule for every dataset:
    test  = the official test set (synthetic sets: a seeded 20 % of ``n_samples``);
    val   = a seeded ``val_fraction`` of the remaining training pool;
    train = the rest, then a seeded subset of ``train_subset`` samples when that is > 0.
The validation set does not change with ``train_subset``.

Where image data is found, in this order:
    1. ``<root>/<Folder>/raw`` (MNIST, Fashion-MNIST) or ``<root>/cifar-10-batches-py``,
       where root is ``cfg.data_dir``, else ``$KD_DATA_DIR``, else ``./data``;
    2. Fashion-MNIST only: Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``);
    3. with ``cfg.download``: torchvision downloads into root.
torchvision reads only uncompressed IDX files, so IDX files found only as ``.gz`` (Debian's, or a
user's) are unpacked once into ``$KD_CACHE_DIR`` (default ``~/.cache/kdcore``) and read from there.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from ..errors import ConfigError, DataUnavailable
from ..registry import DATASETS

__all__ = [
    "DataBundle", "DatasetSpec", "SyntheticSpec", "ImageSpec", "load_data", "dataset_names",
    "batches", "epoch_batches", "labelled_indices", "student_views", "teacher_overlap", "augment_batch", "data_root", "cache_dir", "SYNTHETIC_TEST_FRACTION",
    "DEBIAN_FASHION_MNIST",
]

SYNTHETIC_TEST_FRACTION = 0.2  # share of n_samples kept as the synthetic sets' test set
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                "test_batch", "batches.meta")


# --------------------------------------------------------------------------------------------
# The bundle


@dataclass(frozen=True, eq=False)
class DataBundle:
    """One loaded dataset: train/val/test tensors plus what a model and a chart need to know.

    ``x_*`` are float32, normalised (2-D sets: standardised with the training split's mean/std;
    images: ``(pixel/255 - mean) / std`` per channel, shape [N, C, H, W]); ``y_*`` are int64.
    ``augment`` is None or a callable ``augment(x, *, generator) -> x`` for a training batch.
    """

    name: str
    kind: str  # "2d" or "image"
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    in_shape: tuple[int, ...]
    mean: tuple[float, ...]  # per feature (2-D) or per channel (images), before normalising
    std: tuple[float, ...]
    augment: Callable[..., torch.Tensor] | None = None
    source: str = ""  # where the data came from, for a log line or a caption
    # a transfer set rides at the end of the training split: the last n_unlabelled samples are
    # drawn transfer_ratio per labelled sample into every batch (see epoch_batches)
    n_unlabelled: int = 0
    transfer_ratio: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def n_labelled(self) -> int:
        """Training samples that set the epoch: all of them, or those before the transfer set."""
        return len(self.x_train) - self.n_unlabelled

    def to(self, device: str | torch.device) -> DataBundle:
        """Return a copy with every tensor on ``device``.

        Args:
            device: target device.
        Returns:
            A new DataBundle.
        """
        moved = {k: getattr(self, k).to(device) for k in
                 ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
        return replace(self, **moved)

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map normalised inputs back to the original scale (images: pixels in [0, 1]).

        Args:
            x: a batch [N, *in_shape] or one sample [*in_shape].
        Returns:
            A tensor of the same shape.
        """
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device)
        if self.kind == "image":  # channel axis is third from the end for [C,H,W] and [N,C,H,W]
            mean, std = mean.view(-1, 1, 1), std.view(-1, 1, 1)
        return x * std + mean


# --------------------------------------------------------------------------------------------
# Batching and augmentation used by the trainer


def batches(n: int, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
            drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Yield index tensors that cover ``range(n)`` once, in batches.

    Args:
        n: number of samples.
        batch_size: samples per batch; the last batch may be smaller unless ``drop_last``.
        shuffle: a random order from ``torch.randperm`` with ``generator``, else 0..n-1.
        generator: makes the order reproducible; None uses torch's global generator.
        drop_last: skip a final batch smaller than ``batch_size``.
    Returns:
        An iterator of int64 index tensors.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shuffle:
        device = generator.device if generator is not None else "cpu"
        order = torch.randperm(n, generator=generator, device=device)
    else:
        order = torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]


def epoch_batches(data: DataBundle, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """One epoch of index batches over ``data``'s training split.

    Without a transfer set: :func:`batches` over every sample, shuffled. With one, an epoch is one
    pass over the labelled samples (so the students' step counts match the baseline's), and each
    batch of them is followed by ``transfer_ratio`` times as many transfer-set indices, drawn
    without replacement from a fresh permutation (cycled when an epoch needs more than the set).

    Args:
        data: the bundle (``n_unlabelled``, ``transfer_ratio``). batch_size: labelled samples per step.
        generator: the phase's generator; the labelled order is drawn first, then the transfer order.
    Returns:
        An iterator of int64 index tensors into ``data.x_train``.
    """
    n_lab, n_unl = data.n_labelled, data.n_unlabelled
    labelled = list(batches(n_lab, batch_size, shuffle=True, generator=generator))
    if n_unl == 0:
        yield from labelled
        return
    need = sum(len(b) for b in labelled) * data.transfer_ratio
    perms = [torch.randperm(n_unl, generator=generator) for _ in range(math.ceil(need / n_unl))]
    unl = (torch.cat(perms)[:need] + n_lab) if perms else torch.empty(0, dtype=torch.int64)
    start = 0
    for b in labelled:
        k = len(b) * data.transfer_ratio
        yield torch.cat([b, unl[start:start + k]])
        start += k


def labelled_indices(y: torch.Tensor, n: int, *, balanced: bool, seed: int) -> torch.Tensor:
    """A seeded draw of ``n`` training indices whose labels the students may use, sorted.

    Args:
        y: [N] training labels. n: how many (0 < n <= N). balanced: take n // K of every class
            (the first n % K classes in a seeded order get one more) instead of a uniform draw.
        seed: the data seed (the draw does not depend on the training seed).
    Returns:
        int64 index tensor.
    Raises:
        ConfigError: n larger than the split, or a class too small for a balanced draw.
    """
    if n > len(y):
        raise ConfigError(f"data.labelled = {n} is not allowed; the training split has only {len(y)} "
                          "samples")
    g = torch.Generator().manual_seed(seed + 7919)  # not the split's own stream
    if not balanced:
        return torch.randperm(len(y), generator=g)[:n].sort().values
    classes = torch.unique(y)
    k = len(classes)
    extra = torch.randperm(k, generator=g)[: n % k]
    picks = []
    for i, c in enumerate(classes.tolist()):
        pool = (y == c).nonzero().flatten()
        want = n // k + int(bool((extra == i).any()))
        if want > len(pool):
            raise ConfigError(f"data.labelled = {n} with data.balanced needs {want} samples of class "
                              f"{c}, but the training split has {len(pool)}; lower data.labelled or "
                              "turn data.balanced off")
        picks.append(pool[torch.randperm(len(pool), generator=g)[:want]])
    return torch.cat(picks).sort().values


def student_views(data: DataBundle, cfg: Any) -> tuple[DataBundle, DataBundle | None]:
    """What the students train on: the labelled samples, and the labelled + transfer set.

    Args:
        data: the loaded bundle (its training split is the teacher's). cfg: the DataConfig.
    Returns:
        (labelled, transfer): ``labelled`` holds only the ``cfg.labelled`` samples (all of them
        when it is 0); ``transfer`` (None without ``cfg.transfer_set``) holds those first, then
        the rest of the training split with label ``UNLABELLED``. Validation and test are the
        bundle's own in both.
    """
    from ..losses import UNLABELLED

    if not cfg.labelled:
        return data, None
    idx = labelled_indices(data.y_train, cfg.labelled, balanced=cfg.balanced, seed=cfg.seed)
    labelled = replace(data, x_train=data.x_train[idx], y_train=data.y_train[idx])
    if not cfg.transfer_set:
        return labelled, None
    rest = torch.ones(len(data.y_train), dtype=torch.bool)
    rest[idx] = False
    if not rest.any():
        raise ConfigError(f"data.transfer_set is on but data.labelled = {cfg.labelled} takes the whole "
                          "training split; nothing is left to transfer")
    x_rest = data.x_train[rest]
    transfer = replace(labelled, x_train=torch.cat([labelled.x_train, x_rest]),
                       y_train=torch.cat([labelled.y_train,
                                          torch.full((len(x_rest),), UNLABELLED, dtype=torch.int64)]),
                       n_unlabelled=len(x_rest), transfer_ratio=cfg.transfer_ratio)
    return labelled, transfer


def teacher_overlap(teacher_data: dict, data: Any) -> str | None:
    """Could a teacher trained on ``teacher_data``'s training split have seen this run's
    validation or test samples? (A reused teacher's stored data config against this run's.)

    Only the fields that draw the splits matter: for the 2-D sets the points themselves
    (n_samples, noise, n_classes, seed) and for every set the validation draw (seed,
    val_fraction). ``train_subset``, ``labelled`` and the transfer set only shrink what the
    students see, and an image set's test split is fixed, so none of them can leak.

    Args:
        teacher_data: the reused run's stored ``data`` dict. data: this run's DataConfig.
    Returns:
        None when nothing can leak, else a sentence that says what the teacher may have seen.
    """
    from ..config import DataConfig

    d0 = DataConfig()

    def differs(*names: str) -> list[str]:
        return [n for n in names if teacher_data.get(n, getattr(d0, n)) != getattr(data, n)]

    kind = DATASETS.get(data.name).kind if data.name in DATASETS else ""
    if kind == "2d":
        gen = differs("n_samples", "noise", "n_classes", "seed")
        if gen:
            return (f"That teacher was trained on other points ({', '.join('data.' + g for g in gen)} "
                    "differ), so some of this run's test and validation points may have been in its "
                    "training split.")
    split = differs("seed", "val_fraction")
    if split:
        return (f"That teacher was trained with another validation split ({', '.join('data.' + g for g in split)} "
                "differ), so some of this run's validation samples may have been in its training "
                "split; the test set is the same and unseen.")
    return None


def augment_batch(x: torch.Tensor, *, generator: torch.Generator | None, flip: bool, pad: int,
                  fill: float | Sequence[float] = 0.0) -> torch.Tensor:
    """Randomly crop (after padding) and optionally mirror every image of a batch at once.

    Args:
        x: images [N, C, H, W].
        generator: source of the random offsets and flips (on the CPU or x's device).
        flip: mirror each image left-right with probability 1/2.
        pad: pad each side by this many pixels, then crop back to H×W at a random offset.
        fill: padding value, one float or one per channel (normalised space, so the bundle
            passes the value of a black pixel).
    Returns:
        A new tensor of the same shape and dtype as ``x``.
    """
    n, c, h, w = x.shape
    gen_device = generator.device if generator is not None else torch.device("cpu")
    out = x
    if pad > 0:
        fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
        padded = fill_t.expand(c, h + 2 * pad, w + 2 * pad).repeat(n, 1, 1, 1)
        padded[:, :, pad:pad + h, pad:pad + w] = x
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gen_device).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gen_device).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chan = torch.arange(c, device=x.device)[None, :, None, None]
        out = padded[batch, chan, rows, cols]
    if flip:
        mirror = (torch.rand(n, generator=generator, device=gen_device) < 0.5).to(x.device)
        out = torch.where(mirror[:, None, None, None], out.flip(-1), out)
    return out if out is not x else x.clone()


# --------------------------------------------------------------------------------------------
# Splits shared by every dataset


def _split_pool(n_pool: int, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, val) index tensors over a training pool of ``n_pool`` samples, sorted.

    ``cfg`` is a DataConfig, whose construction has checked ``val_fraction`` is in (0, 0.5).
    """
    vf, subset = cfg.val_fraction, cfg.train_subset
    if subset < 0:
        raise ConfigError(f"data.train_subset = {subset!r} is not allowed; use 0 (all) or a "
                          "positive integer")
    perm = torch.randperm(n_pool, generator=torch.Generator().manual_seed(cfg.seed))
    n_val = round(vf * n_pool)
    val, train = perm[:n_val], perm[n_val:]
    if subset > len(train):
        raise ConfigError(f"data.train_subset = {subset} is not allowed; only {len(train)} "
                          f"training samples are left after holding out {n_val} for validation")
    if subset:
        train = train[:subset]  # perm is already random, so its head is a seeded random subset
    if len(train) == 0:
        raise ConfigError(f"data.val_fraction = {vf!r} leaves no training samples out of {n_pool}")
    return train.sort().values, val.sort().values


def data_root(cfg: Any) -> Path:
    """Folder that holds (or will receive) torchvision-layout data.

    Args:
        cfg: a DataConfig.
    Returns:
        ``cfg.data_dir``, else ``$KD_DATA_DIR``, else ``./data``, with ``~`` expanded.
    """
    return Path(cfg.data_dir or os.environ.get("KD_DATA_DIR") or "data").expanduser()


def cache_dir() -> Path:
    """Folder for unpacked copies of compressed data files.

    Returns:
        ``$KD_CACHE_DIR``, else ``$XDG_CACHE_HOME/kdcore``, else ``~/.cache/kdcore``.
    """
    if os.environ.get("KD_CACHE_DIR"):
        return Path(os.environ["KD_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kdcore"


# --------------------------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class DatasetSpec:
    """What the UI, the config check and the trainer need to know about one dataset.

    Metadata (``in_shape``, ``num_classes``, ``class_names``, ``available``) never loads data.
    """

    name: str
    kind: str  # "2d" or "image"
    title: str  # human-readable name for select boxes and messages

    def in_shape(self, cfg: Any) -> tuple[int, ...]:
        """Shape of one input sample, e.g. ``(2,)`` or ``(1, 28, 28)``."""
        raise NotImplementedError

    def num_classes(self, cfg: Any) -> int:
        """Number of classes for this config."""
        return len(self.class_names(cfg))

    def class_names(self, cfg: Any) -> list[str]:
        """Class names, index = label."""
        raise NotImplementedError

    def available(self, cfg: Any) -> tuple[bool, str]:
        """Whether ``load(cfg)`` can find the data, and a message saying where or how to get it."""
        raise NotImplementedError

    def load(self, cfg: Any) -> DataBundle:
        """Load or generate the dataset, split it, and return a DataBundle."""
        raise NotImplementedError


def _balanced(n: int, k: int) -> list[int]:
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


@dataclass(frozen=True)
class SyntheticSpec(DatasetSpec):
    """A 2-D point set generated from ``cfg.seed``; nothing is read from disk."""

    generate: Callable[[list[int], float, torch.Generator], torch.Tensor] = field(repr=False)
    fixed_classes: tuple[str, ...] = ()  # empty: cfg.n_classes classes named "<label> i"
    label: str = "class"

    def in_shape(self, cfg: Any) -> tuple[int, ...]:
        return (2,)

    def class_names(self, cfg: Any) -> list[str]:
        if self.fixed_classes:
            return list(self.fixed_classes)
        return [f"{self.label} {i}" for i in range(cfg.n_classes)]

    def available(self, cfg: Any) -> tuple[bool, str]:
        return True, f"{self.title}: generated from seed {cfg.seed}, nothing to download"

    def load(self, cfg: Any) -> DataBundle:
        n, k = cfg.n_samples, self.num_classes(cfg)
        if k < 2:
            raise ConfigError(f"data.n_classes = {k!r} is not allowed; {self.name} needs >= 2")
        if cfg.noise < 0:
            raise ConfigError(f"data.noise = {cfg.noise!r} is not allowed; it must be >= 0")
        n_test = math.floor(SYNTHETIC_TEST_FRACTION * n)
        if n_test < 1 or n < 2 * k:
            raise ConfigError(f"data.n_samples = {n!r} is too small for {k} classes and a "
                              "train/val/test split; use at least 20")
        g = torch.Generator().manual_seed(cfg.seed)
        counts = _balanced(n, k)
        x = self.generate(counts, float(cfg.noise), g)
        y = torch.repeat_interleave(torch.arange(k), torch.tensor(counts))
        perm = torch.randperm(n, generator=g)
        x, y = x[perm], y[perm]
        x_test, y_test, x_pool, y_pool = x[:n_test], y[:n_test], x[n_test:], y[n_test:]
        tr, va = _split_pool(len(x_pool), cfg)
        x_train, y_train = x_pool[tr], y_pool[tr]
        # standardise with training statistics only, so val/test see no leakage
        mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-8)

        def norm(t: torch.Tensor) -> torch.Tensor:
            return ((t - mean) / std).contiguous()

        return DataBundle(
            name=self.name, kind="2d",
            x_train=norm(x_train), y_train=y_train, x_val=norm(x_pool[va]), y_val=y_pool[va],
            x_test=norm(x_test), y_test=y_test, classes=self.class_names(cfg), in_shape=(2,),
            mean=tuple(mean.tolist()), std=tuple(std.tolist()), augment=None,
            source=f"generated (seed {cfg.seed})")


def _moons(counts: list[int], noise: float, g: torch.Generator) -> torch.Tensor:
    """Two interleaved half circles of radius 1; noise = std of Gaussian jitter (as sklearn)."""
    t0 = torch.rand(counts[0], generator=g) * math.pi
    t1 = torch.rand(counts[1], generator=g) * math.pi
    outer = torch.stack([torch.cos(t0), torch.sin(t0)], 1)
    inner = torch.stack([1 - torch.cos(t1), 0.5 - torch.sin(t1)], 1)
    x = torch.cat([outer, inner])
    return x + noise * torch.randn(x.shape, generator=g)


def _circles(counts: list[int], noise: float, g: torch.Generator) -> torch.Tensor:
    """Rings of radius 1 and 0.5; noise = std of Gaussian jitter (as sklearn, factor 0.5)."""
    parts = []
    for radius, m in zip((1.0, 0.5), counts):
        t = torch.rand(m, generator=g) * 2 * math.pi
        parts.append(radius * torch.stack([torch.cos(t), torch.sin(t)], 1))
    x = torch.cat(parts)
    return x + noise * torch.randn(x.shape, generator=g)


def _spirals(counts: list[int], noise: float, g: torch.Generator) -> torch.Tensor:
    """One spiral arm per class; noise = std of the angle jitter in radians."""
    k, parts = len(counts), []
    for c, m in enumerate(counts):
        r = 0.05 + 0.95 * torch.rand(m, generator=g)
        # 4 radians of sweep per arm (the CS231n spiral), arms evenly spaced around the origin
        theta = 2 * math.pi * c / k + 4 * r + noise * torch.randn(m, generator=g)
        parts.append(r[:, None] * torch.stack([torch.sin(theta), torch.cos(theta)], 1))
    return torch.cat(parts)


def _blobs(counts: list[int], noise: float, g: torch.Generator) -> torch.Tensor:
    """One Gaussian blob per class; noise = half the blob std, so it sets the overlap."""
    k = len(counts)
    # centres on a circle with neighbours 1.5 apart whatever k is; noise 0.2 -> std 0.4
    radius = 0.75 / math.sin(math.pi / k)
    parts = []
    for c, m in enumerate(counts):
        a = 2 * math.pi * c / k
        centre = torch.tensor([radius * math.cos(a), radius * math.sin(a)])
        parts.append(centre + 2 * noise * torch.randn(m, 2, generator=g))
    return torch.cat(parts)


@dataclass(frozen=True)
class _Found:
    """Where image data was found: a torchvision root, possibly after unpacking .gz files."""

    root: Path
    where: str
    unpack_from: dict[str, Path] | None = None  # IDX name -> file to unpack into root


@dataclass(frozen=True)
class ImageSpec(DatasetSpec):
    """A torchvision image dataset, converted once to normalised float tensors."""

    tv_class: str = ""  # torchvision.datasets class name; also MNIST's folder name
    layout: str = "idx"  # "idx" (MNIST family) or "cifar"
    shape: tuple[int, int, int] = (1, 28, 28)
    classes: tuple[str, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    flip: bool = False  # augmentation: mirror left-right (sensible for CIFAR only)
    pad: int = 2  # augmentation: random-crop padding
    system_dirs: tuple[str, ...] = ()  # folders a system package fills with the .gz IDX files
    apt_package: str = ""

    def in_shape(self, cfg: Any) -> tuple[int, ...]:
        return self.shape

    def class_names(self, cfg: Any) -> list[str]:
        return list(self.classes)

    def _layout_hint(self) -> str:
        if self.layout == "cifar":
            return f"<folder>/cifar-10-batches-py/{{{', '.join(_CIFAR_FILES)}}}"
        return f"<folder>/{self.tv_class}/raw/{{{', '.join(_IDX_FILES)}}} (each may end in .gz)"

    def missing_message(self, cfg: Any) -> str:
        """The one message that says how to get this dataset.

        Args:
            cfg: a DataConfig.
        Returns:
            The message text.
        """
        root = data_root(cfg).resolve()
        looked = [str(root / (self.tv_class + "/raw" if self.layout == "idx" else "cifar-10-batches-py"))]
        looked += list(self.system_dirs)
        msg = (f"{self.title} is not on this machine (looked in {' and '.join(looked)}). "
               f"To get it: (1) online, pass --download (or tick download in the dashboard) and "
               f"it is saved under {root}; or (2) put the files in a folder laid out as "
               f"{self._layout_hint()} and pass --data-dir <folder> or set KD_DATA_DIR=<folder>")
        if self.apt_package:
            msg += f"; or (3) on Debian, sudo apt-get install {self.apt_package}"
        return msg + "."

    def _find(self, cfg: Any) -> _Found | None:
        """Locate the data with a few stat calls; None when it is nowhere local."""
        root = data_root(cfg)
        if self.layout == "cifar":
            folder = root / "cifar-10-batches-py"
            if all((folder / f).is_file() for f in _CIFAR_FILES):
                return _Found(root, str(folder.resolve()))
            return None
        raw = root / self.tv_class / "raw"
        files = _idx_files(raw)
        if files is not None:
            if all(p.suffix != ".gz" for p in files.values()):
                return _Found(root, str(raw.resolve()))
            return _Found(_unpack_root(raw, self.tv_class), str(raw.resolve()), files)
        for d in self.system_dirs:
            files = _idx_files(Path(d))
            if files is not None:
                where = f"{d} (package {self.apt_package})" if self.apt_package else d
                return _Found(_unpack_root(Path(d), self.tv_class), where, files)
        return None

    def available(self, cfg: Any) -> tuple[bool, str]:
        found = self._find(cfg)
        if found is not None:
            return True, f"{self.title}: found in {found.where}"
        if cfg.download:
            return True, f"{self.title}: will be downloaded into {data_root(cfg).resolve()}"
        return False, self.missing_message(cfg)

    def load(self, cfg: Any) -> DataBundle:
        import torchvision.datasets as tvd

        found = self._find(cfg)
        if found is None:
            if not cfg.download:
                raise DataUnavailable(self.missing_message(cfg))
            root, where, download = data_root(cfg), f"downloaded into {data_root(cfg).resolve()}", True
        else:
            if found.unpack_from is not None:
                _unpack(found.unpack_from, found.root / self.tv_class / "raw")
            root, where, download = found.root, found.where, False
        cls = getattr(tvd, self.tv_class)
        try:
            train = cls(str(root), train=True, download=download)
            test = cls(str(root), train=False, download=download)
        except Exception as e:  # torchvision raises RuntimeError/URLError/OSError on a failed fetch
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            what = "Downloading" if download else "Reading"
            raise DataUnavailable(f"{what} {self.title} from {root} failed ({first}). "
                                  + self.missing_message(cfg)) from e
        x_pool, y_pool = self._tensors(train)
        x_test, y_test = self._tensors(test)
        tr, va = _split_pool(len(x_pool), cfg)
        augment = None
        if cfg.augment:
            black = tuple(-m / s for m, s in zip(self.mean, self.std))
            augment = functools.partial(augment_batch, flip=self.flip, pad=self.pad, fill=black)
        return DataBundle(
            name=self.name, kind="image",
            x_train=self._normalise(x_pool[tr]), y_train=y_pool[tr],
            x_val=self._normalise(x_pool[va]), y_val=y_pool[va],
            x_test=self._normalise(x_test), y_test=y_test,
            classes=list(self.classes), in_shape=self.shape, mean=self.mean, std=self.std,
            augment=augment, source=where)

    def _tensors(self, ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 [N, C, H, W] images and int64 labels from a torchvision dataset object."""
        if self.layout == "cifar":
            x = torch.from_numpy(ds.data).permute(0, 3, 1, 2)  # numpy HWC -> CHW
        else:
            x = ds.data.unsqueeze(1)
        y = torch.as_tensor(ds.targets, dtype=torch.int64)
        if tuple(x.shape[1:]) != self.shape:
            raise DataUnavailable(f"{self.title}: images have shape {tuple(x.shape[1:])}, "
                                  f"expected {self.shape}; the files are not {self.title}")
        return x, y

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        out = x.to(torch.float32, memory_format=torch.contiguous_format).div_(255)
        return out.sub_(mean).div_(std)


def _idx_files(folder: Path) -> dict[str, Path] | None:
    """Map each IDX file name to its file in ``folder`` (plain preferred to .gz); None if one is missing."""
    found = {}
    for name in _IDX_FILES:
        for p in (folder / name, folder / f"{name}.gz"):
            if p.is_file():
                found[name] = p
                break
        else:
            return None
    return found


def _unpack_root(source: Path, tv_class: str) -> Path:
    """Private torchvision root for the unpacked copy of one source folder's files."""
    key = hashlib.sha1(f"{source.resolve()}|{tv_class}".encode()).hexdigest()[:12]
    return cache_dir() / "idx" / key


def _unpack(files: dict[str, Path], raw: Path) -> None:
    """Copy (gunzipping .gz) each file into ``raw`` unless an up-to-date copy is there."""
    try:
        raw.mkdir(parents=True, exist_ok=True)
        for name, src in files.items():
            dst, st = raw / name, src.stat()
            # the copy carries the source's mtime, so any change to the source redoes it
            if dst.is_file() and dst.stat().st_mtime_ns == st.st_mtime_ns:
                continue
            tmp = raw / f".{name}.{os.getpid()}.tmp"
            opener = gzip.open if src.suffix == ".gz" else open
            with opener(src, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.replace(tmp, dst)  # atomic, so a concurrent load never reads half a file
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        source = next(iter(files.values())).parent
        raise DataUnavailable(f"could not unpack the files of {source} into {raw} ({e}); set "
                              "KD_CACHE_DIR to a writable folder") from e


# --------------------------------------------------------------------------------------------
# Registration: the order here is the order of dataset_names()

for _spec in (
    SyntheticSpec(name="moons", kind="2d", title="Two moons", generate=_moons,
                  fixed_classes=("upper moon", "lower moon")),
    SyntheticSpec(name="circles", kind="2d", title="Concentric circles", generate=_circles,
                  fixed_classes=("outer ring", "inner ring")),
    SyntheticSpec(name="spirals", kind="2d", title="Spirals", generate=_spirals, label="arm"),
    SyntheticSpec(name="blobs", kind="2d", title="Gaussian blobs", generate=_blobs, label="blob"),
    ImageSpec(name="fashion_mnist", kind="image", title="Fashion-MNIST", tv_class="FashionMNIST",
              classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                       "Sneaker", "Bag", "Ankle boot"),
              mean=(0.2860,), std=(0.3530,), flip=False, pad=2,
              system_dirs=(DEBIAN_FASHION_MNIST,), apt_package="dataset-fashion-mnist"),
    ImageSpec(name="mnist", kind="image", title="MNIST", tv_class="MNIST",
              classes=tuple(str(d) for d in range(10)), mean=(0.1307,), std=(0.3081,),
              flip=False, pad=2),
    ImageSpec(name="cifar10", kind="image", title="CIFAR-10", tv_class="CIFAR10", layout="cifar",
              shape=(3, 32, 32),
              classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                       "ship", "truck"),
              mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), flip=True, pad=4),
):
    DATASETS.register(_spec.name)(_spec)
del _spec


def dataset_names() -> list[str]:
    """Registered dataset names, synthetic sets first.

    Returns:
        A list of names for ``DataConfig.name``.
    """
    return DATASETS.names()


def load_data(cfg: Any) -> DataBundle:
    """Load the dataset that ``cfg`` names, split and subsampled as ``cfg`` says.

    Args:
        cfg: a DataConfig.
    Returns:
        A DataBundle on the CPU.
    Raises:
        ConfigError: unknown name or a split that cannot be made.
        DataUnavailable: image data neither on disk nor downloadable; the message says how to get it.
    """
    try:
        spec = DATASETS.get(cfg.name)
    except KeyError as e:
        raise ConfigError(f"data.name = {cfg.name!r}: {e.args[0]}") from None
    return spec.load(cfg)
