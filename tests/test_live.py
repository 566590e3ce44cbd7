"""The dashboard's background worker: bounded series, snapshots, stop, the concurrent-run limit."""
import threading
import time

import pytest
import torch

from kdcore import DataConfig, LossConfig, ModelConfig, OptimConfig, RunConfig, RunStore
from kdcore.live import (DEFAULT_MAX_RUNS, LiveRun, RunLimitReached, Series, active_run_ids,
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
    from kdcore.live import _Foreground

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
    from kdcore.live import foreground

    live = LiveRun(tiny(epochs=3), store=None).start()
    assert live.first_point.wait(20)
    with foreground():  # a page that takes a while: the run waits, bounded, then goes on
        time.sleep(1.5)
    assert live.join(30) and live.snapshot().status == "completed"


def test_eta_charges_later_phases_their_own_planned_work_not_the_teachers_pace():
    """A slow teacher's pace must not be applied to the cheap student phases (issue 14)."""
    from kdcore.events import PhaseStart, StepEnd
    from kdcore.live import PhaseCost

    live = LiveRun(tiny(epochs=10), store=None)  # not started: events are fed by hand
    live._t0 = 1.0
    live._sizes = {"test": 100, "train": 200, "val": 0}
    # probed: a teacher step costs 10 ms, a student step 0.1 ms, overhead 0.05 ms
    live._probe = {"overhead": PhaseCost(5e-5, 0.0), "teacher": PhaseCost(1e-2, 1e-4),
                   "baseline": PhaseCost(1e-4, 1e-6), "distilled": PhaseCost(1e-4, 1e-6),
                   "teacher_forward": PhaseCost(0.0, 1e-4)}
    live._on_phase_start(PhaseStart("teacher", 10, 7), now=1.0)
    live._on_step(StepEnd("teacher", 2, 10, 70, 0.5, {"ce": 0.5}, 1e-2, None), now=1.2)  # 20 ms a step
    _, eta = live._progress_eta(now=1.2)
    teacher_left = 60 * 0.02
    naive = (60 + 70 + 70) * 0.02  # every step left at the teacher's pace: the old, wrong ETA
    assert teacher_left < eta < teacher_left + 0.2 < naive
    # a student phase measured slower than its probe (per-step overhead) keeps the load from the
    # teacher and charges the next phase that overhead, not a load blown up by it
    live._on_phase_start(PhaseStart("baseline", 10, 7), now=3.0)
    live._on_step(StepEnd("baseline", 2, 10, 70, 0.5, {"ce": 0.5}, 1e-2, None), now=3.02)  # 2 ms a step
    _, eta = live._progress_eta(now=3.02)
    assert 60 * 0.002 + 70 * 0.0015 < eta < 60 * 0.002 + 70 * 0.0025 + 0.1


def test_probe_costs_rank_a_big_teacher_above_a_tiny_student():
    from kdcore.live import _planned_phases, probe_costs

    cfg = RunConfig(data=DataConfig(name="moons", n_samples=200),
                    teacher=ModelConfig("mlp", {"hidden": [1024, 1024]}),
                    student=ModelConfig("mlp", {"hidden": [4]}),
                    optim=OptimConfig(epochs=1, batch_size=256), teacher_optim=OptimConfig(epochs=1, batch_size=256))
    rng = torch.get_rng_state()
    costs = probe_costs(cfg, _planned_phases(cfg), (2,), 2)
    assert torch.equal(torch.get_rng_state(), rng)  # the run's random streams are untouched
    assert set(costs) >= {"overhead", "teacher", "baseline", "distilled", "teacher_forward"}
    assert all(0 < c.step_s < 60 for k, c in costs.items() if k != "teacher_forward")
    # ~1.05M weights against ~30: a thousand times the work, so the order holds even on a busy machine
    assert costs["teacher"].step_s > costs["baseline"].step_s
    assert costs["teacher"].forward_s > costs["baseline"].forward_s
