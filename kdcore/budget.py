"""Resource budgets, checked before a run builds or loads anything.

A shared server must not let one config allocate gigabytes: every model is built on the
``meta`` device (shapes only, no memory), its parameters counted and its activations measured
with forward hooks; sample counts and epochs x samples are read from the config, or, for the
user's own files, from their listing (files in an image folder, line breaks in a CSV) before
anything is decoded or parsed. Each limit
has a default suited to a shared CPU server and an environment variable that raises it; the
message of a refused config names the field, the limit and the variable.

``preflight`` adds what a run needs from its machine (the device, the teacher's weights), so
that a config refused here never reaches the run history.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .config import ModelConfig, RunConfig
from .errors import ConfigError

__all__ = ["Limit", "LIMITS", "limit", "refuse", "DataSize", "model_cost", "check_model", "check_budget",
           "preflight"]


@dataclass(frozen=True)
class Limit:
    env: str  # the environment variable that raises (or lowers) it
    default: int
    unit: str  # how the message words it


LIMITS = {
    # resnet18 (11.2M) fits; a 784-20000-20000 MLP (416M, 1.6 GB of float32 weights) does not
    "params": Limit("KD_MAX_PARAMS", 25_000_000, "parameters per model"),
    # activations kept for backward over one training batch, float32, with their gradients
    "activation_mb": Limit("KD_MAX_ACTIVATION_MB", 2048, "MB of activations per training batch"),
    # synthetic sets are generated in memory: 200k 2-D points is far more than any demo needs
    "samples": Limit("KD_MAX_SAMPLES", 200_000, "samples in a generated data set"),
    # epochs x training samples of one phase: 20 Fashion-MNIST epochs are 1.1M
    "sample_epochs": Limit("KD_MAX_SAMPLE_EPOCHS", 20_000_000, "epochs x training samples per phase"),
    # the user's own files: Fashion-MNIST as PNGs is 70k images; a folder of millions is not for a
    # shared server
    "data_samples": Limit("KD_MAX_DATA_SAMPLES", 1_000_000, "images or rows in one data set"),
    # decoded images (float32) or a parsed table held in memory; data.memory_mb's default, 1024, fits
    "data_mb": Limit("KD_MAX_DATA_MB", 2048, "MB of data held in memory"),
}

_IMAGE_TRAIN = {"idx": 60_000, "cifar": 50_000}  # training-split sizes of the built-in image sets


def limit(key: str) -> int:
    """The limit in force: the environment variable if it is a positive integer, else the default."""
    lim = LIMITS[key]
    raw = os.environ.get(lim.env, "")
    return int(raw) if raw.strip().isdigit() and int(raw) > 0 else lim.default


def refuse(field: str, value, key: str, fix: str = "make it smaller") -> ConfigError:
    """The error of a value over limit ``key``: the field, the value, the limit and its variable."""
    lim = LIMITS[key]
    return ConfigError(f"{field} = {value:,} is over this server's budget of {limit(key):,} {lim.unit}; "
                       f"{fix}, or whoever runs the server can raise {lim.env}")



@dataclass(frozen=True)
class DataSize:
    """What a data set of the user's own files will take, counted from its listing (kdcore.data.own)."""

    samples: int  # images or rows that loading reads (every split; the training split after train_subset)
    train: int  # samples in the training split: what one epoch goes through
    held_mb: int  # MB that stay in memory as tensors (0: the images stream from disk)
    what: str  # how a message names them, e.g. "images in data.path 'shapes'"


def model_cost(mcfg: ModelConfig, in_shape: tuple[int, ...], num_classes: int) -> tuple[int, int]:
    """Parameters and activation floats per sample of one model, measured on the meta device.

    Returns:
        (parameter count, floats that the forward pass of one sample produces in leaf modules).
    Raises:
        ConfigError: the model cannot be built with these params.
    """
    from .models import build_model

    acts = [0]

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            acts[0] += out[0].numel()

    with torch.device("meta"):
        model = build_model(mcfg.name, in_shape=tuple(in_shape), num_classes=num_classes, params=mcfg.params)
        handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
        try:
            model(torch.empty(1, *in_shape))
        except Exception:  # a shape that does not fit is the config check's message, not ours
            pass
        for h in handles:
            h.remove()
    return sum(p.numel() for p in model.parameters()), acts[0]


def check_model(mcfg: ModelConfig, in_shape, num_classes: int, *, batch_size: int, role: str) -> None:
    """Refuse one model whose parameters or training activations are over budget (nothing is allocated).

    Args:
        role: how the message names the model, e.g. ``teacher`` or ``student``.
    """
    params, acts = model_cost(mcfg, in_shape, num_classes)
    if params > limit("params"):
        raise refuse(f"{role} {mcfg.name} {mcfg.params or ''} parameters".replace("  ", " "), params, "params")
    mb = acts * batch_size * 8 // 2**20  # float32 activation and its gradient
    if mb > limit("activation_mb"):
        raise refuse(f"{role} {mcfg.name} activations at batch_size {batch_size} (MB)", mb, "activation_mb")


def _own_size(cfg: RunConfig) -> DataSize | None:
    """The listing's count of a data set read from the user's files; None for the built-in sets."""
    from .registry import DATASETS

    # only kdcore.data.own's specs (image_folder, csv) have data_size; built-in sets are known sizes
    sized = getattr(DATASETS.get(cfg.data.name), "data_size", None)
    return sized(cfg.data) if sized is not None and cfg.data.path else None


def _train_samples(cfg: RunConfig, own: DataSize | None = None) -> int | None:
    from .registry import DATASETS

    if own is not None:
        return own.train
    spec = DATASETS.get(cfg.data.name)
    n = cfg.data.n_samples if spec.kind == "2d" else _IMAGE_TRAIN.get(getattr(spec, "layout", ""))
    if n is not None and cfg.data.train_subset:
        n = min(n, cfg.data.train_subset)
    return n


def check_budget(cfg: RunConfig) -> None:
    """Refuse a config over this server's budgets, naming the field and the variable that raises it.

    Raises:
        ConfigError: the first budget the config exceeds.
    """
    from .registry import DATASETS

    spec = DATASETS.get(cfg.data.name)
    if spec.kind == "2d" and cfg.data.n_samples > limit("samples"):
        raise refuse("data.n_samples", cfg.data.n_samples, "samples")
    own = _own_size(cfg)  # counted before anything is decoded
    if own is not None:
        if own.samples > limit("data_samples"):
            raise refuse(own.what, own.samples, "data_samples",
                         "use a smaller set or data.train_subset")
        if own.held_mb > limit("data_mb"):
            raise refuse(f"{own.what} held in memory at data.image_size {cfg.data.image_size} (MB)",
                         own.held_mb, "data_mb", "lower data.image_size, or data.memory_mb below that "
                         "so the images stream from disk")
    in_shape, n_cls = cfg.data.shape()
    roles = [("teacher", cfg.teacher, cfg.teacher_optim), ("student", cfg.student, cfg.optim)]
    roles += [(f"extra_teachers[{i}]", m, cfg.teacher_optim) for i, m in enumerate(cfg.extra_teachers)]
    for role, mcfg, optim in roles:
        check_model(mcfg, in_shape, n_cls, batch_size=optim.batch_size, role=role)
    n = _train_samples(cfg, own)
    if n is not None:
        for field, optim in (("teacher_optim.epochs", cfg.teacher_optim), ("optim.epochs", cfg.optim)):
            if optim.epochs * n > limit("sample_epochs"):
                raise refuse(f"{field} x {n:,} training samples", optim.epochs * n, "sample_epochs")


def preflight(cfg: RunConfig, runs_dir=None) -> None:
    """Everything a run needs checked before it is filed: budgets, the device, the teachers' weights.

    Args:
        cfg: a validated config. runs_dir: the history that ``run:<id>`` teachers come from.
    Raises:
        ConfigError: naming the field and what to do.
    """
    check_budget(cfg)
    dev = cfg.device.split(":")
    if dev[0] == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(f"device = {cfg.device!r}: this machine has no CUDA GPU that torch can use; "
                              "use device 'cpu'")
        if len(dev) > 1 and int(dev[1]) >= n:
            raise ConfigError(f"device = {cfg.device!r}: this machine has {n} GPU(s), cuda:0 to cuda:{n - 1}")
    elif dev[0] == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device = 'mps': Apple's Metal backend is not available here; use device 'cpu'")
    sources = [("teacher_source", cfg.teacher_source)]
    sources += [(f"extra_teacher_sources[{i}]", s) for i, s in enumerate(cfg.extra_teacher_sources)]
    for field, src in sources:
        if src.startswith("file:") and not os.path.isfile(src[5:]):
            raise ConfigError(f"{field} = {src!r}: there is no file {src[5:]!r}")
        if src.startswith("run:"):
            from .history.store import RunStore

            if not RunStore(runs_dir).weights_path(int(src[4:]), "teacher").is_file():
                raise ConfigError(f"{field} = {src!r}: run {src[4:]} has no saved teacher in the history "
                                  "(python -m kdcore runs list shows the runs)")
