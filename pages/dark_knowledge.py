"""Dark knowledge: which classes the teacher finds alike, the most confusable classes for each
class, and the test samples where teacher and student disagree most."""
from __future__ import annotations

import streamlit as st

import kdcore
from kdcore.lab import teaching as tg
from kdapp import charts
from kdapp import lab
from kdapp import shared as sh

K = sh.SCOPES["dark_knowledge"]  # this page's keys and URL parameters
URL = sh.URL


def similarity_ui(t_log, data, T: float) -> None:
    classes = list(data.classes)
    sim = tg.class_similarity(t_log, data.y_test, T, len(classes))
    left, right = st.columns([3, 2])
    left.plotly_chart(charts.similarity_heatmap(sim.numpy(), classes, T, "dk_heat"), key="dk_heatmap",
                      config=lab.PLOT)
    with right:
        st.markdown("**Most confusable classes**")
        k = (st.slider("Classes per row", 1, min(4, len(classes) - 1), min(2, len(classes) - 1),
                       key=K("top_k")) if len(classes) > 2 else 1)
        table = tg.top_confusable(sim, classes, k)
        st.dataframe(table, hide_index=True, key="dk_table", column_config={
            **{f"p #{j}": st.column_config.NumberColumn(format="%.3f") for j in range(1, k + 1)},
            "off-diagonal": st.column_config.NumberColumn(
                format="%.3f", help="Mass the teacher puts on wrong classes, on average: the dark "
                                    "knowledge a student can learn from this row."),
        })
    top = table.sort_values("p #1", ascending=False).iloc[0]
    st.caption(f"Row c is the teacher's soft target at T = {T:g}, averaged over the test samples of "
               f"class c. The strongest pair: {top['class']} → {top['#1']} "
               f"({top['p #1']:.1%} of the mass). A one-hot label says none of this; the soft "
               "targets say it on every training example.")


def gallery_ui(t_log, s_log, data, student: str, n: int) -> None:
    classes = list(data.classes)
    table = tg.disagreements(t_log, s_log, data.y_test, n=n)
    n_differ = int((t_log.argmax(1) != s_log.argmax(1)).sum())
    st.markdown(f"The teacher and the {student} student pick different classes on **{n_differ}** of "
                f"{len(t_log)} test samples ({n_differ / len(t_log):.1%}). The {len(table)} below "
                "disagree most (different top class first, then the largest KL(teacher ‖ student)).")
    if table.empty:
        return
    if data.kind == "image":
        imgs = data.unnormalize(data.x_test[table["index"].tolist()]).clamp(0, 1)
        cols = st.columns(6)
        for j, (row, img) in enumerate(zip(table.itertuples(), imgs)):
            with cols[j % 6]:
                st.image(img.permute(1, 2, 0).numpy(), width=84, clamp=True)
                st.caption(f"#{row.index} · **{classes[row.label]}**  \nteacher: {classes[row.teacher]} "
                           f"{row.p_teacher:.0%}  \nstudent: {classes[row.student]} {row.p_student:.0%}")
    else:
        st.plotly_chart(charts.plane_figure(data.x_test.numpy(), data.y_test.numpy(), classes,
                                            table["index"].tolist(), "dk_plane"),
                        key="dk_plane", config=lab.PLOT)
    shown = table.assign(label=[classes[i] for i in table["label"]],
                         teacher=[classes[i] for i in table["teacher"]],
                         student=[classes[i] for i in table["student"]])
    st.dataframe(shown, hide_index=True, key="dk_gallery", column_config={
        "index": st.column_config.NumberColumn("test sample", format="%d"),
        "label": "true class",
        "p_teacher": st.column_config.NumberColumn("teacher p", format="%.3f"),
        "p_student": st.column_config.NumberColumn("student p", format="%.3f"),
        "kl": st.column_config.NumberColumn("KL(t‖s)", format="%.3f"),
    })


def main() -> None:
    sh.open_page("dark_knowledge")
    st.title("Dark knowledge")
    st.caption("What the teacher's soft targets say beyond the label: which classes look alike, "
               "and where the student still disagrees with its teacher.")
    store = sh.store()
    loaded = lab.pick_and_load_ui(
        K, lab.finished_runs(store),
        empty="No finished run with saved models yet. Train one on the Train page (Fashion-MNIST "
              "shows the richest similarities), or a quick one here.",
        quick=("dk_quick", "Two moons: only two classes, so the matrix is small."))
    if loaded is None:
        return
    rid, cfg, _, data = loaded
    c1, c2, c3 = st.columns([2, 1, 1])
    T = c1.slider("Temperature T", 0.5, 20.0, float(min(max(cfg.loss.temperature, 0.5), 20.0)), 0.5,
                  key=K("T"), bind=URL)
    student = c2.radio("Student", ["distilled", "baseline"], key=K("student"), bind=URL, horizontal=True)
    n = c3.number_input("Samples in the gallery", 6, 48, 12, 6, key=K("n"), bind=URL)
    t_log = lab.logits(rid, kdcore.distillation_target(cfg))  # the ensemble, with several teachers
    st.subheader("Which classes the teacher finds alike")
    similarity_ui(t_log, data, T)
    st.subheader("Where teacher and student disagree most")
    gallery_ui(t_log, lab.logits(rid, student), data, student, int(n))


main()
