"""KD Playground engine: configs, registries, models, data, losses, training, metrics, history.

Importing the package is cheap: it loads no torch, so ``python -m kdcore --help`` answers at
once. The names below are imported on first use (``from kdcore import RunConfig`` imports
``kdcore.config`` then), and the registries fill themselves on their first lookup by importing
the modules that register models, datasets and losses. It never imports Streamlit.
"""
from __future__ import annotations

import importlib
import importlib.util

from .registry import DATASETS, LOSSES, MODELS, Registry

# public name -> the submodule that defines it; imported on first access (PEP 562)
_EXPORTS = {
    **dict.fromkeys(["DataConfig", "LossConfig", "ModelConfig", "OptimConfig", "RunConfig", "from_dict",
                     "from_json", "replace", "to_dict", "to_json"], "config"),
    **dict.fromkeys(["ConfigError", "DataUnavailable"], "errors"),
    **dict.fromkeys(["EpochEnd", "PhaseEnd", "PhaseStart", "RunEnd", "StepEnd"], "events"),
    **dict.fromkeys(["CompareResult", "RunResult", "compare", "distillation_target", "results_table",
                     "run_experiment", "verdict"], "train.experiment"),
    **dict.fromkeys(["METHOD_INFO", "MULTI_TEACHER_INFO"], "methods"),
    "RunStore": "history.store",
}

# the modules whose import registers the built-in entries, in the order select boxes list them
_REGISTERING = ("data", "losses", "models",
                "methods",  # dkd, logit_std, fitnets, at, sp, rkd, adversarial
                "data.own",  # image_folder and csv: your own data
                "models.pretrained")  # torchvision: any torchvision classifier


def _fill_registries() -> None:
    for name in _REGISTERING:
        importlib.import_module(f".{name}", __name__)


for _registry in (DATASETS, LOSSES, MODELS):
    _registry.fill_with(_fill_registries)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)  # kdcore.data etc., as before it was lazy
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later accesses are plain attribute lookups
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "DataConfig", "LossConfig", "ModelConfig", "OptimConfig", "RunConfig", "from_dict", "from_json",
    "replace", "to_dict", "to_json", "ConfigError", "DataUnavailable", "EpochEnd", "PhaseEnd",
    "PhaseStart", "RunEnd", "StepEnd", "CompareResult", "RunResult", "compare", "run_experiment",
    "verdict", "distillation_target", "results_table", "DATASETS", "LOSSES", "MODELS", "Registry",
    "RunStore", "METHOD_INFO", "MULTI_TEACHER_INFO",
]
