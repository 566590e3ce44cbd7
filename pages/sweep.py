"""α × T sweep: a grid of distillation runs in the background that reuse one teacher and one
baseline; heatmaps of the distilled student's accuracy and its gain fill in as cells finish."""
from __future__ import annotations

import streamlit as st

from kdcore import DATASETS, ConfigError, DataConfig
from kdcore.lab import teaching as tg
from kdapp import ui
from kdapp.live import RunLimitReached
from kdapp.sweep_run import SweepRun
from kdcore.train.sweep import PRESET, SweepPlan
from kdapp import lab
from kdapp import shared as sh

K = sh.SCOPES["sweep"]  # this page's keys and URL parameters
URL = sh.URL
ALPHAS = [0.0, 0.1, 0.25, 0.3, 0.5, 0.75, 0.9, 1.0]
TEMPS = [1.0, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0, 10.0, 16.0, 20.0]
LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
# the widgets' values that reproduce kdcore.train.sweep.PRESET (also their defaults)
PRESET_VALUES = {
    "dataset": PRESET["dataset"], "subset": PRESET["train_subset"], "teacher": PRESET["teacher"][0],
    "teacher_params": "", "student": PRESET["student"][0],
    "student_params": ", ".join(map(str, PRESET["student"][1]["hidden"])),
    "teacher_epochs": PRESET["teacher_epochs"], "epochs": PRESET["epochs"], "lr": PRESET["lr"],
    "alphas": list(PRESET["alphas"]), "temps": list(PRESET["temps"]), "seed": 0,
}


def _load_preset() -> None:
    for k, v in PRESET_VALUES.items():
        st.session_state[K(k)] = v


def setup_ui() -> tuple[SweepPlan | None, bool]:
    """The grid's controls; returns (plan or None, data available)."""
    P = PRESET_VALUES
    names = DATASETS.names()
    c1, c2, c3, c4 = st.columns(4)
    dataset = c1.selectbox("Dataset", names, index=names.index(P["dataset"]), key=K("dataset"), bind=URL,
                           format_func=lambda n: DATASETS.get(n).title)
    subset = c2.number_input("Training subset (0 = all)", 0, 1_000_000, P["subset"], 1000, key=K("subset"),
                             bind=URL)
    lr = c3.select_slider("Learning rate", LRS, P["lr"], key=K("lr"), bind=URL)
    seed = c4.number_input("Seed", 0, 2**31 - 1, P["seed"], key=K("seed"), bind=URL)
    models = sh.models_for(dataset)
    c1, c2, c3, c4 = st.columns(4)
    teacher = c1.selectbox("Teacher", models, index=models.index(P["teacher"]) if P["teacher"] in models else 0,
                           key=K("teacher"), bind=URL)
    t_params = c2.text_input("Teacher params", P["teacher_params"], key=K("teacher_params"), bind=URL,
                             placeholder="default")
    student = c3.selectbox("Student", models, index=models.index(P["student"]) if P["student"] in models else 0,
                           key=K("student"), bind=URL)
    s_params = c4.text_input("Student params", P["student_params"], key=K("student_params"), bind=URL,
                             help="For mlp, the hidden widths, e.g. 32 or 30, 30.")
    c1, c2, c3, c4 = st.columns([1, 1, 2, 3])
    t_epochs = c1.number_input("Teacher epochs", 1, 500, P["teacher_epochs"], key=K("teacher_epochs"), bind=URL)
    epochs = c2.number_input("Student epochs", 1, 500, P["epochs"], key=K("epochs"), bind=URL)
    alphas = c3.multiselect("α values (rows)", ALPHAS, default=P["alphas"], key=K("alphas"), bind=URL,
                            help="α weighs the hard-label CE; 1 - α the teacher's soft term.")
    temps = c4.multiselect("T values (columns)", TEMPS, default=P["temps"], key=K("temps"), bind=URL)
    ok, msg = DATASETS.get(dataset).available(DataConfig(name=dataset))
    if not ok:
        st.warning(msg, icon=":material/download:")
    try:
        base = ui.build_config({
            "dataset": dataset, "subset": subset, "teacher": teacher, "teacher_params": t_params,
            "student": student, "student_params": s_params, "epochs": epochs, "teacher_epochs": t_epochs,
            "lr": lr, "teacher_lr": lr, "seed": seed, "T": (sorted(temps) or [4.0])[0],
            "alpha": (sorted(alphas) or [0.5])[0], "name": "sweep"})
        plan = SweepPlan(base, tuple(sorted(alphas)), tuple(sorted(temps)))
    except ConfigError as e:
        st.error(f"This sweep cannot run: {e}", icon=":material/error:")
        return None, ok
    return plan, ok


def _start(plan: SweepPlan) -> None:
    st.session_state.pop("sweep_error", None)
    holder = sh.session_runs()
    if holder.running:
        st.session_state["sweep_error"] = ("This session is already training; stop it or wait for it "
                                           "to finish before starting a sweep.")
        return
    try:
        holder.sweep = SweepRun(plan, store=holder.owned(sh.store())).start()
    except RunLimitReached as e:
        st.session_state["sweep_error"] = str(e)


def heatmaps_ui(cells: list[dict], alphas, temps, key: str, current=None) -> None:
    frame = tg.sweep_frame(cells)
    best = tg.best_cell(frame)
    acc = tg.sweep_grid(frame, "distilled", alphas=alphas, temps=temps) * 100
    gain = tg.sweep_grid(frame, "gain", alphas=alphas, temps=temps) * 100
    c1, c2 = st.columns(2)
    c1.plotly_chart(lab.sweep_figure(acc, "Distilled student: test accuracy (%)", fmt=".2f", best=best,
                                     diverging=False, rev=f"{key}_acc", current=current),
                    key=f"{key}_acc", config=lab.PLOT)
    c2.plotly_chart(lab.sweep_figure(gain, "Gain over the baseline (points)", fmt="+.2f", best=best,
                                     diverging=True, rev=f"{key}_gain", current=current),
                    key=f"{key}_gain", config=lab.PLOT)
    if best is not None:
        first = frame.dropna(subset=["baseline"]).iloc[0] if frame["baseline"].notna().any() else None
        base = f"; teacher {first['teacher']:.2%}, baseline {first['baseline']:.2%}" if first is not None else ""
        st.markdown(f"**Best cell ★:** α = {best['alpha']:g}, T = {best['T']:g}: distilled "
                    f"{best['distilled']:.2%} ({(best['gain'] or 0) * 100:+.2f} points){base}. One seed: "
                    "gaps under about half a point are within seed-to-seed noise.")
    with st.expander("Every cell"):
        st.dataframe(frame, hide_index=True, key=f"{key}_table", column_config={
            c: st.column_config.NumberColumn(format="%.4f") for c in ("teacher", "baseline", "distilled", "gain")})


def live_ui() -> None:
    if err := st.session_state.get("sweep_error"):
        st.error(err, icon=":material/block:")
    sweep = sh.session_runs().sweep
    if sweep is None:
        return
    polling = sweep.running

    @st.fragment(run_every=sh.POLL_S if polling else None)
    def panel() -> None:
        snap = sweep.snapshot()
        total = len(snap.alphas) * len(snap.temps)
        if snap.running:
            where = (f"cell {len(snap.cells) + 1} of {total} (α = {snap.current[0]:g}, T = {snap.current[1]:g}), "
                     f"{snap.phase or 'starting'}" if snap.current else "starting")
            st.progress(snap.progress, text=f"Sweep · {where} · {snap.progress:.0%} · "
                                            f"{sh.eta_text(snap.eta_s)}")
        elif snap.status == "completed":
            st.success(f"Sweep finished in {sh.fmt_seconds(snap.elapsed_s)}: {snap.message}. Every "
                       f"cell is in the run history (group {snap.group}).", icon=":material/check:")
        else:
            (st.info if snap.status == "stopped" else st.error)(
                f"Sweep {snap.status} after {sh.fmt_seconds(snap.elapsed_s)}: {snap.message}")
        heatmaps_ui(snap.cells, snap.alphas, snap.temps, "sweep_live", snap.current)
        if snap.done and polling:
            st.rerun(scope="app")

    st.subheader("This session's sweep")
    if polling:  # Stop outside the fragment that redraws twice a second (see sh.stop_button)
        _, c2 = st.columns([6, 1])
        with c2:
            sh.stop_button(sweep, K("stop"))
    panel()


def history_ui(store) -> None:
    live = sh.session_runs().sweep
    skip = live.group if live is not None else None  # this session's sweep is shown above
    groups = []
    for r in store.list(kind="sweep"):
        if r["grp"] and r["grp"] not in groups and r["grp"] != skip:
            groups.append(r["grp"])
    if not groups:
        return
    st.subheader("Earlier sweeps")
    group = st.selectbox("Sweep", groups, key=K("group"))
    cells = tg.sweep_cells_from_store(store, group)
    frame = tg.sweep_frame(cells)
    heatmaps_ui(cells, sorted(frame["alpha"].dropna().unique()), sorted(frame["T"].dropna().unique()),
                "sweep_hist")


def main() -> None:
    linked = sh.LINK in st.query_params  # a preset's link: show the setup it brings
    sh.open_page("sweep")
    st.title("α × T sweep")
    st.caption("Which mix of hard labels and soft targets, at which temperature, helps the student "
               "most? Each cell trains one distilled student; the teacher and the baseline are "
               "trained once and reused, since neither depends on α or T.")
    with st.expander("Set up the grid", expanded=sh.session_runs().sweep is None or linked):
        st.button("Load the small Fashion-MNIST preset", key="sweep_preset", on_click=_load_preset,
                  icon=":material/restart_alt:",
                  help=f"{len(PRESET['alphas'])} α × {len(PRESET['temps'])} T on a "
                       f"{PRESET['train_subset']:,}-image subset: under 5 minutes on 2 CPU cores.")
        plan, ok = setup_ui()
        n = len(plan.cells) if plan else 0
        busy = sh.session_runs().running
        st.button(f"Start the sweep ({n} cells)", type="primary", key="sweep_start",
                  icon=":material/play_arrow:", disabled=plan is None or not ok or busy,
                  on_click=_start, args=(plan,))
    live_ui()
    history_ui(sh.store())


main()
