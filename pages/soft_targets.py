"""Soft targets: what the teacher and the student say about single test samples, at several T."""
from __future__ import annotations

import streamlit as st
import torch

import kdcore
from kdapp import ui
from kdapp import charts
from kdapp import lab
from kdapp import shared as sh

K = sh.SCOPES["soft_targets"]  # this page's keys and URL parameters

TEMPS = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


def pick_samples_ui(t_logits: torch.Tensor) -> list[int]:
    n = len(t_logits)
    h = ui.entropy(ui.soft_targets(t_logits, 1.0))
    order = torch.argsort(h, descending=True).tolist()
    default = order[:2] + order[-1:]  # the two the teacher is least sure of, and its surest one
    text = st.text_input("Test samples (numbers, comma separated)", "", key=K("samples"),
                         placeholder=f"default: {', '.join(map(str, default))} — the teacher's two "
                                     "least certain samples and its most certain one",
                         help=f"0 to {n - 1}.")
    if not text.strip():
        return default
    try:
        picked = [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        st.error(f"Write sample numbers separated by commas, e.g. 3, 17, 250 (0 to {n - 1}).")
        return default
    bad = [p for p in picked if not 0 <= p < n]
    if bad:
        st.error(f"There is no test sample {bad[0]}; pick numbers from 0 to {n - 1}.")
        return default
    return picked[:6]


def main() -> None:
    sh.open_page("soft_targets")
    st.title("Soft targets")
    st.caption("What the teacher and the student output for single test samples, at several "
               "temperatures. The student learns from the teacher's bars.")
    loaded = lab.pick_and_load_ui(
        K, lab.finished_runs(sh.store()),
        empty="No finished run with saved models yet. Train one on the Train page, then come back.")
    if loaded is None:
        return
    rid, cfg, models, data = loaded
    students = [p for p in ("distilled", "baseline") if p in models]
    c1, c2, c3 = st.columns([1, 1, 2])
    who = c1.radio("Student", students, key=K("student"), horizontal=True)
    T = c2.slider("Chosen T", 0.5, 32.0, float(cfg.loss.temperature), 0.5, key=K("T"))
    temps = c3.multiselect("Also at T =", TEMPS, default=[1.0, 16.0], key=K("temps"))
    temps = sorted({*temps, T})

    target = kdcore.distillation_target(cfg)  # several teachers: their ensemble taught the students
    if target == "ensemble":
        st.caption(f"This run had {1 + len(cfg.extra_teachers)} teachers: \"teacher\" below is their "
                   "weighted ensemble, whose soft targets the students learned from.")
    t_log, s_log = lab.logits(rid, target), lab.logits(rid, who)
    picked = pick_samples_ui(t_log)
    classes = list(data.classes)

    if data.kind == "2d":
        x = data.x_test.numpy()
        st.plotly_chart(charts.plane_figure(x, data.y_test.numpy(), classes, picked, "plane"),
                        key="soft_plane", config={"displaylogo": False})
    elif data.kind == "image":  # a CSV table's rows ("table") have no picture
        cols = st.columns(len(picked))
        imgs = data.unnormalize(data.x_test[picked]).clamp(0, 1)
        for col, i, img in zip(cols, picked, imgs):
            col.image(img.permute(1, 2, 0).numpy(), caption=f"#{i}: {classes[int(data.y_test[i])]}",
                      clamp=True, width=96)

    for k, i in enumerate(picked):
        y = int(data.y_test[i])
        pt, ps = ui.soft_targets(t_log[i], 1.0), ui.soft_targets(s_log[i], 1.0)
        st.markdown(f"**Sample #{i}** — true class **{classes[y]}** · teacher says "
                    f"{classes[int(pt.argmax())]} ({float(pt.max()):.0%}) · {who} student says "
                    f"{classes[int(ps.argmax())]} ({float(ps.max()):.0%})")
        rows = []
        for temp in temps:
            p_t, p_s = ui.soft_targets(t_log[i], temp), ui.soft_targets(s_log[i], temp)
            rows.append({"T": temp, "teacher": p_t.tolist(), "student": p_s.tolist(),
                         "H_t": float(ui.entropy(p_t)), "H_s": float(ui.entropy(p_s))})
        st.plotly_chart(charts.soft_target_bars(classes, rows, f"bars{k}"), key=f"soft_bars_{k}",
                        config={"displaylogo": False})

    st.subheader("Which classes look alike to the teacher")
    sim = ui.class_similarity(t_log, data.y_test, T, len(classes))
    st.plotly_chart(charts.similarity_heatmap(sim.numpy(), classes, T, "heat"), key="soft_heatmap",
                    config={"displaylogo": False})
    st.caption("Row c is the teacher's soft target averaged over the test samples of true class c. "
               "Mass off the diagonal is the teacher's 'dark knowledge': which wrong classes it "
               f"finds plausible. Entropies H are in nats; log {len(classes)} = "
               f"{torch.log(torch.tensor(float(len(classes)))):.2f} is uniform.")


main()
