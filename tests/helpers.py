"""Shared test helpers: the small configs several test files train, and the skip-or-fail rule.

Imported as ``tests.helpers`` (tests is a package); test files never import each other.
"""
from __future__ import annotations

import os

import pytest

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
