"""Tests for kdcore.data: synthetic sets, splits, batching, augmentation and image loading."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import kdcore  # noqa: F401  (fills the registries)
from kdcore.config import DataConfig
from kdcore.data import (DEBIAN_FASHION_MNIST, SYNTHETIC_TEST_FRACTION, augment_batch, batches,
                         dataset_names, load_data)
from kdcore.errors import ConfigError, DataUnavailable
from kdcore.registry import DATASETS
from tests.idx import write_idx

SYNTHETIC = ["moons", "circles", "spirals", "blobs"]


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Keep every test away from the user's ./data, $KD_DATA_DIR and ~/.cache."""
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KD_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)


def _rows(x: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(r) for r in x.tolist()}


# --------------------------------------------------------------------------------------------
# Registry and metadata


def test_dataset_names_synthetic_first():
    assert dataset_names() == SYNTHETIC + ["fashion_mnist", "mnist", "cifar10", "image_folder", "csv"]


@pytest.mark.parametrize("name, shape, k", [
    ("moons", (2,), 2), ("circles", (2,), 2), ("spirals", (2,), 5), ("blobs", (2,), 5),
    ("fashion_mnist", (1, 28, 28), 10), ("mnist", (1, 28, 28), 10), ("cifar10", (3, 32, 32), 10),
])
def test_metadata_needs_no_data(tmp_path, name, shape, k):
    cfg = DataConfig(name=name, n_classes=5, data_dir=str(tmp_path / "empty"))
    spec = DATASETS.get(name)
    assert spec.in_shape(cfg) == shape
    assert spec.num_classes(cfg) == k == len(spec.class_names(cfg))
    assert spec.kind == ("2d" if name in SYNTHETIC else "image")
    assert not (tmp_path / "cache").exists()  # nothing was unpacked or loaded


def test_load_data_unknown_name_is_config_error():
    with pytest.raises(ConfigError, match="moons"):
        load_data(SimpleNamespace(name="nope"))


# --------------------------------------------------------------------------------------------
# Synthetic sets


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_shapes_dtypes_and_split_sizes(name):
    cfg = DataConfig(name=name, n_samples=500, n_classes=4, val_fraction=0.1)
    b = load_data(cfg)
    n_test = int(SYNTHETIC_TEST_FRACTION * 500)  # 100
    n_val = round(0.1 * (500 - n_test))  # 40
    assert (len(b.x_train), len(b.x_val), len(b.x_test)) == (500 - n_test - n_val, n_val, n_test)
    k = 2 if name in ("moons", "circles") else 4
    assert b.kind == "2d" and b.in_shape == (2,) and b.num_classes == k and b.augment is None
    for x, y in ((b.x_train, b.y_train), (b.x_val, b.y_val), (b.x_test, b.y_test)):
        assert x.dtype == torch.float32 and x.shape[1:] == (2,) and torch.isfinite(x).all()
        assert y.dtype == torch.int64 and len(y) == len(x)
        assert 0 <= y.min() and y.max() < k
    assert set(b.y_train.tolist()) == set(range(k))  # every class reaches training
    # standardised with the training split's statistics
    assert torch.allclose(b.x_train.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(b.x_train.std(0), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_splits_are_disjoint(name):
    b = load_data(DataConfig(name=name, n_samples=400))
    train, val, test = _rows(b.x_train), _rows(b.x_val), _rows(b.x_test)
    assert len(train) == len(b.x_train) and len(val) == len(b.x_val) and len(test) == len(b.x_test)
    assert not train & val and not train & test and not val & test


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_is_determined_by_seed(name):
    a, b = load_data(DataConfig(name=name, seed=3)), load_data(DataConfig(name=name, seed=3))
    c = load_data(DataConfig(name=name, seed=4))
    for f in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    # other points, not just another split or scaling of the same points
    assert not _rows(a.unnormalize(a.x_test)) & _rows(c.unnormalize(c.x_test))
    assert not _rows(a.unnormalize(a.x_train)) & _rows(c.unnormalize(c.x_train))


def test_noise_controls_class_overlap():
    # a nearest-centroid rule is near perfect on tight blobs and clearly worse on noisy ones
    def centroid_accuracy(noise: float) -> float:
        b = load_data(DataConfig(name="blobs", n_classes=3, noise=noise, n_samples=900))
        cents = torch.stack([b.x_train[b.y_train == c].mean(0) for c in range(3)])
        return (torch.cdist(b.x_test, cents).argmin(1) == b.y_test).float().mean().item()

    assert centroid_accuracy(0.1) > 0.98
    assert centroid_accuracy(1.0) < 0.8


def test_train_subset_gives_that_size_and_keeps_val():
    full = load_data(DataConfig(name="moons", n_samples=1000, seed=1))
    sub = load_data(DataConfig(name="moons", n_samples=1000, seed=1, train_subset=100))
    assert len(sub.x_train) == 100
    # the subset is drawn from the full training split (compared in generated units, since
    # each bundle standardises with its own training statistics)
    dist = torch.cdist(sub.unnormalize(sub.x_train), full.unnormalize(full.x_train),
                       compute_mode="donot_use_mm_for_euclid_dist")
    assert (dist.min(1).values < 1e-4).all()
    assert torch.equal(sub.y_val, full.y_val)
    assert torch.allclose(sub.unnormalize(sub.x_val), full.unnormalize(full.x_val), atol=1e-5)


def test_train_subset_larger_than_pool_is_config_error():
    with pytest.raises(ConfigError, match="train_subset"):
        load_data(DataConfig(name="moons", n_samples=100, train_subset=500))


# --------------------------------------------------------------------------------------------
# Batching and augmentation


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("n, bs", [(10, 3), (12, 4), (5, 64)])
def test_batches_cover_every_index_once(n, bs, shuffle):
    g = torch.Generator().manual_seed(0)
    parts = list(batches(n, bs, shuffle=shuffle, generator=g))
    assert all(len(p) <= bs for p in parts) and len(parts) == -(-n // bs)
    assert sorted(torch.cat(parts).tolist()) == list(range(n))
    if not shuffle:
        assert torch.cat(parts).tolist() == list(range(n))


def test_batches_reproducible_with_seeded_generator():
    def epoch(seed):
        return torch.cat(list(batches(100, 7, shuffle=True, generator=torch.Generator().manual_seed(seed))))

    assert torch.equal(epoch(5), epoch(5))
    assert not torch.equal(epoch(5), epoch(6))
    assert not torch.equal(epoch(5), torch.arange(100))
    g = torch.Generator().manual_seed(5)  # two epochs from one generator differ
    assert not torch.equal(torch.cat(list(batches(100, 7, shuffle=True, generator=g))),
                           torch.cat(list(batches(100, 7, shuffle=True, generator=g))))


def test_batches_drop_last():
    parts = list(batches(10, 4, shuffle=False, generator=None, drop_last=True))
    assert [len(p) for p in parts] == [4, 4]


def test_augment_crops_are_shifted_windows_of_the_padded_image():
    n, c, h, w, pad, fill = 16, 2, 6, 5, 2, -9.0
    x = torch.arange(n * c * h * w, dtype=torch.float32).view(n, c, h, w)
    out = augment_batch(x, generator=torch.Generator().manual_seed(0), flip=False, pad=pad, fill=fill)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)
    padded = torch.nn.functional.pad(x, (pad,) * 4, value=fill)
    offsets = set()
    for i in range(n):
        hits = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                if torch.equal(out[i], padded[i, :, dy:dy + h, dx:dx + w])]
        assert len(hits) == 1, f"sample {i} is not one window of its padded image"
        offsets.add(hits[0])
    assert len(offsets) > 3  # offsets vary across the batch


def test_augment_flip_mirrors_about_half_and_is_seeded():
    x = torch.randn(200, 1, 4, 4)
    a = augment_batch(x, generator=torch.Generator().manual_seed(1), flip=True, pad=0)
    b = augment_batch(x, generator=torch.Generator().manual_seed(1), flip=True, pad=0)
    assert torch.equal(a, b)
    flipped = torch.tensor([torch.equal(a[i], x[i].flip(-1)) for i in range(200)])
    same = torch.tensor([torch.equal(a[i], x[i]) for i in range(200)])
    assert (flipped | same).all() and 60 < flipped.sum() < 140


def test_augment_per_channel_fill():
    x = torch.zeros(8, 3, 4, 4)
    out = augment_batch(x, generator=torch.Generator().manual_seed(0), flip=False, pad=4,
                        fill=(1.0, 2.0, 3.0))
    for ch, v in enumerate((1.0, 2.0, 3.0)):
        assert set(out[:, ch].unique().tolist()) <= {0.0, v}
    assert (out != 0).any()


# --------------------------------------------------------------------------------------------
# Image sets through torchvision, on tiny IDX files written here

N_TRAIN, N_TEST = 20, 10


def _tiny_idx_folder(raw: Path, *, gz: bool, offset: int = 0) -> None:
    """Train image i is filled with 10*i+offset, label i%10; test image j with 200+j+offset."""
    ext = ".gz" if gz else ""
    train = torch.arange(N_TRAIN)[:, None, None].expand(N_TRAIN, 28, 28) * 10 + offset
    test = (200 + torch.arange(N_TEST))[:, None, None].expand(N_TEST, 28, 28) + offset
    write_idx(raw / f"train-images-idx3-ubyte{ext}", train)
    write_idx(raw / f"train-labels-idx1-ubyte{ext}", torch.arange(N_TRAIN) % 10)
    write_idx(raw / f"t10k-images-idx3-ubyte{ext}", test)
    write_idx(raw / f"t10k-labels-idx1-ubyte{ext}", torch.arange(N_TEST) % 10)


def _pixel_values(b, x: torch.Tensor) -> list[int]:
    """The constant fill value of each image, read back in 0..255 units."""
    px = torch.round(b.unnormalize(x) * 255)
    assert torch.equal(px.amin((1, 2, 3)), px.amax((1, 2, 3)))
    return px[:, 0, 0, 0].long().tolist()


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize("name, folder", [("fashion_mnist", "FashionMNIST"), ("mnist", "MNIST")])
def test_tiny_idx_files_load_through_torchvision(tmp_path, name, folder, gz):
    data_dir = tmp_path / "data"
    _tiny_idx_folder(data_dir / folder / "raw", gz=gz)
    before = sorted(p.name for p in (data_dir / folder / "raw").iterdir())
    cfg = DataConfig(name=name, data_dir=str(data_dir), val_fraction=0.1, augment=True)
    ok, msg = DATASETS.get(name).available(cfg)
    assert ok and str(data_dir.resolve()) in msg
    b = load_data(cfg)

    assert b.kind == "image" and b.in_shape == (1, 28, 28) and len(b.classes) == 10
    assert (len(b.x_train), len(b.x_val), len(b.x_test)) == (N_TRAIN - 2, 2, N_TEST)
    assert b.x_train.dtype == torch.float32 and b.y_train.dtype == torch.int64
    assert b.x_train.shape[1:] == (1, 28, 28)
    # every image keeps its own label; train + val is the official training set, test is in order
    train_ids = [v // 10 for v in _pixel_values(b, b.x_train)]
    val_ids = [v // 10 for v in _pixel_values(b, b.x_val)]
    assert b.y_train.tolist() == [i % 10 for i in train_ids]
    assert b.y_val.tolist() == [i % 10 for i in val_ids]
    assert sorted(train_ids + val_ids) == list(range(N_TRAIN))
    assert _pixel_values(b, b.x_test) == [200 + j for j in range(N_TEST)]
    assert b.y_test.tolist() == list(range(N_TEST))
    # augment=True on a grey-scale set: crop with black padding, no flip
    assert b.augment is not None and b.augment.keywords["flip"] is False
    aug = b.augment(b.x_train, generator=torch.Generator().manual_seed(0))
    assert aug.shape == b.x_train.shape and not torch.equal(aug, b.x_train)
    assert torch.isclose(b.unnormalize(aug).min(), torch.tensor(0.0), atol=1e-6)  # black border
    # the user's folder is never written to; .gz files are unpacked into the cache instead
    assert sorted(p.name for p in (data_dir / folder / "raw").iterdir()) == before
    assert (tmp_path / "cache").exists() == gz


def test_kd_data_dir_env_is_used_when_no_data_dir(tmp_path, monkeypatch):
    _tiny_idx_folder(tmp_path / "envdata" / "MNIST" / "raw", gz=False)
    monkeypatch.setenv("KD_DATA_DIR", str(tmp_path / "envdata"))
    b = load_data(DataConfig(name="mnist"))
    assert len(b.x_test) == N_TEST


def test_changed_gz_source_is_unpacked_again(tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    cfg = DataConfig(name="mnist", data_dir=str(tmp_path / "data"))
    _tiny_idx_folder(raw, gz=True)
    first = load_data(cfg)
    _tiny_idx_folder(raw, gz=True, offset=1)
    for p in raw.iterdir():  # a new mtime, as a re-download or a copy would give
        os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    second = load_data(cfg)
    assert [v + 1 for v in _pixel_values(first, first.x_test)] == _pixel_values(second, second.x_test)


def test_train_subset_on_images(tmp_path):
    _tiny_idx_folder(tmp_path / "data" / "MNIST" / "raw", gz=False)
    b = load_data(DataConfig(name="mnist", data_dir=str(tmp_path / "data"), train_subset=5))
    assert len(b.x_train) == 5 and len(b.x_val) == 2 and len(b.x_test) == N_TEST
    assert b.augment is None  # augment defaults to off


# --------------------------------------------------------------------------------------------
# Missing data


def _no_system_dirs(name: str, tmp_path: Path):
    spec = DATASETS.get(name)
    if getattr(spec, "system_dirs", ()):  # pretend the Debian package is not installed
        spec = dataclasses.replace(spec, system_dirs=(str(tmp_path / "not-installed"),))
    return spec


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist", "cifar10"])
def test_missing_data_says_how_to_get_it(tmp_path, name):
    spec = _no_system_dirs(name, tmp_path)
    cfg = DataConfig(name=name, data_dir=str(tmp_path / "empty"))
    ok, msg = spec.available(cfg)
    assert not ok
    with pytest.raises(DataUnavailable) as err:
        spec.load(cfg)
    assert str(err.value) == msg
    for needle in ("--download", "--data-dir", "KD_DATA_DIR", str((tmp_path / "empty").resolve())):
        assert needle in msg
    assert ("apt-get install dataset-fashion-mnist" in msg) == (name == "fashion_mnist")
    assert ("cifar-10-batches-py" in msg) == (name == "cifar10")


def test_failed_download_is_data_unavailable(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr(tvd, "MNIST", offline)
    spec = DATASETS.get("mnist")
    cfg = DataConfig(name="mnist", data_dir=str(tmp_path / "empty"), download=True)
    ok, msg = spec.available(cfg)
    assert ok and "downloaded" in msg
    with pytest.raises(DataUnavailable, match="no network") as err:
        spec.load(cfg)
    assert "--data-dir" in str(err.value)


# --------------------------------------------------------------------------------------------
# The real Fashion-MNIST from Debian's dataset-fashion-mnist package


def test_debian_fashion_mnist(tmp_path, fashion_mnist_installed):
    cfg = DataConfig(name="fashion_mnist", data_dir=str(tmp_path / "empty"), val_fraction=0.1)
    ok, msg = DATASETS.get("fashion_mnist").available(cfg)
    assert ok and DEBIAN_FASHION_MNIST in msg
    b = load_data(cfg)
    assert (len(b.x_train), len(b.x_val), len(b.x_test)) == (54000, 6000, 10000)
    assert b.x_train.shape[1:] == (1, 28, 28) and b.x_train.dtype == torch.float32
    assert b.y_test.bincount().tolist() == [1000] * 10  # the official, balanced test set
    assert b.classes[0] == "T-shirt/top" and b.classes[9] == "Ankle boot"
    assert abs(b.x_train.mean().item()) < 0.02 and abs(b.x_train.std().item() - 1) < 0.02
    assert "dataset-fashion-mnist" in b.source
