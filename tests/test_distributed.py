"""Headless scale-out: the same config on two CPU processes (gloo) trains exactly like one process."""
import subprocess
import sys

import pytest
import torch

from kdcore import DataConfig, LossConfig, ModelConfig, OptimConfig, RunStore, replace, run_experiment, to_json
from kdcore.train.distributed import run_distributed
from tests.helpers import FAST

pytestmark = pytest.mark.distributed

# 800 points -> 576 training samples = 9 batches of 64, so both ranks always get 32 samples and
# the averaged gradient is exactly the one-process gradient of the whole batch
CFG = replace(FAST, data=DataConfig(name="moons", n_samples=800, noise=0.15),
              loss=LossConfig("fitnets", temperature=2.0, alpha=0.5),
              extra_teachers=(ModelConfig("mlp", {"hidden": [32]}),),
              optim=OptimConfig(epochs=3, lr=1e-2, batch_size=64),
              teacher_optim=OptimConfig(epochs=3, lr=1e-2, batch_size=64))


def test_two_gloo_ranks_end_identical_and_match_one_process(tmp_path):
    runs = tmp_path / "runs"
    d = run_distributed(CFG, 2, runs_dir=runs, timeout_s=120)
    res = d.result
    assert res.status == "completed", res.message
    assert list(res.metrics) == ["teacher", "teacher_2", "ensemble", "baseline", "distilled"]
    assert len(d.rank_weights) == 2
    for phase, state in d.rank_weights[0].items():
        for k, v in state.items():
            assert torch.equal(v, d.rank_weights[1][phase][k]), (phase, k)
    one = run_experiment(CFG)
    for phase in ("teacher", "teacher_2", "baseline", "distilled"):
        for k, v in one.models[phase].state_dict().items():
            assert torch.allclose(v, d.rank_weights[0][phase][k], atol=1e-5), (phase, k)
        assert res.metrics[phase]["accuracy"] == pytest.approx(one.metrics[phase]["accuracy"], abs=0.01)
    # the reported epoch numbers are the global ones, not one rank's half of the batch
    ours, theirs = res.history["distilled"][-1], one.history["distilled"][-1]
    assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-4)
    assert ours["train_acc"] == pytest.approx(theirs["train_acc"], abs=1e-9)
    assert set(ours["terms"]) == {"ce", "kd", "hint"}
    # rank 0 alone filed the run, with its weights; the models came back usable
    store = RunStore(runs)
    (row,) = store.list()
    assert row["status"] == "completed" and store.load_weights(row["id"], "distilled")
    x = torch.zeros(4, 2)
    assert res.models["distilled"](x).shape == (4, 2)


def test_cli_nproc_runs_the_config_on_two_processes(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(to_json(replace(CFG, loss=LossConfig(temperature=2.0), extra_teachers=(),
                                   optim=OptimConfig(epochs=1, batch_size=64),
                                   teacher_optim=OptimConfig(epochs=1, batch_size=64))))
    out = subprocess.run([sys.executable, "-m", "kdcore", "--runs-dir", str(tmp_path / "runs"), "run",
                          str(cfg), "--nproc", "2"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    # one process prints: each phase's epoch line appears once, not once per rank
    assert out.stdout.count("[distilled] epoch 1/1") == 1 and "status: completed (run 1)" in out.stdout


def test_compare_nproc_trains_each_seed_on_two_processes_like_one(tmp_path):
    cfg = replace(CFG, loss=LossConfig(temperature=2.0), extra_teachers=(),
                  optim=OptimConfig(epochs=2, batch_size=64), teacher_optim=OptimConfig(epochs=2, batch_size=64))
    path = tmp_path / "cfg.json"
    path.write_text(to_json(cfg))
    runs = tmp_path / "runs"
    out = subprocess.run([sys.executable, "-m", "kdcore", "--runs-dir", str(runs), "compare", str(path),
                          "--seeds", "0,1", "--nproc", "2", "--teacher-per-seed"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("[distilled] epoch 2/2") == 2  # two seeds, each printed once (rank 0)
    assert "Over 2 seeds distillation" in out.stdout
    rows = RunStore(runs).list()
    assert [r["kind"] for r in rows] == ["compare", "compare"] and len({r["grp"] for r in rows}) == 1
    # the same seeds in one process give the same students (mlp: no BatchNorm statistics to differ)
    got = {r["config"]["seed"]: r["metrics"] for r in rows}
    for seed in (0, 1):
        one = run_experiment(replace(cfg, seed=seed))
        for phase in ("teacher", "baseline", "distilled"):
            assert got[seed][phase]["accuracy"] == pytest.approx(one.metrics[phase]["accuracy"], abs=0.01)


def test_compare_nproc_shares_one_teacher_across_ranks_and_seeds(tmp_path):
    """Every rank makes the same teacher decision: seed 1's ranks load seed 0's teacher."""
    cfg = replace(CFG, extra_teachers=(), optim=OptimConfig(epochs=1, batch_size=64),
                  teacher_optim=OptimConfig(epochs=1, batch_size=64))
    path = tmp_path / "cfg.json"
    path.write_text(to_json(cfg))
    runs = tmp_path / "runs"
    out = subprocess.run([sys.executable, "-m", "kdcore", "--runs-dir", str(runs), "compare", str(path),
                          "--seeds", "0,1", "--nproc", "2"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    store = RunStore(runs)
    first, second = sorted(r["id"] for r in store.list())
    assert store.get(second)["config"]["teacher_source"] == f"run:{first}"
    a, b = store.load_weights(first, "teacher"), store.load_weights(second, "teacher")
    assert all(torch.equal(a[k], b[k]) for k in a)
