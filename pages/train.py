"""Train: pick data, teacher, student and loss; start a run; watch it live; read the verdict.

Every control that defines the run is bound to the URL, so a link reproduces the setup.
The run trains in this session's background worker (kdapp.live); while it trains only two
fragments redraw: the progress line every PROGRESS_S and the charts every CHART_S.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import streamlit as st

import kdcore
from kdcore import DATASETS, LOSSES, METHOD_INFO, MULTI_TEACHER_INFO, ConfigError, DataConfig, RunConfig
from kdapp import ui
from kdcore.data import teacher_overlap
from kdcore.train.experiment import arm_descriptions, find_trained_teacher, little_to_distil
from kdcore.stats import verdict_word
from kdapp.live import LiveSeeds, RunLimitReached
from kdcore.methods.ensemble import normalise_weights
from kdapp import charts
from kdapp import shared as sh

D = RunConfig()  # the defaults every unset control falls back to (and the CLI uses)
MAX_SEEDS = 10  # students repeated over at most this many seeds in one run
DEFAULT_SEEDS = 3  # the verdict over seeds needs at least two; three is the usual minimum
LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0]
BATCHES = [8, 16, 32, 64, 128, 256, 512, 1024]
SAMPLES = [200, 500, 1000, 2000, 5000, 10000, 20000]
TEACHER_FROM = {"train new": "train", "from history": "run", "upload .pt": "file"}
EXTRA_FROM = {"train new": "train", "from history": "run"}  # extra teachers (uploads: CLI, file:<path>)
MAX_EXTRA_TEACHERS = 3
OWN_DATA = ("image_folder", "csv")  # datasets read from a data-root entry or an upload (kdcore.data.own)
IMAGE_SIZES = [8, 16, 24, 28, 32, 48, 64, 96, 128, 224]
ZIP_UPLOAD_MB = 200  # an uploaded zip of images; unpacked with kdcore.data.own's own limits too
CSV_UPLOAD_MB = 64
K = sh.SCOPES["train"]  # this page's keys and URL parameters (bare names: the app's root page)
URL = sh.URL
# While a run trains, two fragments poll. Each chart redraw remounts Plotly in the browser, and a
# poll that is running when the user changes a widget delays that rerun; on a 2-core machine
# these cadences keep both the curves live and the page quick to answer.
PROGRESS_S = 1.0  # seconds between progress-line redraws
CHART_S = 2.0  # seconds between chart redraws
NO_DATA: dict = {}  # the charts before any run (one object, so its figures are built once)
SMOOTH = 0.9  # the smoothing toggle's moving-average weight
FIRST_POINT_WAIT_S = 0.5  # the Start rerun waits this long at most for the run's first step


# --------------------------------------------------------------------------------------------
# Controls: each *_ui() draws its widgets and returns plain values


def dataset_ui() -> dict:
    names = DATASETS.names()
    name = st.selectbox("Dataset", names, index=names.index(D.data.name), key=K("dataset"), bind=URL,
                        format_func=lambda n: DATASETS.get(n).title,
                        help="2-D sets train in seconds; image sets need their files on disk.")
    spec = DATASETS.get(name)
    v = {"dataset": name}
    if spec.kind == "2d":
        v["noise"] = st.slider("Noise (class overlap)", 0.0, 1.0, D.data.noise, 0.05, key=K("noise"), bind=URL)
        v["samples"] = st.select_slider("Points", SAMPLES, D.data.n_samples, key=K("samples"), bind=URL,
                                        help="Total points; 20 % are the test set, 10 % of the rest "
                                             "validation.")
        if not spec.fixed_classes:
            v["classes"] = st.slider("Classes", 2, 10, D.data.n_classes, key=K("classes"), bind=URL)
    elif name in OWN_DATA:
        v.update(own_data_ui(name))
    else:
        v["download"] = st.checkbox("Download if missing (needs internet)", False, key=K("download"), bind=URL)
    v["subset"] = st.number_input("Training subset (0 = all)", 0, 1_000_000, D.data.train_subset, 500,
                                  key=K("subset"), bind=URL,
                                  help="Train on a seeded random subset for a quicker run.")
    v.update(labels_ui())
    try:
        ok, msg = spec.available(_data_config(name, v))
    except ConfigError as e:  # own data whose file cannot be used: the message names it
        ok, msg = False, str(e)
    if ok:
        st.caption(msg)
    else:
        st.warning(msg, icon=":material/download:")
    v["_available"] = ok
    return v


def labels_ui() -> dict:
    """How many training labels the students get; the teacher always learns from all of them."""
    n = int(st.number_input(
        "Labelled samples for the students (0 = all)", 0, 10_000_000, D.data.labelled, key=K("labelled"),
        bind=URL, help="The teacher trains on the whole training split; the baseline and the distilled "
                       "student get the labels of only this many samples (a seeded draw from the data "
                       "seed). Validation and test never change."))
    c1, c2 = st.columns(2)
    balanced = c1.checkbox("Balanced", D.data.balanced, key=K("balanced"), bind=URL,
                           disabled=n == 0, help="Draw the labelled samples class by class: the same number of each.")
    transfer = c2.checkbox("Transfer set", D.data.transfer_set, key=K("transfer_set"), bind=URL,
                           disabled=n == 0,
                           help="The distilled student also gets the teacher's soft targets on the rest of "
                                "the training split, without its labels (Hinton et al. 2015, §2). The "
                                "baseline never sees those samples.")
    ratio = st.number_input("Transfer-set images per labelled image in each step", 1, 64,
                            D.data.transfer_ratio, key=K("transfer_ratio"), bind=URL,
                            disabled=n == 0 or not transfer,
                            help="Each step takes a batch of labelled samples and this many times as many "
                                 "transfer-set samples; an epoch is one pass over the labelled samples, so "
                                 "every student takes the same number of steps.")
    pseudo = st.checkbox("Add a third student: the teacher's hard labels on the transfer set", D.pseudo_arm,
                         key=K("pseudo_arm"), bind=URL, disabled=n == 0 or not transfer,
                         help="The same student, trained alone on the labelled samples plus the "
                              "teacher's argmax label on every transfer-set sample: what the teacher's "
                              "answer alone is worth, so the distilled student shows what soft targets add.")
    return {"labelled": n, "balanced": balanced and n > 0, "transfer_set": transfer and n > 0,
            "transfer_ratio": int(ratio), "pseudo_arm": pseudo and transfer and n > 0}


def _data_config(name: str, v: dict) -> DataConfig:
    """The DataConfig of the data picked so far; own data's is kept for the model profiles."""
    if name not in OWN_DATA:
        return DataConfig(name=name, download=v.get("download", False))
    st.session_state.pop("_own_data_cfg", None)
    cfg = DataConfig(name=name, path=v.get("data_path", ""), image_size=v.get("image_size", 32),
                     label_column=v.get("label_column") or "label",
                     feature_columns=tuple(v.get("feature_columns") or ()))
    st.session_state["_own_data_cfg"] = cfg
    return cfg


def own_data_ui(name: str) -> dict:
    """Your own images or table: an entry of the server's data root, or an upload.

    Never a typed path: the URL holds ``root:<entry>`` or an upload's digest, and
    :func:`kdcore.data.own.resolve_source` maps it to a folder only inside those two places.
    Returns data_path ("" until chosen), and image_size or label_column / feature_columns.
    """
    from kdcore.data import own as userdata
    choices = [n for n, k in userdata.data_root_choices().items() if k == name]
    how = st.radio("Source", (["data root"] if choices else []) + ["upload"], key=K("data_from"),
                   bind=URL, horizontal=True,
                   help=f"Folders and CSV files in the server's data root (${userdata.DATA_ROOT_ENV}), "
                        "or a file from your computer.")
    src = None
    if how == "data root":
        entry = st.selectbox("Folder" if name == "image_folder" else "CSV file", choices, key=K("data_entry"),
                             bind=URL)
        src = f"root:{entry}"
        st.query_params.pop(K("data_upload"), None)
    else:
        if name == "image_folder":
            up = st.file_uploader("Zip of a folder with one subfolder of images per class", type=["zip"],
                                  key=K("data_zip"), max_upload_size=ZIP_UPLOAD_MB)
        else:
            up = st.file_uploader("CSV table (a header row; numeric features and a label column)",
                                  type=["csv"], key=K("data_csv"), max_upload_size=CSV_UPLOAD_MB)
        if up is not None:
            content = up.getvalue()
            memo = st.session_state.setdefault("_data_uploads", {})
            key = (name, hashlib.sha256(content).hexdigest())
            if key not in memo:
                try:
                    with st.spinner(f"Unpacking and checking {up.name}…"):
                        save = userdata.save_zip_upload if name == "image_folder" else userdata.save_csv_upload
                        memo[key] = ("ok", save(content, sh.runs_dir()))
                except ConfigError as e:
                    memo[key] = ("error", f"{up.name}: {e}")
            kind, value = memo[key]
            if kind == "error":
                st.error(value)
            else:
                src = value
                st.query_params[K("data_upload")] = value.split(":", 1)[1]
        elif st.query_params.get(K("data_upload")):  # a shared link names an upload this server holds
            src = "upload:" + st.query_params[K("data_upload")]
    v: dict = {"data_path": ""}
    if src is not None:
        try:
            v["data_path"] = userdata.resolve_source(src, sh.runs_dir())
        except ConfigError as e:
            st.error(str(e))
    if name == "image_folder":
        v["image_size"] = st.select_slider("Image size (pixels, square)", IMAGE_SIZES, 32, key=K("image_size"),
                                           bind=URL, help="Every image is resized to this; small is fast.")
        return v
    cols: list[str] = []
    if v["data_path"]:
        import pandas as pd

        try:
            cols = [str(c) for c in pd.read_csv(v["data_path"], nrows=0).columns]
        except (OSError, ValueError) as e:
            st.error(f"The CSV file cannot be read: {e}")
    v["label_column"] = st.selectbox("Label column", cols, index=cols.index("label") if "label" in cols
                                     else max(len(cols) - 1, 0), key=K("label_column"), bind=URL,
                                     help="The column that holds each row's class.")
    v["feature_columns"] = st.multiselect("Feature columns", [c for c in cols if c != v["label_column"]],
                                          key=K("feature_columns"), bind=URL, placeholder="every numeric column",
                                          help="Empty: every numeric column but the label. Standardised "
                                               "with the training split's mean and std.")
    return v


def params_ui(role: str, model: str, key: str | None = None, label: str | None = None) -> str:
    default = ui.params_text(ui.default_params(role, model)) if ui.default_params(role, model) else "{}"
    return st.text_input(f"{(label or role).capitalize()} params", "", key=K(key or f"{role}_params"), bind=URL,
                         placeholder=f"default: {default}",
                         help="JSON of the model's own knobs, e.g. {\"hidden\": [64, 64]}; for mlp "
                              "just the widths, e.g. 64, 64. Empty = the default shown.")


def teacher_ui(dataset: str, store: kdcore.RunStore, base: dict) -> dict:
    """Teacher source and architecture. Returns teacher, teacher_params, teacher_source, _ready."""
    choice = st.radio("Teacher", list(TEACHER_FROM), key=K("teacher_from"), bind=URL, horizontal=True)
    src = TEACHER_FROM[choice]
    models = sh.models_for(dataset)
    v: dict = {"teacher_source": "train", "_ready": True}
    if src == "run":
        c = history_teacher_ui(dataset, store, base, "teacher_run")
        if c is None:
            return {**v, "teacher": D.teacher.name, "teacher_params": "", "_ready": False}
        return {**v, "teacher": c["teacher"]["name"], "teacher_params": json.dumps(c["teacher"]["params"]),
                "teacher_source": f"run:{c['id']}"}
    st.query_params.pop(K("teacher_run"), None)
    name = st.selectbox("Teacher model", models, index=_index(models, D.teacher.name), key=K("teacher"),
                        bind=URL)
    v.update(teacher=name, teacher_params=params_ui("teacher", name))
    if src == "file":
        v.update(_upload_ui(dataset, base, v))
    else:
        st.query_params.pop(K("teacher_file"), None)
    return v


def history_teacher_ui(dataset: str, store: kdcore.RunStore, base: dict, param: str) -> dict | None:
    """Pick a finished run whose saved teacher to reuse; None if there is none yet.

    The pick lives in the URL under ``param`` by hand, not by widget binding: the options change
    as runs finish.
    """
    cands = ui.teacher_candidates(store, dataset)
    if not cands:
        st.info("No finished run on this dataset has saved teacher weights yet. Train one first.")
        return None
    ids = [c["id"] for c in cands]
    want = st.query_params.get(K(param))
    index = ids.index(int(want)) if want and want.isdigit() and int(want) in ids else 0
    by_id = {c["id"]: c for c in cands}
    rid = st.selectbox("Run whose teacher to reuse", ids, index=index, key=K(f"{param}_pick"),
                       format_func=lambda i: by_id[i]["label"])
    st.query_params[K(param)] = str(rid)
    c = by_id[rid]
    try:
        note = teacher_overlap(c["data"], ui.data_config(base))
    except ConfigError:
        note = None  # the setup cannot run yet; the page says why further down
    if note:
        st.warning(note, icon=":material/warning:")
    return c


def extra_teachers_ui(dataset: str, store: kdcore.RunStore, base: dict, first: str, batch: int) -> dict:
    """Multi-teacher KD: up to MAX_EXTRA_TEACHERS more teachers and every teacher's weight.

    Returns extra_teachers ([{model, params, source}]), teacher_weights and _ready.
    """
    shown = st.session_state.get(K("extra_teachers"), st.query_params.get(K("extra_teachers"), "0"))
    n_now = int(shown) if str(shown).isdigit() else 0  # before the widget exists (a shared link)
    with st.expander("Multi-teacher KD: add more teachers"
                     + (f" ({n_now} added)" if n_now else ""), expanded=n_now > 0,
                     icon=":material/groups:"):
        st.caption(MULTI_TEACHER_INFO.text.split(" Set these on")[0])
        n = int(st.number_input("Extra teachers", 0, MAX_EXTRA_TEACHERS, 0, key=K("extra_teachers"), bind=URL,
                                help="0 = one teacher (vanilla). Each extra teacher is trained with "
                                     "its own seed, or reused from the run history."))
        for k in range(n + 2, MAX_EXTRA_TEACHERS + 2):  # a shared link keeps only what is in use
            st.query_params.pop(K(f"t{k}_run"), None)
        if n == 0:
            return {"extra_teachers": [], "teacher_weights": [], "_ready": True}
        cols = st.columns(n + 1, gap="medium")
        with cols[0]:
            st.markdown(f"**Teacher 1** · {first} (set above)")
            weights = [st.number_input("Weight", 0.0, 100.0, 1.0, 0.5, key=K("tw1"), bind=URL,
                                       help="Weights are normalised to sum to 1; equal = average.")]
        extra, ready = [], True
        models = sh.models_for(dataset)
        for i in range(n):
            k = i + 2
            with cols[i + 1]:
                st.markdown(f"**Teacher {k}**")
                src = EXTRA_FROM[st.radio(f"Teacher {k} from", list(EXTRA_FROM), key=K(f"t{k}_from"),
                                          bind=URL, horizontal=True, label_visibility="collapsed")]
                if src == "run":
                    c = history_teacher_ui(dataset, store, base, f"t{k}_run")
                    if c is None:
                        ready = False
                    else:
                        extra.append({"model": c["teacher"]["name"], "source": f"run:{c['id']}",
                                      "params": json.dumps(c["teacher"]["params"])})
                else:
                    st.query_params.pop(K(f"t{k}_run"), None)
                    name = st.selectbox(f"Teacher {k} model", models, index=_index(models, D.teacher.name),
                                        key=K(f"t{k}_model"), bind=URL)
                    params = params_ui("teacher", name, key=f"t{k}_params", label=f"teacher {k}")
                    profile_ui("teacher", name, params, dataset, batch)
                    extra.append({"model": name, "params": params, "source": "train"})
                weights.append(st.number_input("Weight", 0.0, 100.0, 1.0, 0.5, key=K(f"tw{k}"), bind=URL))
        if sum(weights) > 0:  # all zero is refused when the config is built
            st.caption("The student learns from the ensemble's logits "
                       + " + ".join(f"{w:.2f}·z{j + 1}"
                                    for j, w in enumerate(normalise_weights(weights, n + 1)))
                       + "; the results table shows each teacher's test accuracy and the ensemble's.")
        return {"extra_teachers": extra, "teacher_weights": weights, "_ready": ready}


def _upload_ui(dataset: str, base: dict, teacher: dict) -> dict:
    """File uploader for teacher weights, checked at once against the chosen architecture."""
    up = st.file_uploader("Teacher weights (a state_dict: .pt saved with torch.save, or .safetensors)",
                          type=["pt", "pth", "safetensors"],
                          key=K("teacher_upload"), max_upload_size=200)
    try:
        probe = ui.build_config({**base, **teacher, "teacher_source": "train"})
    except ConfigError as e:
        st.error(str(e))
        return {"_ready": False}
    if up is None:
        sha = st.query_params.get(K("teacher_file"), "")
        uploads = sh.store().root / "uploads"
        path = next((p for p in (uploads / f"{sha}.pt", uploads / f"{sha}.safetensors") if p.is_file()),
                    uploads / f"{sha}.pt")
        if sha.isalnum() and path.is_file():
            try:  # a shared link names an upload this server already holds
                return {"teacher_source": ui.save_teacher_upload(path.read_bytes(), probe, sh.runs_dir())}
            except ConfigError as e:
                st.error(str(e))
                return {"_ready": False}
        st.info("Upload a .pt or .safetensors file to use it as the teacher.")
        return {"_ready": False}
    content = up.getvalue()
    memo = (hashlib.sha256(content).hexdigest(), repr(probe.teacher), repr(probe.data))
    cache = st.session_state.setdefault("_upload_checks", {})
    if memo not in cache:
        try:
            cache[memo] = ("ok", ui.save_teacher_upload(content, probe, sh.runs_dir()))
        except ConfigError as e:
            cache[memo] = ("error", str(e))
    kind, value = cache[memo]
    if kind == "error":
        st.error(value)
        return {"_ready": False}
    st.success(f"{up.name} fits the {probe.teacher.name} teacher.", icon=":material/check:")
    st.query_params[K("teacher_file")] = value.rsplit("/", 1)[-1].removesuffix(".pt").removesuffix(".safetensors")
    return {"teacher_source": value}


def student_ui(dataset: str) -> dict:
    models = sh.models_for(dataset)
    name = st.selectbox("Student model", models, index=_index(models, D.student.name), key=K("student"),
                        bind=URL)
    return {"student": name, "student_params": params_ui("student", name)}


def profile_ui(role: str, name: str, params: str, dataset: str, batch: int,
               compare_to: dict | None = None) -> dict | None:
    """Parameters, size and latency of the chosen model, measured before any training."""
    try:
        p = ui.parse_params(params, role, name)
        dcfg = st.session_state.get("_own_data_cfg") if dataset in OWN_DATA else None
        dcfg = dcfg if dcfg is not None and dcfg.name == dataset else DataConfig(name=dataset)
        in_shape, n_cls = dcfg.shape()
        prof = sh.model_profile(name, json.dumps(p, sort_keys=True), in_shape, n_cls, batch)
    except ConfigError as e:
        st.error(str(e))
        return None
    line = (f"**{prof['params']:,}** parameters · **{_size(prof['size_mb'])}** · "
            f"**{prof['latency_ms']:.2g} ms** ± {prof.get('latency_spread_ms', 0):.1g} per batch of {batch} "
            "(median of 7 timings ± half their interquartile range)")
    if compare_to:
        line += f" · **×{compare_to['params'] / max(prof['params'], 1):,.0f}** smaller than the teacher"
    st.markdown(line)
    return prof


def loss_ui() -> dict:
    names = LOSSES.names()
    loss = st.selectbox("Method", names, index=_index(names, D.loss.name), key=K("loss"), bind=URL,
                        help="kd is Hinton's; the others are described under the box.")
    info = METHOD_INFO.get(loss)
    if info is not None:
        st.caption(f"**{info.title}.** {info.text}")
    c1, c2, c3 = st.columns([2, 2, 1])
    T = c1.slider("Temperature T", 0.5, 20.0, float(D.loss.temperature), 0.5, key=K("T"), bind=URL,
                  disabled=not LOSSES.spec(loss).uses_temperature,
                  help="Higher T softens both distributions.")
    alpha = c2.slider("α (weight of the hard-label CE)", 0.0, 1.0, float(D.loss.alpha), 0.05, key=K("alpha"),
                      bind=URL, help="α = 1: the student alone. α = 0: teacher's soft targets only.")
    t2 = c3.checkbox("× T²", D.loss.t2, key=K("t2"), bind=URL,
                     help="Keep the soft term's gradients the same size as T changes (Hinton 2015).")
    knobs = method_knobs_ui(loss, info)
    general, numbers = ui.loss_latex(loss, alpha, T, t2)
    st.latex(general)
    st.latex(numbers)
    st.caption("α weighs the **hard-label cross-entropy** CE(y, σ(z_s)); the **soft term**, which "
               "carries the teacher's knowledge, gets 1 − α. z_s, z_t are the student's and the "
               "teacher's logits, σ the softmax.")
    return {"loss": loss, "T": T, "alpha": alpha, "t2": t2, "loss_params": knobs}


def method_knobs_ui(loss: str, info) -> dict:
    """The method's own knobs, drawn from METHOD_INFO; returns only the ones moved off default."""
    if info is None or not info.params:
        return {}
    out = {}
    cols = st.columns(min(len(info.params), 4))
    for i, (knob, p) in enumerate(info.params.items()):
        col, key = cols[i % len(cols)], K(f"{loss}_{knob}")
        if isinstance(p.default, bool):
            v = col.checkbox(knob, p.default, key=key, bind=URL, help=p.help)
        elif isinstance(p.default, str) and p.choices:
            v = col.selectbox(knob, list(p.choices), index=list(p.choices).index(p.default), key=key,
                              bind=URL, help=p.help)
        elif isinstance(p.default, str):
            v = col.text_input(knob, p.default, key=key, bind=URL, help=p.help)
        elif isinstance(p.default, int):
            v = int(col.number_input(knob, None if p.low is None else int(p.low),
                                     None if p.high is None else int(p.high), p.default, key=key,
                                     bind=URL, help=p.help))
        else:
            v = float(col.number_input(knob, p.low, p.high, float(p.default), key=key, bind=URL,
                                       help=p.help, format="%g"))
        if v != p.default:
            out[knob] = v
    return out


def training_ui(teacher_trains: bool) -> dict:
    c1, c2, c3, c4, c5 = st.columns(5)
    v = {
        "epochs": c1.number_input("Epochs (students)", 1, 1000, D.optim.epochs, key=K("epochs"), bind=URL),
        "lr": c2.select_slider("Learning rate", LRS, D.optim.lr, key=K("lr"), bind=URL),
        "batch": c3.select_slider("Batch size", BATCHES, D.optim.batch_size, key=K("batch"), bind=URL),
        "seed": c4.number_input("Seed", 0, 2**31 - 1, D.seed, key=K("seed"), bind=URL,
                                help="Init and data order; baseline and distilled share it."),
        "seeds": c5.number_input("Seeds", 1, MAX_SEEDS, DEFAULT_SEEDS, key=K("seeds"), bind=URL,
                                 help="Repeat the students over this many seeds (seed, seed + 1, ...), all "
                                      "from one teacher trained once: the verdict then gives the mean gain "
                                      "and its 95 % interval over seeds."),
    }
    with st.expander("More options"):
        c1, c2, c3, c4 = st.columns(4)
        v["teacher_epochs"] = c1.number_input("Teacher epochs", 1, 1000, D.teacher_optim.epochs,
                                              key=K("teacher_epochs"), bind=URL, disabled=not teacher_trains)
        v["teacher_lr"] = c2.select_slider("Teacher learning rate", LRS, D.teacher_optim.lr,
                                           key=K("teacher_lr"), bind=URL, disabled=not teacher_trains)
        v["optimizer"] = c3.selectbox("Optimizer", ["adam", "sgd"], key=K("optimizer"), bind=URL)
        v["schedule"] = c4.selectbox("Schedule", ["constant", "cosine"], key=K("schedule"), bind=URL)
        v["data_seed"] = c1.number_input("Data seed", 0, 2**31 - 1, D.data.seed, key=K("data_seed"), bind=URL,
                                         help="Generates the 2-D points and draws the splits.")
        v["name"] = c2.text_input("Run name", "", key=K("name"), bind=URL, max_chars=80)
        v["teacher_batch"] = c3.select_slider("Teacher batch size", BATCHES, D.teacher_optim.batch_size,
                                              key=K("teacher_batch"), bind=URL, disabled=not teacher_trains)
        v["retrain_teacher"] = c4.checkbox(
            "Retrain the teacher", D.retrain_teacher, key=K("retrain_teacher"), bind=URL, disabled=not teacher_trains,
            help="A teacher that a finished run already trained (same architecture, data, optimiser and "
                 "seed) is loaded instead of trained again; tick this to train it anew.")
    return v


# --------------------------------------------------------------------------------------------
# Start and the live panel


def _start(cfg: RunConfig, seeds: list[int]) -> None:
    """Start button callback: runs before the rerun, so the panel sees the new run at once."""
    st.session_state.pop("start_error", None)
    try:
        sh.session_runs().start(cfg, sh.store(), seeds)
    except RunLimitReached as e:
        st.session_state["start_error"] = str(e)


def start_ui(cfg: RunConfig | None, ready: bool, holder: sh.SessionRuns, seeds: list[int]) -> None:
    running = holder.running
    c1, c2 = st.columns([1, 5])
    c1.button("Start", type="primary", icon=":material/play_arrow:", key=K("start"),
              disabled=cfg is None or not ready or running, on_click=_start, args=(cfg, seeds),
              width="stretch")
    if cfg is not None:
        over = (f" · students over seeds {', '.join(map(str, seeds))}, one teacher" if len(seeds) > 1 else "")
        c2.markdown(f"**{'Next run' if running else 'Will run'}:** {ui.config_summary(cfg)}{over}")
    if running:
        c2.caption("A run is training in this session (one at a time); stop it below to start another.")
    if err := st.session_state.get("start_error"):
        st.error(err)


def live_ui(holder: sh.SessionRuns) -> None:
    live = holder.live
    if live is None:
        st.info("Nothing trained in this session yet. Set up a run above and press **Start**: the "
                "teacher trains first, then the same student twice — alone (baseline) and "
                "distilled — and the three are compared on the test set.", icon=":material/info:")
        charts_ui(NO_DATA, NO_DATA)  # empty axes now: the browser loads the chart code before a run
        return
    polling = live.running

    # Two fragments: the progress line is cheap and redraws often; the charts cost the browser
    # a Plotly remount each time their data changes, so they redraw less often.
    @st.fragment(run_every=PROGRESS_S if polling else None)
    def progress() -> None:
        snap = live.snapshot()
        _status_ui(snap, live)
        if snap.done and polling:  # the run ended since the last full run: redraw the page once
            st.session_state.pop("_frozen_snapshot", None)
            st.rerun(scope="app")

    label = _run_label(live)

    @st.fragment(run_every=CHART_S if polling else None)
    def plots() -> None:
        snap = _chart_snapshot(live)
        shown = snap
        c1, c2 = st.columns(2)
        smooth = c1.toggle("Smooth the per-step curves", key=K("smooth"),
                           help="An exponential moving average (weight 0.9) over the plotted steps.")
        if snap.running:
            # Streamlit remounts a Plotly chart whenever its data changes, which resets zoom;
            # a frozen chart keeps its data, so it can be zoomed while the run goes on.
            if c2.toggle("Freeze charts (to zoom in while it trains)", key=K("freeze")):
                shown = st.session_state.setdefault("_frozen_snapshot", snap)
            else:
                st.session_state.pop("_frozen_snapshot", None)
        charts_ui(shown.steps, shown.epochs_log, run=label, smooth=SMOOTH if smooth else 0.0)

    if polling:
        c1, c2 = st.columns([6, 1])
        with c1:
            progress()
        with c2:
            sh.stop_button(live, K("stop"))
    else:
        progress()
    if label.startswith("Previous"):
        st.warning(f"The charts and results below are from {label[0].lower()}{label[1:]}: its setup "
                   "differs from the one above. Press Start to run the new one.", icon=":material/history:")
    if polling and not live.first_point.is_set():
        # Just started: the first step is usually a few ms away, so draw it in this run rather
        # than at the next chart tick (Start -> first point is a number this page must meet).
        # The progress line and Stop above are already on their way to the browser.
        live.first_point.wait(FIRST_POINT_WAIT_S)
    plots()
    snap = live.snapshot()
    if snap.done:
        holder.last_run_id = snap.run_id
        if isinstance(live, LiveSeeds):
            _seeds_results_ui(live)
        else:
            _results_ui(snap, live.cfg)


def _chart_snapshot(live):
    """A fresh snapshot on each chart tick, the last one drawn on a rerun in between.

    A widget change reruns the whole page; new chart data would make the browser remount
    three Plotly charts on top of that, so between ticks the charts keep what they show.
    """
    now = time.monotonic()
    last = st.session_state.get("_chart_snapshot")
    if last is not None and last[1] is live:
        if last[2].done:  # a finished run's snapshot never changes
            return last[2]
        if live.running and now - last[0] < 0.8 * CHART_S:
            return last[2]
    snap = live.snapshot()
    st.session_state["_chart_snapshot"] = (now, live, snap)
    return snap


def _run_label(live) -> str:
    """The name the charts carry: "Run 7", or "Previous run 7 (another setup)" once the controls
    above no longer describe the run that is shown."""
    name = f"run {live.run_id}" if live.run_id is not None else "run"
    if isinstance(live, LiveSeeds):  # one run per seed; the charts show them all
        name = f"{name} ({len(live.seeds)} seeds: {', '.join(map(str, live.seeds))})"
    if not live.running and st.session_state.get("kd_pending_config") != kdcore.to_dict(live.cfg):
        return f"Previous {name} (another setup)"
    return name.capitalize()


def charts_ui(steps: dict, epochs_log: dict, *, run: str = "", smooth: float = 0.0) -> None:
    """The three live charts, with fixed keys and places so a redraw replaces them in place.

    Figures are rebuilt only when the data is new: a rerun between chart ticks shows the same
    snapshot, and building three figures is most of what this page costs the server.
    """
    last = st.session_state.get("_chart_figures")
    if last is not None and last[0] is steps and last[1] is epochs_log and last[2] == (run, smooth):
        figs = last[3]
    else:
        figs = (charts.loss_figure(steps, run=run, smooth=smooth), charts.terms_figure(steps, run=run, smooth=smooth),
                charts.accuracy_figure(epochs_log, run=run))
        st.session_state["_chart_figures"] = (steps, epochs_log, (run, smooth), figs)
    c1, c2 = st.columns(2)
    c1.plotly_chart(figs[0], key="live_loss", config={"displaylogo": False})
    c2.plotly_chart(figs[1], key="live_terms", config={"displaylogo": False})
    st.plotly_chart(figs[2], key="live_acc", config={"displaylogo": False})


def _status_ui(snap, live) -> None:
    title = f"Run {snap.run_id}" if snap.run_id is not None else "Run"
    if snap.running:
        n = len(snap.phases)
        i = snap.phases.index(snap.phase) + 1 if snap.phase in snap.phases else 1
        where = (f"epoch {snap.epoch}/{snap.epochs} · step {snap.step}/{snap.total_steps}"
                 if snap.total_steps else "getting ready")
        text = (f"{title} · phase {i} of {n}: **{snap.phase}** · {where} · {snap.progress:.0%} · "
                f"{sh.eta_text(snap.eta_s)}")
        st.progress(snap.progress, text=text)  # Stop is beside it, outside this fragment
        return
    took = f" in {snap.elapsed_s:.1f} s"
    if snap.status == "completed":
        st.progress(1.0, text=f"{title} finished{took}.")
    elif snap.status == "stopped":
        st.info(f"{title} stopped{took}: {snap.message}", icon=":material/stop_circle:")
    else:  # diverged or failed: the message says what went wrong and what to change
        st.error(f"{title} {snap.status}: {snap.message}", icon=":material/error:")


def _seeds_results_ui(live: LiveSeeds) -> None:
    """A multi-seed run's end: mean ± std of every model over seeds, each seed's paired verdict,
    and the verdict over seeds with its interval."""
    out = live.result
    if out is None or not hasattr(out, "table") or out.table.empty:
        return
    t = out.table
    st.subheader(f"Test-set comparison over {len(live.seeds)} seeds (one teacher)")

    def pm(k: str, scale: float = 100, digits: int = 2) -> list[str]:
        if f"{k}_mean" not in t:
            return [""] * len(t)
        return [f"{m * scale:.{digits}f} ± {sd * scale:.{digits}f}" if m == m else ""
                for m, sd in zip(t[f"{k}_mean"], t[f"{k}_std"])]

    show = {"model": t["model"], "seeds": t["seeds"], "accuracy (%)": pm("accuracy"),
            "gain vs baseline (points)": pm("gain"), "macro F1 (%)": pm("f1"),
            "agreement with teacher (%)": pm("agreement", digits=1), "ECE": pm("ece", 1, 4),
            "parameters": t["params_mean"]}
    st.dataframe(show, hide_index=True, key=K("seeds_table"))
    with st.expander("Each seed's own verdict (paired test on the same test samples)"):
        for r in out.runs:
            st.markdown(f"- **seed {r.seed}** (run {r.run_id}): {r.message}")
    _verdict_ui(live.cfg, out.runs[0].metrics if out.runs else {}, out.summary(), out.gain_ci)


def _results_ui(snap, cfg: RunConfig) -> None:
    table = ui.results_table(snap.metrics, cfg)
    if table.empty:
        return
    st.subheader("Test-set comparison")
    for col in ("accuracy", "macro F1", "agreement with teacher"):
        table[col] = table[col] * 100
    st.dataframe(table, hide_index=True, key="results_table", column_config={
        "agreement with teacher": st.column_config.NumberColumn(
            format="%.1f %%", help="Test samples where the model's top class is the teacher's "
                                   "(the ensemble's, with several teachers)"),
        "accuracy": st.column_config.NumberColumn(format="%.2f %%"),
        "macro F1": st.column_config.NumberColumn(format="%.2f %%"),
        "ECE": st.column_config.NumberColumn(format="%.4f", help="Expected calibration error (15 bins)"),
        "parameters": st.column_config.NumberColumn(format="localized"),
        "size (MiB)": st.column_config.NumberColumn(format="%.4f"),
        "latency (ms/batch)": st.column_config.NumberColumn(
            format="%.2g", help="Median of 9 timed batches on this machine's CPU"),
        "latency ± (ms)": st.column_config.NumberColumn(
            format="%.1g", help="Half the interquartile range of the 9 timings: how much to trust the median"),
    })
    d = snap.metrics.get("distilled")
    both = bool(snap.metrics.get("baseline") and d)
    _verdict_ui(cfg, snap.metrics, kdcore.verdict(snap.metrics) if both else None,
                (d["gain_ci_low"], d["gain_ci_high"]) if both and "gain_ci_low" in d else None)


def _verdict_ui(cfg: RunConfig, metrics: dict, verdict: str | None,
                interval: tuple[float, float] | None) -> None:
    """The end of a results view, one seed or several: what each model saw, the "little to
    distil" warning, the verdict coloured by its 95 % interval, and the link to the Runs page."""
    saw = arm_descriptions(cfg)
    st.caption("What each model saw in training: " + "; ".join(
        f"**{phase}**: {text}" for phase, text in saw.items() if phase in metrics) + ".")
    if note := little_to_distil(metrics):
        st.warning(note, icon=":material/warning:")
    if verdict is not None:
        word = verdict_word(*interval) if interval else ""
        show = {"helped": st.success, "hurt": st.error}.get(word, st.warning)
        show("**Verdict.** " + verdict, icon=":material/gavel:")
    st.page_link(f"{Path(__file__).parent.name}/runs.py", icon=":material/history:",
                 label="Compare with earlier runs on the Runs page")


# --------------------------------------------------------------------------------------------
# Helpers


def _index(options: list, value) -> int:
    return options.index(value) if value in options else 0


def _size(mb: float) -> str:
    return f"{mb:.2f} MiB" if mb >= 1 else f"{mb * 1024:.1f} KiB"


# --------------------------------------------------------------------------------------------
# The page


def setup_ui(holder: sh.SessionRuns) -> None:
    """Every control, the config they define, and Start.

    (Measured: running this as its own fragment, so a control change reruns only it, made the
    page slower to answer, not faster: Streamlit 1.67 streams and redraws fragment reruns
    more slowly than a full rerun of this page.)
    """
    store = sh.store()
    col_data, col_teacher, col_student = st.columns(3, gap="large")
    with col_data:
        st.subheader("Data")
        data = dataset_ui()
    base = {k: v for k, v in data.items() if not k.startswith("_")}
    spec = DATASETS.get(data["dataset"])
    with col_student:  # before the teacher: the teacher's profile line compares with it
        st.subheader("Student")
        student = student_ui(data["dataset"])
    batch = st.session_state.get(K("batch"), D.optim.batch_size)
    with col_teacher:
        st.subheader("Teacher")
        teacher = teacher_ui(data["dataset"], store, {**base, **student})
        t_prof = profile_ui("teacher", teacher["teacher"], teacher["teacher_params"], spec.name, batch)
    with col_student:
        profile_ui("student", student["student"], student["student_params"], spec.name, batch, t_prof)
    more = extra_teachers_ui(data["dataset"], store, {**base, **student}, teacher["teacher"], batch)

    st.subheader("Distillation loss")
    loss = loss_ui()
    st.subheader("Training")
    trains = teacher["teacher_source"] == "train" or any(t["source"] == "train" for t in more["extra_teachers"])
    train = training_ui(trains)

    values = {**base, **student, **loss, **train,
              **{k: v for k, v in {**teacher, **more}.items() if not k.startswith("_")}}
    cfg = None
    try:
        cfg = ui.build_config(values)
        st.session_state["kd_pending_config"] = kdcore.to_dict(cfg)
    except ConfigError as e:
        st.session_state.pop("kd_pending_config", None)
        st.error(f"This setup cannot run: {e}", icon=":material/error:")
    ready = data["_available"] and teacher["_ready"] and more["_ready"]
    seeds = list(range(int(train["seed"]), int(train["seed"]) + int(train["seeds"])))
    if cfg is not None and (rid := find_trained_teacher(store, cfg)) is not None:
        st.info(f"Run {rid} already trained this teacher (same architecture, data, optimiser and seed): it "
                "is loaded, not trained again, and the results are the same. Tick **Retrain the teacher** "
                "under More options to train it anew.", icon=":material/recycling:")
    if cfg is not None:
        with st.expander("This run as a config file (replay it with the CLI)"):
            st.code(kdcore.to_json(cfg), language="json")
            cmd = ("python -m kdcore run run.json" if len(seeds) == 1 else
                   f"python -m kdcore compare run.json --seeds {','.join(map(str, seeds))}")
            st.caption(f"Save it as run.json, then: `{cmd}`")

    st.divider()
    start_ui(cfg, ready, holder, seeds)


def main() -> None:
    sh.open_page("train")
    st.title("Train")
    st.caption("Pick a dataset, a teacher and a student, set the distillation loss, press Start.")
    holder = sh.session_runs()
    setup_ui(holder)
    live_ui(holder)


main()
