"""Heavy optional libraries imported on first use, so start-up pays only for what it runs.

``python -m kdcore --help`` needs none of torch, pandas or torchvision (the package's names and
registries load on first use, ``kdcore/__init__.py``); the dashboard's first paint needs torch but
not pandas (~0.4 s to import). A module writes ``from .lazy import pandas as pd`` and the real
import happens at the first ``pd.<name>``. torchvision (~1 s: it pulls in ``torch._dynamo``) is
imported inside the few functions that use it (``models.py``, ``data.py``).
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["LazyModule", "pandas"]


class LazyModule:
    """Stands in for a module; the first attribute access imports it (then it is a dict lookup)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        module: ModuleType = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


pandas = LazyModule("pandas")
