"""Shipping a student: ONNX + safetensors export checked with onnxruntime, TensorBoard event files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdcore import ConfigError, from_dict, run_experiment
from kdcore.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished two-moons run (CNN-free, seconds) in its own history."""
    from kdcore import RunStore

    store = RunStore(tmp_path_factory.mktemp("runs"))
    cfg = from_dict({"data": {"name": "moons", "n_samples": 600},
                     "teacher": {"name": "mlp", "params": {"hidden": [32, 32]}},
                     "student": {"name": "mlp", "params": {"hidden": [8]}},
                     "optim": {"epochs": 3}, "teacher_optim": {"epochs": 3}, "name": "export test"})
    res = run_experiment(cfg, store=store)
    assert res.status == "completed", res.message
    return store, res.run_id


def test_onnx_matches_pytorch_on_the_test_split(trained):
    import onnx
    import onnxruntime as ort

    from kdcore.ship.compress import load_run_model
    from kdcore.ship.export import export_run

    store, rid = trained
    res = export_run(store, rid, "distilled", "float32")
    v = res.verification
    model, data, _ = load_run_model(store, rid, "distilled")
    assert v["n"] == len(data.y_test) > 0
    assert v["agreement"] >= 0.999 and res.verified
    assert v["max_abs_logit_diff"] < 1e-4
    assert v["onnx_latency_ms"] > 0 and v["torch_latency_ms"] > 0
    # the file itself, run here independently of verify_onnx, gives the model's logits
    onnx_bytes = res.files[f"run{rid}_distilled_float32.onnx"]
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": data.x_test.numpy()})[0]
    with torch.no_grad():
        want = model(data.x_test).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert v["torch_accuracy"] == pytest.approx(float((want.argmax(1) == data.y_test.numpy()).mean()))
    meta = {p.key: json.loads(p.value) for p in onnx.load_from_string(onnx_bytes).metadata_props}
    assert meta["classes"] == data.classes and meta["model"]["name"] == "mlp"
    assert meta["mean"] == pytest.approx(list(data.mean))


def test_safetensors_rebuilds_the_same_model(trained, tmp_path):
    from kdcore.ship.compress import load_run_model
    from kdcore.history.weights import load_model_file
    from kdcore.ship.export import export_run

    store, rid = trained
    res = export_run(store, rid, "distilled", "float32", formats=("safetensors",))
    path = tmp_path / "student.safetensors"
    path.write_bytes(res.files[f"run{rid}_distilled_float32.safetensors"])
    rebuilt, meta = load_model_file(path)
    model, data, _ = load_run_model(store, rid, "distilled")
    with torch.no_grad():
        assert torch.equal(rebuilt(data.x_test), model(data.x_test))
    assert meta["run_config"]["name"] == "export test" and meta["in_shape"] == [2]
    assert res.verification == {}  # no ONNX asked for, nothing verified


def test_compressed_variants_export(trained):
    from kdcore.ship.export import export_run

    store, rid = trained
    pruned = export_run(store, rid, "distilled", "pruned:0.5")
    assert pruned.verified and set(pruned.files) == {f"run{rid}_distilled_pruned_0_5.onnx",
                                                     f"run{rid}_distilled_pruned_0_5.safetensors"}
    # int8: onnxruntime's dynamic quantization against PyTorch's, compared honestly
    q = export_run(store, rid, "distilled", "int8", formats=("onnx",))
    assert q.verification["n"] > 0 and 0 < q.verification["max_abs_logit_diff"] < 1.0
    assert not q.target_applies and not q.verified  # reported, never claimed as meeting the target
    with pytest.raises(ConfigError, match="packed parameters"):
        export_run(store, rid, "distilled", "int8", formats=("safetensors",))
    with pytest.raises(ConfigError, match="variant 'half'.*float32, int8"):
        export_run(store, rid, "distilled", "half")


def test_cli_export_writes_files_and_reports(trained, tmp_path, capsys):
    store, rid = trained
    out = tmp_path / "out"
    rc = main(["--runs-dir", str(store.root), "export", str(rid), "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert (out / f"run{rid}_distilled_float32.onnx").stat().st_size > 0
    assert (out / f"run{rid}_distilled_float32.safetensors").stat().st_size > 0
    assert "same prediction on 100.0000%" in text and "onnxruntime" in text and "PyTorch" in text
    rc = main(["--runs-dir", str(store.root), "export", str(rid), "--variant", "pruned:2"])
    assert rc == 2 and "variant 'pruned:2'" in capsys.readouterr().err
    rc = main(["--runs-dir", str(store.root), "export", "999"])
    assert rc == 2 and "999" in capsys.readouterr().err


def test_tensorboard_export_every_term_and_phase(trained, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store, rid = trained
    rc = main(["--runs-dir", str(store.root), "runs", "export", "--tensorboard", str(tmp_path / "tb")])
    assert rc == 0, capsys.readouterr()
    epochs = store.epochs(rid)
    folder = tmp_path / "tb" / f"run{rid}_export_test"
    for phase in ("teacher", "baseline", "distilled"):
        acc = EventAccumulator(str(folder / phase))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        rows = epochs[epochs["phase"] == phase]
        terms = [c[5:] for c in rows.columns if c.startswith("term_") and rows[c].notna().any()]
        assert {f"epoch/term/{t}" for t in terms} <= tags and terms
        assert {"epoch/train_loss", "epoch/val_acc", "step/loss", "test/accuracy"} <= tags
        val = [e.value for e in acc.Scalars("epoch/val_acc")]
        assert val == pytest.approx(rows["val_acc"].tolist())
    acc = EventAccumulator(str(folder / "distilled"))
    acc.Reload()
    assert {"epoch/term/ce", "epoch/term/kd", "step/term/kd"} <= set(acc.Tags()["scalars"])
    test_acc = store.get(rid)["metrics"]["distilled"]["accuracy"]
    assert acc.Scalars("test/accuracy")[0].value == pytest.approx(test_acc)


@pytest.mark.slow
def test_runs_page_exports_and_offers_downloads(tmp_path, monkeypatch):
    """The Runs page's "Ship a student": export, the onnxruntime check, download buttons."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from kdcore import RunStore

    runs = tmp_path / "runs"
    monkeypatch.setenv("KD_RUNS_DIR", str(runs))
    st.cache_resource.clear()
    st.cache_data.clear()
    n_threads = torch.get_num_threads()
    try:
        res = run_experiment(from_dict({"data": {"name": "moons", "n_samples": 300}, "optim": {"epochs": 1},
                                        "teacher_optim": {"epochs": 1}}), store=RunStore(runs))
        at = AppTest.from_file(str(__import__("pathlib").Path(__file__).parents[1] / "app.py"),
                               default_timeout=60).run()
        at.switch_page("pages/runs.py").run()
        at.button(key="ship_go").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert any("same class on **100.000%** of the 60 test samples" in s.value and "met." in s.value
                   for s in at.success)
        labels = [b.label for b in at.get("download_button")]
        assert f"ONNX: run{res.run_id}_distilled_float32.onnx" in " ".join(labels)
        assert any(label.startswith("safetensors + config") for label in labels)
        assert any(f"export {res.run_id} --phase distilled --variant float32" in c.value for c in at.code)
    finally:
        st.cache_resource.clear()
        torch.set_num_threads(n_threads)
