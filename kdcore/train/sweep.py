"""α × T sweeps: one teacher and one baseline, many distilled students.

Neither the teacher nor the baseline student depends on α or T, so :func:`run_sweep` trains
them in the first cell and hands them to every later cell through
``run_experiment(reuse=...)``; each cell is a full run in the history (kind ``sweep``, one
shared group), so the Runs page lists, overlays and replays them like any other run.
The dashboard's background worker for a sweep is :class:`kdapp.sweep_run.SweepRun`.
"""
from __future__ import annotations

import copy
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

from ..config import LossConfig, RunConfig, replace
from ..registry import LOSSES
from ..data import load_data
from ..errors import ConfigError
from ..events import Callback
from .experiment import run_experiment
from ..history.store import RunStore

__all__ = ["SweepPlan", "SweepResult", "run_sweep", "MAX_CELLS", "PRESET", "preset_plan"]

MAX_CELLS = 64  # a sweep is for a classroom, not a cluster: 8 x 8 at most


@dataclass(frozen=True)
class SweepPlan:
    """The grid: the base run and the α and T values to cross with it.

    Cells run row by row (α outer, T inner), in the order given.
    """

    base: RunConfig  # everything but loss.alpha and loss.temperature
    alphas: tuple[float, ...]  # weight of the hard-label CE in each row
    temps: tuple[float, ...]  # temperature of each column

    def __post_init__(self) -> None:
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        object.__setattr__(self, "temps", tuple(float(t) for t in self.temps))
        for name, vals in (("alphas", self.alphas), ("temps", self.temps)):
            if not vals:
                raise ConfigError(f"sweep {name}: pick at least one value")
            if len(set(vals)) != len(vals):
                raise ConfigError(f"sweep {name}: {list(vals)} repeats a value")
        n = len(self.alphas) * len(self.temps)
        if n > MAX_CELLS:
            raise ConfigError(f"sweep: {len(self.alphas)} α x {len(self.temps)} T = {n} cells; "
                              f"the most allowed is {MAX_CELLS}")
        name = self.base.loss.name
        if not LOSSES.spec(name).uses_temperature and len(self.temps) > 1:
            raise ConfigError(f"sweep: loss {name} does not use T; sweep a loss that does (kd)")
        for a in self.alphas:  # validate every cell now, not halfway through the sweep
            for t in self.temps:
                LossConfig(name=self.base.loss.name, temperature=t, alpha=a, t2=self.base.loss.t2,
                           params=self.base.loss.params)

    @property
    def cells(self) -> list[tuple[float, float]]:
        return [(a, t) for a in self.alphas for t in self.temps]

    def config(self, alpha: float, T: float) -> RunConfig:
        """The RunConfig of one cell."""
        label = self.base.name or "sweep"
        return replace(self.base, loss=replace(self.base.loss, alpha=alpha, temperature=T),
                       name=f"{label} α={alpha:g} T={T:g}")


PRESET = {  # the small Fashion-MNIST grid: measured by benchmarks/sweep_preset.py (< 5 min, 2 cores)
    "dataset": "fashion_mnist",
    "train_subset": 10000,
    "teacher": ("cnn", {}),
    "student": ("mlp", {"hidden": [32]}),
    "teacher_epochs": 6,
    "epochs": 10,
    "lr": 1e-3,
    "batch_size": 128,
    "alphas": (0.1, 0.5, 0.9),
    "temps": (1.0, 2.0, 4.0, 8.0),
}


def preset_plan(**overrides: Any) -> SweepPlan:
    """The preset sweep as a SweepPlan (keys of :data:`PRESET` may be overridden)."""
    from ..config import DataConfig, ModelConfig, OptimConfig

    p = {**PRESET, **overrides}
    optim = OptimConfig(epochs=p["epochs"], lr=p["lr"], batch_size=p["batch_size"])
    base = RunConfig(
        data=DataConfig(name=p["dataset"], train_subset=p["train_subset"]),
        teacher=ModelConfig(p["teacher"][0], dict(p["teacher"][1])),
        student=ModelConfig(p["student"][0], dict(p["student"][1])),
        loss=LossConfig(name="kd", temperature=p["temps"][0], alpha=p["alphas"][0]),
        optim=optim, teacher_optim=replace(optim, epochs=p["teacher_epochs"]), name="preset sweep")
    return SweepPlan(base, tuple(p["alphas"]), tuple(p["temps"]))


@dataclass
class SweepResult:
    status: str  # completed | stopped | failed
    message: str
    group: str
    cells: list[dict] = field(default_factory=list)  # one dict per finished cell (see run_sweep)
    seconds: float = 0.0


class _Memo:
    """A frozen teacher's forward that remembers its outputs on slices of fixed tensors.

    Every sweep cell asks the reused teacher for the same logits — on the test set, to score it,
    and on the training set, to cache its soft targets — which cost most of a cell's time with a
    CNN teacher. Only no-grad calls on a slice of one of ``bases`` (the bundle's tensors, which
    nothing writes to) are remembered; anything else, e.g. the random batch that times the
    model or a feature method's training batch, runs the model as usual.
    """

    def __init__(self, forward, bases):
        self.forward = forward
        self.bases = [(b, b.untyped_storage().data_ptr()) for b in bases]
        self.memo: dict[tuple, torch.Tensor] = {}

    def __call__(self, x, *args, **kwargs):
        if args or kwargs or torch.is_grad_enabled() or not isinstance(x, torch.Tensor):
            return self.forward(x, *args, **kwargs)
        ptr = x.untyped_storage().data_ptr()
        for i, (base, base_ptr) in enumerate(self.bases):
            if ptr == base_ptr and x.stride() == base.stride() and x.dtype == base.dtype:
                key = (i, x.storage_offset(), tuple(x.shape))
                if key not in self.memo:
                    self.memo[key] = self.forward(x)
                return self.memo[key]
        return self.forward(x)


def _remembering(teacher: torch.nn.Module, data) -> torch.nn.Module:
    """The same teacher (shared weights, same state_dict) with a :class:`_Memo` forward."""
    twin = copy.copy(teacher)
    twin.forward = _Memo(teacher.forward, [data.x_train, data.x_val, data.x_test])
    return twin


def _cell(alpha: float, T: float, res) -> dict:
    acc = {p: (res.metrics.get(p) or {}).get("accuracy") for p in ("teacher", "baseline", "distilled")}
    return {"alpha": alpha, "T": T, "status": res.status, "run_id": res.run_id, **acc,
            "gain": res.gain, "seconds": res.seconds, "message": res.message}


def run_sweep(plan: SweepPlan, *, store: RunStore | None = None, callbacks: Iterable[Callback] = (),
              stop: threading.Event | None = None, on_cell: Callable[[dict], None] | None = None,
              group: str | None = None, data=None, recorders: Iterable[Callable] = ()) -> SweepResult:
    """Run every cell of ``plan``, training the teacher and the baseline only once.

    Args:
        plan: the grid. store: the history (each cell is one run, kind ``sweep``).
        callbacks: receive every event of every cell. stop: set it to stop between steps.
        on_cell: called with each finished cell's dict (alpha, T, status, run_id, teacher,
            baseline, distilled — test accuracies — gain, seconds, message).
        group: the history group of the cells (default: a fresh ``sweep-<hex>``).
        data: an already loaded DataBundle for ``plan.base.data`` (None = load it here).
        recorders: as in :func:`kdcore.train.experiment.run_experiment`, for every cell.
    Returns:
        SweepResult; never raises for a cell that fails (the sweep stops and says why).
    """
    t0 = time.perf_counter()
    group = group or f"sweep-{uuid.uuid4().hex[:8]}"
    out = SweepResult("completed", "", group)
    try:
        data = data if data is not None else load_data(plan.base.data)
    except Exception as e:  # DataUnavailable, ConfigError: the page shows the message
        out.status, out.message = "failed", str(e)
        return out
    reuse: dict[str, torch.nn.Module] = {}
    for alpha, T in plan.cells:
        if stop is not None and stop.is_set():
            out.status, out.message = "stopped", "stopped by request"
            break
        res = run_experiment(plan.config(alpha, T), store=store, callbacks=callbacks, stop=stop,
                             reuse=reuse, data=data, kind="sweep", group=group, recorders=recorders)
        cell = _cell(alpha, T, res)
        out.cells.append(cell)
        if on_cell is not None:
            on_cell(cell)
        # teacher(s) and baseline: trained once, whatever happens to the student
        for phase, model in res.models.items():
            if phase not in reuse and (phase == "baseline" or phase.startswith("teacher")):
                reuse[phase] = _remembering(model, data) if phase != "baseline" else model
        if res.status == "stopped":
            out.status, out.message = "stopped", res.message
            break
        if res.status != "completed" and not {"teacher", "baseline"} <= set(reuse):
            # the teacher or the baseline itself failed: every later cell would fail the same way
            out.status, out.message = "failed", f"cell α={alpha:g}, T={T:g}: {res.message}"
            break
    else:
        bad = [c for c in out.cells if c["status"] != "completed"]
        out.message = (f"{len(out.cells)} cells, {len(bad)} did not complete" if bad
                       else f"{len(out.cells)} cells completed")
    out.seconds = time.perf_counter() - t0
    return out
