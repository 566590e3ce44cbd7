"""AppTest for the teaching-lab pages: each loads without an exception and a key interaction works.

The pages run inside app.py (its navigation), against a run history this module fills with a
few tiny runs on a 2-D set, so nothing here needs downloaded data.
"""
import math
import os
import time

import pytest
import torch
from streamlit.testing.v1 import AppTest

from kdcore import RunStore, replace, run_experiment, to_dict
from kdcore.lab import teaching as tg
from kdcore.data import load_data
from kdcore.train.sweep import SweepPlan, run_sweep
from tests.apptest import APP, figures, ok, pending
from tests.helpers import SMALL


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A run history with a plain run, an omitted-class run and a 2-cell sweep; KD_RUNS_DIR points at it."""
    root = tmp_path_factory.mktemp("lab_runs")
    before_env, before_threads = os.environ.get("KD_RUNS_DIR"), torch.get_num_threads()
    os.environ["KD_RUNS_DIR"] = str(root)
    torch.set_num_threads(1)  # tiny models; see kdapp.live.worker_threads
    store = RunStore(root)
    lab = {"store": store, "recorders": tg.LAB_RECORDERS}  # as the dashboard and the CLI run them
    ids = {"plain": run_experiment(SMALL, **lab).run_id,
           "omitted": run_experiment(replace(SMALL, data=replace(SMALL.data, omit_class=2)), **lab).run_id}
    ids["sweep"] = run_sweep(SweepPlan(SMALL, (0.5,), (1.0, 4.0)), **lab).group
    yield store, ids
    torch.set_num_threads(before_threads)
    if before_env is None:
        os.environ.pop("KD_RUNS_DIR", None)
    else:
        os.environ["KD_RUNS_DIR"] = before_env


def page(name: str, params: dict | None = None, **more) -> AppTest:
    """Open ``pages/<name>.py`` in a fresh session; ``more`` are its settings by name, ``params``
    ready-made URL parameters (a link's)."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(f"pages/{name}.py")
    for k, v in {**(params or {}), **{key(name, k): v for k, v in more.items()}}.items():
        at.query_params[k] = v
    return at.run()


def key(page_name: str, name: str) -> str:
    """A page's widget key / URL parameter for one of its settings (kdapp/shared.py's Scope)."""
    from kdapp import shared as sh

    return sh.SCOPES[page_name].prefix + name


def metric(at: AppTest, label_start: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label_start))


def test_temperature_lab_typed_logits_drag_and_teacher(history):
    _, ids = history
    at = ok(page("temperature_lab"))
    at.slider(key=key("temperature_lab", "T")).set_value(1.0)
    at.text_input(key=key("temperature_lab", "logits")).set_value(f"{math.log(2)}, 0").run()
    ok(at)
    # (ln 2, 0) at T = 1 is (2/3, 1/3): entropy ln 3 - 2/3 ln 2
    assert metric(at, "Entropy") == f"{math.log(3) - 2 / 3 * math.log(2):.3f} nats"
    assert metric(at, "Top probability") == "66.7%"
    at.slider(key=key("temperature_lab", "drag_1")).set_value(0.693).run()  # drag the second logit up to the first
    assert at.text_input(key=key("temperature_lab", "logits")).value == "0.693147, 0.693"
    assert metric(at, "Effective classes").startswith("2.00")
    at.text_input(key=key("temperature_lab", "logits")).set_value("1, oops").run()
    assert ok(at).error and "is not a number" in at.error[0].value
    # the trained pair: KL and T² charts from the run's teacher and student
    at.radio(key=key("temperature_lab", "source")).set_value("a trained teacher").run()
    ok(at)
    names = [t.get("name", "") for f in figures(at) for t in f["data"]]
    assert "distilled student" in names and "T² · KL (what KD uses)" in names
    assert any(m.value.startswith("Sample #") for m in at.markdown)


def test_boundaries_scrubber_replays_recorded_epochs(history):
    _, ids = history
    at = ok(page("boundaries", run=str(ids["plain"])))
    assert len(figures(at)) == 3  # final maps, teacher's surface, replay
    scrub = at.select_slider(key=key("boundaries", "epoch"))
    assert list(scrub.options) == ["1", "2", "3"] and scrub.value == 3
    scrub.set_value(1).run()
    titles = [a["text"] for a in figures(ok(at))[2]["layout"]["annotations"]]
    assert any("epoch 1" in t for t in titles)
    at.slider(key=key("boundaries", "T")).set_value(10.0).run()
    assert "T = 10" in figures(ok(at))[1]["layout"]["title"]["text"]


def test_dark_knowledge_matrix_table_and_gallery(history):
    _, ids = history
    at = ok(page("dark_knowledge", run=str(ids["plain"])))
    assert "T = 4" in figures(at)[0]["layout"]["title"]["text"]
    at.slider(key=key("dark_knowledge", "T")).set_value(2.0).run()
    assert "T = 2" in figures(ok(at))[0]["layout"]["title"]["text"]
    assert len(at.dataframe) == 2  # confusable classes, gallery
    at.radio(key=key("dark_knowledge", "student")).set_value("baseline").run()
    assert any("baseline student pick different classes" in m.value for m in ok(at).markdown)


def test_omitted_class_bias_slider_recovers_the_class(history):
    store, ids = history
    at = ok(page("omitted_class", run=str(ids["omitted"])))
    _, _, total = metric(at, "baseline: errors on").split()
    assert int(total) == int((load_data(SMALL.data).y_test == 2).sum())  # "k of <test images of class 2>"
    at.slider(key=key("omitted_class", "bias")).set_value(15.0).run()  # a huge bias: everything is called the omitted class
    assert metric(ok(at), "distilled: accuracy on") == "100.0%"
    assert int(metric(at, "other images now called")) > 0
    at.text_input(key=key("omitted_class", "student")).set_value("x, 3").run()
    assert any("hidden widths" in e.value for e in ok(at).error)
    assert at.button(key="oc_start").disabled


def small_sweep(at, *, teacher_hidden: str) -> None:
    """Set the sweep page to a 1 x 2 grid of 2-epoch MLPs on the whole set, then rerun it."""
    at.number_input(key=key("sweep", "subset")).set_value(0)
    at.text_input(key=key("sweep", "teacher_params")).set_value(teacher_hidden)
    at.text_input(key=key("sweep", "student_params")).set_value("4")
    at.number_input(key=key("sweep", "teacher_epochs")).set_value(2)
    at.number_input(key=key("sweep", "epochs")).set_value(2)
    at.multiselect(key=key("sweep", "alphas")).set_value([0.5])
    at.multiselect(key=key("sweep", "temps")).set_value([1.0, 4.0])
    at.run()


@pytest.mark.slow
def test_sweep_page_runs_a_grid_in_the_background(history):
    store, ids = history
    at = ok(page("sweep"))
    assert len(figures(at)) == 2  # the stored sweep's heatmaps
    at.selectbox(key=key("sweep", "dataset")).set_value("blobs")
    at.run()
    small_sweep(at, teacher_hidden="16")
    start = ok(at).button(key="sweep_start")
    assert start.label == "Start the sweep (2 cells)" and not start.disabled
    last = max(r["id"] for r in store.list())
    start.click().run()
    deadline = time.time() + 60
    while time.time() < deadline:  # the worker files each cell as it finishes
        new = [r for r in store.list(kind="sweep") if r["id"] > last]
        if len(new) == 2 and all(r["status"] != "running" for r in new):
            break
        time.sleep(0.2)
    time.sleep(0.3)
    at.run()
    assert any("Sweep finished" in s.value for s in ok(at).success)
    acc = figures(at)[0]["data"][0]
    assert acc["text"][0][0] not in ("·", "training…") and acc["text"][0][1] not in ("·", "training…")
    assert sum(v.startswith("★") for v in acc["text"][0]) == 1  # the best cell is marked
    assert len(figures(at)) == 4  # two heatmaps of this sweep, two of the earlier one
    assert list(at.selectbox(key=key("sweep", "group")).options) == [ids["sweep"]]  # not listed twice


@pytest.mark.slow
def test_presets_links_set_up_exactly_their_runs(history):
    from kdapp import lab

    at = ok(page("presets"))
    presets = lab.presets()
    assert len(at.get("page_link")) == sum(len(p.links) for p in presets) + len(lab.TOUR)
    for p in presets:
        train_links = [link for link in p.links if link.page == "pages/train.py"]
        assert len(train_links) == len(p.configs)
        for link, cfg in zip(train_links, p.configs):
            train = ok(page("train", link.query))
            assert train.session_state["kd_pending_config"] == to_dict(cfg), (p.key, link.label)
    by_key = {p.key: p for p in presets}
    sweep_link = next(link for link in by_key["tiny_student"].links if link.page == "pages/sweep.py")
    sw = ok(page("sweep", sweep_link.query))
    assert sw.multiselect(key=key("sweep", "temps")).value == [1.0, 2.5, 4.0, 8.0, 16.0]
    assert sw.text_input(key=key("sweep", "student_params")).value == "30, 30"
    assert sw.button(key="sweep_start").label == "Start the sweep (10 cells)"
    # the shareable address: lists become repeated parameters, as Streamlit's multiselect reads them
    assert lab.page_url("sweep", {"temps": ["1.0", "4.0"], "student_params": "30, 30"}) == \
        "/sweep?temps=1.0&temps=4.0&student_params=30%2C+30"
    oc_link = by_key["omitted"].links[1]
    oc = ok(page("omitted_class", oc_link.query))
    assert oc.selectbox(key=key("omitted_class", "omit")).value == 3 and oc.number_input(key=key("omitted_class", "subset")).value == 10000


def test_pages_without_history_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_RUNS_DIR", str(tmp_path / "empty"))
    for name in ("temperature_lab", "boundaries", "dark_knowledge", "omitted_class", "sweep"):
        at = ok(page(name))
        assert at.info or name == "sweep", name
    assert tg.load_boundaries(RunStore(tmp_path / "empty"), 1) is None


# --- each page owns its settings (issue 14) -----------------------------------------------------

def visit(at: AppTest, name: str, params: dict | None = None) -> AppTest:
    """Go to ``pages/<name>.py`` in the same session, as the sidebar (no params) or a link does."""
    at.query_params.clear()
    at.query_params.update(params or {})
    return ok(at.switch_page(f"pages/{name}.py").run())


def test_settings_stay_on_their_page_in_any_order(history):
    _, ids = history
    at = ok(page("temperature_lab"))
    at.slider(key=key("temperature_lab", "T")).set_value(1.5).run()
    at.multiselect(key=key("temperature_lab", "temps")).set_value([2.0]).run()
    at = visit(at, "train")
    assert pending(at)["loss"]["temperature"] == 4.0  # the Train page's own default, not the lab's 1.5
    at.slider(key="T").set_value(7.0).run()
    at = visit(at, "sweep")
    assert ok(at).multiselect(key=key("sweep", "temps")).value != [2.0]
    at = visit(at, "temperature_lab")
    assert at.slider(key=key("temperature_lab", "T")).value == 1.5  # its own value, kept
    assert at.multiselect(key=key("temperature_lab", "temps")).value == [2.0]
    at = visit(at, "dark_knowledge", {key("dark_knowledge", "run"): str(ids["plain"])})
    at.radio(key=key("dark_knowledge", "student")).set_value("baseline").run()
    at = visit(at, "omitted_class")
    assert ok(at).text_input(key=key("omitted_class", "student")).value in ("16", "512, 512")  # not "baseline"
    assert not any("hidden widths" in e.value for e in at.error)
    at = visit(at, "train")
    assert pending(at)["loss"]["temperature"] == 7.0  # kept while the other pages were visited


def test_every_page_keys_only_its_own_names(history):
    """No key (hence no URL parameter) is used by two pages: the scopes' prefixes keep them apart."""
    from kdapp import shared as sh

    prefixes = [s.prefix for s in sh.SCOPES.values()]
    assert len(set(prefixes)) == len(prefixes)
    assert not any(a != b and b and a.startswith(b) for a in prefixes for b in prefixes)
    _, ids = history
    seen: dict[str, str] = {}
    at = ok(page("train"))
    for name in ("train", "temperature_lab", "boundaries", "dark_knowledge", "omitted_class", "sweep",
                 "soft_targets"):
        at = visit(at, name, {sh.SCOPES[name].prefix + "run": str(ids["plain"])} if name != "train" else None)
        keys = {w.key for kind in ("slider", "select_slider", "selectbox", "radio", "multiselect",
                                   "number_input", "text_input", "checkbox", "toggle")
                for w in getattr(at, kind) if w.key}
        assert keys, f"no keyed widget found on {name}: the checks below would pass on nothing"
        for k in keys:
            assert seen.setdefault(k, name) == name, f"{k!r} is used by {seen[k]} and {name}"
            if name != "train":
                assert k.startswith(sh.SCOPES[name].prefix), (name, k)


@pytest.mark.slow
def test_presets_load_the_same_in_a_used_session(history):
    """Each preset link, clicked after other setups, gives exactly its run (unset fields at defaults)."""
    from kdapp import lab

    presets = lab.presets()
    fresh = {}
    for p in presets:
        for link, cfg in zip([x for x in p.links if x.page == "pages/train.py"], p.configs):
            fresh[link.label] = pending(ok(page("train", link.query)))
            assert fresh[link.label] == to_dict(cfg), link.label
    at = ok(page("train"))  # a used session: a changed setup everywhere a preset could leave alone
    at.slider(key="T").set_value(9.0)
    at.number_input(key="epochs").set_value(3)
    at.text_input(key="teacher_params").set_value("16")
    at.select_slider(key="lr").set_value(0.1)
    at.run()
    for p in presets:  # every preset, one after the other, with the Presets page in between
        for link, cfg in zip([x for x in p.links if x.page == "pages/train.py"], p.configs):
            visit(at, "presets")
            at = visit(at, "train", link.query)
            assert pending(at) == fresh[link.label] == to_dict(cfg), link.label
            assert "link" not in at.query_params  # one-shot: later reruns keep the user's edits
    sweep_link = next(link for p in presets for link in p.links if link.page == "pages/sweep.py")
    at = visit(at, "sweep")
    at.number_input(key=key("sweep", "epochs")).set_value(20)
    at.select_slider(key=key("sweep", "lr")).set_value(0.01)
    at.run()
    at = visit(at, "sweep", sweep_link.query)
    assert at.number_input(key=key("sweep", "teacher_epochs")).value == sweep_link.params["teacher_epochs"] \
        or str(at.number_input(key=key("sweep", "teacher_epochs")).value) == sweep_link.params["teacher_epochs"]
    assert str(at.number_input(key=key("sweep", "epochs")).value) == sweep_link.params["epochs"]
    assert at.select_slider(key=key("sweep", "lr")).value == float(sweep_link.params["lr"])


def test_a_deep_link_opened_first_gets_the_apps_navigation(history):
    """Streamlit's legacy pages/ mode would run the page alone, without app.py's sidebar."""
    from streamlit.runtime.pages_manager import PagesManager

    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/guide.py")
    at.run()
    assert PagesManager.uses_pages_directory is False
    assert "This session" in " ".join(c.value for c in ok(at).sidebar.caption)
    assert any("What knowledge distillation is" in m.value for m in at.markdown)


@pytest.mark.slow
def test_a_sweep_after_a_finished_run_shows_its_panel_and_finishes(history):
    """The long-session freeze (issue 14): with a finished run in the session, starting a sweep
    made the sidebar redraw the page again and again; the sweep paused for every redraw."""
    at = ok(page("train", epochs="2", teacher_epochs="2", samples="200", seeds="1"))
    at.button(key="start").click().run()
    deadline = time.time() + 60
    while not any("finished" in (p.proto.text or "") for p in at.get("progress")) and time.time() < deadline:
        time.sleep(0.2)
        at.run()
    at = visit(at, "sweep")
    for k, v in (("dataset", "blobs"), ("teacher", "mlp"), ("student", "mlp")):
        at.selectbox(key=key("sweep", k)).set_value(v).run()
    small_sweep(at, teacher_hidden="8")
    t0 = time.time()
    at.button(key="sweep_start").click().run(timeout=30)  # the page run ends (no redraw loop)
    assert time.time() - t0 < 30 and any(h.value == "This session's sweep" for h in ok(at).subheader)
    deadline = time.time() + 60
    while not any("Sweep finished" in s.value for s in at.success) and time.time() < deadline:
        time.sleep(0.3)
        at.run(timeout=30)
    assert any("Sweep finished" in s.value for s in ok(at).success)
