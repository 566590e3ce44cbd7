"""The Runs page's "Compress a student" section through streamlit.testing.v1.AppTest.

A real two-epoch run on the moons set goes into a real run history (``KD_RUNS_DIR``); the page
then quantizes and prunes its stored models with :mod:`kdcore.ship.compress`. No mocks.
"""
import shutil
import time
from pathlib import Path

import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

from kdcore import (DataConfig, LossConfig, ModelConfig, OptimConfig, RunConfig, RunStore, replace,
                    run_experiment, to_dict)
from kdapp.live import active_runs

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
RUNS_PAGE = "pages/runs.py"
TINY = RunConfig(
    data=DataConfig(name="moons", n_samples=400, noise=0.15),
    teacher=ModelConfig("mlp", {"hidden": [32, 32]}),
    student=ModelConfig("mlp", {"hidden": [16]}),
    loss=LossConfig(temperature=2.0, alpha=0.5),
    optim=OptimConfig(epochs=2, lr=1e-2, batch_size=64),
    teacher_optim=OptimConfig(epochs=2, lr=1e-2, batch_size=64),
)


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The dashboard sets torch's process-wide thread count; give other tests theirs back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained_history(tmp_path_factory) -> Path:
    """A run history holding one completed run (id 1), trained once for the module."""
    root = tmp_path_factory.mktemp("trained") / "runs"
    res = run_experiment(TINY, store=RunStore(root))
    assert res.status == "completed" and res.run_id == 1, res.message
    return root


@pytest.fixture
def runs_dir(trained_history, tmp_path, monkeypatch) -> Path:
    """A private copy of the trained history, which the app reads through ``KD_RUNS_DIR``."""
    root = tmp_path / "runs"
    shutil.copytree(trained_history, root)
    monkeypatch.setenv("KD_RUNS_DIR", str(root))
    st.cache_resource.clear()  # the cached RunStore and session holders of earlier tests
    st.cache_data.clear()
    yield root
    st.cache_resource.clear()
    t0 = time.perf_counter()
    while active_runs() and time.perf_counter() - t0 < 10:
        time.sleep(0.05)


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def runs_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    return ok(ok(at).switch_page(RUNS_PAGE).run())


def compress_table(at: AppTest):
    """The compression table on the page (the one with a variant column), or None."""
    tables = [d.value for d in at.dataframe if "variant" in d.value.columns]
    assert len(tables) <= 1
    return tables[0] if tables else None


def measure(at: AppTest) -> AppTest:
    return ok(at.button(key="compress_go").click().run())


@pytest.mark.slow
def test_section_measures_the_stored_distilled_student(runs_dir):
    store = RunStore(runs_dir)
    # a run still training, with its teacher already saved: it must not be offered
    busy = store.create_run(to_dict(replace(TINY, name="still training")))
    store.save_weights(busy, "teacher", run_experiment(TINY).models["teacher"].state_dict())
    at = runs_page()
    run = at.selectbox(key="compress_run")
    assert run.options == ["#1 · mlp on moons"] and run.value == 1
    assert at.selectbox(key="compress_phase").options == ["distilled", "baseline", "teacher"]
    assert at.selectbox(key="compress_phase").value == "distilled"
    assert compress_table(at) is None  # nothing is measured before the click

    at.multiselect(key="compress_prune").set_value([0.9, 0.5])
    at.radio(key="compress_scope").set_value("layer")
    at = measure(at.run())
    t = compress_table(at)
    assert t is not None
    assert list(t["variant"]) == ["float32 (as trained)", "int8 dynamic", "pruned 50% (layer)",
                                  "pruned 50% (layer) + int8", "pruned 90% (layer)", "pruned 90% (layer) + int8"]
    stored = store.get(1)["metrics"]["distilled"]["accuracy"]
    assert stored != store.get(1)["metrics"]["baseline"]["accuracy"]  # so the check below tells them apart
    row = t.set_index("variant")
    assert row.loc["float32 (as trained)", "accuracy"] == pytest.approx(stored * 100, abs=1e-9)
    assert row.loc["float32 (as trained)", "change"] == 0
    assert row.loc["pruned 90% (layer)", "sparsity"] == pytest.approx(90, abs=1)
    assert row.loc["pruned 90% (layer) + int8", "sparsity"] >= 89  # int8 keeps the zeros
    # a 2-16-2 MLP is so small that int8's packing overhead makes its file larger: shown, not hidden
    int8 = row.loc["int8 dynamic"]
    assert int8["smaller"] == pytest.approx(row.loc["float32 (as trained)", "size"] / int8["size"])
    assert any("compress 1 --phase distilled --prune 0.5,0.9 --scope layer" in c.value for c in at.code)
    assert any("nn.Linear" in c.value and "CPU only" in c.value for c in at.caption)

    # a rerun shows the same measurement (timings included) instead of measuring again
    latencies = list(t["latency"])
    at = ok(at.run())
    assert list(compress_table(at)["latency"]) == latencies
    # other options are not the measured ones: no table until they are measured
    at.checkbox(key="compress_quantize").uncheck().run()
    assert compress_table(ok(at)) is None
    assert any(c.value.endswith("--scope layer --no-quantize") for c in at.code)
    t = compress_table(measure(at))
    assert list(t["variant"]) == ["float32 (as trained)", "pruned 50% (layer)", "pruned 90% (layer)"]

    # the baseline student is measured against its own stored accuracy
    at.selectbox(key="compress_phase").set_value("baseline").run()
    t = compress_table(measure(at))
    assert t.set_index("variant").loc["float32 (as trained)", "accuracy"] == pytest.approx(
        store.get(1)["metrics"]["baseline"]["accuracy"] * 100, abs=1e-9)


def test_weights_deleted_under_an_open_page_show_an_error_not_a_traceback(runs_dir):
    store = RunStore(runs_dir)
    at = runs_page()
    assert at.selectbox(key="compress_phase").value == "distilled"
    store.weights_path(1, "distilled").unlink()  # e.g. removed by hand while the page was open
    at = measure(at)
    assert any("Could not compress run 1's distilled model" in e.value and "no saved distilled weights"
               in e.value for e in at.error), [e.value for e in at.error]
    assert compress_table(at) is None
    assert at.selectbox(key="compress_phase").options == ["baseline", "teacher"]  # only what is left


def test_run_without_any_weights_is_an_error_not_an_offer(runs_dir):
    store = RunStore(runs_dir)
    for phase in ("teacher", "baseline", "distilled"):
        store.weights_path(1, phase).unlink()
    at = runs_page()
    assert any("Nothing to compress: run 1 has no saved weights" in e.value for e in at.error)
    assert all(b.key != "compress_go" for b in at.button)  # no button that could only fail


def test_dataset_no_longer_on_disk_says_how_to_get_it(runs_dir, tmp_path):
    store = RunStore(runs_dir)
    # a run trained on MNIST from a folder that has since been removed
    cfg = replace(TINY, data=DataConfig(name="mnist", data_dir=str(tmp_path / "gone")))
    rid = store.create_run(to_dict(cfg))
    store.save_weights(rid, "distilled", {})
    store.finish_run(rid, "completed", "", {})
    at = runs_page()
    at.selectbox(key="compress_run").set_value(rid).run()
    at = measure(ok(at))
    assert any("MNIST is not on this machine" in e.value and "--download" in e.value for e in at.error), \
        [e.value for e in at.error]
    assert compress_table(at) is None
