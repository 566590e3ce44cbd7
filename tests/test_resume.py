"""Resuming runs: per-epoch checkpoints, a SIGKILLed run trained on to the same weights, own RNG."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import torch

from kdcore import ConfigError, RunStore, to_json
from kdcore.config import DataConfig, LossConfig, ModelConfig, OptimConfig, RunConfig, replace
from kdcore.data import load_data
from kdcore.events import EpochEnd
from kdcore.train.experiment import resume, run_experiment
from kdcore.train.trainer import Alone, SeededDropout, fit, make_distiller, own_dropout

# dropout in both models, a cosine schedule and a few epochs: every piece of state a resume must carry
CFG = RunConfig(
    data=DataConfig(name="moons", n_samples=600, noise=0.2),
    teacher=ModelConfig("mlp", {"hidden": [32, 32], "dropout": 0.2}),
    student=ModelConfig("mlp", {"hidden": [16], "dropout": 0.1}),
    loss=LossConfig(temperature=2.0, alpha=0.5),
    optim=OptimConfig(epochs=6, lr=1e-2, batch_size=32, schedule="cosine"),
    teacher_optim=OptimConfig(epochs=6, lr=1e-2, batch_size=32, schedule="cosine"),
)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_fit_resumed_from_any_epoch_ends_with_the_uninterrupted_weights():
    from kdcore.models import build_model, seeded_init

    data = load_data(CFG.data)

    def student():
        with seeded_init(3):
            return build_model("mlp", in_shape=(2,), num_classes=2, params=CFG.student.params)

    teacher = student()
    states: list[dict] = []
    whole = make_distiller(CFG.loss, student(), teacher, in_shape=(2,))
    full = fit(whole, data, CFG.optim, phase="distilled", seed=5, checkpoint=states.append)
    assert [s["epoch"] for s in states] == [1, 2, 3, 4, 5]  # none after the last: its weights are saved
    for k in (1, 3, 5):
        again = make_distiller(CFG.loss, student(), teacher, in_shape=(2,))
        part = fit(again, data, CFG.optim, phase="distilled", seed=5, resume=states[k - 1])
        assert _same(_state(again), _state(whole)), f"resumed after epoch {k}: other weights"
        assert [e["epoch"] for e in part.epochs] == list(range(1, 7))
        assert part.epochs == full.epochs[:k] + part.epochs[k:]
    # the check above can fail: a fresh start with another seed ends elsewhere
    other = make_distiller(CFG.loss, student(), teacher, in_shape=(2,))
    fit(other, data, CFG.optim, phase="distilled", seed=6)
    assert not _same(_state(other), _state(whole))


@pytest.mark.slow
def test_checkpoints_are_spaced_in_time_and_a_resume_from_an_older_one_is_the_same():
    data = load_data(CFG.data)
    states: list[dict] = []
    fit(Alone(_student()), data, CFG.optim, phase="p", seed=1, checkpoint=states.append, checkpoint_every_s=3600)
    assert states == []  # a fast phase writes none: a killed one trains again from its start
    every: list[dict] = []
    fit(Alone(_student()), data, CFG.optim, phase="p", seed=1, checkpoint=every.append, checkpoint_every_s=0)
    assert [s["epoch"] for s in every] == list(range(1, CFG.optim.epochs))


def test_the_checkpoint_interval_comes_from_the_environment(monkeypatch):
    from kdcore.train.experiment import DEFAULT_CHECKPOINT_S, checkpoint_every_s

    monkeypatch.delenv("KD_CHECKPOINT_S", raising=False)
    assert checkpoint_every_s() == DEFAULT_CHECKPOINT_S
    monkeypatch.setenv("KD_CHECKPOINT_S", "0.5")
    assert checkpoint_every_s() == 0.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("KD_CHECKPOINT_S", bad)
        with pytest.raises(ConfigError, match="KD_CHECKPOINT_S"):
            checkpoint_every_s()


def test_a_bad_checkpoint_interval_is_refused_before_a_run_is_filed(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    monkeypatch.setenv("KD_CHECKPOINT_S", "soon")
    with pytest.raises(ConfigError, match="KD_CHECKPOINT_S='soon' must be a number of seconds"):
        run_experiment(CFG, store=store)
    assert store.list() == []


def _student():
    from kdcore.models import build_model, seeded_init

    with seeded_init(3):
        return build_model("mlp", in_shape=(2,), num_classes=2, params=CFG.student.params)


def test_dropout_draws_from_the_runs_own_generator():
    from kdcore.models import build_model

    model = build_model("mlp", in_shape=(2,), num_classes=2, params={"hidden": [8], "dropout": 0.5})
    data = load_data(CFG.data)
    fit(Alone(model), data, replace(CFG.optim, epochs=1), phase="p", seed=0)
    drops = [m for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    assert drops and all(isinstance(m, SeededDropout) and m.generator is not None for m in drops)
    x = torch.ones(4, 1000)
    d = drops[0].train()
    d.generator.manual_seed(1)
    a = d(x)
    torch.manual_seed(0)  # the process RNG plays no part
    d.generator.manual_seed(1)
    assert torch.equal(a, d(x))
    assert abs((a == 0).float().mean().item() - 0.5) < 0.05 and a.max().item() == pytest.approx(2.0)
    assert torch.equal(d.eval()(x), x)


@pytest.mark.parametrize("layer, shape", [
    (torch.nn.Dropout, (4, 7, 5, 3)), (torch.nn.Dropout1d, (4, 6, 9)), (torch.nn.Dropout1d, (6, 9)),
    (torch.nn.Dropout2d, (4, 6, 5, 5)), (torch.nn.Dropout2d, (6, 5, 5)), (torch.nn.Dropout3d, (3, 6, 2, 3, 4)),
    (torch.nn.Dropout3d, (6, 2, 3, 4)), (torch.nn.AlphaDropout, (4, 50)),
    (torch.nn.FeatureAlphaDropout, (4, 6, 5, 5))])
@pytest.mark.parametrize("p", [0.3, 1.0])
def test_every_kind_of_dropout_is_torchs_own_layer_drawing_from_the_runs_generator(layer, shape, p):
    """Each of torch's dropout layers, made the run's own, gives bit-for-bit what torch's layer gives
    when the process generator holds the same state: the same masks (element- or channel-wise, a
    batch or one sample), the same scaling (alpha dropout's affine correction too), the same
    gradients; in eval it is the identity."""
    import warnings

    model = torch.nn.Sequential(torch.nn.Identity(), layer(p))
    assert own_dropout(model, torch.Generator()) == 1
    ours = model[1]
    assert isinstance(ours, SeededDropout) and ours.like is layer
    x = torch.randn(*shape, dtype=torch.float64)
    if len(shape) == 4 and layer is torch.nn.Dropout:
        x = x.contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours.generator.manual_seed(11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on dropout2d's 3-D input
        a = model(x1)
        torch.manual_seed(11)
        b = layer(p).train()(x2)
        assert torch.equal(model.eval()(x), x)
    assert torch.equal(a, b)
    if p < 1:
        assert (a == b).all() and not torch.equal(a, x)  # something was dropped
    a.pow(2).sum().backward()
    b.pow(2).sum().backward()
    assert torch.equal(x1.grad, x2.grad)


@pytest.mark.slow
def test_concurrent_runs_with_dropout_and_feature_parts_are_bit_identical_to_solo_runs():
    """Dropout masks and FitNets' regressor init used to come from the process RNG that threads share."""
    from kdcore.models import build_model

    cfgs = [replace(CFG, seed=s, loss=LossConfig(name="fitnets", temperature=2.0, alpha=0.5))
            for s in (0, 1)]
    solo = [_state(run_experiment(c).models["distilled"]) for c in cfgs]
    out: dict[int, dict] = {}
    done = threading.Event()

    def churn():  # pages keep building unseeded models: each draws from torch's process-wide generator
        while not done.is_set():
            build_model("mlp", in_shape=(2,), num_classes=2, params={"hidden": [64, 64]})

    def one(i):
        out[i] = _state(run_experiment(cfgs[i]).models["distilled"])

    noise = threading.Thread(target=churn)
    noise.start()
    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        done.set()
        noise.join()
    for i in (0, 1):
        assert _same(out[i], solo[i]), f"seed {i} differs from its solo run"
    assert not _same(solo[0], solo[1])


def _wait_for_epochs(db, proc, phase: str, k: int) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db) as c:
                    if c.execute("SELECT COUNT(*) FROM epochs WHERE phase=?", (phase,)).fetchone()[0] >= k:
                        return
            except sqlite3.OperationalError:  # the schema is being created
                pass
        time.sleep(0.02)
    raise AssertionError(f"no {k} {phase} epochs: {proc.stderr.read().decode() if proc.poll() is not None else 'timeout'}")


@pytest.mark.slow
def test_a_sigkilled_run_resumes_from_the_cli_to_the_weights_of_an_uninterrupted_run(tmp_path):
    cfg = replace(CFG, teacher_optim=replace(CFG.teacher_optim, epochs=40), optim=replace(CFG.optim, epochs=30))
    path = tmp_path / "cfg.json"
    path.write_text(to_json(cfg))
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KD_CHECKPOINT_S": "0"}  # a checkpoint every epoch
    proc = subprocess.Popen([sys.executable, "-m", "kdcore", "--runs-dir", str(runs), "run", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        _wait_for_epochs(runs / "history.sqlite", proc, "baseline", 3)  # the teacher is done, a student is not
        proc.send_signal(signal.SIGSTOP)  # hold it still: the epochs counted are the epochs it leaves
        with sqlite3.connect(runs / "history.sqlite") as c:
            k = c.execute("SELECT COUNT(*) FROM epochs").fetchone()[0]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    store = RunStore(runs)
    (run,) = store.list()
    assert run["status"] == "interrupted" and f"its {k} finished epoch(s) are kept" in run["message"]
    assert len(store.epochs(run["id"])) == k
    assert store.checkpoint_path(run["id"], "baseline").is_file()

    out = subprocess.run([sys.executable, "-m", "kdcore", "--runs-dir", str(runs), "runs", "resume",
                          str(run["id"])], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert f"resuming run {run['id']}" in out.stdout
    after = store.get(run["id"])
    assert after["status"] == "completed" and after["pid"] != proc.pid
    epochs = store.epochs(run["id"])
    assert sorted(epochs.groupby("phase").size().to_dict().items()) == [
        ("baseline", 30), ("distilled", 30), ("teacher", 40)]
    assert not (runs / str(run["id"]) / "checkpoints").exists()  # a finished run keeps no checkpoints

    solo = run_experiment(cfg)  # the same config, never interrupted, in this process
    for phase in ("teacher", "baseline", "distilled"):
        assert _same(store.load_weights(run["id"], phase), _state(solo.models[phase])), phase
    assert store.get(run["id"])["metrics"]["distilled"]["accuracy"] == solo.metrics["distilled"]["accuracy"]


@pytest.mark.slow
def test_a_stopped_run_resumes_and_a_finished_one_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CHECKPOINT_S", "0")
    store = RunStore(tmp_path)
    stop = threading.Event()

    def stop_in_baseline(ev):  # after the baseline's epoch 2: its checkpoint is written, epoch 3 stops
        if isinstance(ev, EpochEnd) and ev.phase == "baseline" and ev.epoch == 2:
            stop.set()

    first = run_experiment(CFG, store=store, callbacks=[stop_in_baseline], stop=stop)
    assert first.status == "stopped"
    resumed: list = []
    done = resume(first.run_id, store=store, callbacks=[resumed.append])
    assert done.status == "completed" and done.run_id == first.run_id
    trained = [(ev.phase, ev.epoch) for ev in resumed if isinstance(ev, EpochEnd)]
    # the teacher is loaded, the baseline goes on after its last checkpoint (epoch 2), not from 1
    assert trained[0] == ("baseline", 3) and not [p for p, _ in trained if p == "teacher"]
    assert len(done.history["baseline"]) == CFG.optim.epochs and len(done.history["teacher"]) == 6
    # a loaded phase's history reads as a trained one's: the same keys, its terms a dict
    assert done.history["teacher"][0].keys() == done.history["baseline"][0].keys()
    assert set(done.history["teacher"][0]["terms"]) == {"ce"} and done.history["teacher"][-1]["epoch"] == 6
    assert _same(_state(done.models["distilled"]), _state(run_experiment(CFG).models["distilled"]))
    with pytest.raises(ConfigError, match="completed; only interrupted or stopped runs can be resumed"):
        resume(first.run_id, store=store)
    with pytest.raises(KeyError):
        resume(12345, store=store)


@pytest.mark.slow
def test_the_runs_page_resumes_a_stopped_run_in_the_session(runs_dir, keep_torch_threads):
    from tests.apptest import PAGES, app, ok

    store = RunStore(runs_dir)  # the CLI's (no owner); the test server listens on localhost: single user
    stop = threading.Event()
    first = run_experiment(CFG, store=store, stop=stop,
                           callbacks=[lambda ev: getattr(ev, "phase", None) == "distilled" and stop.set()])
    assert first.status == "stopped"
    at = ok(ok(app()).switch_page(f"{PAGES}/runs.py").run())
    assert at.selectbox(key="resume_run").options == [f"{first.run_id} (stopped)"]
    at.button(key="resume_go").click().run()
    assert any(f"Resuming run {first.run_id}" in s.value for s in ok(at).success)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and store.get(first.run_id)["status"] in ("stopped", "running"):
        time.sleep(0.2)
    assert store.get(first.run_id)["status"] == "completed"
    at.run()  # nothing left to resume; a second click is not offered
    assert not ok(at).get("selectbox") or "resume_run" not in [s.key for s in at.selectbox]
    assert _same(store.load_weights(first.run_id, "distilled"), _state(run_experiment(CFG).models["distilled"]))
