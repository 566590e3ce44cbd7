"""The omitted class (Hinton, Vinyals & Dean 2015, §3): students that never see one class, and how
much of it the distilled one still knows — before and after raising that class's bias."""
from __future__ import annotations

import streamlit as st

from kdcore import DATASETS, ConfigError, DataConfig
from kdcore.lab import teaching as tg
from kdcore.metrics import per_class_accuracy
from kdapp import lab
from kdapp import shared as sh

K = sh.SCOPES["omitted_class"]  # this page's keys and URL parameters
URL = sh.URL
SETS = ["fashion_mnist", "mnist", "cifar10", "blobs", "spirals"]  # at least three classes
PAPER = ("Hinton et al. (MNIST, digit 3 omitted, 800-800 student): **206** test errors, **133** of "
         "them on the 1010 threes; after raising the 3's bias by **3.5**: **109** errors, **14** on "
         "threes (98.6 % of threes right).")


def setup_ui() -> tuple[object | None, bool]:
    """The experiment's controls; returns (RunConfig or None, data available)."""
    c1, c2, c3, c4 = st.columns(4)
    name = c1.selectbox("Dataset", SETS, key=K("dataset"), bind=URL, format_func=lambda n: DATASETS.get(n).title)
    spec = DATASETS.get(name)
    dcfg = DataConfig(name=name)
    classes = spec.class_names(dcfg)
    default = 3 if len(classes) > 3 else len(classes) - 1
    omit = c2.selectbox("Class to omit", list(range(len(classes))), index=default, key=K("omit"), bind=URL,
                        format_func=lambda i: f"{i}: {classes[i]}")
    image = spec.kind == "image"
    subset = c3.number_input("Training subset (0 = all)", 0, 100_000, 0, 1000,
                             key=K("subset"), bind=URL)
    student = c4.text_input("Student hidden widths", "512, 512" if image else "16", key=K("student"), bind=URL)
    c1, c2, c3, c4 = st.columns(4)
    t_epochs = c1.number_input("Teacher epochs", 1, 200, 5 if image else 20, key=K("teacher_epochs"), bind=URL)
    epochs = c2.number_input("Student epochs", 1, 200, 8 if image else 20, key=K("epochs"), bind=URL)
    T = c3.slider("Temperature T", 1.0, 20.0, 8.0, 0.5, key=K("T"), bind=URL)
    alpha = c4.slider("α (hard-label weight)", 0.0, 1.0, 0.1, 0.05, key=K("alpha"), bind=URL,
                      help="Low α: the students learn mostly from the teacher, as in the paper.")
    ok, msg = spec.available(dcfg)
    if not ok:
        st.warning(msg, icon=":material/download:")
    try:
        hidden = [int(h) for h in student.replace(" ", "").split(",") if h]
        if not hidden:
            raise ValueError
        cfg = tg.omitted_class_config(
            name, omit, train_subset=int(subset), student_hidden=hidden, epochs=int(epochs),
            teacher_epochs=int(t_epochs), T=float(T), alpha=float(alpha),
            teacher=("cnn", {}) if image else ("mlp", {"hidden": [128, 128]}),
            lr=1e-3 if image else 1e-2)
    except ValueError:
        st.error(f"Student hidden widths: write positive integers separated by commas, e.g. 512, 512 "
                 f"(got {student!r}).", icon=":material/error:")
        return None, ok
    except ConfigError as e:
        st.error(f"This setup cannot run: {e}", icon=":material/error:")
        return None, ok
    return cfg, ok


def results_ui(rid: int) -> None:
    loaded = lab.load_run(rid)
    if loaded is None:
        return
    cfg, models, data = loaded
    k, cls = len(data.classes), cfg.data.omit_class
    name = data.classes[cls]
    test = {p: lab.logits(rid, p, "test") for p in ("teacher", "baseline", "distilled")}
    s = tg.omitted_summary(test, data.y_test, cls, lab.logits(rid, "distilled", "val"), data.y_val)
    n = s["class_total"]

    accs = {p: per_class_accuracy(z, data.y_test, k) for p, z in test.items()}
    st.plotly_chart(lab.per_class_figure(data.classes, accs, cls), key="oc_perclass", config=lab.PLOT)
    m = s["models"]
    cols = st.columns(3)
    for col, phase in zip(cols, ("teacher", "baseline", "distilled")):
        col.metric(f"{phase}: errors on {name!r}", f"{m[phase]['class_errors']} of {n}",
                   help=f"{m[phase]['errors']} test errors in all, of {len(data.y_test)}")
    st.caption(f"The teacher saw every class. Neither student saw a single {name!r} in training: "
               f"the baseline gets {n - m['baseline']['class_errors']} of {n} right, the distilled "
               f"student {n - m['distilled']['class_errors']}, knowing the class only from the "
               f"teacher's soft targets on the other classes' images (T = {cfg.loss.temperature:g}, "
               f"α = {cfg.loss.alpha:g}).")

    st.subheader(f"Raise the {name!r} output's bias")
    val_best = s["val_best"]["delta"]
    delta = st.slider(f"Bias added to the {name!r} logit", -2.0, 15.0, 0.0, 0.25, key=K("bias"), bind=URL,
                      help=f"On the validation split (which holds the class) the best is {val_best:+g}.")
    now = tg.bias_sweep(test["distilled"], data.y_test, cls, [delta]).iloc[0]
    c1, c2, c3 = st.columns(3)
    moved = delta != 0
    c1.metric(f"distilled: accuracy on {name!r}", f"{now['class_accuracy']:.1%}",
              f"{(now['class_accuracy'] - m['distilled']['class_accuracy']) * 100:+.1f} points" if moved else None)
    c2.metric("distilled: test errors", f"{int(now['errors'])}",
              f"{int(now['errors']) - m['distilled']['errors']:+d}" if moved else None, delta_color="inverse")
    c3.metric(f"other images now called {name!r}", f"{int(now['false_positives'])}")
    tables = {"distilled": s["sweep"],
              "baseline": tg.bias_sweep(test["baseline"], data.y_test, cls, tg.BIAS_DELTAS)}
    st.plotly_chart(lab.bias_figure(tables, delta, name), key="oc_bias", config=lab.PLOT)
    tb, vb = s["test_best"], s["val_best"]
    st.markdown(
        f"**This run:** the distilled student makes **{m['distilled']['errors']}** test errors, "
        f"**{m['distilled']['class_errors']}** of them on the {n} {name!r} images. The bias that is "
        f"best on the validation split, {vb['delta']:+g}, gives **{vb['errors']}** errors, "
        f"**{vb['class_errors']}** on {name!r}; the best on the test set itself (what the paper "
        f"reports), {tb['delta']:+g}, gives {tb['errors']} and {tb['class_errors']}.  \n**Paper:** "
        + PAPER)
    best_base = tables["baseline"]["accuracy"].max()
    best_dist = tables["distilled"]["accuracy"].max()
    st.caption("Why it works: the hard-label term pushes the unseen class's output down on every "
               "training image, so its bias ends up too low, while the weights that recognise the "
               "class came from the teacher's soft targets; raising the bias alone brings it back. "
               f"Moving the bias can also make the baseline name {name!r}, but only by calling other "
               f"images that too: the best overall test accuracy a bias reaches is "
               f"{best_dist:.1%} for the distilled student and {best_base:.1%} for the baseline.")


def main() -> None:
    sh.open_page("omitted_class")
    st.title("The omitted class")
    st.caption("Distil a student on a transfer set that lacks one class entirely, then see how "
               "much of that class it still recognises (Hinton, Vinyals & Dean 2015, §3).")
    store = sh.store()
    runs = lab.finished_runs(store, lambda r: r["config"]["data"].get("omit_class", -1) >= 0)
    linked = any(K(k) in st.query_params for k in ("dataset", "omit", "subset", "epochs"))
    with st.expander("Run the experiment", expanded=linked or not runs):
        cfg, ok = setup_ui()
        busy = sh.session_runs().running
        st.button("Start", type="primary", key="oc_start", icon=":material/play_arrow:",
                  disabled=cfg is None or not ok or busy, on_click=lab.start_run, args=(cfg,))
        st.caption("The documented Fashion-MNIST setting (the defaults) takes a few minutes on 2 "
                   "CPU cores; set a training subset for a quicker look. It trains in this "
                   "session's worker, so the Train page shows its live curves.")
    lab.session_run_ui("oc_run", "Omitted-class run")

    rid = lab.run_pick_ui(runs, K, "Omitted-class run")
    if rid is None:
        st.info("No finished omitted-class run yet: open **Run the experiment** above and press "
                "Start.", icon=":material/info:")
        st.markdown(PAPER)
        return
    results_ui(rid)


main()
