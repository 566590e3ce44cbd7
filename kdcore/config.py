"""Run configuration: one frozen dataclass per concern, validated at construction.

Every run stores ``to_dict(cfg)``; ``from_dict`` / ``from_json`` rebuild it, so a run made in the
browser can be replayed with ``python -m kdcore run CONFIG.json``.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from typing import Any

from .errors import ConfigError

__all__ = [
    "DataConfig", "ModelConfig", "LossConfig", "OptimConfig", "RunConfig",
    "to_dict", "from_dict", "to_json", "from_json", "replace", "phase_architectures",
]

TEACHER_SOURCES = ("train", "run:<id>", "file:<path>")


def _check(ok: bool, field_name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{field_name} = {value!r} is not allowed; {field_name} must be {allowed}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_source(v: Any) -> bool:
    return _is_text(v, 4096) and (v == "train" or bool(re.fullmatch(r"run:[1-9][0-9]{0,17}", v))
                                  or (v.startswith("file:") and len(v) > 5))


def _is_text(v: Any, max_len: int) -> bool:
    """A string a file name, a label or a path can be: UTF-8, no control characters, bounded."""
    if not isinstance(v, str) or len(v) > max_len or any(ord(c) < 32 for c in v):
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. "\ud800" in JSON
        return False
    return True


MAX_SEED = 2**31 - 1  # numpy and every torch generator take it; compare adds seeds on top


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class DataConfig:
    name: str = "moons"  # registered dataset; synthetic 2-D sets need no download
    data_dir: str | None = None  # local torchvision-layout folder; else $KD_DATA_DIR, else ./data
    download: bool = False  # let torchvision fetch the set (online users only)
    n_samples: int = 2000  # synthetic sets: total points over train/val/test
    noise: float = 0.2  # synthetic sets: noise, i.e. how much the classes overlap
    n_classes: int = 3  # spirals/blobs: number of classes (moons and circles have 2)
    train_subset: int = 0  # 0 = every training sample; N = a seeded subset for quick demos
    val_fraction: float = 0.1  # share of the training pool held out to watch overfitting
    augment: bool = False  # images: random crop (+ flip on CIFAR); forces live teacher logits
    seed: int = 0  # data generation and split; independent of the training seed
    omit_class: int = -1  # >= 0: students never see this class in training (Hinton 2015, §3)
    # few labels: the teacher trains on the whole training split; the students get the labels
    # of only `labelled` of its samples (a seeded draw; validation and test never change)
    labelled: int = 0  # 0 = students see every training label; N = a seeded N-sample labelled set
    balanced: bool = False  # draw the labelled set with (nearly) equal samples per class
    # Hinton 2015 §2 "transfer set": the distilled student also gets the teacher's soft targets on
    # the rest of the training split, without its labels (the baseline never sees those samples)
    transfer_set: bool = False
    transfer_ratio: int = 7  # transfer-set samples per labelled sample in each step (FixMatch's mu)
    # your own data (kdcore.data.own): image_folder and csv read data.path
    path: str = ""  # image_folder: a folder of class subfolders; csv: the .csv file
    image_size: int = 32  # image_folder: every image is resized to image_size x image_size
    channels: int = 0  # image_folder: 1 (grey) or 3 (RGB); 0 = RGB if the images have colour
    memory_mb: int = 1024  # image_folder: decoded sets up to this are held in memory, larger ones streamed
    label_column: str = "label"  # csv: the column that holds each row's class
    feature_columns: tuple[str, ...] = ()  # csv: the feature columns; () = every numeric column but the label

    def __post_init__(self) -> None:
        from .registry import DATASETS

        self._check_own_data()

        if self.name not in DATASETS:
            raise ConfigError(f"data.name = {self.name!r} is not a known dataset; known: "
                              f"{', '.join(DATASETS.names())}")
        _check(_is_int(self.n_samples) and self.n_samples >= 20, "data.n_samples", self.n_samples,
               "an integer >= 20")
        _check(self.data_dir is None or (_is_text(self.data_dir, 4096) and self.data_dir != ""),
               "data.data_dir", self.data_dir, "null (the default folder) or a folder path")
        _check(isinstance(self.download, bool), "data.download", self.download, "true or false")
        _check(isinstance(self.augment, bool), "data.augment", self.augment, "true or false")
        _check(_is_num(self.noise) and 0 <= self.noise <= 5, "data.noise", self.noise, "in [0, 5]")
        _check(_is_int(self.n_classes) and 2 <= self.n_classes <= 10, "data.n_classes",
               self.n_classes, "an integer in [2, 10]")
        _check(_is_int(self.train_subset) and self.train_subset >= 0, "data.train_subset",
               self.train_subset, "0 (all) or a positive integer")
        _check(_is_num(self.val_fraction) and 0 < self.val_fraction < 0.5, "data.val_fraction",
               self.val_fraction, "in (0, 0.5)")
        _check(_is_int(self.seed) and 0 <= self.seed <= MAX_SEED, "data.seed", self.seed,
               f"an integer in [0, {MAX_SEED}]")
        n_cls = DATASETS.get(self.name).num_classes(self)
        _check(_is_int(self.labelled) and self.labelled >= 0, "data.labelled", self.labelled,
               "0 (every training label) or a positive number of labelled samples")
        _check(isinstance(self.balanced, bool), "data.balanced", self.balanced, "true or false")
        _check(not self.balanced or self.labelled >= n_cls, "data.balanced", self.balanced,
               f"false unless data.labelled >= the {n_cls} classes (one label per class at least)")
        _check(isinstance(self.transfer_set, bool), "data.transfer_set", self.transfer_set, "true or false")
        _check(not self.transfer_set or self.labelled > 0, "data.transfer_set", self.transfer_set,
               "false unless data.labelled > 0 (the transfer set is the unlabelled rest of the training split)")
        _check(_is_int(self.transfer_ratio) and 1 <= self.transfer_ratio <= 64, "data.transfer_ratio",
               self.transfer_ratio, "an integer in [1, 64]")
        _check(_is_int(self.omit_class) and -1 <= self.omit_class < n_cls, "data.omit_class",
               self.omit_class, f"-1 (keep all) or a class index in [0, {n_cls - 1}]")

    def shape(self) -> tuple[tuple[int, ...], int]:
        """(input shape without the batch, number of classes) of this dataset, from its metadata only."""
        from .registry import DATASETS

        spec = DATASETS.get(self.name)
        return tuple(spec.in_shape(self)), spec.num_classes(self)

    def _check_own_data(self) -> None:
        _check(_is_text(self.path, 4096), "data.path", self.path, "a folder or file path (text)")
        _check(_is_int(self.image_size) and 8 <= self.image_size <= 512, "data.image_size",
               self.image_size, "an integer in [8, 512]")
        _check(self.channels in (0, 1, 3) and _is_int(self.channels), "data.channels", self.channels,
               "0 (from the images), 1 (grey) or 3 (RGB)")
        _check(_is_int(self.memory_mb) and 0 <= self.memory_mb <= 1 << 20, "data.memory_mb",
               self.memory_mb, "an integer number of MiB >= 0 (0 = always stream)")
        _check(_is_text(self.label_column, 200) and self.label_column != "", "data.label_column",
               self.label_column, "a column name")
        cols = self.feature_columns
        _check(isinstance(cols, (list, tuple)) and all(_is_text(c, 200) and c for c in cols),
               "data.feature_columns", cols, "a list of column names ([] = every numeric column)")
        object.__setattr__(self, "feature_columns", tuple(cols))  # JSON gives a list


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"  # registered architecture
    params: dict = field(default_factory=dict)  # architecture knobs, e.g. {"hidden": [32]}

    def __post_init__(self) -> None:
        from .registry import MODELS

        if self.name not in MODELS:
            raise ConfigError(f"model name {self.name!r} is not a known model; known: "
                              f"{', '.join(MODELS.names())}")
        if not isinstance(self.params, dict):
            raise ConfigError(f"model params = {self.params!r} must be a JSON object (dict)")


@dataclass(frozen=True)
class LossConfig:
    """Distillation loss. Convention: alpha weighs the hard-label CE, (1 - alpha) the soft term."""

    name: str = "kd"  # registered loss: kd (Hinton), soft_ce, mse_logits, dkd, fitnets, ... (see METHOD_INFO)
    temperature: float = 4.0  # T > 0 softens both distributions; 1 = plain softmax
    alpha: float = 0.5  # weight of CE(labels, student); the soft term gets 1 - alpha
    t2: bool = True  # multiply the soft term by T^2 (Hinton 2015); off only to teach why
    params: dict = field(default_factory=dict)  # extra knobs of non-vanilla methods

    def __post_init__(self) -> None:
        from .methods.spec import check_loss_params
        from .registry import LOSSES

        if self.name not in LOSSES:
            raise ConfigError(f"loss.name = {self.name!r} is not a known loss; known: "
                              f"{', '.join(LOSSES.names())}")
        check_loss_params(self.name, self.params)
        _check(_is_num(self.temperature) and 0 < self.temperature <= 100, "loss.temperature",
               self.temperature, "a number > 0 (and <= 100)")
        _check(_is_num(self.alpha) and 0 <= self.alpha <= 1, "loss.alpha", self.alpha,
               "in [0, 1] (weight of the hard-label CE)")
        _check(isinstance(self.t2, bool), "loss.t2", self.t2, "true or false")


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 5  # passes over the training set
    lr: float = 1e-3  # learning rate
    batch_size: int = 128  # samples per step
    optimizer: str = "adam"  # adam | sgd (momentum 0.9, nesterov)
    weight_decay: float = 0.0  # L2 penalty
    schedule: str = "constant"  # constant | cosine (per step, to zero)
    # fp32 | bf16 | fp16: autocast mixed precision, a GPU speed knob (fp16 adds a gradient scaler)
    precision: str = "fp32"
    compile: bool = False  # torch.compile the model for training: pays a compile once per phase

    def __post_init__(self) -> None:
        _check(_is_int(self.epochs) and 1 <= self.epochs <= 1000, "epochs", self.epochs,
               "an integer in [1, 1000]")
        _check(_is_num(self.lr) and 0 < self.lr <= 10, "lr", self.lr, "a number in (0, 10]")
        _check(_is_int(self.batch_size) and 1 <= self.batch_size <= 65536, "batch_size",
               self.batch_size, "an integer in [1, 65536]")
        _check(self.optimizer in ("adam", "sgd"), "optimizer", self.optimizer, "'adam' or 'sgd'")
        _check(_is_num(self.weight_decay) and 0 <= self.weight_decay <= 1, "weight_decay",
               self.weight_decay, "a number in [0, 1]")
        _check(self.schedule in ("constant", "cosine"), "schedule", self.schedule,
               "'constant' or 'cosine'")
        _check(self.precision in ("fp32", "bf16", "fp16"), "precision", self.precision,
               "'fp32', 'bf16' or 'fp16'")
        _check(isinstance(self.compile, bool), "compile", self.compile, "true or false")


def _default_data() -> DataConfig:
    # the run a newcomer starts: two moons, the teacher on all 1,440 training points, the students
    # with 16 labels and the rest as a transfer set — a setting where distillation visibly helps
    return DataConfig(labelled=16, balanced=True, transfer_set=True)


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=_default_data)  # what to learn
    teacher: ModelConfig = field(default_factory=lambda: ModelConfig("mlp", {"hidden": [128, 128]}))
    student: ModelConfig = field(default_factory=lambda: ModelConfig("mlp", {"hidden": [8]}))
    loss: LossConfig = field(default_factory=LossConfig)  # how the distilled student learns
    # students: 16 labels make one 8-sample batch two steps, so many short epochs
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=200, lr=1e-2, batch_size=8))
    teacher_optim: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=20, lr=1e-2))
    teacher_source: str = "train"  # train | run:<id> (reuse from history) | file:<path> (.pt)
    seed: int = 0  # init and data order; baseline and distilled share it
    device: str = "cpu"  # torch device string, e.g. cpu or cuda
    name: str = ""  # free label shown in the run history
    # multi-teacher KD: more teachers (teacher_2, teacher_3, ...); the student learns from the ensemble
    extra_teachers: tuple[ModelConfig, ...] = ()
    extra_teacher_sources: tuple[str, ...] = ()  # one per extra teacher, as teacher_source; () = train all
    teacher_weights: tuple[float, ...] = ()  # one per teacher, first teacher first; () = equal weights
    # a third student arm: trained alone on the labelled samples plus the teacher's argmax labels on
    # the transfer set; against it the distilled student shows what soft targets add to the answer
    pseudo_arm: bool = False
    # a teacher that a finished run in the history already trained (same architecture, params,
    # training data, optimiser, seed and device) is loaded, not trained again; true retrains it
    retrain_teacher: bool = False

    def __post_init__(self) -> None:
        _check(_is_int(self.seed) and 0 <= self.seed <= MAX_SEED, "seed", self.seed,
               f"an integer in [0, {MAX_SEED}]")
        _check(_is_text(self.name, 200), "name", self.name if isinstance(self.name, str) and len(self.name) < 80
               else f"{type(self.name).__name__} of length {len(self.name) if isinstance(self.name, str) else '-'}",
               "text of at most 200 characters (UTF-8, no control characters)")
        _check(_is_source(self.teacher_source), "teacher_source", self.teacher_source,
               "one of " + ", ".join(TEACHER_SOURCES))
        self._check_teachers()
        _check(isinstance(self.pseudo_arm, bool), "pseudo_arm", self.pseudo_arm, "true or false")
        _check(isinstance(self.retrain_teacher, bool), "retrain_teacher", self.retrain_teacher, "true or false")
        _check(not self.pseudo_arm or self.data.transfer_set, "pseudo_arm", self.pseudo_arm,
               "false unless data.transfer_set is true (the hard labels are the teacher's on the transfer set)")
        if self.data.transfer_set:
            from .methods.spec import METHOD_INFO

            info = METHOD_INFO.get(self.loss.name)
            _check(info is None or info.labels_only_in_ce, "data.transfer_set", True,
                   f"false with loss {self.loss.name!r}, which uses the labels beyond the CE term; "
                   "transfer-set samples have no label (use kd, soft_ce, mse_logits, logit_std or a "
                   "feature method)")
        _check(isinstance(self.device, str) and bool(re.fullmatch(r"cpu|mps|cuda(:[0-9]{1,2})?", self.device)),
               "device", self.device, "'cpu', 'cuda', 'cuda:N' or 'mps'")
        self._check_models_fit()
        # a method whose loss follows the schedule (FitNets' hint stage) checks it fits the epochs
        from .registry import LOSSES

        check = getattr(LOSSES.get(self.loss.name), "check_schedule", None)
        if check is not None:
            check(self.loss, self.optim.epochs)

    def _check_teachers(self) -> None:
        # JSON gives lists; a frozen config keeps tuples so equal configs compare equal
        for name in ("extra_teachers", "extra_teacher_sources", "teacher_weights"):
            v = getattr(self, name)
            _check(isinstance(v, (list, tuple)), name, v, "a list")
            object.__setattr__(self, name, tuple(v))
        for i, t in enumerate(self.extra_teachers):
            _check(isinstance(t, ModelConfig), f"extra_teachers[{i}]", t,
                   'a model config like {"name": "cnn", "params": {}}')
        n_extra = len(self.extra_teachers)
        _check(len(self.extra_teacher_sources) in (0, n_extra), "extra_teacher_sources",
               list(self.extra_teacher_sources), f"empty (train them all) or {n_extra} source(s), "
               "one per extra teacher")
        for i, src in enumerate(self.extra_teacher_sources):
            _check(_is_source(src), f"extra_teacher_sources[{i}]", src,
                   "one of " + ", ".join(TEACHER_SOURCES))
        w = self.teacher_weights
        _check(len(w) in (0, n_extra + 1) and all(_is_num(x) and x >= 0 for x in w)
               and (not w or sum(w) > 0), "teacher_weights", list(w),
               f"empty (equal weights) or {n_extra + 1} numbers >= 0, not all 0, one per teacher "
               "(the first teacher first)")

    def _check_models_fit(self) -> None:
        """Build every model and run a batch of 2 through it so a mismatch fails now, not mid-run.

        The loss gets a look too: a registered Distiller class with ``check_models`` (feature
        methods) checks its tap points and feature shapes on these probe models.
        """
        from .registry import LOSSES

        in_shape, n_cls = self.data.shape()
        roles = [("teacher", self.teacher), ("student", self.student)]
        roles += [(f"teacher_{i + 2} (extra_teachers[{i}])", m) for i, m in enumerate(self.extra_teachers)]
        built = {}
        for role, mcfg in roles:
            try:
                model, out = _probe_model(mcfg, in_shape, n_cls)
            except ConfigError as e:
                raise ConfigError(f"{role}: {e}") from None
            except Exception as e:  # shape errors inside forward
                raise ConfigError(f"{role} model {mcfg.name!r} does not fit dataset "
                                  f"{self.data.name!r} (input {in_shape}, {n_cls} classes): {e}") from None
            if tuple(out.shape) != (2, n_cls):
                raise ConfigError(f"{role} model {mcfg.name!r} outputs {tuple(out.shape[1:])} but "
                                  f"dataset {self.data.name!r} has {n_cls} classes")
            built[role] = model
        check = getattr(LOSSES.get(self.loss.name), "check_models", None)
        if check is not None:
            try:
                check(student=built["student"], teacher=built["teacher"], in_shape=in_shape,
                      loss_cfg=self.loss)
            except ConfigError as e:
                raise ConfigError(f"loss {self.loss.name!r} with student {self.student.name!r} and "
                                  f"teacher {self.teacher.name!r}: {e}") from None
            except Exception as e:  # a hook or shape error inside a method's own check
                raise ConfigError(f"loss {self.loss.name!r} cannot use student {self.student.name!r} "
                                  f"and teacher {self.teacher.name!r}: {e}") from None


# A model this small (parameters and buffers) with an input this small is probed on the CPU with
# zeroed weights: a few milliseconds. A meta-device forward gives the same shapes without memory,
# but its Python meta kernels import torch._dynamo and sympy (about 1.3 s at the first RunConfig),
# so it is kept for models or inputs too large to allocate and run cheaply.
PROBE_CPU_MAX_NUMEL = 30_000_000
PROBE_CPU_MAX_INPUT = 3 * 64 * 64


def _probe_model(mcfg: ModelConfig, in_shape: tuple[int, ...], n_cls: int):
    """(model, logits) of ``mcfg`` built without initialising weights and run on a batch of 2.

    Built on the meta device (no memory, no pretrained weights read); then, if small, given zeroed
    CPU tensors and run there, else run on the meta device. Either way the shapes and the errors a
    mismatch raises are the ones a real run would meet.
    """
    import torch

    from .models import build_model

    def build():
        with torch.device("meta"):
            return build_model(mcfg.name, in_shape=in_shape, num_classes=n_cls, params=mcfg.params)

    model = build()
    numel = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    if numel <= PROBE_CPU_MAX_NUMEL and math.prod(in_shape) <= PROBE_CPU_MAX_INPUT:
        # zeroed CPU tensors in place of the meta ones (Module.to_empty would go through
        # empty_like's Python reference, which imports sympy)
        model.load_state_dict({k: torch.zeros(v.shape, dtype=v.dtype) for k, v in model.state_dict().items()},
                              assign=True)
        if not any(t.is_meta for t in (*model.parameters(), *model.buffers())):
            with torch.no_grad():
                return model, model(torch.zeros(2, *in_shape))
        model = build()  # a buffer outside the state_dict: probe it all on the meta device
    with torch.device("meta"):
        return model, model(torch.empty(2, *in_shape))


def phase_architectures(cfg: RunConfig) -> dict[str, ModelConfig]:
    """Which ModelConfig each stored phase of a run is: teacher, teacher_2.., baseline, distilled."""
    return {"teacher": cfg.teacher, **{f"teacher_{i + 2}": m for i, m in enumerate(cfg.extra_teachers)},
            "baseline": cfg.student, "distilled": cfg.student,
            **({"pseudo": cfg.student} if cfg.pseudo_arm else {})}


_SECTIONS = {"data": DataConfig, "teacher": ModelConfig, "student": ModelConfig,
             "loss": LossConfig, "optim": OptimConfig, "teacher_optim": OptimConfig}


def to_dict(cfg: RunConfig) -> dict:
    """Plain JSON-ready dict of a RunConfig."""
    return asdict(cfg)


def _build(cls, d: Any, where: str):
    if is_dataclass(d):
        return d
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a JSON object, got {d!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown field(s) in {where}: {', '.join(map(str, unknown))}; allowed: "
                          f"{', '.join(sorted(known))}")
    try:
        return cls(**d)
    except ConfigError as e:  # name the section: "optim: epochs = 0 ..." vs "teacher_optim: ..."
        msg = str(e)
        raise (e if msg.startswith((where, f"{where}.")) or where == "config"
               else ConfigError(f"{where}: {msg}")) from None


def from_dict(d: dict) -> RunConfig:
    """Rebuild a RunConfig from ``to_dict`` output (partial dicts fill in defaults)."""
    if not isinstance(d, dict):
        raise ConfigError(f"a run config must be a JSON object, got {type(d).__name__}")
    d = dict(d)
    for key, cls in _SECTIONS.items():
        if key in d:
            d[key] = _build(cls, d[key], key)
    if isinstance(d.get("extra_teachers"), (list, tuple)):
        d["extra_teachers"] = tuple(_build(ModelConfig, t, f"extra_teachers[{i}]")
                                    for i, t in enumerate(d["extra_teachers"]))
    return _build(RunConfig, d, "config")


def to_json(cfg: RunConfig) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def from_json(text: str) -> RunConfig:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config is not valid JSON: {e}") from None
    return from_dict(d)
