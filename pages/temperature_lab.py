"""Temperature lab: what softmax(z/T) does to logits you type or drag, and to a real teacher's;
entropy and effective classes against T; KL(teacher ‖ student) against T; and why the soft
term is multiplied by T²."""
from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from kdcore import ConfigError
from kdcore.lab import teaching as tg
from kdapp import lab
from kdapp import shared as sh

K = sh.SCOPES["temperature_lab"]  # this page's keys and URL parameters
URL = sh.URL
DEFAULT_LOGITS = "5, 2.5, 1, 0, -1"
TEMPS = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
SOURCES = ["typed logits", "a trained teacher"]
DRAG = 10.0  # the drag sliders' range, ±


def _text_to_sliders() -> None:
    """The text box changed: the drag sliders follow on this run (see logits_ui)."""
    st.session_state.pop("temp_logit_error", None)


def _slider_to_text(n: int) -> None:
    st.session_state[K("logits")] = ", ".join(f"{st.session_state[K(f'drag_{i}')]:g}" for i in range(n))


def typed_logits_ui() -> list[float]:
    """Logits from the text box, which the drag sliders below edit too."""
    text = st.text_input("Logits, one per class (type, or drag below)", DEFAULT_LOGITS, key=K("logits"),
                         bind=URL, on_change=_text_to_sliders,
                         help="Any real numbers: the softmax only cares about their differences.")
    try:
        values = tg.parse_logits(text)
    except ConfigError as e:
        st.error(f"{e}. Showing the default logits instead.", icon=":material/error:")
        values = tg.parse_logits(DEFAULT_LOGITS)
    with st.expander("Drag the logits", expanded=False):
        cols = st.columns(min(len(values), 5))
        for i, v in enumerate(values):
            st.session_state[K(f"drag_{i}")] = float(min(max(v, -DRAG), DRAG))  # follow the text
            cols[i % len(cols)].slider(f"z{i + 1}", -DRAG, DRAG, step=0.1, key=K(f"drag_{i}"),
                                       on_change=_slider_to_text, args=(len(values),))
    return values


def sample_ui(n: int, t_logits: torch.Tensor) -> int:
    h = tg.entropy(tg.soft_targets(t_logits, 1.0))
    unsure = torch.argsort(h, descending=True)[:3].tolist()
    if st.session_state.get(K("sample"), 0) > n - 1:  # a run with a smaller test set was picked
        st.session_state[K("sample")] = n - 1
    return int(st.number_input("Test sample", 0, n - 1, unsure[0], key=K("sample"), bind=URL,
                               help=f"0 to {n - 1}. The teacher is least sure about samples "
                                    f"{', '.join(map(str, unsure))}; a sure sample shows T's effect "
                                    "only at high T."))


def show_sample(data, i: int, t_logits: torch.Tensor) -> None:
    classes = list(data.classes)
    y = int(data.y_test[i])
    p = tg.soft_targets(t_logits[i], 1.0)
    text = (f"Sample #{i}: true class **{classes[y]}**; the teacher says **{classes[int(p.argmax())]}** "
            f"({float(p.max()):.1%}).")
    if data.kind == "image":
        img = data.unnormalize(data.x_test[i]).clamp(0, 1).permute(1, 2, 0).numpy()
        c1, c2 = st.columns([1, 6])
        c1.image(img, width=84, clamp=True)
        c2.markdown(text)
    else:
        st.markdown(text + f" Point ({float(data.x_test[i, 0]):.2f}, {float(data.x_test[i, 1]):.2f}).")


def temperature_ui(z: torch.Tensor, classes: list[str]) -> float:
    c1, c2 = st.columns([2, 3])
    T = c1.slider("Temperature T", 0.1, 30.0, 4.0, 0.1, key=K("T"), bind=URL,
                  help="softmax(z/T): T = 1 is the ordinary softmax; higher T is softer.")
    temps = c2.multiselect("Overlay also T =", TEMPS, default=[1.0, 8.0], key=K("temps"), bind=URL)
    shown = sorted({*temps, T})
    p = tg.soft_targets(z, T)
    h = float(tg.entropy(p))
    m1, m2, m3, m4 = st.columns(4)
    m1.metric(f"Entropy at T = {T:g}", f"{h:.3f} nats")
    m2.metric("Effective classes exp(H)", f"{float(tg.effective_classes(p)):.2f} of {len(classes)}")
    m3.metric("Top probability", f"{float(p.max()):.1%}")
    m4.metric("Top probability at T = 1", f"{float(tg.soft_targets(z, 1.0).max()):.1%}")
    left, right = st.columns(2)
    left.plotly_chart(lab.temperature_figure(tg.temperature_table(z, shown, classes), T), key="temp_bars",
                      config=lab.PLOT)
    prof = tg.temperature_profile(z, tg.log_temperatures(0.1, 100.0, 61))
    right.plotly_chart(lab.entropy_figure(prof, len(classes), T), key="temp_entropy", config=lab.PLOT)
    st.caption("Dividing the logits by T shrinks their differences: at T → 0 the softmax puts "
               "everything on the top class (1 effective class), at T → ∞ it spreads evenly "
               f"({len(classes)} effective classes, entropy log {len(classes)} = "
               f"{np.log(len(classes)):.2f} nats). In between, the "
               "small probabilities of the wrong classes grow large enough for a student to learn "
               "from — that is the teacher's dark knowledge.")
    return T


def pair_ui(rid: int, cfg, T: float) -> None:
    st.subheader("A trained pair: KL(teacher ‖ student) as T changes")
    t_log = lab.logits(rid, "teacher")
    temps = tg.log_temperatures(0.25, 64.0, 41)
    curves = {p: tg.kl_vs_temperature(t_log, lab.logits(rid, p), temps) for p in ("distilled", "baseline")}
    st.plotly_chart(lab.kl_figure(curves, cfg.loss.temperature), key="temp_kl", config=lab.PLOT)
    st.caption(f"Run {rid}'s distilled student was trained to match the teacher at "
               f"T = {cfg.loss.temperature:g} (α = {cfg.loss.alpha:g}); the baseline never saw the "
               "teacher. Every KL falls towards 0 at high T because both distributions approach "
               "uniform — one more reason the soft term needs its T² (below).")


def gradient_ui(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None,
                T: float, where: str) -> None:
    st.subheader("Why T²")
    df = tg.soft_gradient_vs_temperature(student, teacher, tg.log_temperatures(0.25, 64.0, 41), labels)
    st.plotly_chart(lab.gradient_figure(df, T), key="temp_grad", config=lab.PLOT)
    row = df.iloc[(df["T"] - T).abs().argsort().iloc[0]]
    st.caption(f"{where} The gradient of KL(σ(z_t/T) ‖ σ(z_s/T)) on the student's logits is "
               "(σ(z_s/T) − σ(z_t/T)) / T, and for large T the difference of the two softmaxes "
               "shrinks like 1/T as well: without T² the soft term's pull fades like 1/T² "
               f"(here {row['without_t2']:.2g} at T ≈ {row['T']:.2g}, against "
               f"{row['with_t2']:.2g} with T²). With T² it levels off instead, at the scale of "
               "the hard-label term (dashed), so raising T does not quietly hand all the weight to "
               "the labels whatever α says. Computed by autograd through kdcore's own loss (kd_div).")


def main() -> None:
    sh.open_page("temperature_lab")
    st.title("Temperature lab")
    st.caption("What the temperature T does to a softmax, on logits you type or drag and on a "
               "real teacher's outputs.")
    store = sh.store()
    runs = lab.finished_runs(store)
    c1, c2 = st.columns([1, 2])
    source = c1.radio("Logits from", SOURCES, key=K("source"), bind=URL, horizontal=True)
    with c2:
        rid = lab.run_pick_ui(runs, K, "Trained pair from the run history")
        if rid is None:
            st.info("No finished run with saved models yet: train one on the Train page, or here.")
            lab.quick_pair_ui("temp_quick", "Trains a 128-128 teacher and two 8-unit students "
                                            "in this session's worker and stores them in the history.")
    loaded = lab.load_run(rid) if rid is not None else None

    if source == SOURCES[0] or loaded is None:
        if source != SOURCES[0]:
            st.info("A trained teacher is needed for its logits; showing typed logits meanwhile.")
        z = torch.tensor(typed_logits_ui(), dtype=torch.float64)
        classes = [f"class {i + 1}" for i in range(len(z))]
    else:
        cfg, models, data = loaded
        t_log = lab.logits(rid, "teacher")
        i = sample_ui(len(t_log), t_log)
        show_sample(data, i, t_log)
        z, classes = t_log[i].double(), list(data.classes)
    T = temperature_ui(z, classes)

    if loaded is not None:
        cfg, _, data = loaded
        pair_ui(rid, cfg, T)
        n = min(2000, len(data.y_test))
        gradient_ui(lab.logits(rid, "distilled")[:n], lab.logits(rid, "teacher")[:n], data.y_test[:n], T,
                    f"On {n} test samples of run {rid} (teacher vs its distilled student).")
    else:
        gradient_ui(torch.zeros_like(z), z, None, T,
                    "For the logits above as the teacher and a student that outputs all zeros.")
    st.page_link("pages/soft_targets.py", label="See the teacher's and student's bars side by side on "
                 "the Soft targets page", icon=":material/bar_chart:")


main()
