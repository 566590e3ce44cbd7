"""The dashboard's background worker: bounded series, snapshots, stop, the concurrent-run limit."""
import threading
import time

import pytest
import torch

from kdcore import DataConfig, LossConfig, ModelConfig, OptimConfig, RunConfig, RunStore
from kdapp.live import (DEFAULT_MAX_RUNS, LiveRun, RunLimitReached, Series, active_run_ids,
                         active_runs, max_runs)


def tiny(epochs: int = 2, **kw) -> RunConfig:
    """A run that finishes in well under a second on one CPU core."""
    return RunConfig(data=DataConfig(name="moons", n_samples=200),
                     teacher=ModelConfig("mlp", {"hidden": [16]}),
                     student=ModelConfig("mlp", {"hidden": [4]}),
                     loss=LossConfig(temperature=2.0, alpha=0.5),
                     optim=OptimConfig(epochs=epochs, lr=1e-2, batch_size=32),
                     teacher_optim=OptimConfig(epochs=epochs, lr=1e-2, batch_size=32), **kw)


def wait_until(pred, timeout=20.0):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture(autouse=True)
def no_leftover_runs():
    n = torch.get_num_threads()  # a worker sets the process-wide count; give other tests theirs back
    yield
    assert wait_until(lambda: active_runs() == 0, 10), "a test left a run training"
    torch.set_num_threads(n)


# --- Series ------------------------------------------------------------------------------------

def test_series_stays_bounded_and_keeps_first_and_newest_point():
    s = Series(max_points=50)
    for i in range(100_000):
        s.add({"step": i})
    pts = s.points()
    assert len(pts) <= 51
    assert pts[0]["step"] == 0 and pts[-1]["step"] == 99_999
    steps = [p["step"] for p in pts[:-1]]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    # evenly thinned: every kept point sits on the current stride
    assert all(st % s.stride == 0 for st in steps)


def test_series_keeps_everything_while_short():
    s = Series(max_points=10)
    for i in range(10):
        s.add({"i": i})
    assert [p["i"] for p in s.points()] == list(range(10))


# --- LiveRun ------------------------------------------------------------------------------------

def test_live_run_completes_with_metrics_progress_and_history(tmp_path):
    store = RunStore(tmp_path)
    live = LiveRun(tiny(), store=store, max_points=20).start()
    assert live.join(60)
    snap = live.snapshot()
    assert snap.status == "completed", snap.message
    assert snap.done and not snap.running
    assert snap.progress == 1.0 and snap.eta_s == 0.0
    assert set(snap.metrics) == {"teacher", "baseline", "distilled"}
    assert snap.message.startswith("Distillation")  # the verdict
    assert snap.first_point_s is not None and snap.first_point_s < snap.elapsed_s
    # 160 train points / 32 = 5 steps per epoch, 2 epochs: every step kept (under max_points)
    assert [p["step"] for p in snap.steps["distilled"]] == list(range(1, 11))
    assert set(snap.steps["distilled"][-1]) >= {"x", "loss", "ce", "kd"}
    assert snap.steps["distilled"][-1]["x"] == pytest.approx(2.0)
    assert [e["epoch"] for e in snap.epochs_log["baseline"]] == [1, 2]
    assert store.get(snap.run_id)["status"] == "completed"
    assert live.result is not None and set(live.result.models) == {"teacher", "baseline", "distilled"}


def test_snapshot_is_a_copy_the_worker_cannot_change(tmp_path):
    live = LiveRun(tiny(epochs=30), store=None).start()
    assert wait_until(lambda: len(live.snapshot().steps["teacher"]) >= 3)
    snap = live.snapshot()
    before = [dict(p) for p in snap.steps["teacher"]]
    time.sleep(0.2)
    assert [dict(p) for p in snap.steps["teacher"]] == before
    live.stop()
    assert live.join(10)


def test_progress_and_eta_while_training():
    live = LiveRun(tiny(epochs=200), store=None).start()
    assert wait_until(lambda: live.snapshot().step >= 20)
    snap = live.snapshot()
    assert snap.status == "running" and snap.phase == "teacher"
    assert 0 < snap.progress < 1 / 3 + 0.01  # the teacher is one of three equal phases here
    assert snap.eta_s is not None and snap.eta_s > 0
    assert snap.phases == ("teacher", "baseline", "distilled")
    live.stop()
    assert live.join(10)


def test_stop_ends_the_run_between_steps(tmp_path):
    store = RunStore(tmp_path)
    live = LiveRun(tiny(epochs=1000), store=store).start()
    assert wait_until(lambda: live.snapshot().step > 0)
    t0 = time.perf_counter()
    live.stop()
    assert live.join(5), "the worker did not stop"
    assert time.perf_counter() - t0 < 2
    snap = live.snapshot()
    assert snap.status == "stopped" and "stopped" in snap.message
    assert store.get(snap.run_id)["status"] == "stopped"
    assert snap.progress < 1.0


def test_a_failing_run_reports_a_message_not_an_exception(tmp_path):
    live = LiveRun(tiny(teacher_source=f"file:{tmp_path}/missing.pt"), store=RunStore(tmp_path)).start()
    assert live.join(20)
    snap = live.snapshot()
    assert snap.status == "failed"
    assert "does not exist" in snap.message
    assert snap.phases == ("baseline", "distilled")  # no teacher phase to train


def test_concurrent_run_limit(monkeypatch):
    monkeypatch.setenv("KD_MAX_RUNS", "1")
    assert max_runs() == 1
    first = LiveRun(tiny(epochs=1000), store=None).start()
    try:
        with pytest.raises(RunLimitReached, match=r"KD_MAX_RUNS=1"):
            LiveRun(tiny(), store=None).start()
    finally:
        first.stop()
        assert first.join(10)
    second = LiveRun(tiny(), store=None).start()  # the slot is free again
    assert second.join(30) and second.snapshot().status == "completed"


def test_max_runs_falls_back_on_nonsense(monkeypatch):
    for bad in ("zero", "0", "-3", ""):
        monkeypatch.setenv("KD_MAX_RUNS", bad)
        assert max_runs() == DEFAULT_MAX_RUNS
    monkeypatch.setenv("KD_MAX_RUNS", "5")
    assert max_runs() == 5


def test_active_run_ids_names_the_training_run(tmp_path):
    live = LiveRun(tiny(epochs=1000), store=RunStore(tmp_path)).start()
    try:
        assert wait_until(lambda: live.run_id is not None)
        assert live.run_id in active_run_ids()
    finally:
        live.close()
    assert live.run_id not in active_run_ids()


def test_start_twice_is_refused():
    live = LiveRun(tiny(), store=None).start()
    with pytest.raises(RuntimeError, match="already started"):
        live.start()
    assert live.join(30)


def test_snapshots_from_many_threads_while_training():
    live = LiveRun(tiny(epochs=100), store=None, max_points=16).start()
    errors = []

    def reader():
        try:
            for _ in range(200):
                s = live.snapshot()
                assert all(len(v) <= 17 for v in s.steps.values())
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    live.stop()
    assert live.join(10)
    assert not errors


def test_workers_pause_while_a_page_is_computed_and_never_for_long():
    from kdapp.live import _Foreground

    fg = _Foreground()
    t0 = time.perf_counter()
    fg.yield_to_pages()
    assert time.perf_counter() - t0 < 0.05  # no page: no pause
    released = []

    def page(hold: float) -> None:
        with fg(grace_s=0.1):
            time.sleep(hold)
        released.append(time.perf_counter())

    th = threading.Thread(target=page, args=(0.3,))
    th.start()
    time.sleep(0.05)
    fg.yield_to_pages()  # waits for the page, then the grace in which the browser draws it
    waited_until = time.perf_counter()
    th.join()
    assert waited_until >= released[0] + 0.08
    th = threading.Thread(target=page, args=(1.4,))  # a page that hangs does not stall training
    th.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    fg.yield_to_pages()
    assert time.perf_counter() - t0 < fg.MAX_PAUSE_S + 0.2
    th.join()


def test_a_run_keeps_training_while_pages_are_computed():
    from kdapp.live import foreground

    live = LiveRun(tiny(epochs=3), store=None).start()
    assert live.first_point.wait(20)
    with foreground():  # a page that takes a while: the run waits, bounded, then goes on
        time.sleep(1.5)
    assert live.join(30) and live.snapshot().status == "completed"


def _feed(live, phase, epoch, steps, t, step_s, val_s, *, probe=None, probe_s=0.0):
    """Feed StepEnds ``steps`` (1-based numbers) ``step_s`` apart from ``t``, then the epoch's
    EpochEnd ``val_s`` later (its validation pass), with a probe taking ``probe_s``; returns the time."""
    from kdcore.events import EpochEnd, StepEnd

    for i in steps:
        t += step_s
        live._on_step(StepEnd(phase, epoch, i, live._total, 0.5, {"ce": 0.5}, 1e-2, None), now=t)
    if val_s is None:
        return t
    t += val_s
    live._epoch = epoch
    live._on_epoch_end(EpochEnd(phase, epoch, live._epochs, 0.5, {}, 0.5, 0.5, 0.5, 0.0, None), now=t,
                       probe=probe, probe_s=probe_s)
    return t + probe_s


def test_eta_is_the_measured_pace_of_this_phase_plus_the_planned_work_of_those_to_come():
    """A slow teacher's pace must not be applied to the cheap student phases (issue 14): the ETA is
    this phase's steps and validation passes left at their measured times, its test evaluation at
    its measured eval cost, then each later phase at its probed costs (the distilled one after the
    teacher has cached its logits over the training rows)."""
    from kdcore.events import PhaseStart
    from kdapp.live import PROFILE_BATCHES, PhaseCost

    live = LiveRun(tiny(epochs=10), store=None)  # not started: events are fed by hand
    live._sizes = {"test": 200, "train": 224, "val": 100}
    finish = lambda per_sample: per_sample * (200 + PROFILE_BATCHES * 32)  # test set + latency profile
    live._on_phase_start(PhaseStart("teacher", 10, 7), now=1.0)
    t = _feed(live, "teacher", 1, [1], 1.0, 0.05, None)  # a 50 ms warm-up step: not the pace
    assert live._progress_eta(now=t)[1] is None  # nothing probed yet: "estimating"
    # the students' probe: 1 ms a step, 10 us an eval sample; the distilled student first caches
    # the teacher's logits over the 224 training rows
    probe = {"baseline": PhaseCost(1e-3, 1e-5, 0, 224), "distilled": PhaseCost(1e-3, 1e-5, 224, 224)}
    # 20 ms a step, a 50 ms validation pass, then a 0.3 s probe (no step's time)
    t = _feed(live, "teacher", 1, range(2, 8), t, 0.02, 0.05, probe=probe, probe_s=0.3)
    _, eta = live._progress_eta(now=t)
    teacher_eval = 0.05 / 100  # measured: one validation pass over 100 samples
    teacher = 63 * 0.02 + 9 * 0.05 + finish(teacher_eval)
    student = 70 * 1e-3 + 10 * 100 * 1e-5 + finish(1e-5)
    assert eta == pytest.approx(teacher + student + student + 224 * teacher_eval)
    naive = (63 + 70 + 70) * 0.02  # every step left at the teacher's pace: the old, wrong ETA
    assert eta < naive / 1.5
    assert live._progress_eta(now=t + 0.1)[1] == pytest.approx(eta - 0.1)  # counting down

    # a student phase measured slower than its probe: its own pace and eval cost count for itself
    # and for the distilled student's validation and test (the same model), its probed steps stay
    live._on_phase_start(PhaseStart("baseline", 10, 7), now=10.0)
    t = _feed(live, "baseline", 1, range(1, 8), 10.0, 0.002, 0.004)
    _, eta = live._progress_eta(now=t)
    student_eval = 0.004 / 100
    baseline_left = 63 * 0.002 + 9 * 0.004 + finish(student_eval)
    distilled = 70 * 1e-3 + 10 * 100 * student_eval + finish(student_eval)
    assert eta == pytest.approx(baseline_left + distilled + 224 * teacher_eval)
    # once the baseline's end (tests, metrics) has taken 60 ms, the distilled student's is charged that
    from kdcore.events import PhaseEnd

    t = _feed(live, "baseline", 10, range(8, 71), t, 0.002, 0.004)
    live._on_phase_end(PhaseEnd("baseline", "completed", {"accuracy": 0.5}), now=t + 0.06)
    assert live.phase_estimate("distilled") == pytest.approx(distilled - finish(student_eval) + 0.06
                                                             + 224 * teacher_eval)


def test_a_later_seed_is_charged_the_measured_pace_of_its_kind_not_the_probe():
    from kdcore.events import PhaseStart
    from kdapp.live import LiveSeeds, PhaseCost

    live = LiveSeeds(tiny(epochs=2), [1, 2], store=None)
    live._sizes = {"test": 0, "train": 224, "val": 0}
    live._probe = {"baseline": PhaseCost(1e-3, 0.0, 0, 224), "distilled": PhaseCost(1e-3, 0.0, 224, 224)}
    live._on_phase_start(PhaseStart("baseline · seed 1", 2, 7), now=0.0)
    _feed(live, "baseline · seed 1", 1, range(1, 8), 0.0, 0.005, 0.0)  # 5 ms a step, not 1
    assert live.phase_estimate("baseline · seed 2") == pytest.approx(14 * 0.005)
    assert live.phase_estimate("distilled · seed 2") == pytest.approx(14 * 1e-3)  # not measured yet


def test_probe_costs_time_the_trainers_own_steps_and_leave_the_run_untouched():
    from kdcore.data import load_data
    from kdapp.live import probe_costs

    cfg = RunConfig(data=DataConfig(name="moons", n_samples=5000),
                    teacher=ModelConfig("mlp", {"hidden": [1024, 1024]}),
                    student=ModelConfig("mlp", {"hidden": [4]}),
                    optim=OptimConfig(epochs=1, batch_size=16), teacher_optim=OptimConfig(epochs=1, batch_size=16))
    data = load_data(cfg.data)
    events = []
    rng = torch.get_rng_state()
    costs = probe_costs(cfg, ("teacher", "baseline", "distilled"), data, callback=events.append,
                        eval_models=("teacher",))
    assert torch.equal(torch.get_rng_state(), rng)  # the run's random streams are untouched
    assert set(costs) == {"teacher", "baseline", "distilled"}
    assert all(0 < c.step_s < 60 and 0 < c.forward_s < 1 for c in costs.values())
    # each phase's steps went through the trainer's loop, which was stopped after a few of them
    counts = []
    for e in events:
        if type(e).__name__ == "PhaseStart":
            counts.append(0)
        elif type(e).__name__ == "StepEnd":
            counts[-1] += 1
    assert len(counts) == 3 and all(8 <= n <= 30 < len(data.x_train) // 16 for n in counts), counts
    # the distilled student trains on cached logits: the teacher first runs over the training rows
    assert costs["distilled"].pre_rows == len(data.x_train) and costs["baseline"].pre_rows == 0
    assert costs["baseline"].epoch_rows == len(data.x_train)
    # ~1.05M weights against ~30: a thousand times the work, so the order holds even on a busy machine
    assert costs["teacher"].step_s > costs["baseline"].step_s
    assert costs["teacher"].forward_s > costs["baseline"].forward_s


def test_sweep_eta_charges_later_cells_the_reused_models_tests_and_one_distilled_student():
    """After the first cell a sweep cell evaluates the reused teacher and baseline and trains one
    distilled student: the ETA charges each cell left that, at the times later cells measured."""
    from kdcore.events import PhaseStart
    from kdapp.live import PROFILE_BATCHES, PhaseCost
    from kdapp.sweep_run import SweepRun
    from kdcore.train.sweep import SweepPlan

    sw = SweepRun(SweepPlan(tiny(epochs=10), (0.5,), (1.0, 2.0, 4.0, 8.0, 16.0)))  # 5 cells, not started
    sw._sizes = {"test": 200, "train": 224, "val": 100}
    first = sw._est
    first._sizes = dict(sw._sizes)
    first._probe = {"baseline": PhaseCost(1e-3, 1e-5, 0, 224), "distilled": PhaseCost(1e-3, 1e-5, 224, 224)}
    first._paces, first._eval_ps = {"distilled": 2e-3}, {"teacher": 1e-4, "student": 1e-5}
    first._planned["distilled"] = 70
    first._calm = True  # (its epochs' ends are not fed: none shared the cores with a page)
    # the first cell: a teacher phase 1 s from its end; a later cell is charged the teacher's
    # latency profile and the baseline's test, then 70 steps at the measured 2 ms a step
    first._on_phase_start(PhaseStart("teacher", 10, 7), now=0.0)
    _feed(first, "teacher", 1, range(1, 71), 0.0, 0.0143, None)
    first._status = "running"
    cell_eta = first._progress_eta(now=1.0)[1]
    pre = 1e-4 * PROFILE_BATCHES * 32 + 1e-5 * (200 + PROFILE_BATCHES * 32)
    student = 70 * 2e-3 + 10 * 100 * 1e-5 + 1e-5 * (200 + PROFILE_BATCHES * 32)
    once = 1e-4 * (200 + 224)  # the second cell's remembering teacher: the test set and the cached rows
    assert sw._eta(1.0, cells_after=4) == pytest.approx(cell_eta + once + 4 * (pre + student))
    # three cells done: the reused models' tests take what the third cell measured for them (the
    # second's also held the one-off); the fourth cell, before its student's first step, counts down
    sw._cell_ends = [10.0, 14.0, 15.0]
    sw._segments = [(0.0, 8.0, 10.0), (10.0, 13.5, 14.0), (14.0, 14.3, 15.0)]
    sw._est = sw._estimator(3, first)
    assert sw._eta(15.1, cells_after=1) == pytest.approx((0.3 - 0.1) + student + (0.3 + student))


def test_eta_text_shows_whole_seconds_and_never_about_zero():
    from kdapp import shared as sh

    assert sh.eta_text(None) == "estimating the time left"
    assert sh.eta_text(0.2) == "under a second left"
    assert sh.eta_text(0.7) == "about 1 s left"
    assert sh.eta_text(125.4) == "about 2 min 05 s left"


def test_the_pace_is_read_from_the_newer_half_of_the_phases_steps():
    """A phase's first steps (and a fresh process's first epoch) run slower than its later ones:
    the pace is the mean of its newer half of steps once it has 16 after the warm-up one."""
    from kdcore.events import PhaseStart

    live = LiveRun(tiny(epochs=10), store=None)
    live._on_phase_start(PhaseStart("teacher", 10, 40), now=0.0)
    t = _feed(live, "teacher", 1, [1], 0.0, 0.5, None)  # the warm-up step: never the pace
    assert live.pace() == pytest.approx(0.5)  # (all there is)
    t = _feed(live, "teacher", 1, range(2, 12), t, 0.03, None)  # 10 more: too few to halve
    assert live.pace() == pytest.approx(0.03)
    _feed(live, "teacher", 1, range(12, 32), t, 0.02, None)  # 30 after the warm-up: the newer 15 at 20 ms
    assert live.pace() == pytest.approx(0.02)
    live._on_phase_start(PhaseStart("baseline", 10, 40), now=10.0)  # a new phase starts afresh
    assert live.pace() is None


def test_costs_are_work_seconds_made_wall_seconds_by_the_recent_slowdown():
    """On a machine shared with other jobs the run gets part of a core: its steps are timed on the
    training thread's CPU clock (the work) and the ETA multiplies the work left by the wall/work
    ratio of the last SLOWDOWN_WINDOW_S, so a short phase's first epoch (a few scheduler slices)
    does not decide the load for the rest."""
    from kdcore.events import PhaseStart, StepEnd
    from kdapp.live import SLOWDOWN_WINDOW_S

    live = LiveRun(tiny(epochs=10), store=None)
    live._sizes = {"test": 0, "train": 224, "val": 0}
    live._probe, live._calm = {}, True  # (no epoch end is fed: the probe and a calm one stood in for)
    assert live.slowdown() == 1.0  # nothing measured: no slowdown assumed
    live._on_phase_start(PhaseStart("teacher", 10, 100), now=0.0, work=0.0)
    t = w = 0.0
    for i in range(1, 41):  # an idle machine: 20 ms of work a step, 20 ms of wall
        t, w = t + 0.02, w + 0.02
        live._tick(t, w)
        live._on_step(StepEnd("teacher", 1, i, 1000, 0.5, {"ce": 0.5}, 1e-2, None), now=t, work=w)
    assert live.slowdown() == pytest.approx(1.0)
    for i in range(41, 441):  # then two other jobs: the same work takes 1.5x the wall time (8 s)
        t, w = t + 0.03, w + 0.02
        live._tick(t, w)
        live._on_step(StepEnd("teacher", 1, i, 1000, 0.5, {"ce": 0.5}, 1e-2, None), now=t, work=w)
    assert live.pace() == pytest.approx(0.02)  # the work per step did not change
    assert live.slowdown() == pytest.approx(1.5, rel=0.02)  # read over the last 5 s only
    assert live._clock[-1][0] - live._clock[0][0] <= SLOWDOWN_WINDOW_S + 0.06
    _, eta = live._progress_eta(now=t)
    later = sum(live._planned[p] for p in live._phases_after("teacher"))  # charged the current pace (no probe)
    assert later > 0 and eta == pytest.approx((1000 - 440 + later) * 0.02 * live.slowdown())
    assert live._progress_eta(now=t + 1.0)[1] == pytest.approx(eta - 1.0)  # counting down in wall time


def test_a_phase_to_come_pays_the_epoch_end_measured_beyond_its_validation_forward():
    """An epoch's end is the validation forward plus what does not depend on the model (filing the
    epoch in the history, the lab's recorders): the part beyond the current model's probed forward
    is measured and charged to every epoch of the phases to come (the default run's 1,200 student
    epochs were charged their forward passes alone: 1.2 s shown for 3.1 s left)."""
    from kdcore.events import PhaseStart
    from kdapp.live import PROFILE_BATCHES, PhaseCost

    live = LiveRun(tiny(epochs=10), store=None)
    live._sizes = {"test": 200, "train": 224, "val": 100}
    live._on_phase_start(PhaseStart("teacher", 10, 7), now=0.0)
    probe = {"teacher": PhaseCost(0.0, 1e-4), "baseline": PhaseCost(1e-3, 1e-5, 0, 224),
             "distilled": PhaseCost(1e-3, 1e-5, 224, 224)}
    t = _feed(live, "teacher", 1, range(1, 8), 0.0, 0.02, 0.05, probe=probe)  # a 50 ms epoch end
    assert live._epoch_fixed == pytest.approx(0.05 - 100 * 1e-4)  # 10 ms of it the forward, 40 ms the rest
    assert live._epoch_end_s("baseline") == pytest.approx(100 * 1e-5 + 0.04)
    finish = 1e-5 * (200 + PROFILE_BATCHES * 32)
    assert live.phase_estimate("baseline") == pytest.approx(70 * 1e-3 + 10 * (100 * 1e-5 + 0.04) + finish)
    # once a student's epochs have been measured, their whole end is its measured cost
    live._on_phase_start(PhaseStart("baseline", 10, 7), now=t)
    _feed(live, "baseline", 1, range(1, 8), t, 0.001, 0.02)
    assert live._epoch_end_s("distilled") == pytest.approx(0.02)


def test_a_phases_first_epoch_is_a_warm_up_for_its_end_and_a_kind_keeps_its_measured_pace():
    """A phase's first epoch end (its first validation pass, its first filing) costs more than its
    later ones: once a second has ended, the first no longer prices the epochs left, nor its
    model's eval cost; and a phase with too few steps of its own is charged the pace its kind
    (an earlier seed's) was measured at."""
    from kdcore.events import PhaseStart
    from kdapp.live import LiveSeeds

    live = LiveSeeds(tiny(epochs=10), [1, 2], store=None)
    live._sizes = {"test": 0, "train": 224, "val": 100}
    live._probe = {}
    live._on_phase_start(PhaseStart("baseline · seed 1", 10, 2), now=0.0)
    t = _feed(live, "baseline · seed 1", 1, [1, 2], 0.0, 0.001, 0.09)  # a 90 ms first epoch end
    assert live._eval_ps["student"] == pytest.approx(0.09 / 100)  # all there is
    t = _feed(live, "baseline · seed 1", 2, [3, 4], t, 0.001, 0.03)
    t = _feed(live, "baseline · seed 1", 3, [5, 6], t, 0.001, 0.03)
    assert live._eval_ps["student"] == pytest.approx(0.03 / 100)  # the steady epochs only
    _, eta = live._progress_eta(now=t)
    # 14 steps and 7 epoch ends left, at the steady cost, then its end (the latency profile)
    left = 14 * 0.001 + 7 * 0.03 + live._finish_s("baseline · seed 1")
    later = live.phase_estimate("distilled · seed 1") + live.phase_estimate("baseline · seed 2") + \
        live.phase_estimate("distilled · seed 2")
    assert eta == pytest.approx(left + later)
    # the next seed's baseline, two steps in: its kind's measured pace, not its own warm-up
    live._paces["baseline"] = 0.001
    live._on_phase_start(PhaseStart("baseline · seed 2", 10, 2), now=t)
    t = _feed(live, "baseline · seed 2", 1, [1, 2], t, 0.005, 0.03)  # 5 ms steps while warming up
    assert live._paces["baseline"] == 0.001  # one slow step does not replace the measured pace
    _, eta = live._progress_eta(now=t)
    assert eta == pytest.approx(18 * 0.001 + 9 * 0.03 + live._finish_s("baseline · seed 2")
                                + live.phase_estimate("distilled · seed 2"))


def test_a_pause_for_a_page_is_not_read_as_a_slowdown_of_the_run(monkeypatch):
    """Pages pause a training worker between steps while they are computed (most right after
    Start, when the whole page reruns); that wall time is left out of the slowdown, which is the
    run's own share of the cores, or the run's first reading in the browser read the page's
    start-up as the pace of the whole run."""
    from kdcore.events import PhaseStart, StepEnd
    from kdapp import live as live_mod

    clock = {"wall": 0.0, "work": 0.0}
    monkeypatch.setattr(live_mod.time, "perf_counter", lambda: clock["wall"])
    monkeypatch.setattr(live_mod, "work_clock", lambda: clock["work"])

    def pause() -> float:  # a page computed for 0.2 s at every step
        clock["wall"] += 0.2
        return 0.2

    monkeypatch.setattr(live_mod.foreground, "yield_to_pages", pause)
    live = LiveRun(tiny(epochs=10), store=None)
    live._first_point = 0.0  # past the first point: the worker yields to pages
    live._on_event(PhaseStart("teacher", 10, 100, None))
    for i in range(1, 51):  # 10 ms of work a step, 15 ms of wall besides the pause
        clock["wall"] += 0.015
        clock["work"] += 0.01
        live._on_event(StepEnd("teacher", 1, i, 1000, 0.5, {"ce": 0.5}, 1e-2, None))
    assert live._paused == pytest.approx(50 * 0.2)
    assert live.slowdown() == pytest.approx(1.5, rel=0.01)  # not (0.015 + 0.2) / 0.01
    # the run's first epochs shared the cores with a page: "estimating" until one ends without
    from kdcore.events import EpochEnd

    epoch_end = EpochEnd("teacher", 1, 10, 0.5, {}, 0.5, 0.5, 0.5, 0.0, None)
    live._on_event(epoch_end)
    assert live.snapshot().eta_s is None
    monkeypatch.setattr(live_mod.foreground, "yield_to_pages", lambda: 0.0)  # no page any more
    for epoch, steps in ((2, range(51, 61)), (3, range(61, 101))):  # 0.15 s of calm, then 0.6 s more
        for i in steps:
            clock["wall"] += 0.015
            clock["work"] += 0.01
            live._on_event(StepEnd("teacher", epoch, i, 1000, 0.5, {"ce": 0.5}, 1e-2, None))
        live._on_event(EpochEnd("teacher", epoch, 10, 0.5, {}, 0.5, 0.5, 0.5, 0.0, None))
        # a number once CALM_S (0.5 s) has passed with no page: read from that calm alone
        assert (live.snapshot().eta_s is not None) == (epoch == 3)
    assert live.pace() == pytest.approx(0.01) and live.slowdown() == pytest.approx(1.5, rel=0.01)
