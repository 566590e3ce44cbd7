"""Runs: the run history from SQLite — filter, overlay curves, compare, export, replay, compress, delete."""
from __future__ import annotations

import os
import pickle
import shlex
from typing import NamedTuple

import pandas as pd
import streamlit as st

from kdcore import ConfigError, DataUnavailable
from kdcore.errors import StoreUnavailable
from kdapp import ui
from kdcore.ship.compress import compression_table, load_run_model
from kdapp.live import RunLimitReached, active_run_ids
from kdcore.history.store import RESUMABLE
from kdapp import charts
from kdapp import shared as sh

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
    shares = ("teacher acc", "ensemble acc", "baseline acc", "distilled acc", "distilled F1", "agreement")
    for c in shares:
        df[c] = pd.to_numeric(df[c]) * 100
    if df["ensemble acc"].isna().all():
        df = df.drop(columns="ensemble acc")  # no multi-teacher run among these
    st.dataframe(df, hide_index=True, key="runs_compare", column_config={
        **{c: st.column_config.NumberColumn(format="%.2f %%") for c in shares},
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


def _resume(rid: int) -> None:
    """Resume button callback: the run trains on in this session's slot, shown on the Train page."""
    try:
        run = sh.store().resumable(rid)
        if not single_user() and run.get("owner") != sh.session_runs().owner:
            raise ConfigError(f"run {rid} was started by another session; on a shared server a session "
                              "resumes only its own runs")
        sh.session_runs().start(None, sh.store(), resume_id=rid)
    except (ConfigError, KeyError, StoreUnavailable, RunLimitReached) as e:
        st.session_state["resume_msg"] = ("error", str(e.args[0] if isinstance(e, KeyError) else e))
        return
    st.session_state["resume_msg"] = ("success", f"Resuming run {rid} from its last finished epoch.")


def resume_ui(shown: pd.DataFrame) -> None:
    """Runs whose process ended (interrupted) or that were stopped train on from their checkpoints."""
    ids = [int(i) for i in shown.loc[shown["status"].isin(RESUMABLE), "id"]]
    if not ids:
        st.caption("No interrupted or stopped run here. A run whose process ended (server restart, "
                   "killed CLI) or that was stopped can be resumed from its last finished epoch.")
    else:
        status = dict(zip(shown["id"].astype(int), shown["status"]))
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        rid = c1.selectbox("Run to resume", ids, key="resume_run", format_func=lambda i: f"{i} ({status[i]})")
        c2.button("Resume", key="resume_go", on_click=_resume, args=(rid,), icon=":material/play_arrow:",
                  disabled=sh.session_runs().running)
        st.caption("Finished phases are loaded; the phase that was cut short goes on from its last "
                   "finished epoch (weights, optimiser, schedule, random generators), so on the CPU it ends "
                   f"with the weights of an uninterrupted run. CLI: `{ui.cli_prefix(sh.runs_dir())} runs resume "
                   f"{rid}`.")
    if msg := st.session_state.pop("resume_msg", None):
        getattr(st, msg[0])(msg[1])
        if msg[0] == "success":
            st.page_link("pages/train.py", label="Watch it on the Train page", icon=":material/monitoring:")


def _ask_delete(rid: int) -> None:
    st.session_state["confirm_delete"] = rid


def single_user() -> bool:
    """Whether any session may delete any run: ``$KD_SINGLE_USER`` (1 or 0) if set, else when the
    server listens on this machine only (``server.address`` localhost, as .streamlit/config.toml ships)."""
    env = os.environ.get("KD_SINGLE_USER", "").strip()
    if env in ("0", "1"):
        return env == "1"
    return (st.get_option("server.address") or "") in ("localhost", "127.0.0.1", "::1")


def _delete(rid: int) -> None:
    st.session_state.pop("confirm_delete", None)
    if rid in active_run_ids():
        st.session_state["delete_msg"] = ("error", f"Run {rid} is training right now; stop it first.")
        return
    try:  # the store refuses a run another process trains, and (shared server) another session's run
        sh.store().delete(rid, owner=None if single_user() else sh.session_runs().owner)
    except (ConfigError, KeyError, StoreUnavailable) as e:
        st.session_state["delete_msg"] = ("error", str(e.args[0] if isinstance(e, KeyError) else e))
        return
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


# --- Compress a student --------------------------------------------------------------------------

PRUNE_SHARES = (0.3, 0.5, 0.7, 0.8, 0.9)
MODEL_PHASES = ("distilled", "baseline", "teacher")  # the order the picker offers them in
COMPRESS_LIMITS = (
    "Honest limits: int8 is PyTorch's dynamic quantization, which converts `nn.Linear` layers only "
    "(conv layers stay float32, so a conv net shrinks less), and quantized models run on the CPU only. "
    "Pruning zeroes the smallest weights but keeps dense tensors, so the plain size and the latency do "
    "not drop; only the compressed (zlib) size does. Latency is one batch of 128 on this server's CPU, "
    "accuracy is on the run's test split. On a very small model the int8 file can be larger than the "
    "original: the quantized layers' packing overhead outweighs the 3 bytes saved per weight. The trained "
    "model is never changed.")


class CompressJob(NamedTuple):
    """What one click measures; also the key of its result in the session."""
    run_id: int
    phase: str
    prune: tuple[float, ...]
    scope: str
    quantize: bool


def stored_phases(store, rid: int) -> list[str]:
    """The models of run ``rid`` whose weights are on disk: distilled first, extra teachers last."""
    extra = sorted((p.stem for p in store.run_dir(rid).glob("teacher_*.pt")),
                   key=lambda s: (len(s), s))
    return [p for p in MODEL_PHASES if store.weights_path(rid, p).is_file()] + extra


def compress_command(job: CompressJob, runs_dir: str) -> str:
    """The CLI line that prints the same table headless."""
    prune = shlex.quote(",".join(f"{a:g}" for a in job.prune))
    return (f"{ui.cli_prefix(runs_dir)} compress {job.run_id} --phase {job.phase} --prune {prune} "
            f"--scope {job.scope}" + ("" if job.quantize else " --no-quantize"))


def compress_choice_ui(store, table: pd.DataFrame) -> CompressJob | None:
    """Run, model and compression options; None when no finished run has weights to offer."""
    busy = active_run_ids()
    done = table[(table["status"] != "running") & ~table["id"].isin(busy)]
    phases = {int(r): stored_phases(store, int(r)) for r in done["id"]}
    ids = [r for r, ph in phases.items() if ph]
    bare = [r for r, ph in phases.items() if not ph]
    if not ids:
        if bare:
            st.error(f"Nothing to compress: {_runs(bare)} {'has' if len(bare) == 1 else 'have'} no saved "
                     "weights (the run stopped or failed before a model finished, or its files were "
                     f"deleted from `{store.root}`). Train a run on the Train page.")
        else:
            st.info("Runs still training are not offered; their models appear here when they finish.")
        return None
    if bare:
        st.caption(f"Not offered, no saved weights: {_runs(bare)}.")
    label = {int(r.id): f"#{r.id} · {r.student} on {r.dataset}" + (f" · {r.name}" if _named(r.name) else "")
             for r in done.itertuples()}
    c1, c2 = st.columns(2)
    rid = c1.selectbox("Run", ids, format_func=label.get, key="compress_run",
                       help="Finished runs with saved weights; runs still training are not offered.")
    phase = c2.selectbox("Model", phases[rid], key="compress_phase",
                         help="Only the models of this run whose weights were saved.")
    c1, c2, c3 = st.columns([3, 1, 1], vertical_alignment="bottom")
    shares = c1.multiselect("Pruning shares", PRUNE_SHARES, default=[0.5, 0.8], format_func="{:.0%}".format,
                            key="compress_prune", help="Share of the Linear/Conv weights set to zero, "
                            "smallest magnitude first; each share also gets a pruned + int8 row.")
    scope = c2.radio("Scope", ["global", "layer"], key="compress_scope", horizontal=True,
                     help="global: rank all layers' weights together; layer: that share of every layer.")
    quantize = c3.checkbox("int8 quantization", value=True, key="compress_quantize")
    return CompressJob(rid, phase, tuple(sorted(shares)), scope, quantize)


def _named(name) -> bool:
    return isinstance(name, str) and bool(name)


def _runs(ids: list[int]) -> str:
    return ("run " if len(ids) == 1 else "runs ") + ", ".join(str(i) for i in ids)


def _ask_compress(job: CompressJob) -> None:
    # on_click keeps the options the person saw when clicking, even if the page changes under them
    st.session_state["compress_request"] = job


def _measure(store, job: CompressJob) -> tuple[pd.DataFrame, int]:
    model, data, _ = load_run_model(store, job.run_id, job.phase)
    t = compression_table(model, data, prune_amounts=job.prune, scope=job.scope, quantize=job.quantize)
    return t, len(data.y_test)


def compression_result_ui(t: pd.DataFrame) -> None:
    mib = t["size_mb"].max() >= 1
    unit, scale = ("MiB", 1) if mib else ("KiB", 1024)
    show = pd.DataFrame({
        "variant": t["variant"], "accuracy": t["accuracy"] * 100, "change": t["accuracy_change"],
        "size": t["size_mb"] * scale, "zlib size": t["size_gzip_mb"] * scale, "smaller": t["size_ratio"],
        "sparsity": t["sparsity"] * 100, "latency": t["latency_ms"], "speedup": t["speedup"]})
    size = "%.1f " + unit if mib else "%.2f " + unit
    st.dataframe(show, hide_index=True, key="compress_table", column_config={
        "accuracy": st.column_config.NumberColumn("test accuracy", format="%.2f %%"),
        "change": st.column_config.NumberColumn("change (points)", format="%+.2f"),
        "size": st.column_config.NumberColumn("size", format=size, help="torch.save(state_dict) on disk"),
        "zlib size": st.column_config.NumberColumn(format=size, help="the same file, zlib level 6"),
        "smaller": st.column_config.NumberColumn("size ×", format="×%.1f", help="original ÷ this size"),
        "sparsity": st.column_config.NumberColumn(format="%.1f %%", help="zeros among Linear/Conv weights"),
        "latency": st.column_config.NumberColumn("CPU latency", format="%.3f ms"),
        "speedup": st.column_config.NumberColumn(format="×%.2f"),
    })


def _job_ui(prefix: str, job, *, button: str, icon: str, ask, spinner: str, work, keep: int,
            failed: str, unreadable: str):
    """What the Compress and Ship sections share: the button files a request (``ask``), the request
    runs once under a spinner, and its result is kept per job in the session (the newest ``keep``).

    Returns:
        The result of ``job`` if it has one, else None.
    """
    st.button(button, key=f"{prefix}_go", type="primary", on_click=ask, args=(job,), icon=icon)
    results = st.session_state.setdefault(f"{prefix}_results", {})
    asked = st.session_state.pop(f"{prefix}_request", None)
    if asked is not None and asked not in results:
        what = f"run {asked.run_id}'s {asked.phase} model"
        try:
            with st.spinner(spinner.format(what=what)):
                results[asked] = work(asked)
            while len(results) > keep:  # drop the oldest
                results.pop(next(iter(results)))
        except (ConfigError, DataUnavailable, KeyError) as e:
            st.error(f"Could not {failed} {what}: {e.args[0] if isinstance(e, KeyError) else e}")
        except (OSError, RuntimeError, pickle.UnpicklingError) as e:  # unreadable or mismatched weights file
            st.error(f"Could not {unreadable} {what}: {e}")
    return results.get(job)


def compress_ui(store, table: pd.DataFrame) -> None:
    job = compress_choice_ui(store, table)
    if job is None:
        return
    done = _job_ui("compress", job, button="Measure compression", icon=":material/compress:",
                   ask=_ask_compress, spinner="Quantizing, pruning and timing {what}…",
                   work=lambda j: _measure(store, j), keep=16,  # a few tiny tables per session
                   failed="compress", unreadable="load the saved weights of")
    if done is not None:
        t, n_test = done
        st.caption(f"Run {job.run_id}, {job.phase} model, test set of {n_test}, everything on the CPU.")
        compression_result_ui(t)
    st.caption(COMPRESS_LIMITS)
    st.code(compress_command(job, sh.runs_dir()), language="bash")
    st.caption("The CLI runs the same measurement headless and prints the same table.")


# --- Ship a student: ONNX + safetensors, verified with onnxruntime -------------------------------

SHIP_VARIANTS = {"float32": "float32 (as trained)", "int8": "int8 (dynamic, Linear/MatMul layers)",
                 "pruned:0.5": "pruned 50 %", "pruned:0.8": "pruned 80 %",
                 "pruned:0.5+int8": "pruned 50 % + int8"}


class ShipJob(NamedTuple):
    """What one Export click makes; also the key of its result in the session."""
    run_id: int
    phase: str
    variant: str


def ship_choice_ui(store, table: pd.DataFrame) -> ShipJob | None:
    """Run, model and variant to export; None when no finished run has saved weights."""
    busy = active_run_ids()
    done = table[(table["status"] != "running") & ~table["id"].isin(busy)]
    phases = {int(r): stored_phases(store, int(r)) for r in done["id"]}
    ids = [r for r, ph in phases.items() if ph]
    if not ids:
        st.info("No finished run with saved weights yet; train one on the Train page.")
        return None
    label = {int(r.id): f"#{r.id} · {r.student} on {r.dataset}" + (f" · {r.name}" if _named(r.name) else "")
             for r in done.itertuples()}
    c1, c2, c3 = st.columns(3)
    rid = c1.selectbox("Run", ids, format_func=label.get, key="ship_run")
    phase = c2.selectbox("Model", phases[rid], key="ship_phase")
    variant = c3.selectbox("Variant", list(SHIP_VARIANTS), format_func=SHIP_VARIANTS.get, key="ship_variant",
                           help="As in the compression table above. int8 is onnxruntime's dynamic "
                                "quantization of the ONNX graph, checked against PyTorch's int8 model; "
                                "its .safetensors is not offered (int8 layers keep packed parameters).")
    return ShipJob(rid, phase, variant)


def _ask_ship(job: ShipJob) -> None:
    st.session_state["ship_request"] = job


def ship_command(job: ShipJob, runs_dir: str) -> str:
    """The CLI line that writes and verifies the same files headless."""
    fmt = " --format onnx" if "int8" in job.variant else ""
    return (f"{ui.cli_prefix(runs_dir)} export {job.run_id} --phase {job.phase} "
            f"--variant {shlex.quote(job.variant)}{fmt} --out export")


def ship_result_ui(res) -> None:
    from kdcore.ship.export import AGREEMENT_TARGET

    v = res.verification
    if v:
        line = (f"onnxruntime and PyTorch pick the same class on **{v['agreement']:.3%}** of the {v['n']} "
                f"test samples; largest logit difference **{v['max_abs_logit_diff']:.2g}**.")
        if not res.target_applies:
            st.info(line + " (int8: onnxruntime's quantization against PyTorch's; the two round "
                    "differently, so agreement is reported, not required.)", icon=":material/info:")
        elif res.verified:
            st.success(line + f" Target ≥ {AGREEMENT_TARGET:.1%}: met.", icon=":material/verified:")
        else:
            st.error(line + f" Target ≥ {AGREEMENT_TARGET:.1%}: **not met**; do not ship this file.",
                     icon=":material/error:")
        st.dataframe(pd.DataFrame({
            "runtime": ["onnxruntime", "PyTorch"],
            "test accuracy": [v["onnx_accuracy"] * 100, v["torch_accuracy"] * 100],
            "CPU latency": [v["onnx_latency_ms"], v["torch_latency_ms"]]}), hide_index=True, key="ship_table",
            column_config={"test accuracy": st.column_config.NumberColumn(format="%.2f %%"),
                           "CPU latency": st.column_config.NumberColumn(
                               format="%.3f ms", help=f"one batch of {v['latency_batch']}, "
                                                      f"{v['threads']} thread(s), median of 20")})
    cols = st.columns(max(len(res.files), 1))
    for col, (name, content) in zip(cols, res.files.items()):
        kind = "ONNX" if name.endswith(".onnx") else "safetensors + config"
        col.download_button(f"{kind}: {name} ({len(content) / 1024:.1f} KiB)", content, file_name=name,
                            mime="application/octet-stream", icon=":material/download:",
                            key=f"ship_dl_{name.rsplit('.', 1)[1]}")


def ship_ui(store, table: pd.DataFrame) -> None:
    job = ship_choice_ui(store, table)
    if job is None:
        return

    def work(j: ShipJob):
        from kdcore.ship.export import export_run

        formats = ("onnx",) if "int8" in j.variant else ("onnx", "safetensors")
        return export_run(store, j.run_id, j.phase, j.variant, formats=formats)

    done = _job_ui("ship", job, button="Export and verify", icon=":material/deployed_code:", ask=_ask_ship,
                   spinner="Exporting {what} and checking it with onnxruntime on the test split…",
                   work=work, keep=8,  # files are kept for their download buttons
                   failed="export", unreadable="export")
    if done is not None:
        ship_result_ui(done)
    st.code(ship_command(job, sh.runs_dir()), language="bash")
    st.caption("The CLI writes the same files and prints the same check. The .safetensors file carries "
               "the model's config, classes and input normalisation in its metadata; "
               "`kdcore.history.weights.load_model_file(path)` rebuilds the model from it.")


def main() -> None:
    sh.open_page("runs")
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
    st.subheader("Compress a student")
    st.caption("Int8 quantization and magnitude pruning of a trained model: size, CPU latency and "
               "test accuracy before and after.")
    compress_ui(store, shown)
    st.subheader("Ship a student")
    st.caption("A trained model as ONNX (checked with onnxruntime on the run's test split) and as a "
               ".safetensors state_dict with its config, to download.")
    ship_ui(store, shown)
    st.subheader("Resume")
    resume_ui(shown)
    st.subheader("Delete")
    delete_ui([int(i) for i in shown["id"]])


main()
