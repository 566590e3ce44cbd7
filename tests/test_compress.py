"""Compression after distillation: int8 quantization, magnitude pruning and the before/after table."""
import pytest
import torch
import torch.nn as nn

from kdcore import ConfigError, ModelConfig, OptimConfig, replace, run_experiment, to_json
from kdcore.cli import main
from kdcore.ship.compress import compression_table, prune_magnitude, quantize_int8, serialized_mb, sparsity
from kdcore.data import load_data
from tests.helpers import FAST

WIDE = replace(FAST, student=ModelConfig("mlp", {"hidden": [256, 256]}),
               optim=OptimConfig(epochs=4, lr=1e-2, batch_size=64),
               teacher_optim=OptimConfig(epochs=4, lr=1e-2, batch_size=64))


@pytest.fixture(scope="module")
def trained():
    res = run_experiment(WIDE)
    assert res.status == "completed", res.message
    return res.models["distilled"], load_data(WIDE.data)


def _weights(model):
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


def test_int8_shrinks_linear_layers_and_keeps_accuracy(trained):
    model, data = trained
    before = [w.clone() for w in _weights(model)]
    q = quantize_int8(model)
    assert not any(type(m) is nn.Linear for m in q.modules())
    assert serialized_mb(q)[0] < serialized_mb(model)[0] / 3  # 4 bytes -> 1 byte per weight (+ scales)
    x = data.x_test
    agree = (q(x).argmax(1) == model(x).argmax(1)).float().mean().item()
    assert agree > 0.97
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(model)))  # the original is untouched


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_pruning_is_permanent_and_removes_the_smallest_weights(trained, scope):
    model, _ = trained
    p = prune_magnitude(model, 0.6, scope=scope)
    keys = set(p.state_dict())
    assert keys == set(model.state_dict())  # no weight_orig / weight_mask left behind
    assert sparsity(p) == pytest.approx(0.6, abs=0.01)
    assert sparsity(model) < 0.01
    layers = list(zip(_weights(model), _weights(p)))
    if scope == "layer":  # every layer loses the same share
        for _, w in layers:
            assert (w == 0).float().mean().item() == pytest.approx(0.6, abs=0.01)
    # the survivors are the largest magnitudes: every pruned weight is smaller than every kept one
    if scope == "global":
        all_w = torch.cat([w.flatten() for w, _ in layers]).abs()
        kept = torch.cat([pw.flatten() for _, pw in layers]) != 0
        assert all_w[~kept].max() <= all_w[kept].min()
    else:
        for w, pw in layers:
            assert w.abs()[pw == 0].max() <= w.abs()[pw != 0].min()
    with pytest.raises(ConfigError, match="prune amount"):
        prune_magnitude(model, 1.0)
    with pytest.raises(ConfigError, match="scope"):
        prune_magnitude(model, 0.5, scope="channel")


@pytest.mark.slow
def test_table_reports_size_latency_and_accuracy_before_and_after(trained):
    model, data = trained
    t = compression_table(model, data, prune_amounts=(0.5, 0.95))
    assert list(t["variant"]) == ["float32 (as trained)", "int8 dynamic", "pruned 50% (global)",
                                  "pruned 50% (global) + int8", "pruned 95% (global)", "pruned 95% (global) + int8"]
    assert {"size_mb", "size_gzip_mb", "sparsity", "latency_ms", "accuracy", "size_ratio", "speedup",
            "accuracy_change"} <= set(t.columns)
    row = t.set_index("variant")
    base = row.loc["float32 (as trained)"]
    assert base["accuracy"] > 0.8 and base["size_ratio"] == 1 and base["accuracy_change"] == 0
    assert row.loc["int8 dynamic", "size_ratio"] > 3
    assert (t["latency_ms"] > 0).all()
    # dense storage: pruning alone does not shrink the file, but it compresses much better
    assert row.loc["pruned 50% (global)", "size_mb"] == pytest.approx(base["size_mb"], rel=0.01)
    assert row.loc["pruned 95% (global)", "size_gzip_mb"] < base["size_gzip_mb"] / 3
    # int8 keeps the pruned zeros (0.0 quantizes to exactly 0): the pruned + int8 row says so
    assert row.loc["pruned 95% (global)", "sparsity"] == pytest.approx(0.95, abs=0.01)
    assert row.loc["pruned 95% (global) + int8", "sparsity"] >= row.loc["pruned 95% (global)", "sparsity"]
    assert row.loc["int8 dynamic", "sparsity"] < 0.5
    # removing 95% of the weights costs accuracy that the table shows
    assert row.loc["pruned 95% (global)", "accuracy"] <= base["accuracy"]
    assert row.loc["int8 dynamic", "accuracy_change"] == pytest.approx(
        (row.loc["int8 dynamic", "accuracy"] - base["accuracy"]) * 100)


@pytest.mark.slow
def test_cli_compresses_a_stored_run(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(to_json(replace(WIDE, optim=OptimConfig(epochs=1, batch_size=64),
                                   teacher_optim=OptimConfig(epochs=1, batch_size=64))))
    runs = str(tmp_path / "runs")
    assert main(["--runs-dir", runs, "run", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["--runs-dir", runs, "compress", "1", "--prune", "0.5", "--scope", "layer"]) == 0
    out = capsys.readouterr().out
    assert "int8 dynamic" in out and "pruned 50% (layer) + int8" in out and "accuracy_change" in out
    assert main(["--runs-dir", runs, "compress", "7"]) == 2
    assert "no run with id 7" in capsys.readouterr().err
