"""Shared test helpers: the small configs several test files train, and the skip-or-fail rule.

Imported as ``tests.helpers`` (tests is a package); test files never import each other.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from kdcore import DataConfig, LossConfig, ModelConfig, OptimConfig, RunConfig

# Two moons, a 2-layer teacher and a 16-unit student, 8 epochs each: a whole run in a few seconds
# that every phase clears 85 % on (test_engine's accuracy floor).
FAST = RunConfig(
    data=DataConfig(name="moons", n_samples=800, noise=0.15),
    teacher=ModelConfig("mlp", {"hidden": [64, 64]}),
    student=ModelConfig("mlp", {"hidden": [16]}),
    loss=LossConfig(temperature=2.0, alpha=0.5),
    optim=OptimConfig(epochs=8, lr=1e-2, batch_size=64),
    teacher_optim=OptimConfig(epochs=8, lr=1e-2, batch_size=64),
)

# Three blobs, a tiny 4-unit student, 3 epochs: the lab pages' and teaching maths' run.
SMALL = RunConfig(
    data=DataConfig(name="blobs", n_samples=400, n_classes=3, noise=0.4),
    teacher=ModelConfig("mlp", {"hidden": [32]}), student=ModelConfig("mlp", {"hidden": [4]}),
    loss=LossConfig(temperature=4.0, alpha=0.5),
    optim=OptimConfig(epochs=3, lr=2e-2), teacher_optim=OptimConfig(epochs=3, lr=2e-2))


def need(ok: bool, reason: str, env: str) -> None:
    """Skip a test whose system dependency is missing, unless CI sets ``env`` to demand it."""
    if not ok:
        if os.environ.get(env):
            pytest.fail(f"{reason} (required because {env} is set)")
        pytest.skip(reason)


# -- own data: small image folders that a run can learn from ----------------------------------------

CLASSES = ("circle", "cross", "square")


def shape_image(kind: str, rng: np.random.Generator, size=(20, 24), colour=True) -> Image.Image:
    """A noisy drawing of one of three shapes: learnable, so a run has something to find."""
    h, w = size
    a = rng.integers(0, 60, (h, w), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    cy, cx = h / 2 + rng.normal(0, 1), w / 2 + rng.normal(0, 1)
    if kind == "circle":
        m = np.abs(np.hypot(yy - cy, xx - cx) - 6) < 1.5
    elif kind == "cross":
        m = (np.abs(yy - cy) < 1.5) | (np.abs(xx - cx) < 1.5)
    else:
        m = (np.abs(yy - cy) < 6) & (np.abs(xx - cx) < 6) & ~((np.abs(yy - cy) < 4) & (np.abs(xx - cx) < 4))
    a[m] = 255
    if not colour:
        return Image.fromarray(a, "L")
    rgb = np.stack([a, a // 2, 255 - a], -1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def make_folder(root, n_per_class=20, colour=True, classes=CLASSES, seed=0, ext="png"):
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    for c in classes:
        os.makedirs(os.path.join(root, c), exist_ok=True)
        for i in range(n_per_class):
            shape_image(c, rng, colour=colour).save(os.path.join(root, c, f"{i:03d}.{ext}"))
    return str(root)
