"""Runs that outlive their process, isolated randomness, budgets, ownership and untrusted uploads."""
from __future__ import annotations

import json
import os
import pickle
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import torch

from kdcore import ConfigError, RunStore, to_json
from kdcore.config import ModelConfig, OptimConfig, replace, to_dict
from kdcore.errors import StoreUnavailable
from kdcore.train.experiment import run_experiment
from tests.helpers import FAST


def _epochs_in(db_path, run_id=None) -> int:
    with sqlite3.connect(db_path) as c:
        if run_id is None:
            return c.execute("SELECT COUNT(*) FROM epochs").fetchone()[0]
        return c.execute("SELECT COUNT(*) FROM epochs WHERE run_id=?", (run_id,)).fetchone()[0]


@pytest.mark.slow
def test_a_run_killed_with_sigkill_is_interrupted_with_its_finished_epochs(tmp_path):
    runs = tmp_path / "runs"
    cfg = tmp_path / "cfg.json"
    # a teacher long enough to be killed in the middle of its training
    cfg.write_text(to_json(replace(FAST, teacher_optim=OptimConfig(epochs=500, lr=1e-2, batch_size=16))))
    proc = subprocess.Popen([sys.executable, "-m", "kdcore", "--runs-dir", str(runs), "run", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=os.getcwd())
    db = runs / "history.sqlite"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                if _epochs_in(db) >= 3:
                    break
            except sqlite3.OperationalError:  # the schema is being created
                pass
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    k = _epochs_in(db)
    assert k >= 3
    with sqlite3.connect(db) as c:  # the kill left it "running": nothing else could update it
        assert c.execute("SELECT status FROM runs").fetchone()[0] == "running"
    store = RunStore(runs)  # opening the history notices that its trainer is gone
    (run,) = store.list()
    assert run["status"] == "interrupted" and run["pid"] == proc.pid
    assert f"its {k} finished epoch(s) are kept" in run["message"]
    assert len(store.epochs(run["id"])) == k
    store.delete(run["id"])  # an interrupted run is no longer trained: it can be deleted
    with pytest.raises(KeyError):
        store.get(run["id"])


def test_a_stale_heartbeat_from_another_host_is_interrupted_and_a_live_one_is_not(store, monkeypatch):
    from kdcore.history import store as store_mod

    rid = store.create_run({"n": 1})
    store.finish_run(rid, "completed", "", {})  # stands for another machine's run: not ours
    with store._db() as db:
        db.execute("UPDATE runs SET status='running', host='elsewhere', pid=1, heartbeat=? WHERE id=?",
                   (time.time(), rid))
    assert store.get(rid)["status"] == "running" and store.is_training(rid)
    with pytest.raises(ConfigError, match="being trained by process 1 on elsewhere"):
        store.delete(rid)
    with store._db() as db:
        db.execute("UPDATE runs SET heartbeat=? WHERE id=?", (time.time() - store_mod.STALE_S - 1, rid))
    assert store.reap() == [rid] and store.get(rid)["status"] == "interrupted"


def test_a_run_this_process_trains_stays_running_and_cannot_be_deleted(store):
    rid = store.create_run({"n": 1})
    assert RunStore(store.root).get(rid)["status"] == "running"  # a second handle, same process
    with pytest.raises(ConfigError, match="being trained"):
        RunStore(store.root).delete(rid)
    store.finish_run(rid, "completed", "", {})
    RunStore(store.root).delete(rid)
    with pytest.raises(KeyError, match=f"no run with id {rid}"):
        store.delete(rid)  # a missing id fails


def test_a_session_deletes_only_its_own_runs(tmp_path):
    mine, theirs = RunStore(tmp_path, owner="session-a"), RunStore(tmp_path, owner="session-b")
    a, b = mine.create_run({"n": 1}), theirs.create_run({"n": 2})
    for s, rid in ((mine, a), (theirs, b)):
        s.finish_run(rid, "completed", "", {})
    with pytest.raises(ConfigError, match="another session"):
        mine.delete(b, owner="session-a")
    mine.delete(a, owner="session-a")
    RunStore(tmp_path).delete(b)  # the CLI (no owner) deletes any finished run


def _weights_of(res):
    return {k: v.clone() for k, v in res.models["distilled"].state_dict().items()}


@pytest.mark.slow
def test_concurrent_runs_are_bit_identical_to_solo_runs():
    """Two runs in two threads while a third keeps building unseeded models (as pages do)."""
    from kdcore.models import build_model

    cfgs = [replace(FAST, seed=s, optim=OptimConfig(epochs=2, lr=1e-2, batch_size=64),
                    teacher_optim=OptimConfig(epochs=2, lr=1e-2, batch_size=64)) for s in (0, 1)]
    solo = [_weights_of(run_experiment(c)) for c in cfgs]
    out: dict[int, dict] = {}
    done = threading.Event()

    def churn():  # page-side probes: each draws from torch's process-wide generator
        while not done.is_set():
            build_model("mlp", in_shape=(2,), num_classes=2, params={"hidden": [64, 64]})
            torch.rand(8)

    def one(i):
        out[i] = _weights_of(run_experiment(cfgs[i]))

    noise = threading.Thread(target=churn)
    noise.start()
    try:
        for _ in range(3):
            threads = [threading.Thread(target=one, args=(i,)) for i in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for i in (0, 1):
                assert all(torch.equal(out[i][k], solo[i][k]) for k in solo[i]), f"seed {i} differs"
    finally:
        done.set()
        noise.join()
    assert not all(torch.equal(solo[0][k], solo[1][k]) for k in solo[0])  # the seeds do matter


def test_an_over_budget_model_is_refused_before_it_exists(monkeypatch):
    from kdapp import ui
    from kdcore.budget import check_model

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="KD_MAX_PARAMS"):  # 416M parameters, 1.6 GB as float32
        ui.profile_dict("mlp", {"hidden": [20000, 20000]}, (1, 28, 28), 10, 128)
    with pytest.raises(ConfigError, match="KD_MAX_PARAMS"):  # 10^10: would raise "cannot allocate"
        ui.profile_dict("mlp", {"hidden": [100000, 100000]}, (1, 28, 28), 10, 128)
    assert time.perf_counter() - t0 < 5
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grew_mb < 200, f"peak memory grew by {grew_mb:.0f} MB"
    monkeypatch.setenv("KD_MAX_PARAMS", str(10**9))  # the variable the message names raises it
    check_model(ModelConfig("mlp", {"hidden": [20000, 20000]}), (1, 28, 28), 10, batch_size=128, role="t")


def test_the_train_page_config_is_refused_over_budget():
    from kdapp import ui

    v = {"dataset": "moons", "teacher": "mlp", "student": "mlp", "teacher_params": "20000, 20000"}
    with pytest.raises(ConfigError, match="teacher mlp .* over this server's budget .* KD_MAX_PARAMS"):
        ui.build_config(v)


def _upload(tmp_path, state) -> bytes:
    p = tmp_path / "w.pt"
    torch.save(state, p)
    return p.read_bytes()


def test_uploaded_weights_with_nan_are_refused_and_not_kept(tmp_path):
    from kdapp import ui
    from kdcore.train.experiment import build_models

    teacher, _ = build_models(FAST, (2,), 2)
    state = {k: torch.full_like(v, float("nan")) for k, v in teacher.state_dict().items()}
    with pytest.raises(ConfigError, match="NaN or infinite"):
        ui.save_teacher_upload(_upload(tmp_path, state), FAST, tmp_path / "runs")
    assert not list((tmp_path / "runs" / "uploads").glob("*.pt"))


def test_a_weights_file_with_code_keeps_the_real_cause(tmp_path):
    from kdapp import ui

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    content = pickle.dumps({"w": Evil()}, protocol=2)
    with pytest.raises(ConfigError) as e:
        ui.save_teacher_upload(content, FAST, tmp_path / "runs")
    msg = str(e.value)
    assert "system" in msg and "Do it only" not in msg and "weights_only` set to `False" not in msg


@pytest.mark.slow
def test_an_upload_is_stored_once_and_removed_with_the_last_run_using_it(tmp_path):
    from kdapp import ui
    from kdcore.train.experiment import build_models

    teacher, _ = build_models(FAST, (2,), 2)
    content = _upload(tmp_path, teacher.state_dict())
    runs = tmp_path / "runs"
    src = ui.save_teacher_upload(content, FAST, runs)
    assert ui.save_teacher_upload(content, FAST, runs) == src  # by content hash: one file
    assert len(list((runs / "uploads").iterdir())) == 1
    store = RunStore(runs)
    cfg = replace(FAST, teacher_source=src, optim=OptimConfig(epochs=1, lr=1e-2, batch_size=64))
    a, b = (run_experiment(cfg, store=store).run_id for _ in range(2))
    store.delete(a)
    assert os.path.exists(src[5:])  # run b still uses it
    store.delete(b)
    assert not os.path.exists(src[5:])


def test_a_phase_is_never_a_path(store):
    for bad in ("../../etc/passwd", "/etc/passwd", "a/b", "", "Teacher", "x" * 100):
        with pytest.raises(ValueError):
            store.weights_path(1, bad)


def test_an_unusable_history_folder_is_a_message(tmp_path, capsys):
    from kdcore.cli import main

    a_file = tmp_path / "file"
    a_file.write_text("x")
    for where, words in ((a_file, "is (inside) a file"), (a_file / "sub", "is (inside) a file"),
                         ("/sys/kd_history", "cannot create")):
        with pytest.raises(StoreUnavailable, match=words.replace("(", r"\(").replace(")", r"\)")):
            RunStore(where)
        assert main(["--runs-dir", str(where), "runs", "list"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "KD_RUNS_DIR" in err


def test_a_damaged_history_file_is_a_message(tmp_path):
    (tmp_path / "history.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(StoreUnavailable, match="move it away"):
        RunStore(tmp_path)


# --- the dashboard ------------------------------------------------------------------------------

from tests.apptest import PAGES, QUICK, app, ok, train_until_done  # noqa: E402


@pytest.mark.slow
def test_on_a_shared_server_a_session_deletes_its_own_runs_only(runs_dir, monkeypatch):
    monkeypatch.setenv("KD_SINGLE_USER", "0")  # as when the server listens on the network
    at = train_until_done(ok(app(QUICK)))  # run 1: this session's
    other = RunStore(runs_dir, owner="another-session")
    rid = other.create_run(to_dict(FAST))
    other.finish_run(rid, "completed", "", {})
    at = ok(at.switch_page(f"{PAGES}/runs.py").run())
    at.selectbox(key="delete_run").set_value(rid).run()
    at.button(key="delete_ask").click().run()
    at.button(key="delete_yes").click().run()
    assert any("started by another session" in e.value for e in ok(at).error)
    assert RunStore(runs_dir).get(rid)["owner"] == "another-session"
    at.selectbox(key="delete_run").set_value(1).run()
    at.button(key="delete_ask").click().run()
    at.button(key="delete_yes").click().run()
    assert any("Deleted run 1" in s.value for s in ok(at).success)
    assert [r["id"] for r in RunStore(runs_dir).list()] == [rid]


def test_an_over_budget_teacher_shows_the_limit_not_a_traceback(runs_dir):
    at = ok(app({**QUICK, "dataset": "fashion_mnist", "teacher": "mlp", "teacher_params": "20000, 20000"}))
    assert any("KD_MAX_PARAMS" in e.value for e in at.error), [e.value for e in at.error]
    assert at.button(key="start").disabled


@pytest.mark.slow
def test_a_finished_run_has_given_its_slot_back_when_a_page_first_sees_it_done():
    from kdapp.live import LiveRun, active_runs

    cfg = replace(FAST, optim=OptimConfig(epochs=1, lr=1e-2, batch_size=64),
                  teacher_optim=OptimConfig(epochs=1, lr=1e-2, batch_size=64))
    for _ in range(3):
        live = LiveRun(cfg).start()
        while not live.snapshot().done:  # a page polling for the end, as the sidebar does
            pass
        assert active_runs() == 0  # the redraw on "done" must not read "1 of 2 slots in use"
        live.join(10)


def test_an_unusable_history_folder_is_a_message_on_every_page(tmp_path, monkeypatch):
    import streamlit as st

    a_file = tmp_path / "file"
    a_file.write_text("x")
    monkeypatch.setenv("KD_RUNS_DIR", str(a_file))
    st.cache_resource.clear()
    for page in ("train", "runs", "sweep"):
        at = app() if page == "train" else app().switch_page(f"{PAGES}/{page}.py").run()
        ok(at)
        assert any("is (inside) a file" in e.value and "KD_RUNS_DIR" in e.value for e in at.error), page
    st.cache_resource.clear()
