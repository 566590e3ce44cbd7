"""The dashboard's α × T sweep worker: :func:`kdcore.train.sweep.run_sweep` in a background thread,
read through a locked snapshot as :class:`kdapp.live.LiveRun` is, with an ETA over the cells."""
from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

from kdcore.events import EpochEnd, PhaseStart, StepEnd
from kdcore.history.store import RunStore
from kdcore.train.sweep import SweepPlan, SweepResult, run_sweep
from kdcore.lab.teaching import LAB_RECORDERS

from . import live as _live

__all__ = ["SweepRun", "SweepSnapshot"]


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

    It takes one of the server's training slots (``kdapp.live``'s limit), like a run does.

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
        self._distilled_w0: float | None = None  # the work clock at the distilled phase's start
        self._cell_ends: list[float] = []  # when each cell ended (wall clock)
        self._cell_ends_w: list[float] = []  # ... and on the work clock (_live.work_clock)
        # per finished cell, on the work clock: (start, its distilled phase's start or None, end)
        self._segments: list[tuple[float, float | None, float]] = []
        self._w0: float | None = None  # the work clock when the sweep's thread started

    def _estimator(self, cell: int, last: _live.LiveRun | None) -> _live.LiveRun:
        cells = self.plan.cells
        est = _live.LiveRun(self.plan.config(*cells[min(cell, len(cells) - 1)]), store=None)
        if cell > 0:  # teacher and baseline are reused: only the distilled student trains
            est._phases, est._phase = ("distilled",), "distilled"
        est._sizes, est._data = dict(self._sizes), self._data
        if last is not None:  # what earlier cells measured and probed carries over
            est.carry_over(last)
        return est

    def _begin(self) -> None:
        self._est._begin()  # the estimator's first (wall, work) sample, as a run's

    def _run(self) -> SweepResult:
        self._w0 = _live.work_clock()
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
            self._distilled_w0 = _live.work_clock()
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
        now, work = time.perf_counter(), _live.work_clock()
        self._segments.append((self._cell_ends_w[-1] if self._cell_ends_w else self._w0, self._distilled_w0, work))
        self._distilled_w0 = None
        self._cell_ends.append(now)
        self._cell_ends_w.append(work)
        self._est = self._estimator(len(self._cells) + 1, self._est)
        with self._lock:
            self._cells.append(dict(cell))
            self._current = None
            self._phase, self._phase_progress, self._epoch = "", 0.0, 0
            self._version += 1

    # -- reading -----------------------------------------------------------------------
    def _eta(self, now: float, cells_after: int) -> float | None:
        """The cell in progress as a run's ETA has it, plus each cell after it.

        Costs are work seconds (:func:`kdapp.live.work_clock`) made wall seconds by the run's
        recent slowdown, as a run's ETA does. A later cell evaluates the reused teacher (its latency profile; its test logits are
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
            k = est.slowdown()
            if est._step > 0:
                _, cell_eta = est._progress_eta(now)
            elif idx > 0:  # a later cell before its student's first step: the reused models' tests
                cell_eta = max(k * (pre + (once if idx == 1 else 0.0)) - (now - self._cell_ends[-1]), 0.0) + k * student
            else:
                cell_eta = None
        if cell_eta is None:
            return None
        return cell_eta + k * ((once if idx == 0 and cells_after > 0 else 0.0) + max(cells_after, 0) * (pre + student))

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

