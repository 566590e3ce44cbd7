"""Decision boundaries on the 2-D sets: teacher, baseline and distilled student side by side, the
teacher's soft-target confidence at T, and an epoch scrubber that replays the students' boundaries
as they trained."""
from __future__ import annotations

import streamlit as st
import torch

import kdcore
from kdcore import DATASETS
from kdcore.data import student_views
from kdcore.lab import teaching as tg
from kdapp import lab
from kdapp import shared as sh

K = sh.SCOPES["boundaries"]  # this page's keys and URL parameters
URL = sh.URL
PHASE_TITLES = {"teacher": "teacher", "baseline": "baseline student (alone)",
                "distilled": "distilled student", "pseudo": "student on the teacher's hard labels"}


def _is_2d(r: dict) -> bool:
    name = r["config"]["data"]["name"]
    return name in DATASETS and DATASETS.get(name).kind == "2d"


def _acc(metrics: dict, phase: str) -> str:
    a = (metrics.get(phase) or {}).get("accuracy")
    return f"{a:.1%}" if a is not None else "?"


def final_ui(models: dict, grid: tg.Grid, points, classes: list[str], metrics: dict, labelled=None) -> None:
    st.subheader("What each model predicts over the plane")
    panels = []
    for phase in ("teacher", "baseline", "distilled", "pseudo"):
        if phase not in models:
            continue
        pred, probs = tg.grid_surface(models[phase], grid)
        panels.append((f"{PHASE_TITLES[phase]} · test {_acc(metrics, phase)}", pred, probs.max(-1)))
    st.plotly_chart(lab.boundary_figure(panels, grid, points, classes, "final", labelled), key="bd_final",
                    config=lab.PLOT)
    st.caption("Colour is the predicted class; a deeper shade means a more confident prediction, a "
               "pale one a point near the boundary. Dots are the test set."
               + (f" Stars are the only {len(labelled[1])} training points whose labels the students got: "
                  "the baseline draws its boundary from them alone, the distilled student also from the "
                  "teacher's soft targets on the other training points." if labelled is not None else ""))


def surface_ui(teacher, grid: tg.Grid, points, classes: list[str], run_T: float) -> None:
    st.subheader("The teacher's soft targets")
    c1, c2 = st.columns([2, 2])
    T = c1.slider("Temperature T", 0.5, 20.0, float(min(max(run_T, 0.5), 20.0)), 0.5, key=K("T"), bind=URL,
                  help="The surface the distilled student was asked to match is at the run's T.")
    view = c2.selectbox("Show", ["top probability", *[f"probability of {c}" for c in classes]],
                        key=K("view"), bind=URL)
    _, probs = tg.grid_surface(teacher, grid, T)
    if view == "top probability":
        surface = probs.max(-1)
    else:
        surface = probs[..., [f"probability of {c}" for c in classes].index(view)]
    fig = lab.surface_figure(grid, surface, points, classes, T, "surface")
    if view != "top probability":
        fig.update_layout(title_text=f"Teacher's {view} at T = {T:g}")
        fig.data[0].zmin, fig.data[0].zmax = 0.0, 1.0
    st.plotly_chart(fig, key="bd_surface", config=lab.PLOT)
    st.caption(f"At T = 1 the teacher is sure almost everywhere, so its targets say little beyond "
               f"the label. Raise T and the confidence falls smoothly towards the boundary: that "
               f"gradient of certainty is what the distilled student learns (this run used "
               f"T = {run_T:g}).")


def replay_ui(store, rid: int, points, classes: list[str]) -> None:
    st.subheader("Replay training")
    b = tg.load_boundaries(store, rid)
    if b is None or not b.epochs:
        st.info("This run has no recorded boundary snapshots: it was trained before they were "
                "recorded, or without a run history. Runs on 2-D sets started from the dashboard "
                "or the CLI now record them; train it again to replay it.", icon=":material/info:")
        return
    epochs = sorted({int(e) for eps in b.epochs.values() for e in eps})
    epoch = st.select_slider("Epoch", options=epochs, value=epochs[-1], key=K("epoch"),
                             help="Snapshots recorded while the students trained (at most 40 per "
                                  "student).") if len(epochs) > 1 else epochs[0]
    log = store.epochs(rid)
    panels = []
    for phase in ("baseline", "distilled"):
        if phase not in b.epochs:
            continue
        ep, pred, conf = b.at(phase, epoch)
        rows = log[(log["phase"] == phase) & (log["epoch"] == ep)] if not log.empty else log
        val = f" · val {rows['val_acc'].iloc[0]:.1%}" if len(rows) else ""
        panels.append((f"{PHASE_TITLES[phase]} · epoch {ep}{val}", pred, conf))
    if not panels:
        st.info("Only the teacher was recorded for this run.")
        return
    st.plotly_chart(lab.boundary_figure(panels, b.grid, points, classes, "replay"), key="bd_replay",
                    config=lab.PLOT)
    missing = [p for p in ("baseline", "distilled") if p not in b.epochs]
    note = (f" The {' and '.join(missing)} student was reused from an earlier run (a sweep), so "
            "it has no snapshots here." if missing else "")
    st.caption("Move the epoch slider to watch the boundaries form: when does each student find "
               "the teacher's shape, and how sure is it where the classes overlap?" + note)


def main() -> None:
    sh.open_page("boundaries")
    st.title("Decision boundaries")
    st.caption("On a 2-D set every model's decision can be drawn: where it puts each class, how "
               "sure it is, and how that changed while it trained.")
    store = sh.store()
    loaded = lab.pick_and_load_ui(
        K, lab.finished_runs(store, _is_2d), label="Run on a 2-D set",
        empty="No finished run on a 2-D set yet (two moons, circles, spirals or blobs). Train one "
              "on the Train page, or here.",
        quick=("bd_quick", "Two moons, a 128-128 teacher and 8-unit students."))
    if loaded is None:
        return
    rid, cfg, models, data = loaded
    classes = list(data.classes)
    grid = tg.plane_grid(torch.cat([data.x_train, data.x_test]), 80)
    show = st.toggle("Show the test points", True, key=K("points"), bind=URL)
    points = (data.x_test.numpy(), data.y_test.numpy()) if show else None
    metrics = store.get(rid)["metrics"] or {}
    labelled = None
    if cfg.data.labelled:  # a few-labels run: show which points the students had labels for
        lab_data, _ = student_views(data, cfg.data)
        labelled = (lab_data.x_train.numpy(), lab_data.y_train.numpy())
    final_ui(models, grid, points, classes, metrics, labelled)
    surface_ui(models[kdcore.distillation_target(cfg)], grid, points, classes, cfg.loss.temperature)
    replay_ui(store, rid, points, classes)


main()
