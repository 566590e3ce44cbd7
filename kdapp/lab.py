"""Glue and figures shared by the teaching-lab pages (temperature, boundaries, dark knowledge,
omitted class, sweep, presets). Not a page (the leading underscore).

The maths is in :mod:`kdcore.lab.teaching`; the figures below are pure functions of plain data.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Callable, Sequence
from urllib.parse import urlencode, urlsplit

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

import kdcore
from kdcore import ConfigError, DataUnavailable
from kdcore.lab import teaching as tg
from kdapp.live import RunLimitReached
from kdcore.train.trainer import predict_logits
from kdapp import shared as sh
from kdapp.charts import PALETTE, PHASE_COLORS, layout, log_ticks

PLOT = {"displaylogo": False}


# --------------------------------------------------------------------------------------------
# Runs from the history


def run_label(r: dict) -> str:
    c = r["config"]
    omit = c["data"].get("omit_class", -1)
    extra = f" · class {omit} omitted" if omit is not None and omit >= 0 else ""
    name = r.get("name") or ""
    return (f"run {r['id']}: {c['data']['name']} · {c['teacher']['name']} → {c['student']['name']} · "
            f"{c['loss']['name']} T={c['loss']['temperature']:g} α={c['loss']['alpha']:g}{extra}"
            + (f" · {name}" if name and not name.startswith("omitted class") else ""))


def finished_runs(store: kdcore.RunStore, where: Callable[[dict], bool] | None = None) -> list[dict]:
    """Completed runs whose teacher and students are on disk, newest first."""
    out = []
    for r in store.list(status="completed"):
        if not all(store.weights_path(r["id"], p).exists() for p in ("teacher", "baseline", "distilled")):
            continue
        if where is None or where(r):
            out.append(r)
    return out


def run_pick_ui(runs: list[dict], scope: sh.Scope, label: str = "Run") -> int | None:
    """A select box of ``runs``; the pick is kept in the URL (``?<prefix>run=<id>``) so a link shows it.

    Defaults to this session's latest run when it is in the list.
    """
    if not runs:
        return None
    by_id = {r["id"]: r for r in runs}
    ids = list(by_id)
    key, pick_key = scope("run"), scope("run_pick")
    want = st.query_params.get(key, "")
    mine = sh.session_runs().current_run_id()
    pick = int(want) if want.isdigit() and int(want) in by_id else (mine if mine in by_id else ids[0])
    rid = st.selectbox(label, ids, index=ids.index(pick), key=pick_key,
                       format_func=lambda i: run_label(by_id[i]))
    st.query_params[key] = str(rid)  # not widget-bound: the options change as runs finish
    return rid


def load_run(rid: int):
    """(cfg, models, data) of a stored run, or None after showing why it cannot be loaded."""
    try:
        cfg, models = sh.run_models(sh.runs_dir(), rid)
        data = sh.load_data(json.dumps(asdict(cfg.data), sort_keys=True))
    except (ConfigError, DataUnavailable, KeyError, RuntimeError, OSError) as e:
        st.error(f"Run {rid} cannot be loaded: {e}", icon=":material/error:")
        return None
    return cfg, models, data


def pick_and_load_ui(scope: sh.Scope, runs: list[dict], *, empty: str, label: str = "Run",
                     quick: tuple[str, str] | None = None):
    """Pick one of ``runs`` (kept in the page's URL as ``?<prefix>run=``) and load it.

    Args:
        scope: the page's keys. runs: the runs to offer. empty: what to say when there is none.
        label: the picker's label.
        quick: (key, caption) of :func:`quick_pair_ui`, offered when there is no run.
    Returns:
        (run id, cfg, models, data), or None after showing why there is nothing to show.
    """
    rid = run_pick_ui(runs, scope, label)
    if rid is None:
        st.info(empty, icon=":material/info:")
        if quick is not None:
            quick_pair_ui(*quick)
        return None
    loaded = load_run(rid)
    return None if loaded is None else (rid, *loaded)


@st.cache_resource(show_spinner="Computing logits…", max_entries=32)
def run_logits(root: str, run_id: int, phase: str, split: str = "test") -> torch.Tensor:
    """Logits of one stored model on its run's test or validation split (shared, read-only)."""
    cfg, models = sh.run_models(root, run_id)
    data = sh.load_data(json.dumps(asdict(cfg.data), sort_keys=True))
    x = data.x_test if split == "test" else data.x_val
    return predict_logits(models[phase], x)


def logits(rid: int, phase: str, split: str = "test") -> torch.Tensor:
    return run_logits(sh.runs_dir(), rid, phase, split)


# --------------------------------------------------------------------------------------------
# Starting work in the background: a run in this session's worker, or a sweep


def start_run(cfg: kdcore.RunConfig) -> None:
    """Button callback: start ``cfg`` in this session's worker (the Train page's), or say why not."""
    st.session_state.pop("lab_start_error", None)
    sweep = sh.session_runs().sweep
    if sweep is not None and sweep.running:
        st.session_state["lab_start_error"] = ("This session is running a sweep; stop it on the "
                                               "α × T sweep page or wait for it to finish.")
        return
    try:
        sh.session_runs().start(cfg, sh.store())
    except RunLimitReached as e:
        st.session_state["lab_start_error"] = str(e)


def session_run_ui(key: str, what: str) -> None:
    """Progress of this session's run while it trains; the page reruns once when it ends."""
    if err := st.session_state.pop("lab_start_error", None):
        st.error(err, icon=":material/block:")
    live = sh.session_runs().live
    if live is None or not live.running:
        return

    @st.fragment(run_every=sh.POLL_S)
    def panel() -> None:
        snap = live.snapshot()
        if snap.done:
            st.rerun(scope="app")
        st.progress(snap.progress, text=f"{what}: run {snap.run_id or ''} · {snap.phase} · "
                                        f"{snap.progress:.0%} · {sh.eta_text(snap.eta_s)}")

    c1, c2 = st.columns([6, 1])
    with c1:
        panel()
    with c2:
        sh.stop_button(live, f"{key}_stop")
    st.caption("It trains in this session's worker: the Train page shows its live curves.")


def quick_pair_config(name: str = "quick pair (lab)") -> kdcore.RunConfig:
    """A teacher and a student on two moons that train in a few seconds."""
    return kdcore.RunConfig(
        data=kdcore.DataConfig(name="moons", n_samples=2000, noise=0.25),
        teacher=kdcore.ModelConfig("mlp", {"hidden": [128, 128]}),
        student=kdcore.ModelConfig("mlp", {"hidden": [8]}),
        loss=kdcore.LossConfig(temperature=4.0, alpha=0.5),
        optim=kdcore.OptimConfig(epochs=15, lr=1e-2), teacher_optim=kdcore.OptimConfig(epochs=15, lr=1e-2),
        name=name)


def quick_pair_ui(key: str, note: str) -> None:
    """A button that trains :func:`quick_pair_config` in the background."""
    busy = sh.session_runs().running
    st.button("Train a quick teacher and students on two moons (a few seconds)", key=key,
              on_click=start_run, args=(quick_pair_config(),), disabled=busy,
              icon=":material/bolt:", help=note)
    session_run_ui(f"{key}_run", "Training the quick pair")


# --------------------------------------------------------------------------------------------
# Links


def page_url(page: str, params: dict) -> str:
    """An absolute link to ``page`` (its URL path; "" for the app's root) with ``params``.

    Uses the address the browser opened the app at; falls back to a relative link.
    """
    base = ""
    try:
        url = st.context.url
    except Exception:  # noqa: BLE001  (no browser context, e.g. in tests)
        url = None
    if url:
        parts = urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}"
    q = urlencode(params, doseq=True)  # a list becomes a repeated parameter, as Streamlit reads it
    return f"{base}/{page}" + (f"?{q}" if q else "")


# --------------------------------------------------------------------------------------------
# Figures


def _log_axis(fig: go.Figure, axis: str, values, title: str, **where) -> None:
    """A log axis labelled at 1-2-5 values inside the data only (no minor-tick clutter)."""
    v = np.asarray([x for x in np.ravel(np.asarray(values, dtype=float)) if np.isfinite(x) and x > 0])
    ticks = log_ticks(float(v.min()), float(v.max())) if len(v) else []
    kw = dict(type="log", title=title, minor=dict(showgrid=False, ticks=""))
    if ticks:
        kw.update(tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    (fig.update_xaxes if axis == "x" else fig.update_yaxes)(**kw, **where)


def temperature_figure(table: pd.DataFrame, chosen: float, rev: str = "temp") -> go.Figure:
    """softmax(z/T) per class, one line per T (the chosen T drawn thick)."""
    fig = go.Figure()
    temps = sorted(table["T"].unique())
    for i, T in enumerate(temps):
        rows = table[table["T"] == T]
        thick = np.isclose(T, chosen)
        fig.add_trace(go.Scatter(x=rows["class"], y=rows["p"], mode="lines+markers",
                                 name=f"T = {T:g}", line=dict(width=4 if thick else 1.5,
                                                              color=PALETTE[i % len(PALETTE)]),
                                 marker=dict(size=9 if thick else 6)))
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", title="probability")
    fig.update_xaxes(title="class", type="category")
    return layout(fig, "softmax(z / T) for several temperatures", rev, legend="above", height=340)


def entropy_figure(profile: pd.DataFrame, k: int, chosen: float, rev: str = "entropy") -> go.Figure:
    """Entropy (left axis) and effective number of classes exp(H) (right axis) against T."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=profile["T"], y=profile["entropy"], name="entropy H (nats)",
                             line=dict(color=PALETTE[0])), secondary_y=False)
    fig.add_trace(go.Scatter(x=profile["T"], y=profile["effective_classes"],
                             name="effective classes exp(H)", line=dict(color=PALETTE[1], dash="dash")),
                  secondary_y=True)
    fig.add_vline(x=chosen, line=dict(color="#444", dash="dot", width=1))
    _log_axis(fig, "x", profile["T"], "temperature T (log scale)")
    fig.update_yaxes(title="entropy (nats)", range=[0, np.log(k) * 1.05], tickformat=".2f",
                     secondary_y=False)
    fig.update_yaxes(title="effective classes", range=[1 - 0.05 * (k - 1), k + 0.05 * (k - 1)],
                     tickformat=".1f", secondary_y=True, showgrid=False)
    return layout(fig, "Entropy and effective classes vs T", rev, legend="above", height=340)


def kl_figure(curves: dict[str, pd.DataFrame], run_T: float | None, rev: str = "kl") -> go.Figure:
    """KL(teacher ‖ student) at T for each student."""
    fig = go.Figure()
    for name, df in curves.items():
        fig.add_trace(go.Scatter(x=df["T"], y=df["kl"], name=f"{name} student",
                                 line=dict(color=PHASE_COLORS.get(name))))
    if run_T:
        fig.add_vline(x=run_T, line=dict(color="#444", dash="dot", width=1))
        # on a log axis an annotation's x is log10 of the value (a shape's is not)
        fig.add_annotation(x=float(np.log10(run_T)), xref="x", y=1, yref="paper", showarrow=False,
                           text=f" trained at T = {run_T:g}", xanchor="left", yanchor="top")
    _log_axis(fig, "x", [v for df in curves.values() for v in df["T"]], "temperature T (log scale)")
    _log_axis(fig, "y", [v for df in curves.values() for v in df["kl"]], "mean KL (nats, log scale)")
    return layout(fig, "KL(teacher ‖ student) on the test set, as a function of T", rev, legend="above",
                  height=340)


def gradient_figure(df: pd.DataFrame, chosen: float | None, rev: str = "grad") -> go.Figure:
    """Soft-loss gradient size vs T, with and without T², and the hard CE's for reference."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=df["T"], y=df["without_t2"], name="KL without T² (fades like 1/T²)",
                             line=dict(color=PALETTE[1])))
    fig.add_trace(go.Scatter(x=df["T"], y=df["with_t2"], name="T² · KL (what KD uses)",
                             line=dict(color=PALETTE[0], width=3)))
    if "ce" in df:
        fig.add_trace(go.Scatter(x=df["T"], y=df["ce"], name="hard-label CE (no T)",
                                 line=dict(color="#7f7f7f", dash="dash")))
    if chosen:
        fig.add_vline(x=chosen, line=dict(color="#444", dash="dot", width=1))
    _log_axis(fig, "x", df["T"], "temperature T (log scale)")
    _log_axis(fig, "y", [df[c] for c in ("without_t2", "with_t2", "ce") if c in df],
              "gradient size ‖∂loss/∂z_s‖ per sample (log scale)")
    return layout(fig, "Why T²: the soft term's gradient on the student's logits", rev, legend="above",
                  height=340)


def _rgb(hex_color: str) -> tuple[int, int, int]:
    h = hex_color.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def class_colorscale(k: int) -> list:
    """A colorscale over [0, k): class c's band runs from a pale to the full class colour."""
    scale = []
    for c in range(k):
        r, g, b = _rgb(PALETTE[c % len(PALETTE)])
        pale = tuple(int(v + (255 - v) * 0.85) for v in (r, g, b))
        scale.append([c / k, f"rgb{pale}"])
        scale.append([(c + 0.999) / k, f"rgb({r},{g},{b})"])
    scale[-1][0] = 1.0
    return scale


def class_confidence_z(pred: np.ndarray, conf: np.ndarray, k: int) -> np.ndarray:
    """Encode class and confidence in one number: class + (confidence above chance) in [0, 1)."""
    lift = np.clip((conf - 1.0 / k) / (1 - 1.0 / k), 0, 0.998)
    return pred.astype(np.float32) + lift


def boundary_figure(panels: Sequence[tuple[str, np.ndarray, np.ndarray]], grid: tg.Grid,
                    points: tuple[np.ndarray, np.ndarray] | None, classes: Sequence[str],
                    rev: str, labelled: tuple[np.ndarray, np.ndarray] | None = None) -> go.Figure:
    """Side-by-side prediction maps; colour = predicted class, depth = confidence.

    Args:
        panels: (title, pred [ny, nx], confidence [ny, nx]) per panel.
        points: (x [N, 2], y [N]) test points drawn on top, or None.
        labelled: (x [L, 2], y [L]) the only training points whose labels the students saw (a
            few-labels run), drawn as large outlined stars on every panel but the first (the teacher's).
    """
    k = len(classes)
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels],
                        horizontal_spacing=0.03, shared_yaxes=True)
    scale = class_colorscale(k)
    for i, (title, pred, conf) in enumerate(panels, start=1):
        z = class_confidence_z(pred, conf, k)
        fig.add_trace(go.Heatmap(x=grid.xs, y=grid.ys, z=z, zmin=0, zmax=k, colorscale=scale,
                                 showscale=False, customdata=np.round(conf * 100),
                                 hovertemplate="class %{z:.0f} (%{customdata:.0f} %)<extra></extra>"),
                      row=1, col=i)
        if points is not None:
            x, y = points
            for c in range(k):
                m = y == c
                fig.add_trace(go.Scattergl(x=x[m, 0], y=x[m, 1], mode="markers", name=classes[c],
                                           legendgroup=classes[c], showlegend=i == 1,
                                           marker=dict(size=4, color=PALETTE[c % len(PALETTE)],
                                                       line=dict(width=0.5, color="white"))),
                              row=1, col=i)
        fig.update_xaxes(range=[float(grid.xs[0]), float(grid.xs[-1])], row=1, col=i,
                         constrain="domain")
        fig.update_yaxes(range=[float(grid.ys[0]), float(grid.ys[-1])], row=1, col=i,
                         scaleanchor=f"x{'' if i == 1 else i}", scaleratio=1)
    fig.update_layout(height=400, margin=dict(l=10, r=10, t=40, b=10), uirevision=rev,
                      legend=dict(orientation="h", y=-0.1, yanchor="top"))
    if labelled is not None:
        lx, ly = labelled
        for i in range(2, len(panels) + 1):
            fig.add_trace(go.Scattergl(
                x=lx[:, 0], y=lx[:, 1], mode="markers", name="the students' labelled points",
                legendgroup="labelled", showlegend=i == 2, hovertemplate="labelled: class %{text}<extra></extra>",
                text=[classes[c] for c in ly],
                marker=dict(size=13, symbol="star", color=[PALETTE[c % len(PALETTE)] for c in ly],
                            line=dict(width=1.5, color="black"))), row=1, col=i)
    return fig


def surface_figure(grid: tg.Grid, conf: np.ndarray, points, classes: Sequence[str], T: float,
                   rev: str) -> go.Figure:
    """The teacher's soft-target confidence max softmax(z/T) over the plane."""
    k = len(classes)
    fig = go.Figure(go.Heatmap(x=grid.xs, y=grid.ys, z=conf, zmin=1 / k, zmax=1, colorscale="Viridis",
                               colorbar=dict(title="max p", tickformat=".0%"),
                               hovertemplate="max p %{z:.1%}<extra></extra>"))
    if points is not None:
        x, y = points
        fig.add_trace(go.Scattergl(x=x[:, 0], y=x[:, 1], mode="markers", showlegend=False,
                                   marker=dict(size=3, color="white", opacity=0.6)))
    fig.update_xaxes(range=[float(grid.xs[0]), float(grid.xs[-1])], constrain="domain")
    fig.update_yaxes(range=[float(grid.ys[0]), float(grid.ys[-1])], scaleanchor="x", scaleratio=1)
    return layout(fig, f"Teacher's soft-target confidence at T = {T:g} (1/{k} = no preference)",
                  rev, legend="above", height=400)


def per_class_figure(classes: Sequence[str], accs: dict[str, Sequence[float]], omitted: int,
                     rev: str = "perclass") -> go.Figure:
    """Grouped bars of test accuracy per class, the omitted class marked."""
    fig = go.Figure()
    for name, vals in accs.items():
        fig.add_trace(go.Bar(x=list(classes), y=list(vals), name=name,
                             marker_color=PHASE_COLORS.get(name.split(" ")[0], None)))
    fig.add_vrect(x0=omitted - 0.5, x1=omitted + 0.5, fillcolor="#ffd54f", opacity=0.25, line_width=0,
                  layer="below", annotation_text="never seen by the students", annotation_position="top")
    fig.update_yaxes(range=[0, 1.08], tickformat=".0%", title="test accuracy")
    fig.update_layout(barmode="group")
    return layout(fig, "Test accuracy per class", rev, legend="above", height=360)


def bias_figure(tables: dict[str, pd.DataFrame], chosen: float, cls_name: str,
                rev: str = "bias") -> go.Figure:
    """Accuracy on the omitted class (solid) and overall (dotted) as its bias is raised."""
    fig = go.Figure()
    for name, df in tables.items():
        color = PHASE_COLORS.get(name)
        fig.add_trace(go.Scatter(x=df["delta"], y=df["class_accuracy"], name=f"{name}: {cls_name}",
                                 line=dict(color=color, width=3)))
        fig.add_trace(go.Scatter(x=df["delta"], y=df["accuracy"], name=f"{name}: all classes",
                                 line=dict(color=color, dash="dot")))
    fig.add_vline(x=chosen, line=dict(color="#444", dash="dash", width=1))
    fig.update_xaxes(title=f"bias added to the {cls_name!r} logit")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", title="test accuracy")
    return layout(fig, "Raising the omitted class's bias", rev, legend="above", height=360)


def sweep_figure(grid: pd.DataFrame, title: str, *, fmt: str, best: dict | None, diverging: bool,
                 rev: str, current: tuple[float, float] | None = None) -> go.Figure:
    """α x T heatmap with the value written in each cell; the best cell's value gets a ★.

    Cells not run yet read "·", the one training now "training…".
    """
    x = [f"T={t:g}" for t in grid.columns]
    y = [f"α={a:g}" for a in grid.index]
    z = grid.to_numpy(dtype=float)
    def label(a: float, t: float, v: float) -> str:
        if current is not None and np.isclose(a, current[0]) and np.isclose(t, current[1]):
            return "training…"
        if np.isnan(v):
            return "·"
        star = best is not None and np.isclose(a, best["alpha"]) and np.isclose(t, best["T"])
        return ("★ " if star else "") + format(v, fmt)

    text = [[label(a, t, v) for t, v in zip(grid.columns, row)] for a, row in zip(grid.index, z)]
    kw = dict(colorscale="RdBu", zmid=0) if diverging else dict(colorscale="Blues")
    fig = go.Figure(go.Heatmap(x=x, y=y, z=z, text=text, texttemplate="%{text}", hoverongaps=False,
                               hovertemplate="%{y} · %{x}: %{text}<extra></extra>", **kw))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", side="bottom")
    return layout(fig, title, rev, legend="above", height=max(260, 60 * len(y) + 120))


# --------------------------------------------------------------------------------------------
# Presets: setups a teacher can hand out as links


def _widths(params: dict) -> str:
    return ", ".join(str(h) for h in params.get("hidden", []))


def train_query(cfg: kdcore.RunConfig) -> dict[str, str | list[str]]:
    """The Train page's query parameters that reproduce ``cfg`` (values as its widgets write them).

    Values equal to the Train page's defaults are left out, as Streamlit itself does. Only what
    the Train page controls is encoded: a teacher trained anew, the data's name, size and noise,
    and for your own data where it comes from (an entry of the data root or an upload, never a
    path), the image size, the label and feature columns.

    Raises:
        ConfigError: own data whose path is neither in the data root nor an upload: no link may
            name it (the Train page would refuse it anyway).
    """
    from kdapp import ui
    from kdcore import DATASETS

    spec = DATASETS.get(cfg.data.name)

    def params(role: str, m: kdcore.ModelConfig) -> str:
        if m.params == ui.default_params(role, m.name):
            return ""
        return _widths(m.params) if m.name == "mlp" and set(m.params) == {"hidden"} else json.dumps(m.params)

    q = {"dataset": spec.title, "subset": str(cfg.data.train_subset), "data_seed": str(cfg.data.seed),
         "teacher": cfg.teacher.name, "teacher_params": params("teacher", cfg.teacher),
         "student": cfg.student.name, "student_params": params("student", cfg.student),
         "loss": cfg.loss.name, "T": f"{cfg.loss.temperature:g}", "alpha": f"{cfg.loss.alpha:g}",
         "t2": str(cfg.loss.t2).lower(), "epochs": str(cfg.optim.epochs), "lr": str(cfg.optim.lr),
         "batch": str(cfg.optim.batch_size), "seed": str(cfg.seed),
         "teacher_epochs": str(cfg.teacher_optim.epochs), "teacher_lr": str(cfg.teacher_optim.lr),
         "optimizer": cfg.optim.optimizer, "schedule": cfg.optim.schedule, "name": cfg.name,
         "teacher_batch": str(cfg.teacher_optim.batch_size), "labelled": str(cfg.data.labelled),
         "balanced": str(cfg.data.balanced).lower(), "transfer_set": str(cfg.data.transfer_set).lower(),
         "transfer_ratio": str(cfg.data.transfer_ratio),
         "pseudo_arm": str(cfg.pseudo_arm).lower(), "retrain_teacher": str(cfg.retrain_teacher).lower()}
    if spec.kind == "2d":
        q.update(noise=f"{cfg.data.noise:g}", samples=str(cfg.data.n_samples))
        if not spec.fixed_classes:
            q["classes"] = str(cfg.data.n_classes)
    if cfg.data.name in ("image_folder", "csv"):
        q.update(_own_data_query(cfg.data))
    if cfg is _TRAIN_DEFAULTS:
        return q
    defaults = train_query(_TRAIN_DEFAULTS)
    return {k: v for k, v in q.items() if v != defaults.get(k) and v != ""}


def _own_data_query(data: kdcore.DataConfig) -> dict[str, str | list[str]]:
    """The Train page's own-data widgets for ``data``: its source by name, never by path."""
    from kdcore.data import own as userdata
    src = userdata.source_of(data.path, sh.runs_dir())
    if src is None:
        raise ConfigError(f"data.path {data.path!r} is neither a dataset of the data root "
                          f"(${userdata.DATA_ROOT_ENV}) nor an upload of this server; a link can name only those")
    kind, name = src.split(":", 1)
    q: dict[str, str | list[str]] = ({"data_from": "data root", "data_entry": name} if kind == "root"
                                     else {"data_from": "upload", "data_upload": name})
    if data.name == "image_folder":
        q["image_size"] = str(data.image_size)
    else:
        q["label_column"] = data.label_column
        q["feature_columns"] = list(data.feature_columns)
    return q


_TRAIN_DEFAULTS = kdcore.RunConfig()  # what the Train page shows with no query parameters


def sweep_query(*, dataset: str, subset: int, teacher: tuple[str, str], student: tuple[str, str],
                teacher_epochs: int, epochs: int, lr: float, alphas: Sequence[float],
                temps: Sequence[float]) -> dict:
    """The Sweep page's query parameters for a grid."""
    from kdcore import DATASETS

    return {"dataset": DATASETS.get(dataset).title, "subset": str(subset), "teacher": teacher[0],
            "teacher_params": teacher[1], "student": student[0], "student_params": student[1],
            "teacher_epochs": str(teacher_epochs), "epochs": str(epochs), "lr": str(lr),
            "alphas": [str(float(a)) for a in alphas], "temps": [str(float(t)) for t in temps]}



def omitted_query(dataset: str, omit: int, **extra) -> dict:
    """The Omitted-class page's query parameters (its widgets' keys)."""
    from kdcore import DATASETS, DataConfig

    spec = DATASETS.get(dataset)
    name = spec.class_names(DataConfig(name=dataset))[omit]
    return {"dataset": spec.title, "omit": f"{omit}: {name}", **{k: str(v) for k, v in extra.items()}}


@dataclass(frozen=True)
class Link:
    label: str
    page: str  # the page file, for st.page_link
    path: str  # its URL path ("" = the app's root, where the Train page is)
    params: dict  # the page's settings by name (unset ones stay at their defaults)

    @property
    def query(self) -> dict:
        """The link's URL parameters: the settings under the page's keys, plus the link marker."""
        return sh.SCOPES[self.page.removeprefix("pages/").removesuffix(".py")].link(self.params)


@dataclass(frozen=True)
class Preset:
    key: str
    title: str
    text: str  # a few lines of markdown: what to try and what to look for
    links: tuple[Link, ...]
    configs: tuple[kdcore.RunConfig, ...] = ()  # the Train-page runs its links set up (for tests)


def _train_link(label: str, cfg: kdcore.RunConfig) -> Link:
    return Link(label, "pages/train.py", "", train_query(cfg))


# What to look for in each Train-page preset (kdcore.lab.presets holds its runs and its claim;
# docs/presets.md what was measured). Keyed by the preset's key.
_LOOK_FOR = {
    "few_labels": (
        "The teacher learns from all 54,000 labelled training images; the students get only **300 "
        "labels**. The baseline sees those 300 images. The distilled student also sees the other "
        "53,700 images **without their labels**, through the teacher's soft targets (Hinton et al.'s "
        "*transfer set*). A third student learns the teacher's hard answer on the same images. Read "
        "the verdict's interval, then compare the distilled and the hard-label student."),
    "t1_t10": (
        "Two runs that differ only in the temperature, with 1,000 labels. At **T = 1** the teacher's "
        "softmax is nearly one-hot; at **T = 10** the wrong classes' probabilities — shirt vs "
        "T-shirt, sneaker vs sandal — become large. Which one helps a 32-unit student more? Compare "
        "the two verdicts, and the distilled student's agreement with the teacher."),
    "a0_a1": (
        "α weighs the hard-label cross-entropy. **α = 1** ignores the teacher: the 'distilled' student "
        "is the baseline, bit for bit (same initial weights, same batches). **α = 0** learns from the "
        "teacher's soft targets only, never from a label — and still learns the task, because the "
        "teacher's outputs contain the labels and more."),
    "tiny_student": (
        "Hinton et al. found that with **30 units per layer** temperatures of **2.5–4** worked clearly "
        "better than higher or lower ones: a small student cannot match every detail of a very soft "
        "distribution. Try it with a 30-30 student: two single runs, or the sweep across T."),
}


def presets() -> list[Preset]:
    """The one-click setups of the Presets page: kdcore's run presets, then the lab's own."""
    from kdcore.lab.presets import run_presets

    grid = dict(dataset="fashion_mnist", subset=10000, teacher=("cnn", ""), teacher_epochs=6, epochs=10,
                lr=1e-3)
    sweeps = {
        "t1_t10": Link("Or both at once as a 1 × 2 sweep (one shared teacher)", "pages/sweep.py", "sweep",
                       sweep_query(student=("mlp", "32"), alphas=[0.3], temps=[1.0, 10.0], **grid)),
        "tiny_student": Link("Sweep T for the 30-30 student", "pages/sweep.py", "sweep",
                             sweep_query(student=("mlp", "30, 30"), alphas=[0.1, 0.5],
                                         temps=[1.0, 2.5, 4.0, 8.0, 16.0], **grid)),
    }
    out = []
    for rp in run_presets():
        text = f"{_LOOK_FOR.get(rp.key, '')}\n\n**Claim, measured over 3 seeds** (docs/presets.md): {rp.claim}"
        links = tuple(_train_link(label, cfg) for label, cfg in rp.runs)
        if rp.key in sweeps:
            links += (sweeps[rp.key],)
        out.append(Preset(rp.key, rp.title, text, links, tuple(cfg for _, cfg in rp.runs)))
    out.append(Preset("omitted", "The omitted class", (
        "Remove every **Dress** from the students' training set. The baseline can never name "
        "one; the distilled student learns what a dress looks like only from the teacher's soft "
        "targets on T-shirts, coats and shirts. Then raise the Dress output's bias and watch its "
        "accuracy come back — Hinton et al.'s §3 experiment, on Fashion-MNIST."),
        (Link("Set up the omitted-class experiment (all training images, a few minutes)",
              "pages/omitted_class.py", "omitted_class", omitted_query("fashion_mnist", 3)),
         Link("A quicker version (10,000 images)", "pages/omitted_class.py", "omitted_class",
              omitted_query("fashion_mnist", 3, subset=10000, teacher_epochs=4, epochs=6)))))
    return out


TOUR = [  # (page, what to do there)
    ("pages/temperature_lab.py", "Temperature lab",
     "Drag T with the typed logits. Watch the top probability fall and the effective number of "
     "classes climb from 1 to all of them. Then read *Why T²*."),
    ("pages/train.py", "Train",
     "Press Start on the default two-moons run (seconds). Watch the loss split into its CE and soft "
     "terms, then read the verdict."),
    ("pages/boundaries.py", "Decision boundaries",
     "Compare the three models' maps, raise T on the teacher's surface, and scrub through the "
     "epochs to watch the students' boundaries form."),
    ("pages/soft_targets.py", "Soft targets",
     "Pick a sample the teacher is unsure about and compare its bars with the student's at several T."),
    ("pages/dark_knowledge.py", "Dark knowledge",
     "After a Fashion-MNIST run (a preset above): which classes does the teacher find alike, and "
     "where does the student still disagree?"),
    ("pages/sweep.py", "α × T sweep",
     "Run the small preset grid (under 5 minutes) and see where distillation helps most."),
    ("pages/omitted_class.py", "Omitted class",
     "The most striking result in the paper: a student that recognises a class it never saw."),
]
