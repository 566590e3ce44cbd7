"""KD Playground engine: configs, registries, models, data, losses, training, metrics, history.

Importing the package fills the registries (models, datasets, losses). It never imports Streamlit.
"""
from . import data as _data, losses as _losses, models as _models  # noqa: F401  (fill registries)
from . import methods as _methods  # noqa: F401  (registers dkd, logit_std, fitnets, at, sp, rkd, adversarial)
from . import userdata as _userdata  # noqa: F401  (registers image_folder and csv: your own data)
from . import pretrained as _pretrained  # noqa: F401  (registers torchvision: any torchvision classifier)
from .config import (DataConfig, LossConfig, ModelConfig, OptimConfig, RunConfig, from_dict,
                     from_json, replace, to_dict, to_json)
from .errors import ConfigError, DataUnavailable
from .events import EpochEnd, PhaseEnd, PhaseStart, RunEnd, StepEnd
from .experiment import (CompareResult, RunResult, compare, distillation_target, results_table,
                         run_experiment, verdict)
from .methods import METHOD_INFO, MULTI_TEACHER_INFO
from .registry import DATASETS, LOSSES, MODELS, Registry
from .store import RunStore

__all__ = [
    "DataConfig", "LossConfig", "ModelConfig", "OptimConfig", "RunConfig", "from_dict", "from_json",
    "replace", "to_dict", "to_json", "ConfigError", "DataUnavailable", "EpochEnd", "PhaseEnd",
    "PhaseStart", "RunEnd", "StepEnd", "CompareResult", "RunResult", "compare", "run_experiment",
    "verdict", "distillation_target", "results_table", "DATASETS", "LOSSES", "MODELS", "Registry",
    "RunStore", "METHOD_INFO", "MULTI_TEACHER_INFO",
]
