"""Run history in a real SQLite file: survives a restart, reuses teachers, exports, deletes."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from kdcore import ConfigError, ModelConfig, RunStore, StepEnd, replace, run_experiment
from kdcore.train.experiment import build_models, load_teacher_weights
from tests.helpers import FAST


@pytest.mark.slow
def test_history_survives_a_process_restart(tmp_path):
    root = tmp_path / "runs"
    code = ("import kdcore, sys; from tests.helpers import FAST; "
            "r = kdcore.run_experiment(FAST, store=kdcore.RunStore(sys.argv[1])); print(r.run_id)")
    out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True)
    run_id = int(out.stdout.strip().splitlines()[-1])
    store = RunStore(root)  # a new process's view: only what is on disk
    run = store.get(run_id)
    assert run["status"] == "completed" and run["config"]["loss"]["temperature"] == FAST.loss.temperature
    ep = store.epochs(run_id)
    assert sorted(ep["phase"].unique()) == ["baseline", "distilled", "teacher"]
    assert len(ep) == 3 * FAST.optim.epochs and {"term_ce", "term_kd"} <= set(ep.columns)
    steps = store.steps(run_id)
    assert steps.groupby("phase")["step"].max()["distilled"] == len(steps[steps.phase == "distilled"])
    assert run["metrics"]["distilled"]["accuracy"] > 0.5
    for phase in ("teacher", "baseline", "distilled"):
        assert store.weights_path(run_id, phase).exists()


@pytest.mark.slow
def test_trained_teacher_is_reused_without_retraining(store):
    first = run_experiment(FAST, store=store)
    events = []
    second = run_experiment(replace(FAST, teacher_source=f"run:{first.run_id}"), store=store,
                            callbacks=[events.append])
    assert second.status == "completed", second.message
    assert "teacher" not in second.history  # no teacher epochs: it was loaded
    steps = {e.phase for e in events if isinstance(e, StepEnd)}
    assert "distilled" in steps and "teacher" not in steps  # the students trained, the teacher did not
    assert second.metrics["teacher"]["accuracy"] == first.metrics["teacher"]["accuracy"]
    bad = run_experiment(replace(FAST, teacher_source="run:999"), store=store)
    assert bad.status == "failed" and "999" in bad.message
    assert store.get(bad.run_id)["status"] == "failed"


def test_teacher_file_must_be_a_matching_state_dict(tmp_path):
    data_shape, k = (2,), 2
    teacher, _ = build_models(FAST, data_shape, k)
    good = tmp_path / "good.pt"
    torch.save(teacher.state_dict(), good)
    fresh, _ = build_models(replace(FAST, seed=5), data_shape, k)
    load_teacher_weights(fresh, f"file:{good}")
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), teacher.parameters()))

    other = build_models(replace(FAST, teacher=ModelConfig("mlp", {"hidden": [3]})), data_shape, k)[0]
    with pytest.raises(ConfigError, match="do not fit"):
        load_teacher_weights(other, f"file:{good}")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match="state_dict"):
        load_teacher_weights(fresh, f"file:{junk}")

    class Evil:  # a pickle that would run code if unpickled
        def __reduce__(self):
            return (print, ("owned",))

    evil = tmp_path / "evil.pt"
    torch.save({"w": Evil()}, evil)
    with pytest.raises(ConfigError, match="safely"):
        load_teacher_weights(fresh, f"file:{evil}")
    with pytest.raises(ConfigError, match="does not exist"):
        load_teacher_weights(fresh, f"file:{tmp_path / 'missing.pt'}")


@pytest.mark.slow
def test_list_filter_export_and_delete(store, tmp_path):
    a = run_experiment(FAST, store=store)
    b = run_experiment(replace(FAST, seed=1, name="second"), store=store)
    table = store.table()
    assert list(table["id"]) == [b.run_id, a.run_id]
    assert table.loc[table.id == b.run_id, "name"].item() == "second"
    assert len(store.list(status="completed")) == 2 and store.list(status="failed") == []
    path = store.export_csv(tmp_path / "out.csv")
    df = pd.read_csv(path)
    assert set(df["run_id"]) == {a.run_id, b.run_id}
    assert json.loads(df["config"].iloc[0])["data"]["name"] == "moons"
    store.delete(a.run_id)
    assert [r["id"] for r in store.list()] == [b.run_id]
    assert store.epochs(a.run_id).empty and not store.weights_path(a.run_id, "teacher").exists()
    with pytest.raises(KeyError):
        store.get(a.run_id)


def test_the_same_weights_saved_again_are_a_hard_link_that_survives_deleting_the_first(store):
    a, b = store.create_run({"n": 1}), store.create_run({"n": 2})
    state = {"w": torch.randn(4, 3), "n": torch.tensor(7), "h": torch.randn(2).half(),
             "m": torch.tensor([True, False])}
    first, again = store.save_weights(a, "teacher", state), store.save_weights(b, "teacher", state)
    other = store.save_weights(b, "baseline", {**state, "w": state["w"] + 1e-3})  # one entry differs
    assert os.stat(first).st_ino == os.stat(again).st_ino and os.stat(first).st_nlink == 2
    assert os.stat(other).st_nlink == 1
    store.finish_run(a, "completed", "", {})  # a run still in training cannot be deleted
    store.delete(a)
    got = store.load_weights(b, "teacher")
    assert all(torch.equal(got[k], v) for k, v in state.items())
    # overwriting a linked file replaces only that run's entry
    store.save_weights(b, "teacher", {"w": torch.zeros(1)})
    c = store.create_run({"n": 3})
    assert os.stat(store.save_weights(c, "teacher", state)).st_nlink == 1  # nothing left to link to


@pytest.mark.slow
def test_a_sweep_stores_its_reused_teacher_and_baseline_once(tmp_path):
    from kdcore.train.sweep import SweepPlan, run_sweep

    s = RunStore(tmp_path / "runs")
    res = run_sweep(SweepPlan(replace(FAST, optim=replace(FAST.optim, epochs=2),
                                      teacher_optim=replace(FAST.teacher_optim, epochs=2)),
                              (0.5,), (1.0, 2.0, 4.0)), store=s)
    assert res.status == "completed"
    ids = [c["run_id"] for c in res.cells]
    for phase in ("teacher", "baseline"):
        inodes = {os.stat(s.weights_path(i, phase)).st_ino for i in ids}
        assert len(inodes) == 1, phase  # three cells, one file
    assert len({os.stat(s.weights_path(i, "distilled")).st_ino for i in ids}) == 3
