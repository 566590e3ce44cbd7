"""Start-up cost: what `import kdcore` and `python -m kdcore --help` pull in (issue 13, item 4).

torchvision (~1 s, it imports torch._dynamo) and pandas (~0.4 s) are imported on first use, so a
CLI call or the dashboard's first paint does not pay for them. A top-level import of either in a
kdcore module makes these tests fail.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_import_kdcore_leaves_heavy_libraries_unimported():
    out = _run("import sys, kdcore; print(sorted(m for m in ('torchvision', 'pandas', 'streamlit', "
               "'plotly', 'torch._dynamo') if m in sys.modules))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_help_lists_models_without_importing_torchvision_or_pandas():
    out = _run("import sys, runpy; sys.argv = ['kdcore', '--help']\n"
               "try:\n    runpy.run_module('kdcore', run_name='__main__')\n"
               "except SystemExit as e:\n    code = e.code\n"
               "print('LOADED', 'torchvision' in sys.modules, 'pandas' in sys.modules, code)")
    assert out.returncode == 0, out.stderr
    assert "resnet18" in out.stdout and "fashion_mnist" in out.stdout  # the registries are filled
    assert out.stdout.strip().endswith("LOADED False False 0")


def test_lazy_pandas_is_the_real_module_on_use():
    out = _run("import sys\nfrom kdcore.lazy import pandas as pd\nassert 'pandas' not in sys.modules\n"
               "import pandas\nprint(pd.DataFrame is pandas.DataFrame, repr(pd))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "True"


def test_torchvision_models_still_build_on_demand():
    out = _run("import sys\nfrom kdcore.models import build_model\n"
               "m = build_model('mobilenet_v3_small', in_shape=(1, 28, 28), num_classes=10)\n"
               "print(type(m).__name__, 'torchvision' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["MobileNetV3", "True"]
