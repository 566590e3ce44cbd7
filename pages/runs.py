"""Runs: the run history from SQLite — filter, overlay curves, compare, export, delete, replay."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from kdcore import ui_support as ui
from kdcore.live import active_run_ids
from pages import _charts as charts
from pages import _shared as sh

METRICS = {"val_acc": "validation accuracy", "train_acc": "training accuracy",
           "val_loss": "validation loss", "train_loss": "training loss"}


def filters_ui(table: pd.DataFrame) -> pd.DataFrame:
    """Status, dataset, kind and name filters; returns the rows that pass."""
    c1, c2, c3, c4 = st.columns(4)
    status = c1.multiselect("Status", sorted(table["status"].unique()), key="f_status")
    data = c2.multiselect("Dataset", sorted(table["dataset"].unique()), key="f_dataset")
    kind = c3.multiselect("Kind", sorted(table["kind"].unique()), key="f_kind")
    text = c4.text_input("Name or model contains", key="f_text")
    m = pd.Series(True, index=table.index)
    if status:
        m &= table["status"].isin(status)
    if data:
        m &= table["dataset"].isin(data)
    if kind:
        m &= table["kind"].isin(kind)
    if text:
        hay = table["name"].fillna("") + " " + table["teacher"] + " " + table["student"]
        m &= hay.str.contains(text, case=False, regex=False)
    return table[m]


def history_ui(table: pd.DataFrame) -> None:
    show = table.copy()
    for c in ("teacher_acc", "baseline_acc", "distilled_acc"):
        show[c] = show[c] * 100
    st.dataframe(show, hide_index=True, key="runs_table", column_config={
        "id": st.column_config.NumberColumn("run", format="%d"),
        "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        "teacher_acc": st.column_config.NumberColumn("teacher acc", format="%.2f %%"),
        "baseline_acc": st.column_config.NumberColumn("baseline acc", format="%.2f %%"),
        "distilled_acc": st.column_config.NumberColumn("distilled acc", format="%.2f %%"),
        "group": None,
    })


def pick_ui(table: pd.DataFrame) -> list[int]:
    ids = [int(i) for i in table["id"]]
    done = [int(i) for i in table.loc[table["status"] == "completed", "id"]]
    return st.multiselect("Runs to compare", ids, default=(done or ids)[:3], key="pick",
                          help="Their curves are overlaid and their numbers tabled below.")


def overlay_ui(store, ids: list[int]) -> None:
    metric = st.selectbox("Curve", list(METRICS), format_func=METRICS.get, key="overlay_metric")
    curves = {}
    for rid in ids:
        ep = store.epochs(rid)
        if ep.empty:
            continue
        for phase in ("baseline", "distilled"):
            rows = ep[ep["phase"] == phase]
            if len(rows):
                curves[f"#{rid} {phase}"] = rows[["epoch", metric]].to_dict("records")
    if not curves:
        st.info("The picked runs have no finished epochs yet.")
        return
    st.plotly_chart(charts.overlay_figure(curves, metric, f"{METRICS[metric].capitalize()} per epoch "
                                          "(solid: distilled, dashed: baseline)", "overlay"),
                    key="runs_overlay", config={"displaylogo": False})


def comparison_ui(store, ids: list[int]) -> None:
    df = ui.comparison_table(store, ids)
    for c in ("teacher acc", "baseline acc", "distilled acc", "distilled F1", "agreement"):
        df[c] = pd.to_numeric(df[c]) * 100
    st.dataframe(df, hide_index=True, key="runs_compare", column_config={
        **{c: st.column_config.NumberColumn(format="%.2f %%")
           for c in ("teacher acc", "baseline acc", "distilled acc", "distilled F1", "agreement")},
        "gain (points)": st.column_config.NumberColumn(format="%+.2f"),
        "distilled ECE": st.column_config.NumberColumn(format="%.4f"),
        "compression": st.column_config.NumberColumn(format="×%.0f"),
    })


def export_ui(store, ids: list[int]) -> None:
    c1, c2 = st.columns(2)
    c1.download_button("Per-epoch metrics + configs (CSV)", ui.runs_csv(store, ids),
                       file_name="kd_runs.csv", mime="text/csv", icon=":material/download:",
                       key="dl_csv", disabled=not ids)
    c2.download_button("Configs + final metrics (JSON)", ui.runs_json(store, ids),
                       file_name="kd_runs.json", mime="application/json", icon=":material/download:",
                       key="dl_json", disabled=not ids)


def replay_ui(store, ids: list[int]) -> None:
    rid = st.selectbox("Run", ids, key="replay_run")
    if rid is None:
        return
    st.code(ui.replay_command(rid, sh.runs_dir()), language="bash")
    st.caption("The CLI runs the stored config through the same code as this dashboard.")
    with st.expander(f"Config of run {rid}"):
        st.json(store.get(rid)["config"], expanded=False)


def _ask_delete(rid: int) -> None:
    st.session_state["confirm_delete"] = rid


def _delete(rid: int) -> None:
    st.session_state.pop("confirm_delete", None)
    if rid in active_run_ids():
        st.session_state["delete_msg"] = ("error", f"Run {rid} is training right now; stop it first.")
        return
    sh.store().delete(rid)
    st.session_state["delete_msg"] = ("success", f"Deleted run {rid} and its weights.")


def delete_ui(ids: list[int]) -> None:
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    rid = c1.selectbox("Run to delete", ids, key="delete_run")
    c2.button("Delete…", key="delete_ask", on_click=_ask_delete, args=(rid,), disabled=rid is None,
              icon=":material/delete:")
    pending = st.session_state.get("confirm_delete")
    if pending is not None:
        st.warning(f"Delete run {pending} and its saved weights? This cannot be undone.")
        c1, c2, _ = st.columns([1, 1, 4])
        c1.button(f"Yes, delete run {pending}", key="delete_yes", type="primary", on_click=_delete,
                  args=(pending,))
        c2.button("Cancel", key="delete_no", on_click=lambda: st.session_state.pop("confirm_delete", None))
    if msg := st.session_state.pop("delete_msg", None):
        getattr(st, msg[0])(msg[1])


def main() -> None:
    st.title("Runs")
    store = sh.store()
    st.caption(f"Every run started here or with the CLI, from `{store.path}`.")
    table = store.table()
    if table.empty:
        st.info("No runs yet. Start one on the Train page; it appears here as soon as it starts.")
        if msg := st.session_state.pop("delete_msg", None):
            getattr(st, msg[0])(msg[1])
        return
    shown = filters_ui(table)
    history_ui(shown)
    if shown.empty:  # no pickers over an empty list: they come back fresh when the filter clears
        st.info("No run matches these filters.")
        return
    st.subheader("Compare runs")
    ids = pick_ui(shown)
    if ids:
        overlay_ui(store, ids)
        comparison_ui(store, ids)
    st.subheader("Export")
    st.caption("The picked runs, or every run shown above when none is picked.")
    export_ui(store, ids or [int(i) for i in shown["id"]])
    st.subheader("Reproduce")
    replay_ui(store, [int(i) for i in shown["id"]])
    st.subheader("Delete")
    delete_ui([int(i) for i in shown["id"]])


main()
