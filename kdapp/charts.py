"""Plotly figures for the pages. Pure functions of plain data: no Streamlit, no training.

Every figure sets ``uirevision`` so a user's zoom survives the live redraws.
"""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kdapp.live import split_phase

PHASE_COLORS = {"teacher": "#7f7f7f", "baseline": "#1f77b4", "distilled": "#d62728", "pseudo": "#ff7f0e"}
SEED_OPACITY = 0.3  # one seed's curve in a multi-seed run; their mean is drawn solid
TERM_NAMES = {"ce": "α·CE (hard labels)", "kd": "(1−α)·soft term (teacher)"}
TERM_COLORS = {"ce": "#2ca02c", "kd": "#9467bd"}
EXTRA_TEACHER_COLORS = ["#bcbd22", "#8c564b", "#17becf"]  # teacher_2, teacher_3, teacher_4
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def phase_color(phase: str) -> str | None:
    """Fixed colour per phase: teachers grey/olive/brown, baseline blue, distilled red, hard-label
    student orange; a multi-seed run's "baseline · seed 3" takes its phase's colour."""
    phase = split_phase(phase)[0]
    if phase.startswith("teacher_") and phase[8:].isdigit():
        return EXTRA_TEACHER_COLORS[(int(phase[8:]) - 2) % len(EXTRA_TEACHER_COLORS)]
    return PHASE_COLORS.get(phase)


# legend under the plot: above it, it runs into the title on a half-width chart
_LEGENDS = {"below": (60, dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0)),
            "above": (45, dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1))}


def layout(fig: go.Figure, title: str, rev: str, *, x: str | None = None, y: str | None = None,
           height: int = 320, legend: str = "below") -> go.Figure:
    """The dashboard's figure style: title at the left, tight margins, horizontal legend, and a
    ``uirevision`` so zoom and hidden traces survive a rerun.

    Args:
        title: the figure's title. rev: its uirevision. x, y: axis titles (None: none).
        height: pixels. legend: "below" the plot (the run charts) or "above" it at the right
            (the lab pages' full-width figures).
    """
    top, legend_style = _LEGENDS[legend]
    fig.update_layout(title=dict(text=title, x=0, font=dict(size=15)), height=height,
                      margin=dict(l=10, r=10, t=top, b=10), uirevision=rev, legend=legend_style)
    if x is not None:
        fig.update_layout(xaxis_title=x)
    if y is not None:
        fig.update_layout(yaxis_title=y)
    return fig


def log_ticks(lo: float, hi: float, most: int = 8) -> list[float]:
    """Tick values for a log axis from lo to hi: 1-2-5 steps, only powers of ten when that is too
    many, so no minor labels like "5, 2, 0.1, 5, 2" crowd the axis."""
    import math

    if not (lo > 0 and hi > 0) or hi < lo:
        return []
    out = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
           for m in (1, 2, 5) if lo <= m * 10.0 ** k <= hi]
    if len(out) > most:
        out = [v for v in out if math.isclose(math.log10(v), round(math.log10(v)))]
    return out


def smooth_series(ys: list, weight: float) -> list:
    """Exponential moving average (weight of the past in [0, 1); 0 = the raw values), bias-corrected
    so the first points are not pulled towards zero; None values pass through."""
    if not weight:
        return list(ys)
    out, avg, n = [], 0.0, 0
    for y in ys:
        if y is None:
            out.append(None)
            continue
        n += 1
        avg = weight * avg + (1 - weight) * y
        out.append(avg / (1 - weight ** n))
    return out


def by_phase(series: dict[str, list[dict]]) -> dict[str, dict[int | None, list[dict]]]:
    """Group a run's series by phase: {"baseline": {None: pts}} for one seed, {"baseline": {0: pts,
    1: pts, ...}} for a multi-seed run (its phases are named "baseline · seed 0", ...)."""
    out: dict[str, dict[int | None, list[dict]]] = {}
    for name, pts in series.items():
        if pts:
            base, seed = split_phase(name)
            out.setdefault(base, {})[seed] = pts
    return out


def seed_mean(runs: dict[int | None, list[dict]], x: str, y: str) -> tuple[list, list]:
    """The mean over seeds of ``y`` at each ``x`` every seed has reached (seeds share their x grid)."""
    grids = [{p[x]: p[y] for p in pts if p.get(y) is not None} for pts in runs.values()]
    common = sorted(set.intersection(*(set(g) for g in grids))) if grids else []
    return common, [sum(g[v] for g in grids) / len(grids) for v in common]


def _seed_traces(fig, runs: dict[int | None, list[dict]], x: str, y: str, name: str, color, *,
                 smooth: float = 0.0, dash: str | None = None, markers: bool = False, **where) -> None:
    """One seed: its curve. Several: each seed faint, and their mean solid under ``name``."""
    mode = "lines+markers" if markers else "lines"
    if list(runs) == [None]:
        pts = runs[None]
        fig.add_trace(go.Scatter(x=[p[x] for p in pts], y=smooth_series([p.get(y) for p in pts], smooth),
                                 mode=mode, name=name, line=dict(color=color, dash=dash),
                                 marker=dict(size=4)), **where)
        return
    for seed, pts in runs.items():
        fig.add_trace(go.Scatter(x=[p[x] for p in pts], y=smooth_series([p.get(y) for p in pts], smooth),
                                 mode="lines", name=f"{name}, seed {seed}", opacity=SEED_OPACITY,
                                 showlegend=False, line=dict(color=color, dash=dash, width=1)), **where)
    mx, my = seed_mean(runs, x, y)
    fig.add_trace(go.Scatter(x=mx, y=smooth_series(my, smooth), mode=mode,
                             name=f"{name} (mean of {len(runs)} seeds)", line=dict(color=color, dash=dash),
                             marker=dict(size=4)), **where)


def _titled(title: str, run: str) -> str:
    """A chart's title with the run it belongs to, e.g. "Run 7 · Total training loss"."""
    return f"{run} · {title}" if run else title


def _empty(fig: go.Figure, text: str) -> go.Figure:
    """No data yet: say so instead of drawing a made-up axis range."""
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=13, color="#777"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def loss_figure(steps: dict[str, list[dict]], rev: str = "loss", *, run: str = "",
                smooth: float = 0.0) -> go.Figure:
    """Training loss per step, one panel per phase, each on its own scale.

    The distilled total carries (1−α)·T²·KL, which can be ten times the plain cross-entropy the
    teacher and the baseline minimise; on one axis those would be flat lines. x is in epochs.
    """
    grouped = by_phase(steps)
    phases = list(grouped)
    title = _titled("Total training loss per phase (own scales)", run)
    if not phases:
        return _empty(layout(go.Figure(), title, rev, x="epoch", y="loss", height=360),
                      "The loss of each phase appears here once a run starts.")
    fig = make_subplots(rows=1, cols=len(phases), horizontal_spacing=0.07,
                        subplot_titles=[("distilled: α·CE + (1−α)·soft" if p == "distilled" else f"{p}: CE")
                                        for p in phases])
    for i, phase in enumerate(phases, start=1):
        _seed_traces(fig, grouped[phase], "x", "loss", phase, phase_color(phase), smooth=smooth, row=1, col=i)
        fig.update_xaxes(title_text="epoch", row=1, col=i)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    for a in fig.layout.annotations:
        a.font.size = 12
    return layout(fig, title, rev, height=360)


def terms_figure(steps: dict[str, list[dict]], rev: str = "terms", *, run: str = "",
                 smooth: float = 0.0) -> go.Figure:
    """The distilled student's loss split into its weighted terms, one panel each (own scales):
    the soft term at a high T can be many times the hard-label term; the panels add up to the total."""
    runs = by_phase(steps).get("distilled", {})
    seed = next(iter(runs), None)  # one seed's terms (the first) in a multi-seed run
    pts = runs.get(seed) or []
    title = _titled("Distilled student: loss terms" + (f" (seed {seed})" if seed is not None else ""), run)
    if not pts:
        return _empty(layout(go.Figure(), title, rev, x="epoch", y="weighted term", height=360),
                      "The distilled student's loss terms appear here once it trains (after the baseline).")
    terms = [k for k in pts[-1] if k not in ("phase", "x", "step", "loss")]
    names = [TERM_NAMES.get(k, k) for k in terms] + ["total"]
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=names)
    x = [p["x"] for p in pts]
    for i, k in enumerate(terms, start=1):
        fig.add_trace(go.Scatter(x=x, y=smooth_series([p.get(k) for p in pts], smooth), mode="lines",
                                 name=names[i - 1], line=dict(color=TERM_COLORS.get(k))), row=i, col=1)
    fig.add_trace(go.Scatter(x=x, y=smooth_series([p["loss"] for p in pts], smooth), mode="lines",
                             name="total", line=dict(color="#444", width=1)), row=len(names), col=1)
    fig.update_xaxes(title_text="epoch", row=len(names), col=1)
    for a in fig.layout.annotations:
        a.font.size = 12
    fig = layout(fig, title, rev, height=140 + 110 * len(names))
    fig.update_layout(showlegend=False)  # each panel is titled with its term
    return fig


def accuracy_figure(epochs_log: dict[str, list[dict]], rev: str = "acc", *, run: str = "") -> go.Figure:
    """Train (dashed) and validation (solid) accuracy per epoch of every phase, teachers muted."""
    fig = go.Figure()
    grouped = by_phase(epochs_log)
    teachers = [p for p in grouped if p.startswith("teacher")]
    for phase in (*teachers, "baseline", "distilled", "pseudo"):
        runs = grouped.get(phase)
        if not runs:
            continue
        color = phase_color(phase)
        _seed_traces(fig, runs, "epoch", "val_acc", f"{phase} val", color, markers=True)
        _seed_traces(fig, runs, "epoch", "train_acc", f"{phase} train", color, dash="dash")
    title = _titled("Accuracy per epoch: teacher, baseline, distilled", run)
    fig = layout(fig, title, rev, x="epoch", y="accuracy", height=380)
    if not fig.data:
        return _empty(fig, "Train and validation accuracy appear here after each epoch.")
    fig.update_yaxes(tickformat=".0%")
    return fig


def overlay_figure(curves: dict[str, list[dict]], metric: str, title: str, rev: str) -> go.Figure:
    """Several runs' epoch curves of one metric; name -> [{"epoch", metric}]."""
    fig = go.Figure()
    order: dict[str, int] = {}
    for name, pts in curves.items():
        run = name.split(" ")[0]
        order.setdefault(run, len(order))
        dash = "dash" if "baseline" in name else ("dot" if "teacher" in name else "solid")
        fig.add_trace(go.Scatter(x=[p["epoch"] for p in pts], y=[p[metric] for p in pts], mode="lines",
                                 name=name, legendgroup=run,
                                 line=dict(color=PALETTE[order[run] % len(PALETTE)], dash=dash)))
    if "acc" in metric:
        fig.update_yaxes(tickformat=".0%")
    return layout(fig, title, rev, x="epoch", y=metric.replace("_", " "), height=400)


def soft_target_bars(classes: list[str], rows: list[dict], rev: str) -> go.Figure:
    """One sample: side-by-side bar charts, one per temperature, teacher vs student.

    rows: [{"T": float, "teacher": [p...], "student": [p...], "H_t": float, "H_s": float}]
    """
    fig = make_subplots(rows=1, cols=len(rows), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[f"T = {r['T']:g}<br>H teacher {r['H_t']:.2f} · "
                                        f"student {r['H_s']:.2f}" for r in rows])
    for i, r in enumerate(rows, start=1):
        for who, color in (("teacher", PHASE_COLORS["teacher"]), ("student", PHASE_COLORS["distilled"])):
            fig.add_trace(go.Bar(x=classes, y=r[who], name=who, marker_color=color,
                                 showlegend=i == 1, legendgroup=who), row=1, col=i)
    top = max((max(r[w]) for r in rows for w in ("teacher", "student") if len(r[w])), default=1.0)
    fig.update_yaxes(range=[0, min(1.0, float(top) * 1.12)], tickformat=".0%")  # scaled to the data
    fig.update_yaxes(title_text="probability", row=1, col=1)
    many = len(classes) > 4
    fig.update_xaxes(tickangle=-45 if many else 0, automargin=True, tickfont=dict(size=11))
    fig.update_layout(barmode="group", height=380 if many else 300, margin=dict(l=10, r=10, t=60, b=10),
                      uirevision=rev, legend=dict(orientation="h", y=1.18, x=1, xanchor="right"))
    for a in fig.layout.annotations:
        a.font.size = 12
    return fig


def similarity_heatmap(matrix, classes: list[str], T: float, rev: str) -> go.Figure:
    """Average soft target per true class: off-diagonal mass = classes the teacher finds alike."""
    fig = go.Figure(go.Heatmap(z=matrix, x=classes, y=classes, colorscale="Blues", zmin=0,
                               hovertemplate="true %{y}<br>→ %{x}: %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="true class")
    fig.update_xaxes(title="average soft target")
    return layout(fig, f"Teacher's average soft targets per class at T = {T:g}", rev, x="average soft target",
                  y="true class", height=max(300, 40 * len(classes) + 120))


def plane_figure(x, y, classes: list[str], picked: list[int], rev: str) -> go.Figure:
    """A 2-D test set coloured by class with the picked samples marked and numbered."""
    fig = go.Figure()
    for c, name in enumerate(classes):
        m = y == c
        fig.add_trace(go.Scatter(x=x[m, 0], y=x[m, 1], mode="markers", name=name,
                                   marker=dict(size=5, opacity=0.45, color=PALETTE[c % len(PALETTE)])))
    if picked:
        fig.add_trace(go.Scatter(x=x[picked, 0], y=x[picked, 1], mode="markers+text", name="picked",
                                 text=[f"#{i}" for i in picked], textposition="top center",
                                 marker=dict(size=14, symbol="star", color="black")))
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    fig.update_xaxes(constrain="domain")  # equal scales by narrowing the plot, not widening the range
    return layout(fig, "Test set (standardised)", rev, x="x₁", y="x₂", height=420)
