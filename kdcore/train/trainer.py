"""The training loop shared by teacher, baseline student and distilled student.

A :class:`Distiller` turns a batch into ``(student_logits, {term: value})``; :func:`fit` sums
the terms, steps the optimiser and emits events. The teacher always stays in ``eval()`` under
``no_grad``; when the data is not augmented its logits are computed once and indexed per batch.
"""
from __future__ import annotations

import contextlib
import copy
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import epoch_batches
from ..events import Callback, EpochEnd, PhaseStart, StepEnd
from ..losses import hard_ce
from ..registry import LOSSES

__all__ = ["Distiller", "Alone", "LogitDistiller", "make_distiller", "fit", "FitResult",
           "predict_logits", "make_generator", "SeededDropout", "own_dropout", "checkpoint_state"]


class Distiller(nn.Module):
    """Base class of every method: owns the student (and any extra trainable part, e.g. a regressor).

    ``forward(x, y, teacher_logits)`` returns ``(student_logits, {term: weighted value})``; the
    trainer sums the terms. A method is registered once in ``LOSSES`` with its
    :class:`~kdcore.registry.MethodSpec` (what the UI shows); a logit loss registers a plain
    function, which :class:`LogitDistiller` wraps, and anything that needs more registers a
    subclass. What such a subclass needs from the trainer it declares here, in class attributes
    (an instance may refine one in ``__init__``, as FitNets does ``has_idle_parameters``):

    ``uses_teacher_logits_only`` (default True)
        True: the loss reads only the teacher's logits, so with un-augmented data the trainer
        computes them once and passes ``teacher_logits`` per batch. False (feature methods): the
        trainer never caches and passes ``teacher_logits=None``; the distiller runs the teacher.
    ``needs_in_shape`` (default False)
        True: :func:`make_distiller` passes ``in_shape=`` (one input's shape) to the constructor,
        which sizes its own parts from a probe (FitNets' regressor, the discriminator).
    ``has_idle_parameters`` (default False)
        True when some epochs leave parameters without a gradient (FitNets' hint stage never
        reaches the head): :func:`fit` then asks DistributedDataParallel to look for unused
        parameters, or its next step fails.
    ``epoch`` / ``epochs`` (default None)
        Set by :meth:`set_epoch`, which :func:`fit` calls before every epoch, so a method whose
        loss follows the schedule (FitNets' hint stage) reads ``self.epoch`` (1-based).

    Two class hooks run when the RunConfig is built, before anything trains:
    :meth:`check_models` (on meta-device models: taps exist, shapes fit) and
    :meth:`check_schedule` (the method's schedule fits the student's epochs). Both accept
    everything by default.
    """

    uses_teacher_logits_only: bool = True
    needs_in_shape: bool = False
    has_idle_parameters: bool = False
    epoch: int | None = None  # 1-based epoch of the fit() in progress; None before any fit
    epochs: int | None = None  # that fit()'s number of epochs

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None):
        super().__init__()
        self.student = student
        # Kept out of the module tree so .parameters() and state_dict() never include it.
        self.__dict__["teacher"] = teacher

    def forward(self, x: torch.Tensor, y: torch.Tensor,
                teacher_logits: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Called by :func:`fit` before the first step of each epoch.

        Args:
            epoch: 1-based, as in the papers' code (mdistiller's ``epoch / warmup``).
            epochs: the run's total, so a subclass can check its schedule fits; it raises
                ``ConfigError`` if not, before anything trains.
        """
        self.epoch, self.epochs = epoch, epochs

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.teacher(x)

    @classmethod
    def check_models(cls, *, student: nn.Module, teacher: nn.Module, in_shape, loss_cfg) -> None:
        """Config-time check of the (meta-device) models; raise ``ConfigError`` if they cannot work."""

    @staticmethod
    def check_schedule(loss_cfg, epochs: int) -> None:
        """Config-time check that the method's schedule fits ``epochs``; raise ``ConfigError`` if not."""


class Alone(Distiller):
    """The student trained alone on hard labels: the baseline (and how teachers are trained)."""

    def forward(self, x, y, teacher_logits=None):
        logits = self.student(x)
        return logits, {"ce": hard_ce(logits, y)}


class LogitDistiller(Distiller):
    """Any registered logit loss ``fn(s, t, y, cfg) -> terms`` (see :mod:`kdcore.losses`).

    A loss whose spec sets ``takes_epoch`` (DKD, for its warm-up) is also passed
    ``epoch=self.epoch``; it stays a pure function of its arguments and still works from cached
    teacher logits.
    """

    def __init__(self, student, teacher, loss_cfg):
        super().__init__(student, teacher)
        self.loss_fn = LOSSES.get(loss_cfg.name)
        self.loss_cfg = loss_cfg
        # opt-in, so the other losses keep their four-argument signature
        self._takes_epoch = LOSSES.spec(loss_cfg.name).takes_epoch

    def forward(self, x, y, teacher_logits=None):
        if teacher_logits is None:
            teacher_logits = self.teacher_logits(x)
        logits = self.student(x)
        if self._takes_epoch:
            return logits, self.loss_fn(logits, teacher_logits, y, self.loss_cfg, epoch=self.epoch)
        return logits, self.loss_fn(logits, teacher_logits, y, self.loss_cfg)


def make_distiller(loss_cfg, student: nn.Module, teacher: nn.Module, *,
                   in_shape: tuple[int, ...] | None = None, seed: int = 0) -> Distiller:
    """Build the distiller a loss config names: a Distiller class from LOSSES, or a logit loss.

    Args:
        loss_cfg: LossConfig. student, teacher: the models (teacher may be an ensemble).
        in_shape: one input's shape; a Distiller class with ``needs_in_shape`` (feature and
            adversarial methods) sizes its own trainable parts from a probe of this shape.
        seed: what a distiller's own parts (FitNets' regressor, a discriminator) draw their init
            from, alone among threads (``seeded_init``): equal seeds give equal parts.
    """
    from ..models import seeded_init

    entry = LOSSES.get(loss_cfg.name)
    with seeded_init(seed + DISTILLER_SEED_OFFSET):
        if isinstance(entry, type) and issubclass(entry, Distiller):
            if entry.needs_in_shape:
                if in_shape is None:
                    raise ValueError(f"loss {loss_cfg.name!r} sizes its parts from the input: pass in_shape=")
                return entry(student, teacher, loss_cfg, in_shape=tuple(in_shape))
            return entry(student, teacher, loss_cfg)
        return LogitDistiller(student, teacher, loss_cfg)


# A distiller's own parts are initialised from the run's seed plus this, not from the student's stream.
DISTILLER_SEED_OFFSET = 3_000_017


def _world() -> tuple[int, int]:
    """(world size, rank) of the initialised torch.distributed group, else (1, 0)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


_ALPHA = 1.7580993408473766  # SELU's scale x alpha: the value alpha dropout sets a dropped unit to
# torch's dropout layers -> (their functional form, channel-wise masks, alpha dropout, the input
# dims it takes as a batch, any other taken as one sample; None: always [N, C, ...], as torch's
# dropout2d reads a 3-D input)
_DROPOUT_KINDS: dict[type, tuple[Any, bool, bool, int | None]] = {
    nn.Dropout: (F.dropout, False, False, None), nn.Dropout1d: (F.dropout1d, True, False, 3),
    nn.Dropout2d: (F.dropout2d, True, False, None), nn.Dropout3d: (F.dropout3d, True, False, 5),
    nn.AlphaDropout: (F.alpha_dropout, False, True, None),
    nn.FeatureAlphaDropout: (F.feature_alpha_dropout, True, True, None)}


class SeededDropout(nn.modules.dropout._DropoutNd):
    """A dropout layer of any of torch's kinds drawing its masks from a generator of the run's own
    (see :func:`own_dropout`): element-wise or channel-wise (``Dropout1d/2d/3d``,
    ``FeatureAlphaDropout``), plain or alpha (``AlphaDropout``, which keeps SELU's mean and
    variance). With the same generator state its output is bit-for-bit torch's layer's
    (``tests/test_resume.py``): the same Bernoulli draws, the same arithmetic.

    Torch's dropout draws from the one process-wide generator, which concurrent runs in one
    server share; with its own generator a run's masks depend on its seed alone, and a
    checkpoint can carry the generator's state so a resumed run draws the masks it would have.
    """

    generator: torch.Generator | None = None

    def __init__(self, p: float = 0.5, inplace: bool = False, *, like: type = nn.Dropout) -> None:
        super().__init__(p, inplace)
        self.like = like
        self.functional, self.feature, self.alpha, self.batched_dims = _DROPOUT_KINDS[like]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or self.generator is None:
            return self.functional(x, self.p, self.training, self.inplace)
        keep = 1.0 - self.p
        if keep == 0.0:  # as torch: every unit zeroed, nothing drawn
            return x.mul(torch.zeros((), dtype=x.dtype, device=x.device))
        if not self.feature:  # (empty_like keeps a channels-last input's layout, as torch's does)
            noise = torch.empty_like(x)
        else:
            if self.batched_dims is not None and x.dim() != self.batched_dims:  # one sample: [C, ...]
                shape = x.shape[:1] + (1,) * (x.dim() - 1)
            else:  # [N, C, ...]: one draw per sample and channel
                shape = x.shape[:2] + (1,) * (x.dim() - 2)
            noise = torch.empty(shape, dtype=x.dtype, device=x.device)
        noise.bernoulli_(keep, generator=self.generator)
        if not self.alpha:
            return x * noise.div_(keep)
        a = 1.0 / math.sqrt((_ALPHA * _ALPHA * self.p + 1) * keep)
        b = noise.add(-1).mul_(_ALPHA * a).add_(_ALPHA * a * self.p)
        return x * noise.mul_(a) + b

    def extra_repr(self) -> str:
        return f"{self.like.__name__}, p={self.p}"


def own_dropout(model: nn.Module, generator: torch.Generator) -> int:
    """Make every dropout layer of ``model`` (any kind in ``_DROPOUT_KINDS``) draw from
    ``generator``; returns how many there are."""
    n = 0
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) in _DROPOUT_KINDS:
                seeded = SeededDropout(child.p, child.inplace, like=type(child))
                seeded.train(child.training)
                setattr(parent, name, seeded)
                child = seeded
            if isinstance(child, SeededDropout):
                child.generator = generator
                n += 1
    return n


def make_generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits of ``model`` in eval mode over ``x``, batched, returned on the CPU.

    Args:
        model: any classifier. x: inputs [N, ...]. batch_size: inference batch. device: where to run.
    Returns:
        [N, K] float tensor on the CPU.
    """
    was_training = model.training
    model.eval()
    # a conv model reads NHWC batches faster (the teacher-logit cache took 0.60x the CPU time)
    fmt = torch.channels_last if x.dim() == 4 and _has_conv(model) else torch.contiguous_format
    out = [model(x[i:i + batch_size].to(device).contiguous(memory_format=fmt)).float().cpu()
           for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


@dataclass
class FitResult:
    status: str  # completed | stopped | diverged
    message: str = ""
    epochs: list[dict[str, Any]] = field(default_factory=list)  # one dict per EpochEnd
    seconds: float = 0.0


def _optimizer(params, cfg, device: torch.device) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        # not fused: fused SGD under the fp16 grad scaler turned ResNet-32's weights to NaN by step 3
        # on an H200 (torch 2.11) where the foreach SGD trained (benchmarks/gpu_check.py)
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True,
                               weight_decay=cfg.weight_decay)
    # on CUDA fused Adam takes one launch per step, and with fp16 it reads the grad scaler's inf
    # flag on the device instead of syncing the host every step
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)


# Off the CPU, step numbers reach the host in blocks of this many steps: each .item() waits for
# the GPU to finish, and a small model's step is shorter than that round trip.
SYNC_EVERY = 50
# Share of the free device memory the training data may take to be kept resident on the device.
RESIDENT_FRACTION = 0.5
# cuDNN times its algorithms once per input shape and keeps the fastest: ResNet-32's epoch on an
# H200 went from 5.5 s to 3.8 s. It is process-wide, set when a conv model trains on CUDA; GPU runs
# are not guaranteed bit-identical without cudnn.deterministic anyway (PyTorch's reproducibility notes).
CUDNN_BENCHMARK = True


def _fits_on(device: torch.device, tensors: Iterable[torch.Tensor | None]) -> bool:
    """Whether ``tensors`` fit in RESIDENT_FRACTION of ``device``'s free memory (CUDA only)."""
    if device.type != "cuda":
        return False
    need = sum(t.numel() * t.element_size() for t in tensors if t is not None)
    free, _ = torch.cuda.mem_get_info(device)
    return need <= RESIDENT_FRACTION * free


def _defer_sync(device: torch.device) -> bool:
    """Whether step numbers wait on the device for a block of SYNC_EVERY steps (not on the CPU)."""
    return device.type != "cpu"


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@dataclass
class _Loop:
    """What one :func:`fit` sets up before its first step and keeps across epochs."""

    model: nn.Module  # the distiller, or its DDP / compiled wrapper
    opt: torch.optim.Optimizer
    sched: Any
    scaler: Any
    gen: torch.Generator  # data order and augmentation
    dropout_gen: torch.Generator  # dropout masks (see SeededDropout)
    x_all: torch.Tensor
    y_all: torch.Tensor
    x_val: torch.Tensor
    teacher_logits: torch.Tensor | None
    device: torch.device
    precision: str
    channels_last: bool
    resident: bool
    n: int  # labelled samples: an epoch is one pass over them
    mixed: bool  # a transfer set rides along: accuracy counts only the labelled part of a batch
    world: int
    rank: int
    steps_per_epoch: int
    total: int


# The dropout generator's seed is the run's seed plus this, so masks never repeat the data order.
DROPOUT_SEED_OFFSET = 7_368_787


def _place(distiller: Distiller, device: torch.device) -> bool:
    """Move the distiller (and its teacher) to ``device``; returns whether inputs go channels-last."""
    distiller.to(device)
    teacher = distiller.__dict__.get("teacher")
    if teacher is not None:
        teacher.to(device).eval()
    # channels-last: cuDNN's fastest convolutions on a GPU (NHWC tensor cores), and on the CPU
    # oneDNN's NHWC convolutions and max-pool (the CNN teacher's epoch took 0.72x the CPU time,
    # benchmarks/bench_teacher_cpu.py); Module.to converts only 4-D weights, so an MLP is untouched
    nhwc = device.type in ("cuda", "cpu")
    channels_last = nhwc and _has_conv(distiller.student)
    conv_teacher = teacher is not None and _has_conv(teacher)
    if device.type == "cuda" and (_has_conv(distiller) or conv_teacher):
        torch.backends.cudnn.benchmark = CUDNN_BENCHMARK
    if channels_last:
        distiller.to(memory_format=torch.channels_last)
    if nhwc and conv_teacher:  # a teacher run every step: its NHWC weights make its convolutions NHWC
        teacher.to(memory_format=torch.channels_last)
    return channels_last


def _set_up(distiller: Distiller, data, optim_cfg, device: torch.device, seed: int,
            teacher_logits: torch.Tensor | None) -> _Loop:
    """Optimiser, schedule, generators, DDP wrapping and device-resident data for one fit()."""
    channels_last = _place(distiller, device)
    dropout_gen = torch.Generator(device=device if device.type == "cuda" else "cpu")
    dropout_gen.manual_seed(seed + DROPOUT_SEED_OFFSET)
    own_dropout(distiller, dropout_gen)
    opt = _optimizer([p for p in distiller.parameters() if p.requires_grad], optim_cfg, device)
    precision = getattr(optim_cfg, "precision", "fp32")
    n = data.n_labelled
    world, rank = _world()
    model: nn.Module = distiller
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # broadcasts rank 0's parameters and buffers, so every rank starts from the same weights;
        # a globally unused parameter keeps grad None, so the optimiser leaves it untouched
        model = DistributedDataParallel(distiller, device_ids=[device.index] if device.type == "cuda" else None,
                                        find_unused_parameters=distiller.has_idle_parameters)
    steps_per_epoch = math.ceil(n / optim_cfg.batch_size)
    if world > 1 and 0 < n % optim_cfg.batch_size < world:
        steps_per_epoch -= 1  # the last batch cannot give every rank a sample
    total = optim_cfg.epochs * steps_per_epoch
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
             if optim_cfg.schedule == "cosine" else None)
    if getattr(optim_cfg, "compile", False):
        model = torch.compile(model)
    x_all, y_all, x_val = data.x_train, data.y_train, data.x_val
    # data resident on the device: one copy per phase instead of one per step
    resident = _fits_on(device, (x_all, y_all, x_val, teacher_logits))
    if resident:
        x_all, y_all, x_val = x_all.to(device), y_all.to(device), x_val.to(device)
        teacher_logits = teacher_logits.to(device) if teacher_logits is not None else None
    return _Loop(model, opt, sched, torch.amp.GradScaler(device.type) if precision == "fp16" else None,
                 make_generator(seed), dropout_gen, x_all, y_all, x_val, teacher_logits, device, precision,
                 channels_last, resident, n, data.n_unlabelled > 0, world, rank, steps_per_epoch, total)


def checkpoint_state(loop: _Loop, distiller: Distiller, epoch: int, step: int, result: FitResult) -> dict:
    """Everything a resumed fit() needs to go on after ``epoch`` exactly as if never stopped.

    A copy (training goes on changing the live tensors) of plain tensors, numbers and strings
    only, so it loads with ``torch.load(weights_only=True)``.
    """
    return {"epoch": epoch, "step": step, "epochs": copy.deepcopy(result.epochs),
            "distiller": {k: v.detach().to("cpu", copy=True) for k, v in distiller.state_dict().items()},
            "optimizer": copy.deepcopy(loop.opt.state_dict()),
            "scheduler": copy.deepcopy(loop.sched.state_dict()) if loop.sched is not None else None,
            "scaler": copy.deepcopy(loop.scaler.state_dict()) if loop.scaler is not None else None,
            "generator": loop.gen.get_state(), "dropout_generator": loop.dropout_gen.get_state()}


def _restore(loop: _Loop, distiller: Distiller, state: dict, result: FitResult) -> tuple[int, int]:
    """Load a :func:`checkpoint_state`; returns (epochs done, steps done)."""
    distiller.load_state_dict(state["distiller"])
    loop.opt.load_state_dict(state["optimizer"])
    if loop.sched is not None and state.get("scheduler") is not None:
        loop.sched.load_state_dict(state["scheduler"])
    if loop.scaler is not None and state.get("scaler") is not None:
        loop.scaler.load_state_dict(state["scaler"])
    loop.gen.set_state(state["generator"])
    loop.dropout_gen.set_state(state["dropout_generator"])
    result.epochs = [dict(e) for e in state["epochs"]]
    return int(state["epoch"]), int(state["step"])


def fit(distiller: Distiller, data, optim_cfg, *, phase: str, seed: int,
        device: str | torch.device = "cpu", callbacks: Iterable[Callback] = (),
        stop: threading.Event | None = None, teacher_logits: torch.Tensor | None = None,
        run_id: int | None = None, checkpoint: Callable[[dict], None] | None = None,
        checkpoint_every_s: float = 0.0, resume: dict | None = None) -> FitResult:
    """Train ``distiller.student`` (plus the distiller's own parameters) on ``data``.

    Args:
        distiller: what to train and how the loss is made.
        data: a DataBundle (x_train, y_train, x_val, y_val, augment).
        optim_cfg: OptimConfig (epochs, lr, batch_size, optimizer, schedule).
        phase: name carried by every event.
        seed: seeds the data order, augmentation and dropout; equal seeds give equal batches.
        device: where to train. callbacks: receive the events. stop: set it to stop between steps.
        teacher_logits: cached [N_train, K] teacher logits, indexed per batch (no augmentation).
        run_id: carried by every event so a store can file them.
        checkpoint: called after a finished epoch (after its EpochEnd) with
            :func:`checkpoint_state`, but not after the last; single-process fits only.
        checkpoint_every_s: at most one checkpoint per this many seconds (0 = every epoch): a
            tiny model's epoch takes a millisecond, its checkpoint three.
        resume: such a state: the fit goes on from the epoch after it and ends with the weights
            an uninterrupted fit would have (on the CPU, bit for bit).
    Returns:
        FitResult with the status and one dict per finished epoch (resumed ones included).

    Before the first step of each epoch it calls ``distiller.set_epoch(epoch, epochs)``
    (``epoch`` 1-based) so a method can follow the schedule; a schedule that does not fit the
    epochs raises ``ConfigError`` there, before that phase trains.

    Under an initialised ``torch.distributed`` group of N > 1 processes (see
    :mod:`kdcore.train.distributed`) every rank draws the same batches, trains on its share
    ``batch[rank::N]`` through DistributedDataParallel (gradients averaged, so the step is the
    single-process step on the whole batch when shares are equal), and the step's loss, terms,
    correct count and stop flag are all-reduced, so every rank reports the same numbers and
    stops, or diverges, at the same step. A final batch smaller than N is skipped.
    """
    callbacks = list(callbacks)
    emit = (lambda ev: [cb(ev) for cb in callbacks]) if callbacks else (lambda ev: None)
    device = torch.device(device)
    loop = _set_up(distiller, data, optim_cfg, device, seed, teacher_logits)
    result = FitResult("completed")
    done, step = _restore(loop, distiller, resume, result) if resume is not None else (0, 0)
    if loop.world > 1:
        checkpoint = None  # ranks would write one file each; a distributed run is not resumed
    emit(PhaseStart(phase, optim_cfg.epochs, loop.steps_per_epoch, run_id))
    t_phase = last_checkpoint = time.perf_counter()
    for epoch in range(done + 1, optim_cfg.epochs + 1):
        # the distiller itself, not the DDP wrapper, keeps the schedule its forward reads
        distiller.set_epoch(epoch, optim_cfg.epochs)
        t0 = time.perf_counter()
        sums, loss_sum, correct, seen, step = _train_epoch(loop, data, optim_cfg, epoch, step, stop, emit,
                                                          result, phase, run_id)
        if result.status != "completed":
            break
        ev = _validate(loop, distiller, data, optim_cfg, phase, epoch, sums, loss_sum, correct, seen, t0,
                       run_id)
        result.epochs.append({k: getattr(ev, k) for k in ("epoch", "train_loss", "terms", "train_acc",
                                                           "val_loss", "val_acc", "seconds")})
        emit(ev)
        if (checkpoint is not None and epoch < optim_cfg.epochs
                and time.perf_counter() - last_checkpoint >= checkpoint_every_s):
            checkpoint(checkpoint_state(loop, distiller, epoch, step, result))
            last_checkpoint = time.perf_counter()
    if loop.world > 1:
        import torch.distributed as dist

        # parameters agree by construction; buffers (BatchNorm statistics) are rank 0's
        for b in distiller.buffers():
            dist.broadcast(b, 0)
    distiller.eval()
    result.seconds = time.perf_counter() - t_phase
    return result


def _train_epoch(loop: _Loop, data, optim_cfg, epoch: int, step: int, stop, emit, result: FitResult,
                 phase: str, run_id) -> tuple[dict[str, float], float, Any, Any, int]:
    """One pass over the labelled samples; returns (term sums, loss sum, correct, seen, step).

    On a stop request or a non-finite loss it sets ``result``'s status and returns early.
    """
    device, world, rank, n, mixed = loop.device, loop.world, loop.rank, loop.n, loop.mixed
    on_cpu, defer = device.type == "cpu", _defer_sync(device)
    aug = getattr(data, "augment", None)
    model, opt, sched, scaler = loop.model, loop.opt, loop.sched, loop.scaler
    x_all, y_all, t_all = loop.x_all, loop.y_all, loop.teacher_logits
    model.train()
    sums: dict[str, float] = {}
    loss_sum, correct, seen = 0.0, 0, 0
    pending: list = []  # when deferring: (step, loss and terms, names, lr) not yet on the host
    epoch_idx = epoch_batches(data, optim_cfg.batch_size, loop.gen)
    # a set on disk (kdcore.data.own.StreamedImages) decodes the epoch's batches while the steps run
    read_ahead = None if loop.resident else getattr(x_all, "read_ahead", None)
    if loop.resident:  # the epoch's order goes to the device in one copy, then is sliced there
        cpu_idx = list(epoch_idx)
        epoch_idx = (torch.cat(cpu_idx).to(device).split([len(i) for i in cpu_idx]) if cpu_idx else [])
    elif read_ahead is not None:
        epoch_idx = list(epoch_idx)
        read_ahead(epoch_idx)
    for idx in epoch_idx:
        if world == 1 and stop is not None and stop.is_set():
            result.status, result.message = "stopped", f"stopped by request in epoch {epoch}"
            break
        if world > 1 and len(idx) < world:
            continue
        x, y = x_all[idx], y_all[idx]
        if aug is not None:  # on the whole batch, so every rank's generator stays in step
            x = aug(x, generator=loop.gen)
        t_log = t_all[idx] if t_all is not None else None
        if world > 1:
            x, y = x[rank::world], y[rank::world]
            t_log = t_log[rank::world] if t_log is not None else None
        if not on_cpu and not loop.resident:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            t_log = t_log.to(device, non_blocking=True) if t_log is not None else None
        if loop.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, loop.precision):
            logits, terms = model(x, y, t_log)
            parts = list(terms.values())
            loss = parts[0] if len(parts) == 1 else sum(parts[1:], parts[0])
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        if sched is not None:
            sched.step()
        step += 1
        if world > 1:
            loss_f, term_f, n_right, stop_now = _reduce_step(loss, terms, logits, y, stop, world, device)
            n_seen = len(idx)
        else:  # tensors: summed, synced once an epoch (or once a block when deferring)
            n_right, n_seen = _count(logits, y, idx, n, mixed)
            if defer:  # no host sync: the numbers come back every SYNC_EVERY steps
                pending.append((step, torch.stack([loss.detach().float(),
                                                   *[v.detach().float() for v in terms.values()]]),
                                list(terms), opt.param_groups[0]["lr"]))
                correct, seen = correct + n_right, seen + n_seen
                if len(pending) >= SYNC_EVERY:
                    block = _flush(pending, sums, result, emit, phase, epoch, loop.total, optim_cfg, run_id)
                    pending.clear()
                    if block is None:
                        break
                    loss_sum += block
                continue
            loss_f, stop_now = loss.item(), False
        if not math.isfinite(loss_f):
            result.status, result.message = "diverged", _diverged(phase, loss_f, epoch, step, optim_cfg)
            break
        if world == 1:  # per-step host syncs cost more than a tiny model's step: keep them few
            term_f = ({k: loss_f for k in terms} if len(parts) == 1
                      else {k: v.item() for k, v in terms.items()})
        for k, v in term_f.items():
            sums[k] = sums.get(k, 0.0) + v
        loss_sum += loss_f
        correct, seen = correct + n_right, seen + n_seen
        emit(StepEnd(phase, epoch, step, loop.total, loss_f, term_f, opt.param_groups[0]["lr"], run_id))
        if stop_now:
            result.status, result.message = "stopped", f"stopped by request in epoch {epoch}"
            break
    if read_ahead is not None:  # what a stopped epoch did not take
        read_ahead(None)
    if pending and result.status != "diverged":  # a stopped epoch still reports its steps
        loss_sum += _flush(pending, sums, result, emit, phase, epoch, loop.total, optim_cfg, run_id) or 0.0
    return sums, loss_sum, correct, seen, step


def _count(logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, n: int, mixed: bool):
    """(correct, counted) of one batch as tensors; with a transfer set only labelled samples count."""
    hit = logits.argmax(1) == y
    if not mixed:
        return hit.sum(), len(idx)
    labelled = idx < n  # the transfer set's samples sit after the labelled ones
    return (hit & labelled).sum(), labelled.sum()


def _validate(loop: _Loop, distiller: Distiller, data, optim_cfg, phase: str, epoch: int, sums, loss_sum,
              correct, seen, t0: float, run_id) -> EpochEnd:
    """The epoch's EpochEnd: its mean train numbers and the student on the validation split."""
    val_logits = predict_logits(distiller.student, loop.x_val, device=loop.device)
    has_val = len(data.y_val) > 0
    val_loss = F.cross_entropy(val_logits, data.y_val).item() if has_val else float("nan")
    val_acc = (val_logits.argmax(1) == data.y_val).float().mean().item() if has_val else float("nan")
    spe = loop.steps_per_epoch
    return EpochEnd(phase, epoch, optim_cfg.epochs, loss_sum / spe, {k: v / spe for k, v in sums.items()},
                    float(correct) / max(float(seen), 1), val_loss, val_acc, time.perf_counter() - t0,
                    run_id, distiller.student)


def _diverged(phase: str, loss_f: float, epoch: int, step: int, optim_cfg) -> str:
    return (f"{phase}: the loss became {loss_f} at epoch {epoch}, step {step}; "
            f"lower the learning rate (now {optim_cfg.lr}) or the temperature")


def _flush(pending, sums, result, emit, phase, epoch, total, optim_cfg, run_id) -> float | None:
    """Bring a block of steps' numbers to the host in one sync, check them, emit their StepEnds.

    Returns:
        The block's summed loss, or None when a loss is not finite (``result`` then says diverged).
    """
    rows = torch.stack([p[1] for p in pending]).tolist()
    block = 0.0
    for (step, _, names, lr), row in zip(pending, rows):
        loss_f = row[0]
        if not math.isfinite(loss_f):
            result.status, result.message = "diverged", _diverged(phase, loss_f, epoch, step, optim_cfg)
            return None
        term_f = dict(zip(names, row[1:]))
        for k, v in term_f.items():
            sums[k] = sums.get(k, 0.0) + v
        block += loss_f
        emit(StepEnd(phase, epoch, step, total, loss_f, term_f, lr, run_id))
    return block


def _reduce_step(loss, terms, logits, y, stop, world, device):
    """All-reduce one step's numbers: mean loss and terms, summed correct count, any stop request."""
    import torch.distributed as dist

    vec = torch.stack([loss.detach().double(), *[v.detach().double() for v in terms.values()],
                       (logits.argmax(1) == y).sum().double(),
                       torch.tensor(float(stop is not None and stop.is_set()), dtype=torch.float64,
                                    device=loss.device)]).to(device)
    dist.all_reduce(vec)
    vals = vec.tolist()
    loss_f, term_vals = vals[0] / world, [v / world for v in vals[1:-2]]
    return loss_f, dict(zip(terms, term_vals)), int(vals[-2]), vals[-1] > 0
