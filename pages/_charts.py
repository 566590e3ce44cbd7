"""Plotly figures for the pages. Pure functions of plain data: no Streamlit, no training.

Every figure sets ``uirevision`` so a user's zoom survives the live redraws.
"""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

PHASE_COLORS = {"teacher": "#7f7f7f", "baseline": "#1f77b4", "distilled": "#d62728"}
TERM_NAMES = {"ce": "α·CE (hard labels)", "kd": "(1−α)·soft term (teacher)"}
TERM_COLORS = {"ce": "#2ca02c", "kd": "#9467bd"}
EXTRA_TEACHER_COLORS = ["#bcbd22", "#8c564b", "#17becf"]  # teacher_2, teacher_3, teacher_4
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def phase_color(phase: str) -> str | None:
    """Fixed colour per phase: teachers grey/olive/brown, baseline blue, distilled red."""
    if phase.startswith("teacher_") and phase[8:].isdigit():
        return EXTRA_TEACHER_COLORS[(int(phase[8:]) - 2) % len(EXTRA_TEACHER_COLORS)]
    return PHASE_COLORS.get(phase)


def _layout(fig: go.Figure, title: str, x: str, y: str, rev: str, height: int = 320) -> go.Figure:
    # legend under the plot: above it, it runs into the title on a half-width chart
    fig.update_layout(title=dict(text=title, x=0, font=dict(size=15)), height=height,
                      margin=dict(l=10, r=10, t=40, b=10), uirevision=rev,
                      legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0),
                      xaxis_title=x, yaxis_title=y)
    return fig


def loss_figure(steps: dict[str, list[dict]], rev: str = "loss") -> go.Figure:
    """Total training loss per step of each phase, x in epochs so phases line up."""
    fig = go.Figure()
    for phase, pts in steps.items():
        if not pts:
            continue
        fig.add_trace(go.Scatter(x=[p["x"] for p in pts], y=[p["loss"] for p in pts], mode="lines",
                                   name=phase, line=dict(color=phase_color(phase))))
    return _layout(fig, "Total training loss", "epoch", "loss", rev, height=360)


def terms_figure(steps: dict[str, list[dict]], rev: str = "terms") -> go.Figure:
    """The distilled student's loss split into its weighted terms (they add up to the total)."""
    fig = go.Figure()
    pts = steps.get("distilled") or []
    terms = [k for k in (pts[-1] if pts else {}) if k not in ("phase", "x", "step", "loss")]
    for k in terms:
        fig.add_trace(go.Scatter(x=[p["x"] for p in pts], y=[p.get(k) for p in pts], mode="lines",
                                   name=TERM_NAMES.get(k, k), line=dict(color=TERM_COLORS.get(k))))
    if pts:
        fig.add_trace(go.Scatter(x=[p["x"] for p in pts], y=[p["loss"] for p in pts], mode="lines",
                                   name="total", line=dict(color="#444", dash="dot", width=1)))
    title = "Distilled student: loss terms" if pts else "Distilled student: loss terms (after the baseline)"
    return _layout(fig, title, "epoch", "weighted term", rev, height=360)


def accuracy_figure(epochs_log: dict[str, list[dict]], rev: str = "acc") -> go.Figure:
    """Train (dashed) and validation (solid) accuracy per epoch: baseline vs distilled, teachers muted."""
    fig = go.Figure()
    teachers = [p for p in epochs_log if p.startswith("teacher")]
    for phase in (*teachers, "baseline", "distilled"):
        pts = epochs_log.get(phase) or []
        if not pts:
            continue
        color = phase_color(phase)
        x = [p["epoch"] for p in pts]
        fig.add_trace(go.Scatter(x=x, y=[p["val_acc"] for p in pts], mode="lines+markers",
                                 name=f"{phase} val", line=dict(color=color), marker=dict(size=4)))
        fig.add_trace(go.Scatter(x=x, y=[p["train_acc"] for p in pts], mode="lines",
                                 name=f"{phase} train", line=dict(color=color, dash="dash")))
    fig.update_yaxes(tickformat=".0%", range=None if fig.data else [0, 1])
    return _layout(fig, "Accuracy: baseline vs distilled", "epoch", "accuracy", rev, height=380)


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
    return _layout(fig, title, "epoch", metric.replace("_", " "), rev, height=400)


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
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    fig.update_layout(barmode="group", height=300, margin=dict(l=10, r=10, t=60, b=10), uirevision=rev,
                      legend=dict(orientation="h", y=-0.25))
    for a in fig.layout.annotations:
        a.font.size = 12
    return fig


def similarity_heatmap(matrix, classes: list[str], T: float, rev: str) -> go.Figure:
    """Average soft target per true class: off-diagonal mass = classes the teacher finds alike."""
    fig = go.Figure(go.Heatmap(z=matrix, x=classes, y=classes, colorscale="Blues", zmin=0,
                               hovertemplate="true %{y}<br>→ %{x}: %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="true class")
    fig.update_xaxes(title="average soft target")
    return _layout(fig, f"Teacher's average soft targets per class at T = {T:g}", "average soft target",
                   "true class", rev, height=max(300, 40 * len(classes) + 120))


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
    return _layout(fig, "Test set (standardised)", "x₁", "x₂", rev, height=420)
