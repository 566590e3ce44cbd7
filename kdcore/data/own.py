"""Your own data: a folder of images in class subfolders, a zip of one, or a CSV table.

Two datasets are registered in ``DATASETS``:

``image_folder``  ``data.path`` is a folder in torchvision's ``ImageFolder`` layout,
    ``<path>/<class>/<image>`` (class = subfolder name, sorted), or ``<path>/train/<class>/...``
    plus ``<path>/test/<class>/...`` whose test folder is then the official test set; otherwise a
    seeded ``TEST_FRACTION`` of the images is. Every image is converted to grey (1 channel) or
    RGB (3; ``data.channels``, 0 = RGB if any class's first image has colour) and resized to
    ``data.image_size`` squared. When the decoded set fits ``data.memory_mb`` it is held in
    memory as one float tensor, like the built-in sets; otherwise it is streamed: each batch is
    decoded from disk when the trainer asks for it (``x[idx]``, so cached teacher logits still line
    up by index). Decoding, of a streamed batch or of a whole set, goes through a
    ``torch.utils.data.DataLoader`` whose worker processes (``$KD_DATA_WORKERS``, default 2, 0 =
    none) decode the request's chunks in order; idle workers are shut down after a minute.
    Normalisation: per channel, with the training split's mean and std.

``csv``  ``data.path`` is a CSV file: the class in ``data.label_column`` (any values, named by
    their text, sorted), features in ``data.feature_columns`` (empty: every numeric column but the
    label). Split as above; features standardised with the training split's mean and std only.

A file that cannot be used raises :class:`~kdcore.errors.ConfigError` naming the file and the
problem (an unreadable image, a single class, missing labels, a non-numeric feature), before
anything is trained or stored.

:func:`extract_zip` unpacks an uploaded zip safely: into a fresh folder that is renamed into
place only when every entry passed (no absolute paths, no ``..``, no links, a bounded number of
files and bytes, checked while copying, not only from the zip's own header).
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import io
import math
import os
import queue
import re
import shutil
import stat
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from ..budget import DataSize, limit, refuse
from . import DataBundle, DatasetSpec, _split_pool
from ..errors import ConfigError
from ..registry import DATASETS

__all__ = ["ImageFolderSpec", "CsvSpec", "StreamedImages", "extract_zip", "data_root_choices",
           "resolve_in_data_root", "DATA_ROOT_ENV", "IMAGE_EXTENSIONS", "TEST_FRACTION",
           "MAX_ZIP_FILES", "MAX_ZIP_BYTES", "scan_image_folder", "uploads_dir", "save_csv_upload",
           "save_zip_upload", "resolve_source", "source_of", "MAX_CSV_BYTES", "data_workers", "close_decoders",
           "DATA_WORKERS_ENV"]

DATA_ROOT_ENV = "KD_DATA_ROOT"  # the only server folder whose data the dashboard offers
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
TEST_FRACTION = 0.2  # share held out as the test set when the folder has no test/ split
MAX_ZIP_FILES = 100_000  # entries in an uploaded zip
MAX_ZIP_BYTES = 2 * 2**30  # unpacked bytes of an uploaded zip
STATS_SAMPLE = 2000  # streamed sets: training images the mean/std are measured on
BATCH_FLOOR_IMAGES = 1024  # streamed sets: a selection of up to this many images is a batch, decoded
BATCH_FLOOR_BYTES = 256 * 2**20  # ... or up to this many decoded bytes, whichever allows more
DATA_WORKERS_ENV = "KD_DATA_WORKERS"  # decode processes; 0 decodes in the calling thread
DEFAULT_DATA_WORKERS = 2  # a shared server's few cores also train: two decoders keep a batch coming
MAX_DATA_WORKERS = 8
DECODE_CHUNK = 256  # most images one worker decodes per task: a batch splits over every worker
DECODE_TIMEOUT_S = 120.0  # a worker silent this long is taken as hung: the request fails, it is stopped
DECODE_IDLE_S = 60.0  # workers idle this long are shut down; the next request starts new ones
READ_AHEAD = 2  # streamed training batches decoded ahead of the step that asks for them (0: none)
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "P;L")


# --------------------------------------------------------------------------------------------
# Image folders: listing


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _subdirs(p: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(p) if e.is_dir(follow_symlinks=False)
                      and not e.name.startswith(".") and e.name != "__MACOSX")
    except OSError as e:
        raise ConfigError(f"data.path {str(p)!r} cannot be read ({e.strerror or e})") from None


def _layout_root(path: Path) -> Path:
    """The folder holding the class (or train/test) subfolders: ``path``, or its single subfolder
    when it holds nothing else (a zip of one top folder)."""
    subs = _subdirs(path)
    files = [e for e in os.scandir(path) if e.is_file() and _is_image(e.name)]
    if len(subs) == 1 and not files and _subdirs(path / subs[0]):
        return path / subs[0]
    return path


@dataclass(frozen=True)
class _Scan:
    """What an image folder holds: class names, and (file, label) per split."""

    root: Path
    classes: tuple[str, ...]
    pool: tuple[tuple[str, int], ...]  # training pool (train + val)
    test: tuple[tuple[str, int], ...]  # the official test split, or () when drawn from the pool
    channels: int  # 1 or 3, from the first image of each class


def _class_files(folder: Path, classes: list[str]) -> list[tuple[str, int]]:
    out = []
    for label, c in enumerate(classes):
        d = folder / c
        try:
            names = sorted(e.name for e in os.scandir(d) if e.is_file(follow_symlinks=False) and _is_image(e.name))
        except OSError as e:
            raise ConfigError(f"class folder {str(d)!r} cannot be read ({e.strerror or e})") from None
        out += [(str(d / n), label) for n in names]
    return out


def _image_channels(files: list[str]) -> int:
    from PIL import Image

    for f in files:
        try:
            with Image.open(f) as im:
                if im.mode not in _GREY_MODES:
                    return 3
        except Exception as e:  # noqa: BLE001  (PIL raises many kinds; all mean "not an image")
            raise ConfigError(f"image {f!r} cannot be read: {_first_line(e)}") from None
    return 1


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines()[0][:200] if s else type(e).__name__)


@functools.lru_cache(maxsize=16)
def _scan_cached(path: str, mtime_ns: int) -> _Scan:
    root = _layout_root(Path(path))
    subs = _subdirs(root)
    split = "train" in subs and "test" in subs and _subdirs(root / "train")
    if split:
        classes = _subdirs(root / "train")
        extra = sorted(set(_subdirs(root / "test")) - set(classes))
        if extra:
            raise ConfigError(f"{str(root / 'test')!r} has class folder(s) {', '.join(extra)} that "
                              f"{str(root / 'train')!r} lacks; the test classes must be training classes")
        pool = _class_files(root / "train", classes)
        test = _class_files(root / "test", classes)
    else:
        classes = subs
        pool, test = _class_files(root, classes), []
    if len(classes) < 2:
        raise ConfigError(f"data.path {path!r} has {len(classes)} class folder(s) "
                          f"({', '.join(classes) or 'none'}); an image folder needs at least 2, laid out "
                          "as <folder>/<class>/<image> (torchvision ImageFolder)")
    counts = [0] * len(classes)
    for _, y in pool:
        counts[y] += 1
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise ConfigError(f"class folder(s) {', '.join(repr(c) for c in empty[:5])} in {str(root)!r} "
                          f"hold no images ({', '.join(IMAGE_EXTENSIONS)}); every class needs some")
    firsts, seen = [], set()
    for f, y in pool:
        if y not in seen:
            seen.add(y)
            firsts.append(f)
    return _Scan(root, tuple(classes), tuple(pool), tuple(test), _image_channels(firsts))


def scan_image_folder(path: str) -> _Scan:
    """List an image folder (cached until the folder's modification time changes).

    Raises:
        ConfigError: no such folder, fewer than two classes, an empty class, an unreadable first image.
    """
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ConfigError(f"data.path {path!r} is not a folder; image_folder needs a folder of class "
                          "subfolders (<folder>/<class>/<image>)")
    st = p.stat()
    return _scan_cached(str(p.resolve()), st.st_mtime_ns)


# --------------------------------------------------------------------------------------------
# Decoding


def _decode(path: str, size: int, channels: int):
    """One image as uint8 numpy [C, size, size]; ConfigError naming the file if it cannot be read.

    ``size`` 0 only opens the file (its header is read): shape [C, 0, 0].
    """
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            if size == 0:
                return np.empty((channels, 0, 0), dtype=np.uint8)
            im = im.convert("L" if channels == 1 else "RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # noqa: BLE001  (truncated, not an image, unsupported...)
        raise ConfigError(f"image {path!r} cannot be read: {_first_line(e)}") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def data_workers() -> int:
    """Decode processes in force: ``$KD_DATA_WORKERS`` (0 = decode in the calling thread), else 2.

    Raises:
        ConfigError: the variable is not an integer in [0, MAX_DATA_WORKERS].
    """
    raw = os.environ.get(DATA_WORKERS_ENV, "").strip()
    if not raw:
        return min(DEFAULT_DATA_WORKERS, os.cpu_count() or 1)
    if not raw.isdigit() or int(raw) > MAX_DATA_WORKERS:
        raise ConfigError(f"{DATA_WORKERS_ENV} = {raw!r} is not allowed; it must be an integer in "
                          f"[0, {MAX_DATA_WORKERS}] (0 = decode in the training thread)")
    return int(raw)


class _ImageFiles(torch.utils.data.Dataset):
    """Keys ``(path, size, channels)`` -> uint8 [C, size, size]. A file that cannot be read gives
    its one-line message (a str) instead of raising, so the DataLoader does not wrap it in a
    worker traceback."""

    def __getitem__(self, key):
        try:
            return _decode(*key)
        except ConfigError as e:
            return str(e)


def _collate(items: list):
    """A chunk's images stacked into one uint8 tensor (shared memory), or the first file's message."""
    import numpy as np

    bad = next((i for i in items if isinstance(i, str)), None)
    return bad if bad is not None else torch.from_numpy(np.stack(items))


class _Chunks:
    """The DataLoader's batch sampler: the chunks of the request in progress. Each ``iter()`` of
    the loader reads it afresh, so one loader (and its persistent workers) serves every request."""

    def __init__(self) -> None:
        self.chunks: list[list[tuple[str, int, int]]] = []

    def __iter__(self):
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


class _Decoder:
    """One process's image decoding: a ``DataLoader`` whose worker processes decode the chunks of
    each request, in order (so a batch comes back exactly as the in-memory set would hold it).

    Requests are served one at a time (a lock); workers persist between requests and are shut
    down after DECODE_IDLE_S without one, on an error or a timeout, and by :func:`close_decoders`.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._chunks = _Chunks()
        self._loader = None
        self._last = 0.0  # when the last request ended (time.monotonic)
        self._reaper: threading.Thread | None = None  # shuts idle workers down; one while they live

    def _make_loader(self):
        from torch.utils.data import DataLoader

        kw: dict = {}
        if self.workers:
            # persistent: a worker is forked once per busy period, not once per batch; timeout: a hung
            # or stalled worker fails the request instead of blocking the run forever
            kw = {"persistent_workers": True, "timeout": DECODE_TIMEOUT_S, "prefetch_factor": 2}
        return DataLoader(_ImageFiles(), batch_sampler=self._chunks, num_workers=self.workers,
                          collate_fn=_collate, **kw)

    def decode(self, files: list[str], size: int, channels: int) -> torch.Tensor:
        n = len(files)
        out = torch.empty((n, channels, size, size), dtype=torch.uint8)
        if n == 0:
            return out
        per = max(1, min(DECODE_CHUNK, math.ceil(n / (2 * max(self.workers, 1)))))
        with self._lock:
            if self._loader is None:
                self._loader = self._make_loader()
            self._chunks.chunks = [[(f, size, channels) for f in files[i:i + per]] for i in range(0, n, per)]
            at = 0
            try:
                for part in self._loader:
                    if isinstance(part, str):
                        raise ConfigError(part)
                    out[at:at + len(part)] = part
                    at += len(part)
            except ConfigError:
                self._shutdown()  # the rest of this request is still queued in the workers
                raise
            except (RuntimeError, OSError) as e:  # a worker killed, hung past the timeout, or unable to start
                self._shutdown()
                raise RuntimeError(f"decoding {n} images failed ({_first_line(e)}); the decode workers "
                                   f"were stopped (set {DATA_WORKERS_ENV}=0 to decode without them)") from None
            finally:
                self._chunks.chunks = []
            self._last = time.monotonic()
            if self.workers and self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="kd-decode-idle", daemon=True)
                self._reaper.start()
        return out

    def _reap(self) -> None:
        """Shut the workers down once no request came for DECODE_IDLE_S, then end."""
        while True:
            with self._lock:
                left = self._last + DECODE_IDLE_S - time.monotonic()
                if self._loader is None or left <= 0:
                    self._shutdown()
                    self._reaper = None
                    return
            time.sleep(min(max(left, 0.05), 1.0))  # at least once a second: close() may have reset it

    def _shutdown(self) -> None:
        loader, self._loader = self._loader, None
        it = getattr(loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()  # joins the workers now, rather than whenever it is collected

    def close(self) -> None:
        with self._lock:
            self._shutdown()


_DECODER: list[_Decoder] = []
_DECODER_LOCK = threading.Lock()


def _decoder() -> _Decoder:
    import multiprocessing

    # a daemonic process (someone else's worker) may not start processes: it decodes in its own thread
    workers = 0 if multiprocessing.current_process().daemon else data_workers()
    with _DECODER_LOCK:
        d = _DECODER[0] if _DECODER else None
        if d is not None and d.pid == os.getpid() and d.workers == workers:
            return d
        if d is not None and d.pid == os.getpid():
            d.close()
        # (a decoder inherited through fork belongs to the parent: its workers are not ours to stop)
        _DECODER[:] = [_Decoder(workers)]
        return _DECODER[0]


def close_decoders() -> None:
    """Shut this process's decode workers down now (a later decode starts new ones)."""
    with _DECODER_LOCK:
        d = _DECODER[0] if _DECODER and _DECODER[0].pid == os.getpid() else None
    if d is not None:
        d.close()


atexit.register(close_decoders)


def _decode_many(files, size: int, channels: int) -> torch.Tensor:
    """uint8 [N, C, size, size] of ``files``, decoded by the DataLoader's worker processes."""
    return _decoder().decode(list(files), size, channels)


def _channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images [N, C, H, W] scaled to [0, 1], in chunks (float64 sums)."""
    c = x.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, len(x), chunk):
        part = x[i:i + chunk].to(torch.float64).div_(255)
        s += part.sum(dim=(0, 2, 3))
        s2 += part.square_().sum(dim=(0, 2, 3))
    n = max(len(x) * x.shape[2] * x.shape[3], 2)
    mean = s / n
    var = ((s2 - n * mean.square()) / (n - 1)).clamp_min(1e-12)
    return tuple(mean.tolist()), tuple(var.sqrt().clamp_min(1e-6).tolist())


def _normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return x.to(torch.float32).div_(255).sub_(m).div_(s)


class _ReadAhead:
    """Decodes a list of index batches in a thread, in order, at most ``depth`` of them waiting to
    be taken. It stops when cancelled, after the last batch, after a decode error (which the step
    asking for that batch raises) or when nothing was taken for DECODE_IDLE_S."""

    def __init__(self, images: "StreamedImages", batches: list[torch.Tensor], depth: int) -> None:
        self.images, self.batches, self.taken = images, batches, 0
        self.ready: queue.Queue = queue.Queue(maxsize=depth)
        self.cancelled = threading.Event()
        self.thread = threading.Thread(target=self._decode_all, name="kd-read-ahead", daemon=True)
        self.thread.start()

    def _decode_all(self) -> None:
        for idx in self.batches:
            if self.cancelled.is_set():
                return
            try:
                item: Any = self.images._tensor([self.images.files[i] for i in idx.tolist()])
            except Exception as e:  # raised by the step that asks for this batch
                item = e
            waited = 0.0
            while not self.cancelled.is_set():
                try:
                    self.ready.put(item, timeout=0.5)
                    break
                except queue.Full:
                    waited += 0.5
                    if waited >= DECODE_IDLE_S:  # the trainer went away without cancelling
                        self.cancelled.set()
            if isinstance(item, Exception):
                return

    def take(self, idx: torch.Tensor) -> torch.Tensor | None:
        """The next batch if ``idx`` is it (waiting for its decode), else None; anything but the
        next batch cancels the rest."""
        if self.taken >= len(self.batches) or not torch.equal(idx, self.batches[self.taken]):
            self.cancelled.set()
            return None
        self.taken += 1
        while True:
            try:
                item = self.ready.get(timeout=1.0)
                break
            except queue.Empty:
                if not self.thread.is_alive():  # it never ends without queueing this batch: defensive
                    self.cancelled.set()
                    return None
        if isinstance(item, Exception):
            raise item
        return item


class StreamedImages:
    """Images on disk that index like a float tensor [N, C, S, S], decoded when indexed.

    ``x[idx]`` (index tensor, bool mask, list, slice) returns a normalised float tensor when the
    result fits ``budget_bytes``, else another ``StreamedImages`` over those files; an int gives
    one image. ``torch.cat`` of streamed sets is a streamed set. ``to(device)`` keeps them on the
    CPU: the trainer moves each batch. :meth:`read_ahead` decodes the coming training batches
    while the model trains on the current one.
    """

    def __init__(self, files: list[str], *, size: int, channels: int, mean, std, budget_bytes: int):
        self.files = list(files)
        self.size, self.channels = size, channels
        self.mean, self.std = tuple(mean), tuple(std)
        self.budget_bytes = budget_bytes
        self._ahead: _ReadAhead | None = None

    def read_ahead(self, batches: list[torch.Tensor] | None) -> None:
        """Decode ``batches`` (CPU index tensors, in the order ``x[idx]`` will ask for them) ahead,
        up to READ_AHEAD of them (fewer if that many would not fit ``budget_bytes``); ``None``
        drops what is left. A batch comes back bit-for-bit as ``x[idx]`` without it would."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.cancelled.set()
        if not batches or READ_AHEAD <= 0:
            return
        depth = min(READ_AHEAD, self.budget_bytes // max(1, max(len(b) for b in batches) * self.size_of_one()))
        if depth >= 1:
            self._ahead = _ReadAhead(self, batches, depth)

    def _like(self, files: list[str]) -> "StreamedImages":
        return StreamedImages(files, size=self.size, channels=self.channels, mean=self.mean,
                              std=self.std, budget_bytes=self.budget_bytes)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), self.channels, self.size, self.size))

    dtype = torch.float32
    device = torch.device("cpu")

    def dim(self) -> int:
        return 4

    def size_of_one(self) -> int:
        return self.channels * self.size * self.size * 4

    def numel(self) -> int:
        # a streamed set never counts as fitting a device's memory (the trainer's resident-data
        # check multiplies numel by element_size): it stays on disk and goes batch by batch
        return 1 << 62

    def element_size(self) -> int:
        return 4

    def to(self, *args, **kwargs) -> "StreamedImages":
        return self

    def __getitem__(self, key) -> Any:
        ahead = self._ahead
        if ahead is not None and isinstance(key, torch.Tensor):
            batch = ahead.take(key)
            if batch is not None:
                return batch
            self._ahead = None  # asked for something else: the read-ahead is over
        if isinstance(key, int):
            return self._tensor([self.files[key]])[0]
        if isinstance(key, slice):
            files = self.files[key]
        else:
            idx = torch.as_tensor(key)
            if idx.dim() == 0:  # a 0-d tensor or numpy integer: one image
                return self._tensor([self.files[int(idx)]])[0]
            if idx.dtype == torch.bool:
                idx = idx.nonzero().flatten()
            files = [self.files[i] for i in idx.tolist()]
        if len(files) * self.size_of_one() > self.budget_bytes:
            return self._like(files)
        return self._tensor(files)

    def _tensor(self, files: list[str]) -> torch.Tensor:
        return _normalise(_decode_many(files, self.size, self.channels), self.mean, self.std)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.cat and not kwargs and all(isinstance(a, cls) for a in args[0]):
            parts = args[0]
            return parts[0]._like([f for p in parts for f in p.files])
        return NotImplemented

    def __repr__(self) -> str:
        return f"StreamedImages({len(self.files)} files, {self.channels}x{self.size}x{self.size})"


# --------------------------------------------------------------------------------------------
# Specs


def _test_split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (pool, test) index tensors when a dataset has no official test set."""
    n_test = math.floor(TEST_FRACTION * n)
    if n_test < 1 or n - n_test < 2:
        raise ConfigError(f"the data has {n} samples; at least 10 are needed for a train/val/test split")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 104729))
    return perm[n_test:].sort().values, perm[:n_test].sort().values


def _need_path(cfg: Any, what: str) -> str:
    path = getattr(cfg, "path", "") or ""
    if not path:
        raise ConfigError(f"data.path is empty; dataset {cfg.name!r} needs {what} "
                          f"(--set data.path=...)")
    return path


@dataclass(frozen=True)
class ImageFolderSpec(DatasetSpec):
    """Images in class subfolders; see the module docstring."""

    def _scan(self, cfg: Any) -> _Scan | None:
        return scan_image_folder(cfg.path) if getattr(cfg, "path", "") else None

    def in_shape(self, cfg: Any) -> tuple[int, ...]:
        s = self._scan(cfg)
        c = cfg.channels or (s.channels if s is not None else 3)
        return (c, cfg.image_size, cfg.image_size)

    def class_names(self, cfg: Any) -> list[str]:
        s = self._scan(cfg)
        # without a path (a form not filled in yet) two placeholder classes let models be listed
        return list(s.classes) if s is not None else ["class 0", "class 1"]

    def available(self, cfg: Any) -> tuple[bool, str]:
        if not getattr(cfg, "path", ""):
            return False, "Choose a folder of images in class subfolders (or upload a zip of one)."
        try:
            s = scan_image_folder(cfg.path)
        except ConfigError as e:
            return False, str(e)
        test = f", {len(s.test)} in test/" if s.test else ""
        return True, (f"{len(s.pool)} images in {len(s.classes)} classes{test} in {s.root}, "
                      f"read as {s.channels if not cfg.channels else cfg.channels}x"
                      f"{cfg.image_size}x{cfg.image_size}")

    def data_size(self, cfg: Any) -> DataSize:
        """What :meth:`load` will read, counted from the folder's listing (no image is decoded)."""
        s = scan_image_folder(_need_path(cfg, "a folder of images in class subfolders"))
        n_pool, n_test = len(s.pool), len(s.test)
        if not s.test:
            n_test = math.floor(TEST_FRACTION * n_pool)
            n_pool -= n_test
        n_val = round(cfg.val_fraction * n_pool)
        train = n_pool - n_val
        if cfg.train_subset:
            train = min(train, cfg.train_subset)
        n = train + n_val + n_test
        decoded = n * (cfg.channels or s.channels) * cfg.image_size ** 2 * 4
        held = decoded if decoded <= int(cfg.memory_mb) * 2**20 else 0  # else streamed, as load decides
        return DataSize(n, train, math.ceil(held / 2**20), f"images in data.path {cfg.path!r}")

    def load(self, cfg: Any) -> DataBundle:
        path = _need_path(cfg, "a folder of images in class subfolders")
        s = scan_image_folder(path)
        c = cfg.channels or s.channels
        size = cfg.image_size
        pool, test = list(s.pool), list(s.test)
        if not test:
            p_idx, t_idx = _test_split(len(pool), cfg.seed)
            pool, test = [pool[i] for i in p_idx.tolist()], [pool[i] for i in t_idx.tolist()]
        tr, va = _split_pool(len(pool), cfg)
        parts = {"train": [pool[i] for i in tr.tolist()], "val": [pool[i] for i in va.tolist()],
                 "test": test}
        n_all = sum(len(v) for v in parts.values())
        per_image = c * size * size * 4
        budget = int(cfg.memory_mb) * 2**20
        ys = {k: torch.tensor([y for _, y in v], dtype=torch.int64) for k, v in parts.items()}
        if n_all * per_image <= budget:
            raw = {k: _decode_many([f for f, _ in v], size, c) for k, v in parts.items()}
            mean, std = _channel_stats(raw["train"])
            xs = {}
            for k in list(raw):  # one split at a time, so uint8 and float copies never all coexist
                xs[k] = _normalise(raw.pop(k), mean, std)
            how = "held in memory"
        else:
            train_files = [f for f, _ in parts["train"]]
            g = torch.Generator().manual_seed(cfg.seed)
            pick = torch.randperm(len(train_files), generator=g)[:STATS_SAMPLE].tolist()
            mean, std = _channel_stats(_decode_many([train_files[i] for i in pick], size, c))
            # every file opens (its header is read), so a non-image fails now, not mid-epoch
            _check_headers([f for v in parts.values() for f, _ in v], c)
            # what one indexing may decode into a tensor: any batch the trainer or an evaluation
            # asks for (BATCH_FLOOR_IMAGES, or BATCH_FLOOR_BYTES of small images), a quarter of the
            # budget when that is more; a larger selection (a subset of the set) stays streamed
            limit = max(budget // 4, BATCH_FLOOR_BYTES, BATCH_FLOOR_IMAGES * per_image)
            xs = {k: StreamedImages([f for f, _ in v], size=size, channels=c, mean=mean, std=std,
                                    budget_bytes=limit)
                  for k, v in parts.items()}
            how = (f"streamed from disk ({n_all * per_image / 2**20:.0f} MiB decoded > "
                   f"data.memory_mb = {cfg.memory_mb})")
        return DataBundle(
            name=self.name, kind="image", x_train=xs["train"], y_train=ys["train"],
            x_val=xs["val"], y_val=ys["val"], x_test=xs["test"], y_test=ys["test"],
            classes=list(s.classes), in_shape=(c, size, size), mean=mean, std=std,
            augment=None, source=f"{s.root} ({n_all} images, {how})")


def _check_headers(files: list[str], channels: int) -> None:
    """Open every file (its header is read, nothing decoded), so a non-image fails before training."""
    _decode_many(files, 0, channels)


def _csv_shape(path: str) -> tuple[int, int]:
    """(data rows, columns) of a CSV file from its line breaks and header, without parsing it."""
    import csv

    with open(path, "rb") as f:
        header = f.readline()
        rows, last = 0, b""
        while chunk := f.read(1 << 20):
            rows += chunk.count(b"\n")
            last = chunk
    if last and not last.endswith(b"\n"):
        rows += 1  # a last row without a line break
    cols = next(csv.reader([header.decode("utf-8", "replace")]), [])
    return rows, len(cols)


@functools.lru_cache(maxsize=4)
def _read_csv_cached(path: str, mtime_ns: int, size: int):
    import pandas as pd

    try:
        rows, cols = _csv_shape(path)
    except OSError as e:
        raise ConfigError(f"CSV file {path!r} cannot be read: {_first_line(e)}") from None
    # counted before pandas parses it: a huge table never reaches memory
    if rows > limit("data_samples"):
        raise refuse(f"rows in CSV file {Path(path).name!r}", rows, "data_samples", "use a smaller table")
    parsed_mb = math.ceil(rows * cols * 8 / 2**20)  # pandas keeps 8 bytes a cell (a float64 or a pointer)
    if parsed_mb > limit("data_mb"):
        raise refuse(f"CSV file {Path(path).name!r} parsed ({rows:,} rows x {cols} columns, MB)", parsed_mb,
                     "data_mb", "use fewer rows or columns")
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ConfigError(f"CSV file {path!r} cannot be read: {_first_line(e)}") from None


def _read_csv(path: str):
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"data.path {path!r} is not a file; the csv dataset needs a CSV table")
    st = p.stat()
    return _read_csv_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


@dataclass(frozen=True)
class _Table:
    x: torch.Tensor  # float32 [N, D], raw
    y: torch.Tensor  # int64 [N]
    classes: tuple[str, ...]
    features: tuple[str, ...]


@functools.lru_cache(maxsize=4)
def _table_cached(path: str, mtime_ns: int, size: int, label: str, features: tuple[str, ...]) -> _Table:
    import pandas as pd

    df = _read_csv_cached(path, mtime_ns, size)
    name = Path(path).name
    if label not in df.columns:
        raise ConfigError(f"CSV file {name!r} has no label column {label!r}; its columns are "
                          f"{', '.join(map(str, df.columns[:20]))} (set data.label_column)")
    if features:
        missing = [c for c in features if c not in df.columns]
        if missing:
            raise ConfigError(f"CSV file {name!r} has no column(s) {', '.join(map(repr, missing))} named "
                              "in data.feature_columns")
        if label in features:
            raise ConfigError(f"data.feature_columns includes the label column {label!r}")
        cols = list(features)
        bad = [c for c in cols if not pd.api.types.is_numeric_dtype(df[c])]
        if bad:
            raise ConfigError(f"CSV file {name!r}: feature column(s) {', '.join(map(repr, bad))} are not "
                              "numeric; features must be numbers")
    else:
        cols = [c for c in df.columns if c != label and pd.api.types.is_numeric_dtype(df[c])
                and not pd.api.types.is_bool_dtype(df[c])]
        if not cols:
            raise ConfigError(f"CSV file {name!r} has no numeric column besides the label {label!r}")
    lab = df[label]
    missing_rows = lab.isna().to_numpy().nonzero()[0]
    if len(missing_rows):
        rows = ", ".join(str(r + 2) for r in missing_rows[:5])  # +2: header line, 1-based
        raise ConfigError(f"CSV file {name!r}: {len(missing_rows)} row(s) have no label in column "
                          f"{label!r} (line(s) {rows}); every row needs one")
    feats = df[cols]
    nan = feats.isna().to_numpy()
    if nan.any():
        r, c = map(int, nan.nonzero()[0][:1].tolist() + nan.nonzero()[1][:1].tolist())
        raise ConfigError(f"CSV file {name!r}: {int(nan.sum())} missing feature value(s), the first in "
                          f"column {cols[c]!r} on line {r + 2}; fill them or drop those rows")
    text = lab.astype(str)
    classes = sorted(text.unique().tolist(), key=lambda v: (len(v), v) if v.lstrip("-").isdigit() else (1e9, v))
    if len(classes) < 2:
        raise ConfigError(f"CSV file {name!r}: column {label!r} holds one class only "
                          f"({classes[0] if classes else 'none'}); classification needs at least 2")
    index = {c: i for i, c in enumerate(classes)}
    x = torch.tensor(feats.to_numpy(dtype="float64"), dtype=torch.float32)
    if not torch.isfinite(x).all():
        raise ConfigError(f"CSV file {name!r}: a feature value is infinite; features must be finite numbers")
    y = torch.tensor([index[v] for v in text], dtype=torch.int64)
    return _Table(x, y, tuple(classes), tuple(map(str, cols)))


def _table(cfg: Any) -> _Table:
    path = _need_path(cfg, "a CSV file")
    _read_csv(path)  # the missing-file message
    p = Path(path).expanduser().resolve()
    st = p.stat()
    return _table_cached(str(p), st.st_mtime_ns, st.st_size, cfg.label_column, tuple(cfg.feature_columns))


@dataclass(frozen=True)
class CsvSpec(DatasetSpec):
    """A CSV table of numeric features and a label column; see the module docstring."""

    def in_shape(self, cfg: Any) -> tuple[int, ...]:
        if not getattr(cfg, "path", ""):
            return (max(len(cfg.feature_columns), 2),)
        return (len(_table(cfg).features),)

    def class_names(self, cfg: Any) -> list[str]:
        if not getattr(cfg, "path", ""):
            return ["class 0", "class 1"]
        return list(_table(cfg).classes)

    def available(self, cfg: Any) -> tuple[bool, str]:
        if not getattr(cfg, "path", ""):
            return False, "Choose a CSV file with numeric feature columns and a label column."
        try:
            t = _table(cfg)
        except ConfigError as e:
            return False, str(e)
        return True, (f"{len(t.y)} rows, {len(t.features)} features, {len(t.classes)} classes "
                      f"(label column {cfg.label_column!r})")

    def data_size(self, cfg: Any) -> DataSize:
        """Rows and training rows of the table (its size was checked before pandas parsed it)."""
        t = _table(cfg)
        n_pool = len(t.y) - math.floor(TEST_FRACTION * len(t.y))
        train = n_pool - round(cfg.val_fraction * n_pool)
        if cfg.train_subset:
            train = min(train, cfg.train_subset)
        return DataSize(len(t.y), train, math.ceil(t.x.numel() * 4 / 2**20), f"rows in data.path {cfg.path!r}")

    def load(self, cfg: Any) -> DataBundle:
        t = _table(cfg)
        p_idx, t_idx = _test_split(len(t.y), cfg.seed)
        tr, va = _split_pool(len(p_idx), cfg)
        tr, va = p_idx[tr], p_idx[va]
        x_train = t.x[tr]
        # training statistics only, so validation and test leak nothing into the scaling
        mean, std = x_train.mean(0), x_train.std(0).nan_to_num(1.0).clamp_min(1e-8)

        def norm(v: torch.Tensor) -> torch.Tensor:
            return ((v - mean) / std).contiguous()

        return DataBundle(
            name=self.name, kind="table", x_train=norm(x_train), y_train=t.y[tr],
            x_val=norm(t.x[va]), y_val=t.y[va], x_test=norm(t.x[t_idx]), y_test=t.y[t_idx],
            classes=list(t.classes), in_shape=(len(t.features),), mean=tuple(mean.tolist()),
            std=tuple(std.tolist()), augment=None,
            source=f"{cfg.path} ({len(t.y)} rows; features {', '.join(t.features[:8])}"
                   + (", ..." if len(t.features) > 8 else "") + ")")


DATASETS.register("image_folder")(ImageFolderSpec(name="image_folder", kind="image",
                                                  title="Your images (folder of class subfolders)"))
DATASETS.register("csv")(CsvSpec(name="csv", kind="table", title="Your table (CSV)"))


# --------------------------------------------------------------------------------------------
# The dashboard's sources: folders under the data root, uploaded zips


def data_root_choices(root: str | None = None) -> dict[str, str]:
    """What the dashboard may offer under ``$KD_DATA_ROOT``: name -> kind ("image_folder" or "csv").

    Only the root's own entries: folders with at least two subfolders, and ``.csv`` files. Nothing
    outside the root is ever listed; an unset root offers nothing.
    """
    root = root if root is not None else os.environ.get(DATA_ROOT_ENV, "")
    if not root or not os.path.isdir(root):
        return {}
    out = {}
    for e in sorted(os.scandir(root), key=lambda e: e.name):
        if e.name.startswith("."):
            continue
        if e.is_dir(follow_symlinks=False):
            try:
                if len(_subdirs(_layout_root(Path(e.path)))) >= 2:
                    out[e.name] = "image_folder"
            except (ConfigError, OSError):
                continue
        elif e.is_file(follow_symlinks=False) and e.name.lower().endswith(".csv"):
            out[e.name] = "csv"
    return out


def resolve_in_data_root(name: str, root: str | None = None) -> str:
    """The path of entry ``name`` of the data root, refusing anything not listed there.

    Raises:
        ConfigError: no data root configured, or ``name`` is not one of its entries.
    """
    root = root if root is not None else os.environ.get(DATA_ROOT_ENV, "")
    if not root:
        raise ConfigError(f"no data root is configured; the server's operator sets {DATA_ROOT_ENV}")
    if name not in data_root_choices(root):
        raise ConfigError(f"{name!r} is not a dataset in the data root; choose one of the folders listed")
    path = (Path(root) / name).resolve()
    if path.parent != Path(root).resolve():
        raise ConfigError(f"{name!r} is not a dataset in the data root")
    return str(path)


def _bad_member(name: str, why: str) -> ConfigError:
    return ConfigError(f"zip entry {name!r} is refused: {why}; nothing was unpacked")


def extract_zip(source: bytes | str | os.PathLike, dest_parent: str | os.PathLike, *,
                max_files: int = MAX_ZIP_FILES, max_bytes: int = MAX_ZIP_BYTES) -> Path:
    """Unpack a zip of an image folder into ``dest_parent/<sha256 of the zip>`` and return that folder.

    Every entry is checked before its bytes are written, and the whole zip is unpacked into a
    temporary folder that replaces nothing: it is renamed into place only when all entries
    passed, so a refused zip leaves nothing behind and an earlier upload is never touched.
    The same zip uploaded again returns the folder already there.

    Args:
        source: the zip's bytes or its path. dest_parent: the folder holding unpacked uploads.
        max_files: most file entries accepted. max_bytes: most bytes unpacked in all (counted
            while copying, so a header that understates sizes does not get past it).
    Returns:
        The unpacked folder.
    Raises:
        ConfigError: not a zip, an absolute or ``..`` path, a link, too many files, too many bytes,
            or a corrupt entry; the message names the entry.
    """
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()[:24]
    parent = Path(dest_parent)
    final = parent / digest
    if final.is_dir():
        return final
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, ValueError) as e:
        raise ConfigError(f"the upload is not a zip file ({_first_line(e)})") from None
    with zf:
        infos = zf.infolist()
        files = [i for i in infos if not i.is_dir()]
        if len(files) > max_files:
            raise ConfigError(f"the zip holds {len(files)} files; at most {max_files} are accepted")
        declared = sum(i.file_size for i in files)
        if declared > max_bytes:
            raise ConfigError(f"the zip unpacks to {declared / 2**20:.0f} MiB; at most "
                              f"{max_bytes / 2**20:.0f} MiB are accepted")
        members = []
        for info in infos:
            name = info.filename
            if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
                raise _bad_member(name, "absolute paths (and backslashes) are not allowed")
            parts = PurePosixPath(name).parts
            if any(p == ".." for p in parts):
                raise _bad_member(name, "'..' would leave the target folder")
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise _bad_member(name, "links are not allowed")
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: written without a type
                raise _bad_member(name, "only plain files and folders are allowed")
            if info.is_dir() or not parts or parts[0] == "__MACOSX" or parts[-1].startswith("."):
                continue  # folders are made as needed; macOS resource forks and hidden files skipped
            members.append((info, parts))
        parent.mkdir(parents=True, exist_ok=True)
        tmp = parent / f".{digest}.{os.getpid()}.{threading.get_ident()}.part"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        base = tmp.resolve()
        try:
            total = 0
            for info, parts in members:
                target = (tmp.joinpath(*parts)).resolve()
                if base not in target.parents:
                    raise _bad_member(info.filename, "it would land outside the target folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(info) as src, open(target, "xb") as dst:
                        while chunk := src.read(1 << 20):
                            total += len(chunk)
                            if total > max_bytes:
                                raise ConfigError(f"the zip unpacks to more than {max_bytes / 2**20:.0f} MiB "
                                                  "(its header said less); nothing was unpacked")
                            dst.write(chunk)
                except FileExistsError:
                    raise _bad_member(info.filename, "it appears twice in the zip") from None
                except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
                    raise _bad_member(info.filename, f"it cannot be unpacked ({_first_line(e)})") from None
            if not members:
                raise ConfigError("the zip holds no files")
            try:
                tmp.rename(final)
            except OSError:
                if not final.is_dir():  # another session unpacked the same zip meanwhile: use it
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final



# --------------------------------------------------------------------------------------------
# Where the dashboard's data comes from: a source string that can only name safe places

UPLOADS = "userdata"  # folder under the run history that holds unpacked zips and uploaded CSVs
MAX_CSV_BYTES = 64 * 2**20  # an uploaded CSV table
_DIGEST = re.compile(r"[0-9a-f]{24}(\.csv)?")


def uploads_dir(runs_dir: str | os.PathLike) -> Path:
    """The folder holding this server's unpacked zips and uploaded CSVs."""
    return Path(runs_dir) / UPLOADS


def save_csv_upload(content: bytes, runs_dir: str | os.PathLike) -> str:
    """Store an uploaded CSV as ``<uploads>/<sha256>.csv``; returns its source, ``upload:<name>``.

    Raises:
        ConfigError: empty or larger than MAX_CSV_BYTES.
    """
    if not content:
        raise ConfigError("the uploaded CSV file is empty")
    if len(content) > MAX_CSV_BYTES:
        raise ConfigError(f"the CSV file is {len(content) / 2**20:.0f} MiB; at most "
                          f"{MAX_CSV_BYTES // 2**20} MiB are accepted")
    folder = uploads_dir(runs_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{hashlib.sha256(content).hexdigest()[:24]}.csv"
    path = folder / name
    if not path.is_file():
        tmp = folder / f".{name}.{os.getpid()}.part"
        tmp.write_bytes(content)
        tmp.replace(path)
    return f"upload:{name}"


def save_zip_upload(content: bytes, runs_dir: str | os.PathLike) -> str:
    """Unpack an uploaded zip safely (:func:`extract_zip`); returns its source, ``upload:<digest>``."""
    return f"upload:{extract_zip(content, uploads_dir(runs_dir)).name}"


def source_of(path: str, runs_dir: str | os.PathLike, data_root: str | None = None) -> str | None:
    """The dashboard source that names ``path``, the inverse of :func:`resolve_source`.

    Returns:
        ``root:<entry>`` for an entry of the data root, ``upload:<name>`` for an upload of this
        server, else None (a path given on the command line, which no link may name).
    """
    if not path:
        return None
    p = Path(path).expanduser().resolve()
    root = data_root if data_root is not None else os.environ.get(DATA_ROOT_ENV, "")
    if root and p.parent == Path(root).resolve() and p.name in data_root_choices(root):
        return f"root:{p.name}"
    if p.parent == uploads_dir(runs_dir).resolve() and _DIGEST.fullmatch(p.name):
        return f"upload:{p.name}"
    return None


def resolve_source(source: str, runs_dir: str | os.PathLike, data_root: str | None = None) -> str:
    """The path a dashboard source names: ``root:<entry>`` of the data root or ``upload:<digest>``.

    A source is all a browser (or a shared link) can send, so no typed path ever reaches the disk.

    Raises:
        ConfigError: an unknown form, an entry not in the data root, or an upload this server lacks.
    """
    kind, _, name = str(source).partition(":")
    if kind == "root":
        return resolve_in_data_root(name, data_root)
    if kind == "upload" and _DIGEST.fullmatch(name):
        path = uploads_dir(runs_dir) / name
        if path.exists():
            return str(path.resolve())
        raise ConfigError(f"upload {name!r} is not on this server (any more); upload the file again")
    raise ConfigError(f"data source {source!r} is not allowed; choose a folder of the data root or upload one")
