import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def store(tmp_path):
    from kdcore import RunStore

    return RunStore(tmp_path / "runs")


def need(ok: bool, reason: str, env: str) -> None:
    """Skip a test whose system dependency is missing, unless CI sets ``env`` to demand it."""
    if not ok:
        if os.environ.get(env):
            pytest.fail(f"{reason} (required because {env} is set)")
        pytest.skip(reason)


@pytest.fixture
def fashion_mnist_installed():
    from kdcore.data import DEBIAN_FASHION_MNIST

    need(os.path.isdir(DEBIAN_FASHION_MNIST),
         "Debian package dataset-fashion-mnist is not installed", "KD_REQUIRE_FMNIST")
