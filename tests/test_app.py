"""Every page through streamlit.testing.v1.AppTest, plus the helpers behind the pages.

The app runs against a temporary run history (``KD_RUNS_DIR``); each test starts from empty
caches so one test's session run cannot leak into the next.
"""
import os
import pickle
import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

import kdcore
from kdcore import ConfigError, RunConfig
from kdapp import ui
from kdapp.live import LiveRun
from tests.apptest import PAGES, QUICK, app, figures, ok, pending, train_until_done


def trace_points(fig: dict) -> dict[str, int]:
    return {t.get("name"): len(t.get("x") or []) for t in fig["data"]}


# --- every page loads ---------------------------------------------------------------------------

@pytest.mark.parametrize("page, text", [
    (f"{PAGES}/train.py", "Will run:"),
    (f"{PAGES}/soft_targets.py", "No finished run"),
    (f"{PAGES}/runs.py", "No runs yet"),
    (f"{PAGES}/guide.py", "What knowledge distillation is"),
])
def test_every_page_loads(runs_dir, page, text):
    at = ok(app())
    if page != f"{PAGES}/train.py":
        at = ok(at.switch_page(page).run())
    shown = " ".join(str(e.value) for kind in ("markdown", "info") for e in getattr(at, kind))
    assert text in shown
    # every page runs inside app.py's navigation and sidebar, even in Streamlit's legacy
    # pages-folder mode (sh.open_page turns that first run into a rerun of app.py)
    assert "This session" in " ".join(c.value for c in at.sidebar.caption)


def test_train_defaults_are_the_cli_defaults(runs_dir):
    at = ok(app())
    assert pending(at) == kdcore.to_dict(RunConfig())
    assert [ds.value for ds in at.selectbox if ds.key == "dataset"] == ["moons"]
    # synthetic sets come first, then the image sets
    assert at.selectbox(key="dataset").options[:4] == ["Two moons", "Concentric circles", "Spirals",
                                                      "Gaussian blobs"]


def test_changing_controls_changes_the_config_that_would_be_launched(runs_dir):
    at = ok(app())
    at.slider(key="T").set_value(7.5)
    at.slider(key="alpha").set_value(0.2)
    at.number_input(key="epochs").set_value(3)
    at.selectbox(key="student").set_value("mlp")
    at.text_input(key="student_params").set_value("16, 16")
    ok(at.run())
    cfg = pending(at)
    assert cfg["loss"]["temperature"] == 7.5 and cfg["loss"]["alpha"] == 0.2
    assert cfg["optim"]["epochs"] == 3
    assert cfg["student"]["params"] == {"hidden": [16, 16]}
    summary = " ".join(m.value for m in at.markdown if m.value.startswith("**Will run:**"))
    assert "T=7.5 α=0.2" in summary and "3 epochs" in summary
    # the formula shows which term α weighs, with the numbers substituted
    latex = [x.value for x in at.latex]
    assert any(r"\alpha\,\mathrm{CE}" in x for x in latex)
    assert any("0.20" in x and "56.25" in x for x in latex)  # 1-α = 0.80 and T² = 56.25
    assert any("hard-label cross-entropy" in c.value for c in at.caption)


def test_url_query_params_set_up_the_run(runs_dir):
    at = ok(app({"dataset": "Spirals", "T": "2.5", "alpha": "0.75", "classes": "4", "epochs": "7",
                 "lr": "0.003", "batch": "64", "seed": "5", "loss": "soft_ce"}))
    cfg = pending(at)
    assert cfg["data"]["name"] == "spirals" and cfg["data"]["n_classes"] == 4
    assert cfg["loss"] == {**cfg["loss"], "name": "soft_ce", "temperature": 2.5, "alpha": 0.75}
    assert cfg["optim"]["epochs"] == 7 and cfg["optim"]["lr"] == 0.003 and cfg["optim"]["batch_size"] == 64
    assert cfg["seed"] == 5


def test_out_of_range_link_value_is_ignored(runs_dir):
    # the Train page's T slider stops at 20; a hand-edited link with T=99 falls back to the default
    # (the browser test covers T = 30 carried over from the Temperature lab's wider slider)
    at = ok(app({"dataset": "Spirals", "T": "99", "epochs": "7"}))
    assert pending(at)["loss"]["temperature"] == 4.0 and pending(at)["optim"]["epochs"] == 7


def test_bad_params_show_an_error_and_disable_start(runs_dir):
    at = app({"student_params": "{not json"})
    ok(at)
    assert any("not valid JSON" in e.value for e in at.error)
    assert at.button(key="start").disabled


def test_unavailable_dataset_says_how_to_get_it_without_crashing(runs_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("KD_DATA_DIR", str(tmp_path / "empty"))
    at = ok(app({"dataset": "CIFAR-10"}))
    warn = " ".join(w.value for w in at.warning)
    assert "CIFAR-10 is not on this machine" in warn and "--download" in warn
    assert at.button(key="start").disabled
    assert "cnn" in at.selectbox(key="teacher").options  # image models are offered for image sets


@pytest.mark.slow
def test_short_synthetic_run_draws_curves_then_table_and_verdict(runs_dir):
    at = ok(app(QUICK))
    at = train_until_done(at)
    figs = {f["layout"]["title"]["text"]: f for f in figures(at)}

    def fig(title: str) -> dict:
        found = [f for t, f in figs.items() if title in t]
        assert len(found) == 1, (title, list(figs))
        return found[0]

    # every chart names the run it belongs to
    assert all(t.startswith("Run 1 · ") for t in figs), list(figs)
    loss = trace_points(fig("Total training loss per phase"))
    assert set(loss) == {"teacher", "baseline", "distilled"} and min(loss.values()) >= 2
    # one panel (own y axis) per phase: the distilled T²-scaled total never squashes the baseline
    assert {"yaxis", "yaxis2", "yaxis3"} <= set(fig("Total training loss")["layout"])
    terms = trace_points(fig("Distilled student: loss terms"))
    assert {"α·CE (hard labels)", "(1−α)·soft term (teacher)", "total"} <= set(terms)
    acc = trace_points(fig("Accuracy per epoch"))
    assert acc["baseline val"] == 2 and acc["distilled val"] == 2 and acc["distilled train"] == 2
    table = at.dataframe[0].value
    assert list(table["model"]) == ["teacher", "baseline", "distilled"]
    for col in ("accuracy", "macro F1", "ECE", "agreement with teacher", "parameters", "size (MiB)",
                "latency (ms/batch)"):
        assert col in table.columns and table[col].notna().all(), col
    assert table["parameters"].tolist()[1] < table["parameters"].tolist()[0]
    verdict = [m.value for m in (*at.success, *at.warning, *at.error) if "Verdict" in m.value]
    assert verdict and "points, 95 % CI" in verdict[0]
    # the run is in the history (the sidebar's "Last run" line is checked in the browser test:
    # AppTest drops app.py's sidebar block after the first interaction)
    store = kdcore.RunStore(runs_dir)
    assert [r["status"] for r in store.list()] == ["completed"]


@pytest.mark.slow
def test_default_seeds_run_shares_one_teacher_and_gives_an_interval(runs_dir):
    """The Train page's default: the students over 3 seeds from one teacher, mean ± std, and a
    verdict over seeds with its 95 % interval; each seed's own paired verdict below."""
    at = ok(app({k: v for k, v in QUICK.items() if k != "seeds"}))
    assert at.number_input(key="seeds").value == 3
    at = train_until_done(at, timeout=120)
    figs = {f["layout"]["title"]["text"]: f for f in figures(at)}
    assert all("3 seeds: 0, 1, 2" in t for t in figs), list(figs)
    acc = trace_points(next(f for t, f in figs.items() if "Accuracy per epoch" in t))
    assert acc["baseline val (mean of 3 seeds)"] == 2 and acc["distilled val (mean of 3 seeds)"] == 2
    table = at.dataframe[0].value
    assert list(table["model"]) == ["teacher", "baseline", "distilled"]
    assert list(table["seeds"]) == [3, 3, 3]
    assert all("±" in v for v in table["accuracy (%)"])
    verdict = [m.value for m in (*at.success, *at.warning, *at.error) if "Verdict" in m.value]
    assert verdict and "Over 3 seeds" in verdict[0] and "95 % CI" in verdict[0]
    runs = kdcore.RunStore(runs_dir).list()
    assert len(runs) == 3 and all(r["status"] == "completed" for r in runs)
    first = min(r["id"] for r in runs)  # later seeds record the shared teacher
    assert sorted(r["config"]["teacher_source"] for r in runs) == sorted(
        ["train", f"run:{first}", f"run:{first}"])


@pytest.mark.slow
def test_few_labels_controls_reach_the_config(runs_dir):
    at = ok(app({**QUICK, "labelled": "20", "transfer_set": "true", "pseudo_arm": "true",
                 "transfer_ratio": "3"}))
    d = pending(at)["data"]
    assert (d["labelled"], d["transfer_set"], d["transfer_ratio"]) == (20, True, 3)
    assert pending(at)["pseudo_arm"] is True
    at = train_until_done(at)
    table = at.dataframe[0].value
    assert list(table["model"]) == ["teacher", "baseline", "distilled", "pseudo"]
    gains = table["gain vs baseline (95 % CI)"].tolist()
    assert gains[:2] == ["", ""] and all(" to " in g for g in gains[2:])
    saw = [c.value for c in at.caption if "What each model saw" in c.value]
    assert saw and "transfer set" in saw[0] and "hard (argmax) labels" in saw[0]
    # no labels held back: the transfer set and the third student cannot be switched on
    at = ok(app({**QUICK, "labelled": "0", "transfer_set": "true"}))
    assert pending(at)["data"]["transfer_set"] is False and at.checkbox(key="transfer_set").disabled


def test_run_survives_a_page_switch_and_back(runs_dir):
    at = ok(app({**QUICK, "epochs": "400"}))
    at.button(key="start").click().run()
    at.switch_page(f"{PAGES}/guide.py").run()
    at.switch_page(f"{PAGES}/train.py").run()
    ok(at)
    assert at.button(key="start").disabled  # still training: one run per session
    assert any(p.proto.text.startswith("Run ") for p in at.get("progress"))
    at.button(key="stop").click().run()
    # the first click stops it within a step, and the page run that click started already says so
    assert any("stopped" in i.value for i in ok(at).info)
    assert not at.button(key="start").disabled


@pytest.mark.slow
def test_diverged_run_shows_the_message_not_a_traceback(runs_dir, monkeypatch):
    from kdcore.registry import LOSSES

    from kdcore.losses import UNLABELLED

    def nan_loss(s, t, y, cfg):  # a loss that blows up, as a too-high learning rate would
        ce = torch.nn.functional.cross_entropy(s, y, ignore_index=UNLABELLED)  # transfer-set rows
        return {"ce": ce, "kd": ce * float("nan")}

    monkeypatch.setitem(LOSSES._items, "kd", nan_loss)
    at = ok(app(QUICK))
    at.button(key="start").click().run()
    t0 = time.perf_counter()
    while not at.error and time.perf_counter() - t0 < 30:
        time.sleep(0.2)
        at.run()
    msg = " ".join(e.value for e in ok(at).error)
    assert "diverged" in msg and "lower the learning rate" in msg
    assert not at.button(key="start").disabled  # ready for the next try


def test_concurrent_limit_shows_a_clear_message(runs_dir, monkeypatch):
    monkeypatch.setenv("KD_MAX_RUNS", "1")
    other = LiveRun(RunConfig(optim=kdcore.OptimConfig(epochs=1000)), store=None).start()  # another session
    try:
        at = ok(app(QUICK))
        at.button(key="start").click().run()
        assert any("KD_MAX_RUNS=1" in e.value for e in at.error)
    finally:
        other.close()


# --- teacher from an upload or from the history ------------------------------------------------

class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['KD_MARKER']}",))


def upload(at: AppTest, name: str, content: bytes) -> AppTest:
    at.radio(key="teacher_from").set_value("upload .pt").run()
    at.file_uploader(key="teacher_upload").set_value((name, content, "application/octet-stream"))
    return ok(at.run())


def test_garbage_upload_shows_the_error(runs_dir):
    at = upload(ok(app()), "junk.pt", b"this is not a checkpoint at all" * 10)
    assert any("not a plain PyTorch state_dict" in e.value for e in at.error)
    assert at.button(key="start").disabled
    assert not list((runs_dir / "uploads").glob("*.pt"))  # the bad file is not kept


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_with_code_is_refused_and_never_runs(runs_dir, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("KD_MARKER", str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"weight": _Evil()}, path)  # a real torch zip whose pickle calls os.system
    raw = pickle.dumps(_Evil())  # and a bare pickle
    for content in (path.read_bytes(), raw):
        at = upload(ok(app()), "evil.pt", content)
        assert any("state_dict" in e.value for e in at.error), [e.value for e in at.error]
    assert not marker.exists()


def test_upload_for_another_architecture_is_refused(runs_dir, tmp_path):
    other = kdcore.models.build_model("mlp", in_shape=(2,), num_classes=2, params={"hidden": [5]})
    path = tmp_path / "other.pt"
    torch.save(other.state_dict(), path)
    at = upload(ok(app()), "other.pt", path.read_bytes())
    assert any("do not fit the chosen teacher architecture" in e.value for e in at.error)


def test_good_upload_is_used_as_the_teacher(runs_dir, tmp_path):
    teacher = kdcore.models.build_model("mlp", in_shape=(2,), num_classes=2, params={"hidden": [128, 128]})
    path = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), path)
    at = upload(ok(app()), "teacher.pt", path.read_bytes())
    assert not at.error
    assert any("fits the mlp teacher" in s.value for s in at.success)
    src = pending(at)["teacher_source"]
    assert src.startswith("file:") and Path(src[5:]).is_file()
    assert at.query_params.get("teacher_file")  # the link names the stored upload


@pytest.mark.slow
def test_reuse_a_teacher_from_the_history(runs_dir):
    at = train_until_done(ok(app(QUICK)))
    at.radio(key="teacher_from").set_value("from history").run()
    ok(at)
    assert pending(at)["teacher_source"] == "run:1"
    assert at.query_params.get("teacher_run") == "1"
    at = train_until_done(at)
    assert list(at.dataframe[0].value["model"]) == ["teacher", "baseline", "distilled"]
    assert kdcore.RunStore(runs_dir).get(2)["config"]["teacher_source"] == "run:1"


@pytest.mark.slow
def test_multi_teacher_controls_build_the_config_and_show_every_teacher(runs_dir):
    at = ok(app({**QUICK, "extra_teachers": "2", "t2_params": "16", "tw1": "2", "t3_model": "mlp",
                 "t3_params": "{\"hidden\": [32, 32]}"}))
    cfg = pending(at)
    assert [t["params"] for t in cfg["extra_teachers"]] == [{"hidden": [16]}, {"hidden": [32, 32]}]
    assert list(cfg["teacher_weights"]) == [2.0, 1.0, 1.0] and not cfg["extra_teacher_sources"]
    assert any("0.50·z1 + 0.25·z2 + 0.25·z3" in c.value for c in at.caption)
    summary = " ".join(m.value for m in at.markdown if m.value.startswith("**Will run:**"))
    assert "3 teachers" in summary and "weights 2, 1, 1" in summary
    at = train_until_done(at)
    table = at.dataframe[0].value
    assert list(table["model"]) == ["teacher", "teacher_2", "teacher_3", "ensemble", "baseline", "distilled"]
    stored = kdcore.RunStore(runs_dir).get(1)["metrics"]
    for phase in ("teacher", "teacher_2", "teacher_3", "ensemble"):  # each teacher's own test accuracy
        row = table[table["model"] == phase].iloc[0]
        assert row["accuracy"] == pytest.approx(stored[phase]["accuracy"] * 100)
    assert table[table["model"] == "ensemble"]["agreement with teacher"].iloc[0] == 100.0
    # each teacher's agreement is with the ensemble the students learned from
    assert table["agreement with teacher"].between(0, 100).all()
    assert stored["teacher_2"]["agreement"] * 100 == pytest.approx(
        table[table["model"] == "teacher_2"]["agreement with teacher"].iloc[0])
    assert "weights 0.50, 0.25, 0.25" in table[table["model"] == "ensemble"]["architecture"].iloc[0]
    runs_row = ui.comparison_table(kdcore.RunStore(runs_dir), [1]).iloc[0]  # the Runs page's table
    assert runs_row["ensemble acc"] == stored["ensemble"]["accuracy"] and runs_row["teacher"].endswith("+ 2 more")
    figs = {f["layout"]["title"]["text"]: f for f in figures(at)}
    acc = trace_points(next(f for t, f in figs.items() if "Accuracy per epoch" in t))
    assert acc["teacher_2 val"] == 2 and acc["teacher_3 val"] == 2
    # the next run reuses run 1's teacher as teacher 2; equal weights are stored as "average"
    at.radio(key="t2_from").set_value("from history")
    at.number_input(key="tw1").set_value(1.0)
    at.number_input(key="extra_teachers").set_value(1).run()
    ok(at)
    cfg = pending(at)
    assert list(cfg["extra_teacher_sources"]) == ["run:1"] and not cfg["teacher_weights"]
    assert at.query_params.get("t2_run") == "1" and "t3_run" not in at.query_params
    # the lab pages show the ensemble the students learned from, rebuilt from the saved teachers
    _, models = ui.run_models(kdcore.RunStore(runs_dir), 1)
    x = torch.randn(5, 2)
    want = (2 * models["teacher"](x) + models["teacher_2"](x) + models["teacher_3"](x)) / 4
    assert torch.allclose(models["ensemble"](x), want, atol=1e-6)
    at = ok(at.switch_page(f"{PAGES}/soft_targets.py").run())
    assert any("3 teachers" in c.value and "ensemble" in c.value for c in at.caption)


def test_multi_teacher_bad_params_name_the_teacher(runs_dir):
    at = ok(app({"extra_teachers": "1", "t2_params": "{oops"}))
    assert any("teacher 2 params" in e.value and "not valid JSON" in e.value for e in at.error)
    assert at.button(key="start").disabled


# --- Runs and Soft targets pages ---------------------------------------------------------------

@pytest.mark.slow
def test_runs_page_lists_compares_exports_replays_and_deletes(runs_dir):
    at = train_until_done(ok(app(QUICK)))
    at = ok(at.switch_page(f"{PAGES}/runs.py").run())
    history = at.dataframe[0].value
    assert list(history["id"]) == [1] and history["status"].tolist() == ["completed"]
    compare = at.dataframe[1].value
    assert compare["run"].tolist() == [1] and compare["distilled acc"].notna().all()
    overlay = figures(at)[0]
    assert {"#1 baseline", "#1 distilled"} <= set(trace_points(overlay))
    assert any("runs config 1 > run1.json && python -m kdcore run run1.json" in c.value for c in at.code)
    assert len(at.get("download_button")) == 2
    # filters: a dataset that is not there hides the run
    at.text_input(key="f_text").set_value("no-such-model").run()
    assert ok(at).dataframe[0].value.empty
    at.text_input(key="f_text").set_value("").run()
    # delete asks first; Cancel keeps the run, Yes deletes it
    at.button(key="delete_ask").click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    at.button(key="delete_no").click().run()
    assert list(at.dataframe[0].value["id"]) == [1]
    at.button(key="delete_ask").click().run()
    at.button(key="delete_yes").click().run()
    ok(at)
    assert any("Deleted run 1" in s.value for s in at.success)
    assert kdcore.RunStore(runs_dir).list() == []


@pytest.mark.slow
def test_soft_targets_page_shows_bars_entropy_and_heatmap(runs_dir):
    at = train_until_done(ok(app(QUICK)))
    at = ok(at.switch_page(f"{PAGES}/soft_targets.py").run())
    figs = figures(at)
    titles = [f["layout"].get("title", {}).get("text", "") for f in figs]
    assert titles[0] == "Test set (standardised)"  # the 2-D plane with the picked points
    bars = [f for f in figs if f["data"] and f["data"][0]["type"] == "bar"]
    assert len(bars) == 3  # three samples by default
    sub = [a["text"] for a in bars[0]["layout"]["annotations"]]
    assert any(s.startswith("T = 1<br>H teacher") for s in sub)
    assert sum(t["type"] == "bar" for t in bars[0]["data"]) == 2 * len(sub)  # teacher + student per T
    assert any("average soft targets" in t for t in titles)
    at.text_input(key="soft_samples").set_value("0, 5").run()
    assert len([f for f in figures(ok(at)) if f["data"][0]["type"] == "bar"]) == 2
    at.text_input(key="soft_samples").set_value("99999").run()
    assert any("no test sample 99999" in e.value for e in ok(at).error)


# --- helpers behind the pages -----------------------------------------------------------------

def test_parse_params_shorthand_json_and_errors():
    assert ui.parse_params("", "teacher", "mlp") == {"hidden": [128, 128]}
    assert ui.parse_params("", "student", "mlp") == {"hidden": [8]}
    assert ui.parse_params("", "student", "cnn") == {}
    assert ui.parse_params("32, 16", "student", "mlp") == {"hidden": [32, 16]}
    assert ui.parse_params('{"width": 4}', "student", "cnn") == {"width": 4}
    with pytest.raises(ConfigError, match="not valid JSON"):
        ui.parse_params("{x", "student", "cnn")
    with pytest.raises(ConfigError, match="JSON object"):
        ui.parse_params("[1, 2]", "student", "cnn")


def test_build_config_validates():
    cfg = ui.build_config({"dataset": "blobs", "classes": 5, "teacher": "mlp", "student": "mlp",
                           "T": 3.0, "alpha": 0.1, "epochs": 4})
    assert cfg.data.n_classes == 5 and cfg.loss.alpha == 0.1 and cfg.optim.epochs == 4
    with pytest.raises(ConfigError, match="needs image input"):
        ui.build_config({"dataset": "moons", "teacher": "cnn", "student": "mlp"})


def test_models_for_filters_by_input():
    assert ui.models_for("moons") == ["mlp"]
    assert {"mlp", "cnn", "lenet5"} <= set(ui.models_for("fashion_mnist"))


def test_soft_targets_entropy_and_class_similarity():
    z = torch.tensor([[2.0, 0.0, -2.0]])
    p1, p4 = ui.soft_targets(z, 1.0), ui.soft_targets(z, 4.0)
    assert torch.allclose(p1.sum(-1), torch.ones(1, dtype=torch.float64))
    assert ui.entropy(p4) > ui.entropy(p1)  # a higher T flattens
    uniform = torch.full((1, 4), 0.25, dtype=torch.float64)
    assert float(ui.entropy(uniform)) == pytest.approx(torch.log(torch.tensor(4.0)).item())
    assert float(ui.entropy(torch.tensor([[1.0, 0.0]]))) == 0.0
    logits = torch.tensor([[3.0, 1.0], [2.0, 0.0], [0.0, 4.0]])
    sim = ui.class_similarity(logits, torch.tensor([0, 0, 1]), 1.0, 2)
    assert torch.allclose(sim.sum(1), torch.ones(2, dtype=torch.float64))
    assert sim[0, 0] > 0.8 and sim[1, 1] > 0.9


def test_results_table_and_replay_command(tmp_path):
    m = {"teacher": {"accuracy": 0.9, "f1": 0.9, "ece": 0.01, "params": 100, "size_mb": 1.0,
                     "latency_ms": 2.0},
         "baseline": {"accuracy": 0.8, "f1": 0.8, "ece": 0.02, "agreement": 0.85, "params": 10,
                      "size_mb": 0.1, "latency_ms": 0.5}}
    t = ui.results_table(m)
    assert list(t["model"]) == ["teacher", "baseline"] and t["agreement with teacher"].tolist() == [1.0, 0.85]
    assert ui.replay_command(7, "runs") == ("python -m kdcore runs config 7 > run7.json && "
                                            "python -m kdcore run run7.json")
    assert "--runs-dir" in ui.replay_command(7, tmp_path)


def test_save_teacher_upload_limits_and_checks(tmp_path, monkeypatch):
    cfg = RunConfig()
    with pytest.raises(ConfigError, match="empty"):
        ui.save_teacher_upload(b"", cfg, tmp_path)
    monkeypatch.setattr(ui, "MAX_WEIGHTS_BYTES", 10)
    with pytest.raises(ConfigError, match="the limit is"):
        ui.save_teacher_upload(b"x" * 11, cfg, tmp_path)


@pytest.mark.slow
def test_charts_say_whose_they_are_and_smooth_on_request(runs_dir):
    at = train_until_done(ok(app(QUICK)))
    raw = next(f for f in figures(at) if "Total training loss" in f["layout"]["title"]["text"])
    at.toggle(key="smooth").set_value(True).run()
    smoothed = next(f for f in figures(ok(at)) if "Total training loss" in f["layout"]["title"]["text"])
    assert raw["data"][0]["y"][0] == smoothed["data"][0]["y"][0]  # bias-corrected: same start
    assert raw["data"][0]["y"][1:] != smoothed["data"][0]["y"][1:]
    # a changed setup: the charts and results shown are labelled as the previous run's
    assert not any("previous run" in w.value for w in at.warning)
    at.slider(key="T").set_value(9.0).run()
    assert any("from previous run 1" in w.value for w in ok(at).warning)
    assert all(f["layout"]["title"]["text"].startswith("Previous run 1") for f in figures(at))


def test_empty_charts_say_so_instead_of_a_made_up_axis(runs_dir):
    at = ok(app())
    for f in figures(at):
        assert f["layout"]["xaxis"]["visible"] is False and f["layout"]["annotations"], f["layout"]["title"]


def test_log_axes_and_soft_target_bars_fit_their_data():
    from kdapp.charts import log_ticks, soft_target_bars

    assert log_ticks(0.5, 32) == [0.5, 1, 2, 5, 10, 20]
    assert log_ticks(1e-5, 10) == [1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1, 10]  # powers of ten only
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"]
    p = [0.3] + [0.7 / 9] * 9
    fig = soft_target_bars(names, [{"T": 4.0, "teacher": p, "student": p[::-1], "H_t": 1.0, "H_s": 1.0}],
                           "t").to_plotly_json()
    lo, hi = fig["layout"]["yaxis"]["range"]
    assert lo == 0 and 0.3 < hi < 0.4  # scaled to the largest bar, not a fixed 0-100 %
    assert list(fig["data"][0]["x"]) == names  # full class names, tilted to fit
