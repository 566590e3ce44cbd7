"""α × T sweeps: one teacher and one baseline, many distilled students.

Neither the teacher nor the baseline student depends on α or T, so :func:`run_sweep` trains
them in the first cell and hands them to every later cell through
``run_experiment(reuse=...)``; each cell is a full run in the history (kind ``sweep``, one
shared group), so the Runs page lists, overlays and replays them like any other run.
:class:`SweepRun` runs a sweep in a background thread for the dashboard and is read through
a locked snapshot, as :class:`kdcore.live.LiveRun` is. Nothing here imports Streamlit.
"""
from __future__ import annotations

import copy
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

from . import live as _live
from .config import LossConfig, RunConfig, replace
from .data import load_data
from .errors import ConfigError
from .events import Callback, EpochEnd, PhaseStart, StepEnd
from .experiment import run_experiment
from .store import RunStore
from .teaching import LAB_RECORDERS

__all__ = ["SweepPlan", "SweepResult", "run_sweep", "SweepRun", "SweepSnapshot", "MAX_CELLS", "PRESET",
           "preset_plan"]

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
        if self.base.loss.name == "mse_logits" and len(self.temps) > 1:
            raise ConfigError("sweep: loss mse_logits does not use T; sweep a loss that does (kd)")
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
    from .config import DataConfig, ModelConfig, OptimConfig

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
        recorders: as in :func:`kdcore.experiment.run_experiment`, for every cell.
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


@dataclass(frozen=True)
class SweepSnapshot:
    """A consistent copy of a sweep's state at one moment."""

    status: str  # starting | running | completed | stopped | failed
    message: str
    group: str
    alphas: tuple[float, ...]
    temps: tuple[float, ...]
    cells: list[dict]  # finished cells, in order
    current: tuple[float, float] | None  # (alpha, T) of the cell in progress
    phase: str  # its phase in progress
    phase_progress: float  # 0..1 within that phase
    progress: float  # 0..1 over the whole sweep
    elapsed_s: float
    eta_s: float | None
    version: int
    epoch: int = 0  # epochs finished in the phase in progress

    @property
    def done(self) -> bool:
        return self.status in ("completed", "stopped", "failed")

    @property
    def running(self) -> bool:
        return not self.done


class SweepRun(_live.Worker):
    """A sweep in a daemon thread that a page polls with :meth:`snapshot`.

    It takes one of the server's training slots (``kdcore.live``'s limit), like a run does.

    Args:
        plan: the grid. store: the history to record every cell in.
    """

    thread_name = "kd-sweep"

    def __init__(self, plan: SweepPlan, *, store: RunStore | None = None):
        super().__init__()  # one of the server's training slots, shared with runs
        self.plan = plan
        self.store = store
        self.group = f"sweep-{uuid.uuid4().hex[:8]}"
        self.result: SweepResult | None = None
        self._cells: list[dict] = []
        self._current: tuple[float, float] | None = None
        self._phase, self._phase_progress, self._epoch = "", 0.0, 0
        # the ETA: a LiveRun (never started) follows the cell in progress as the dashboard's run
        # does; each later cell evaluates the reused teacher and baseline and trains one distilled
        # student, planned from the first cell's measurements until later cells have been timed
        self._sizes: dict = {}
        self._data = None
        self._est = self._estimator(0, None)
        self._distilled_t0: float | None = None
        self._cell_ends: list[float] = []  # when each cell ended
        # per finished cell: (start, its distilled phase's start or None, end)
        self._segments: list[tuple[float, float | None, float]] = []

    def _estimator(self, cell: int, last: _live.LiveRun | None) -> _live.LiveRun:
        cells = self.plan.cells
        est = _live.LiveRun(self.plan.config(*cells[min(cell, len(cells) - 1)]), store=None)
        if cell > 0:  # teacher and baseline are reused: only the distilled student trains
            est._phases, est._phase = ("distilled",), "distilled"
        est._sizes, est._data = dict(self._sizes), self._data
        if last is not None:  # what earlier cells measured and probed carries over
            est._probe, est._paces, est._eval_ps = last._probe, dict(last._paces), dict(last._eval_ps)
            est._finished_s = dict(last._finished_s)
            if "distilled" in last._planned:
                est._planned["distilled"] = last._planned["distilled"]
        return est

    def _run(self) -> SweepResult:
        data, self._sizes = _live.load_with_sizes(self.plan.base.data)
        self._data = data
        self._est._sizes, self._est._data = dict(self._sizes), data
        return run_sweep(self.plan, store=self.store, callbacks=[self._on_event], stop=self.stop_event,
                         on_cell=self._on_cell, group=self.group, data=data, recorders=LAB_RECORDERS)

    def _finally(self) -> None:
        with self._lock:
            self._current = None

    def _on_event(self, ev: Any) -> None:
        self._est._on_event(ev)  # outside this lock: it may pause for a page, or probe once
        if isinstance(ev, PhaseStart) and ev.phase == "distilled":
            self._distilled_t0 = time.perf_counter()
        with self._lock:
            self._version += 1
            if getattr(ev, "run_id", None) is not None:
                self._run_id = ev.run_id
            if isinstance(ev, PhaseStart):
                self._status = "running"
                self._phase, self._phase_progress, self._epoch = ev.phase, 0.0, 0
            elif isinstance(ev, StepEnd):
                self._phase, self._phase_progress = ev.phase, ev.step / max(ev.total_steps, 1)
            elif isinstance(ev, EpochEnd):
                self._phase_progress, self._epoch = ev.epoch / max(ev.epochs, 1), ev.epoch
            if self._current is None:
                done = len(self._cells)
                cells = self.plan.cells
                self._current = cells[done] if done < len(cells) else None

    def _on_cell(self, cell: dict) -> None:
        now = time.perf_counter()
        self._segments.append((self._cell_ends[-1] if self._cell_ends else self._t0, self._distilled_t0, now))
        self._distilled_t0 = None
        self._cell_ends.append(now)
        self._est = self._estimator(len(self._cells) + 1, self._est)
        with self._lock:
            self._cells.append(dict(cell))
            self._current = None
            self._phase, self._phase_progress, self._epoch = "", 0.0, 0
            self._version += 1

    # -- reading -----------------------------------------------------------------------
    def _eta(self, now: float, cells_after: int) -> float | None:
        """The cell in progress as a run's ETA has it, plus each cell after it.

        A later cell evaluates the reused teacher (its latency profile; its test logits are
        remembered) and baseline, as long as later cells took for that (the median), else planned
        from the first cell's measured eval costs; then it trains and tests one distilled student,
        planned at the newest measured pace of a distilled phase (the cell in progress's once it
        has one) or, before any, the probed one. The second cell also runs the remembering teacher
        once over the test set and the training rows it caches (:func:`_remembering`).
        """
        est = self._est
        idx = len(self._cell_ends)  # the cell in progress, from 0
        with est._lock:
            teacher = est._eval_cost("teacher") or 0.0
            c = _live._probed(est._probe or {}, "distilled")
            once = teacher * (self._sizes.get("test", 0) + (c.pre_rows if c is not None else 0))
            pre_s = [d - s for s, d, _ in self._segments[2:] if d is not None]  # the second holds `once`
            pre = (statistics.median(pre_s) if pre_s else
                   teacher * _live.PROFILE_BATCHES * est.cfg.optim.batch_size + est._finish_s("baseline"))
            # the distilled student at the newest measured pace (this cell's, else the last one's)
            student = est.phase_estimate("distilled", teacher_logits=False)
            if est._step > 0:
                _, cell_eta = est._progress_eta(now)
            elif idx > 0:  # a later cell before its student's first step: the reused models' tests
                cell_eta = max(pre + (once if idx == 1 else 0.0) - (now - self._cell_ends[-1]), 0.0) + student
            else:
                cell_eta = None
        if cell_eta is None:
            return None
        return cell_eta + (once if idx == 0 and cells_after > 0 else 0.0) + max(cells_after, 0) * (pre + student)

    def snapshot(self) -> SweepSnapshot:
        now = time.perf_counter()
        with self._lock:
            total = len(self.plan.cells)
            done = len(self._cells)
            # the first cell trains three models, the others one: weigh them by what they train
            first_w = 3.0
            weights = [first_w] + [1.0] * (total - 1)
            in_cell = 0.0
            if self._current is not None and done < total:
                frac = self._phase_progress
                if done == 0:
                    k = {"teacher": 0, "baseline": 1, "distilled": 2}.get(self._phase, 0)
                    in_cell = (k + frac) / 3 * first_w
                else:
                    in_cell = frac
            finished_w = sum(weights[:done])
            progress = min((finished_w + in_cell) / sum(weights), 1.0) if self._status != "completed" else 1.0
            end = self._t_end if self._t_end is not None else now
            elapsed = (end - self._t0) if self._t0 else 0.0
            eta = None
            if self._status in ("completed", "stopped", "failed"):
                eta = 0.0
            elif self._current is not None:
                eta = self._eta(now, total - done - 1)
            return SweepSnapshot(
                status=self._status, message=self._message, group=self.group,
                alphas=self.plan.alphas, temps=self.plan.temps,
                cells=[dict(c) for c in self._cells], current=self._current, phase=self._phase,
                phase_progress=self._phase_progress, progress=progress, elapsed_s=elapsed,
                eta_s=eta, version=self._version, epoch=self._epoch)

