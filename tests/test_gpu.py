"""The training loop's device path (issue 13): the GPU checks of benchmarks/gpu_check.py under pytest.

On a machine with CUDA the checks run on ``cuda``: the device ends where the CPU ends, resident
data gives the streamed run, every step's numbers reach the callbacks though they are synced in
blocks, a NaN is reported at its step, Stop works, bf16/fp16 autocast trains, torch.compile
matches eager. Without CUDA those are skipped, and the same logic (resident data, block-synced
step numbers) is forced on the CPU, where it must give the per-step path's numbers exactly.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from kdcore.train import trainer
from kdcore.config import OptimConfig, RunConfig, from_dict, to_dict
from kdcore.errors import ConfigError
from kdcore.events import StepEnd

_spec = importlib.util.spec_from_file_location(
    "gpu_check", Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("check", ["check_device_matches_cpu", "check_resident_matches_streamed",
                                   "check_events", "check_diverged", "check_stop"])
def test_cuda_check(check):
    ok, line = getattr(gpu_check, check)("cuda")
    assert ok, line


@cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_autocast_trains(precision):
    ok, line = gpu_check.check_amp("cuda", precision)
    assert ok, line


@cuda
def test_cuda_compile_matches_eager():
    ok, line = gpu_check.check_compile("cuda")
    assert ok, line


@pytest.fixture
def device_path_on_cpu(monkeypatch):
    """Take the GPU code path on the CPU: data 'resident', step numbers synced in blocks of 7."""
    monkeypatch.setattr(trainer, "_fits_on", lambda *a: True)
    monkeypatch.setattr(trainer, "_defer_sync", lambda device: True)
    monkeypatch.setattr(trainer, "SYNC_EVERY", 7)


def _steps(events):
    return [(e.step, e.epoch, e.loss, tuple(sorted(e.terms.items()))) for e in events if isinstance(e, StepEnd)]


@pytest.mark.slow
def test_block_synced_path_gives_the_per_step_numbers(monkeypatch):
    data = gpu_check.learnable()
    plain: list = []
    r_plain, s_plain = gpu_check._run("cpu", data, kd=True, events=plain)
    monkeypatch.setattr(trainer, "_fits_on", lambda *a: True)
    monkeypatch.setattr(trainer, "_defer_sync", lambda device: True)
    monkeypatch.setattr(trainer, "SYNC_EVERY", 7)
    block: list = []
    r_block, s_block = gpu_check._run("cpu", data, kd=True, events=block)
    assert _steps(block) == _steps(plain)  # every step, in order, same values
    assert len(_steps(block)) == 2 * 28
    for a, b in zip(r_plain.epochs, r_block.epochs):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-12)
        assert a["train_acc"] == b["train_acc"] and a["val_acc"] == b["val_acc"]
    assert gpu_check._max_diff(s_plain, s_block) == 0.0


def test_block_synced_path_reports_divergence_at_its_step(device_path_on_cpu):
    ok, line = gpu_check.check_diverged("cpu")
    assert ok, line


def test_block_synced_path_stops(device_path_on_cpu):
    ok, line = gpu_check.check_stop("cpu")
    assert ok, line


@pytest.mark.slow
def test_bf16_autocast_on_cpu_trains():
    ok, line = gpu_check.check_amp("cpu", "bf16")
    assert ok, line


def test_precision_and_compile_are_validated():
    assert OptimConfig().precision == "fp32" and OptimConfig().compile is False
    with pytest.raises(ConfigError, match="precision.*'fp32', 'bf16' or 'fp16'"):
        OptimConfig(precision="fp8")
    with pytest.raises(ConfigError, match="compile.*true or false"):
        OptimConfig(compile="yes")
    cfg = from_dict({"optim": {"precision": "bf16", "compile": True}})
    assert cfg.optim.precision == "bf16" and cfg.optim.compile is True
    assert from_dict(to_dict(cfg)) == cfg
    old = to_dict(RunConfig())
    del old["optim"]["precision"], old["optim"]["compile"]  # a run stored before the knobs
    assert from_dict(old).optim == OptimConfig(**{**old["optim"]})


@pytest.mark.slow
def test_gpu_check_timing_rows_run_on_cpu(capsys):
    """The benchmark's timing code (main table, bare loops, ablations, big batch) runs end to end."""
    data = gpu_check.random_images("tiny", 400, (1, 8, 8), 3)
    gpu_check.time_setup("tiny", data, ("cnn", {"width": 2, "hidden": 8}), ("mlp", {"hidden": [4]}),
                         OptimConfig(lr=1e-3, batch_size=64), "cpu", ("fp32",), epochs=2,
                         compile_teacher=False, real=False, extras=True)
    out = capsys.readouterr().out
    for row in ("| teacher alone, fp32 |", "| KD, cached teacher logits, fp32 |",
                "| bare loop on the device, KD cached, fp32 |", "(not resident) |",
                "| KD, cached teacher logits, fp32, batch 1024 |"):
        assert row in out
    assert "failed" not in out and "diverged" not in out
