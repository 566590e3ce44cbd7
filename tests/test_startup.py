"""Start-up cost: what `import kdcore` and `python -m kdcore --help` pull in (issue 13, item 4).

`import kdcore` loads no torch (over a second to import), no torchvision (~1 s more, it imports
torch._dynamo) and no pandas (~0.4 s): the public names are imported on first use and the
registries fill on their first lookup, so `--help` and a mistyped flag answer at once. A top-level
import of a heavy library on the `--help` path makes these tests fail; they assert what is
imported, not how long it takes, so a loaded machine cannot make them flaky.
"""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kdcore.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "pandas", "numpy", "plotly", "streamlit")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def _imported(importtime_log: str) -> set[str]:
    """Module names in ``python -X importtime`` output (stderr)."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime_log.splitlines()
            if line.startswith("import time:") and line.count("|") == 2}


def test_import_kdcore_imports_no_heavy_library():
    out = _run("-c", "import sys, kdcore; print(sorted(m for m in %r + ('torch._dynamo',) if m in sys.modules))"
               % (HEAVY,))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("cmd", ["", "run", "compare", "config", "methods", "compress", "runs", "export"])
def test_help_imports_no_heavy_library(cmd):
    """The real `python -m kdcore [cmd] --help`, its imports read from -X importtime."""
    out = _run("-X", "importtime", "-m", "kdcore", *cmd.split(), "--help")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage: python -m kdcore" in out.stdout
    loaded = _imported(out.stderr)
    assert "kdcore.cli" in loaded  # the log is read right: it names what was imported
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


def test_help_lists_every_registered_name():
    """--help reads cli.HELP_NAMES (it cannot fill the registries without torch): it must match them."""
    from kdcore import DATASETS, LOSSES, MODELS
    from kdcore.cli import HELP_NAMES, build_parser

    assert HELP_NAMES == {"models": tuple(MODELS.names()), "datasets": tuple(DATASETS.names()),
                          "losses": tuple(LOSSES.names())}
    text = build_parser().format_help()
    assert "resnet18" in text and "fashion_mnist" in text and "adversarial" in text


@pytest.mark.slow
def test_registries_fill_on_first_lookup_from_any_entry_point():
    """A config built from kdcore.config alone (no kdcore.X touched) still sees every model, dataset and loss."""
    out = _run("-c", "import sys\nfrom kdcore.registry import MODELS\nassert 'torch' not in sys.modules\n"
               "from kdcore.config import LossConfig, ModelConfig, RunConfig\n"
               "RunConfig(), ModelConfig('resnet18'), LossConfig(name='dkd')\n"
               "from kdcore.registry import DATASETS, LOSSES\n"
               "print('torchvision' in MODELS, 'csv' in DATASETS, 'adversarial' in LOSSES, 'torch' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True"] * 4  # the last entry of each registering module is there


@pytest.mark.slow
def test_public_api_resolves_lazily():
    out = _run("-c", "import sys, kdcore\nfrom kdcore import *\n"
               "missing = [n for n in kdcore.__all__ if n not in globals()]\n"
               "from kdcore import RunConfig, run_experiment, RunStore, METHOD_INFO\n"
               "import kdcore.train.experiment as ex\n"
               "print(missing, run_experiment is ex.run_experiment, 'dkd' in METHOD_INFO, kdcore.train.trainer.__name__)\n"
               "try:\n    from kdcore import no_such_name\nexcept ImportError:\n    print('ImportError')")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "True", "True", "kdcore.train.trainer", "ImportError"]


def test_a_lookup_during_another_threads_fill_waits_for_the_full_registry():
    reg: Registry = Registry("thing")
    inside, release = threading.Event(), threading.Event()

    def fill():
        reg.register("a")(1)
        assert reg.names() == ["a"]  # the filling thread's own lookups do not wait for themselves
        inside.set()
        release.wait(10)
        reg.register("b")(2)

    reg.fill_with(fill)
    seen: dict[str, list] = {}
    first = threading.Thread(target=lambda: seen.setdefault("first", reg.names()))
    first.start()
    assert inside.wait(10)
    second = threading.Thread(target=lambda: seen.setdefault("second", reg.names()))
    second.start()
    second.join(0.3)
    assert second.is_alive()  # blocked: it would otherwise have listed only "a"
    release.set()
    first.join(10)
    second.join(10)
    assert seen == {"first": ["a", "b"], "second": ["a", "b"]}
    assert reg.names() == ["a", "b"] and len(reg) == 2  # filled once


def test_lazy_pandas_is_the_real_module_on_use():
    out = _run("-c", "import sys\nfrom kdcore.lazy import pandas as pd\nassert 'pandas' not in sys.modules\n"
               "import pandas\nprint(pd.DataFrame is pandas.DataFrame, repr(pd))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "True"


@pytest.mark.slow
def test_torchvision_models_still_build_on_demand():
    out = _run("-c", "import sys\nfrom kdcore.models import build_model\n"
               "m = build_model('mobilenet_v3_small', in_shape=(1, 28, 28), num_classes=10)\n"
               "print(type(m).__name__, 'torchvision' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["MobileNetV3", "True"]
