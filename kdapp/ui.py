"""Plain helpers behind the dashboard pages: configs from widget values, uploads, tables, soft targets.

The pages stay thin by calling these; nothing here imports Streamlit, so every helper is
testable with pytest alone. Softmax-at-T and entropy live here (not in a page) so the pages
never re-implement any of the maths.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
from pathlib import Path
from typing import Any

from kdcore.lazy import pandas as pd  # imported on first use: start-up stays fast
import torch

from kdcore.config import DataConfig, LossConfig, ModelConfig, OptimConfig, RunConfig
from kdcore.errors import ConfigError
from kdcore.train.experiment import MAX_WEIGHTS_BYTES, accuracy_gain, load_teacher_weights
from kdcore.train.experiment import results_table as experiment_results_table
from kdcore.models import build_model, profile, seeded_init
from kdcore.history.rebuild import run_models  # shown on the Runs and lab pages
from kdcore.registry import LOSSES, MODELS
from kdcore.history.store import RunStore, default_runs_dir, run_row
from kdcore.lab.teaching import class_similarity, entropy, soft_targets  # the lab's maths, shown on the app's pages too

__all__ = [
    "ROLE_DEFAULT_PARAMS", "default_params", "parse_params", "params_text", "models_for",
    "build_config", "profile_dict", "save_teacher_upload", "teacher_candidates",
    "results_table", "RESULT_COLUMNS", "loss_latex", "soft_targets", "entropy",
    "class_similarity", "cli_prefix", "replay_command", "runs_json", "runs_csv", "comparison_table",
    "run_models", "config_summary", "data_config",
]

# The RunConfig defaults per role, so an empty params box means "what `python -m kdcore run` uses".
ROLE_DEFAULT_PARAMS = {role: {m.name: dict(m.params)} for role, m in
                       (("teacher", RunConfig().teacher), ("student", RunConfig().student))}


def default_params(role: str, model: str) -> dict:
    """The params a model gets in ``role`` when the user leaves the box empty."""
    return dict(ROLE_DEFAULT_PARAMS.get(role, {}).get(model, {}))


def params_text(params: dict) -> str:
    """Compact JSON for a params dict, as the params box shows it."""
    return json.dumps(params, separators=(", ", ": "))


def parse_params(text: str, role: str, model: str, label: str | None = None) -> dict:
    """Model params from the text box: empty = role default, ``64, 32`` = mlp widths, else JSON.

    Args:
        role: "teacher" or "student" (whose defaults an empty box gets). label: how an error
            names the box (default: the role), e.g. "teacher 2".
    Raises:
        ConfigError: naming the box and what it accepts.
    """
    label = label or role
    text = (text or "").strip()
    if not text:
        return default_params(role, model)
    if model == "mlp" and all(part.strip().isdigit() for part in text.split(",")):
        return {"hidden": [int(p) for p in text.split(",")]}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{label} params {text!r} are not valid JSON ({e.msg}); write e.g. "
                          '{"hidden": [64, 64]} or, for mlp, just 64, 64') from None
    if not isinstance(value, dict):
        raise ConfigError(f"{label} params must be a JSON object like {{\"width\": 8}}, got {text!r}")
    return value


def models_for(dataset: str) -> list[str]:
    """Registered models that can take this dataset's input (built on the meta device, no weights)."""
    in_shape, k = DataConfig(name=dataset).shape()
    ok = []
    for name in MODELS.names():
        try:
            with torch.device("meta"):
                build_model(name, in_shape=in_shape, num_classes=k, params=None)
            ok.append(name)
        except Exception:  # noqa: BLE001  (a model that cannot take the input is simply not offered)
            continue
    return ok


def data_config(v: dict[str, Any]) -> DataConfig:
    """The DataConfig of the Train page's data widgets (plain dict, keys as in the URL).

    Raises:
        ConfigError: the first value that is not allowed.
    """
    d = _DEFAULTS.data
    return DataConfig(name=v["dataset"], n_samples=int(v.get("samples", d.n_samples)),
                      noise=float(v.get("noise", d.noise)), n_classes=int(v.get("classes", d.n_classes)),
                      train_subset=int(v.get("subset", 0)), seed=int(v.get("data_seed", 0)),
                      download=bool(v.get("download", False)),
                      # your own data: a path the page resolved from a data-root entry or an upload
                      path=str(v.get("data_path", "")), image_size=int(v.get("image_size", 32)),
                      label_column=str(v.get("label_column") or "label"),
                      feature_columns=tuple(v.get("feature_columns") or ()),
                      # few labels: the students' labelled set, and the transfer set
                      labelled=int(v.get("labelled", 0)), balanced=bool(v.get("balanced", False)),
                      transfer_set=bool(v.get("transfer_set", False)),
                      transfer_ratio=int(v.get("transfer_ratio", d.transfer_ratio)))


_DEFAULTS = RunConfig()  # what an unset widget means: `python -m kdcore config`


def build_config(v: dict[str, Any]) -> RunConfig:
    """A validated RunConfig from the Train page's widget values (plain dict, keys as in the URL).

    Raises:
        ConfigError: the first value that is not allowed, as RunConfig words it.
    """
    data = data_config(v)
    teacher = ModelConfig(v["teacher"], parse_params(v.get("teacher_params", ""), "teacher", v["teacher"]))
    student = ModelConfig(v["student"], parse_params(v.get("student_params", ""), "student", v["student"]))
    loss = LossConfig(name=v.get("loss", "kd"), temperature=float(v.get("T", 4.0)),
                      alpha=float(v.get("alpha", 0.5)), t2=bool(v.get("t2", True)),
                      params=dict(v.get("loss_params") or {}))
    o, to = _DEFAULTS.optim, _DEFAULTS.teacher_optim
    optim = OptimConfig(epochs=int(v.get("epochs", o.epochs)), lr=float(v.get("lr", o.lr)),
                        batch_size=int(v.get("batch", o.batch_size)), optimizer=v.get("optimizer", "adam"),
                        schedule=v.get("schedule", "constant"))
    t_optim = OptimConfig(epochs=int(v.get("teacher_epochs", to.epochs)), lr=float(v.get("teacher_lr", to.lr)),
                          batch_size=int(v.get("teacher_batch", to.batch_size)),
                          optimizer=v.get("optimizer", "adam"), schedule=v.get("schedule", "constant"))
    extra = v.get("extra_teachers") or []  # [{"model", "params" (box text), "source"}, ...]
    extra_cfgs = tuple(ModelConfig(t["model"], parse_params(t.get("params", ""), "teacher", t["model"],
                                                            f"teacher {i + 2}"))
                       for i, t in enumerate(extra))
    sources = tuple(t.get("source", "train") for t in extra)
    weights = tuple(float(w) for w in v.get("teacher_weights") or ())
    if len(set(weights)) == 1 and weights[0] > 0:
        weights = ()  # all equal is the default (plain average), so the config says so
    from kdcore.budget import check_budget

    cfg = RunConfig(data=data, teacher=teacher, student=student, loss=loss, optim=optim,
                    teacher_optim=t_optim, teacher_source=v.get("teacher_source", "train"),
                    extra_teachers=extra_cfgs,
                    extra_teacher_sources=sources if any(s != "train" for s in sources) else (),
                    teacher_weights=weights,
                    seed=int(v.get("seed", 0)), name=str(v.get("name", "")).strip(),
                    pseudo_arm=bool(v.get("pseudo_arm", False)),
                    retrain_teacher=bool(v.get("retrain_teacher", False)))
    check_budget(cfg)  # an over-budget run is refused here, before anything is built
    return cfg


def config_summary(cfg: RunConfig) -> str:
    """One line that says what a run will do, e.g. for a caption or a log."""
    def m(mc: ModelConfig) -> str:
        return mc.name + (f" {params_text(mc.params)}" if mc.params else "")

    def t(mc: ModelConfig, src: str) -> str:
        return f"train {m(mc)}" if src == "train" else f"{m(mc)} from {src.split(':')[0]}"

    teacher = ("train teacher " + m(cfg.teacher) if cfg.teacher_source == "train"
               else f"teacher {t(cfg.teacher, cfg.teacher_source)}")
    if cfg.extra_teachers:
        srcs = cfg.extra_teacher_sources or ("train",) * len(cfg.extra_teachers)
        teacher = (f"{1 + len(cfg.extra_teachers)} teachers ({t(cfg.teacher, cfg.teacher_source)}; "
                   + "; ".join(t(mc, s) for mc, s in zip(cfg.extra_teachers, srcs))
                   + (f"; weights {', '.join(f'{w:g}' for w in cfg.teacher_weights)})"
                      if cfg.teacher_weights else "; averaged)"))
    d = cfg.data
    labels = ""
    if d.labelled:
        labels = f" · students get {d.labelled:,} labels" + (
            f" + a transfer set ({d.transfer_ratio} per labelled sample a step)" if d.transfer_set else "")
        labels += " + a hard-label student" if cfg.pseudo_arm else ""
    return (f"{cfg.data.name}{labels} · {teacher} → student {m(cfg.student)} · {cfg.loss.name} "
            f"T={cfg.loss.temperature:g} α={cfg.loss.alpha:g} · {cfg.optim.epochs} epochs, "
            f"lr {cfg.optim.lr:g}, batch {cfg.optim.batch_size} · seed {cfg.seed}")


def profile_dict(name: str, params: dict, in_shape: tuple[int, ...], num_classes: int,
                 batch_size: int) -> dict:
    """Parameters, size (MiB) and latency (ms per batch) of a freshly built model.

    Raises:
        ConfigError: the model cannot be built with these params.
    """
    from kdcore.budget import check_model

    # refuse an over-budget model before a byte of it exists (the page shows the message)
    check_model(ModelConfig(name, params), tuple(in_shape), num_classes, batch_size=batch_size, role="model")
    with seeded_init(0):  # a probe: it neither reseeds nor disturbs a run's RNG in another thread
        model = build_model(name, in_shape=tuple(in_shape), num_classes=num_classes, params=params)
    p = profile(model, tuple(in_shape), batch_size=batch_size, repeats=7)
    return {"params": p.params, "size_mb": p.size_mb, "latency_ms": p.latency_ms,
            "latency_spread_ms": p.latency_spread_ms}


def save_teacher_upload(content: bytes, cfg: RunConfig, runs_dir: str | os.PathLike | None = None) -> str:
    """Store an uploaded teacher ``.pt`` or ``.safetensors`` and check it loads into ``cfg``'s teacher.

    The bytes go to ``<runs_dir>/uploads/<sha256>.pt`` (or ``.safetensors``) and are read back with
    :func:`kdcore.train.experiment.load_teacher_weights` (``weights_only=True``, strict, size limit).
    A file that fails the check is removed again.

    Returns:
        The ``teacher_source`` to run with: ``"file:<path>"``.
    Raises:
        ConfigError: the message to show (too big, not a state_dict, code inside, wrong shapes).
    """
    if len(content) > MAX_WEIGHTS_BYTES:
        raise ConfigError(f"teacher weights file is {len(content) / 2**20:.0f} MB; the limit is "
                          f"{MAX_WEIGHTS_BYTES // 2**20} MB")
    if not content:
        raise ConfigError("the uploaded teacher weights file is empty")
    folder = Path(runs_dir if runs_dir is not None else default_runs_dir()) / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    from kdcore.history.weights import is_safetensors

    suffix = ".safetensors" if is_safetensors(content[:9]) else ".pt"  # the bytes say which, not the name
    path = folder / f"{hashlib.sha256(content).hexdigest()[:32]}{suffix}"
    if not path.exists():
        tmp = path.with_suffix(".part")
        tmp.write_bytes(content)
        tmp.replace(path)
    in_shape, k = cfg.data.shape()
    with seeded_init(0):  # its init is overwritten; the probe must not move a run's RNG
        model = build_model(cfg.teacher.name, in_shape=in_shape, num_classes=k, params=cfg.teacher.params)
    try:
        load_teacher_weights(model, f"file:{path}")
    except ConfigError:
        path.unlink(missing_ok=True)
        raise
    return f"file:{path}"


def teacher_candidates(store: RunStore, dataset: str) -> list[dict]:
    """Finished runs on ``dataset`` whose teacher weights are on disk, newest first."""
    out = []
    for r in store.list():
        c = r["config"]
        if c["data"]["name"] != dataset or r["status"] == "running":
            continue
        if not store.weights_path(r["id"], "teacher").exists():
            continue
        acc = ((r["metrics"] or {}).get("teacher") or {}).get("accuracy")
        out.append({"id": r["id"], "teacher": c["teacher"], "data": c["data"], "accuracy": acc,
                    "label": (f"run {r['id']}: {c['teacher']['name']} "
                              f"{params_text(c['teacher']['params'])}"
                              + (f", test accuracy {acc:.1%}" if acc is not None else ""))})
    return out


RESULT_COLUMNS = {  # metric key -> column title in the comparison table
    "accuracy": "accuracy", "f1": "macro F1", "ece": "ECE", "agreement": "agreement with teacher",
    "params": "parameters", "size_mb": "size (MiB)", "latency_ms": "latency (ms/batch)",
    "latency_spread_ms": "latency ± (ms)",  # half the interquartile range of the timed batches
}


def results_table(metrics: dict[str, dict], cfg: RunConfig | None = None) -> pd.DataFrame:
    """The dashboard's view of :func:`kdcore.train.experiment.results_table`: every model, titled columns."""
    t = experiment_results_table(metrics, cfg)
    keep = ["model", *(["architecture"] if cfg is not None else []), *RESULT_COLUMNS]
    out = t[keep].rename(columns=RESULT_COLUMNS)
    # each student arm against the baseline on the same test samples: gain and its 95 % interval
    out.insert(3 if cfg is not None else 2, "gain vs baseline (95 % CI)", [
        f"{g * 100:+.2f} ({lo * 100:+.2f} to {hi * 100:+.2f})" if g == g else ""
        for g, lo, hi in zip(t["gain"], t["gain_ci_low"], t["gain_ci_high"])])
    return out


def loss_latex(loss: str, alpha: float, T: float, t2: bool) -> tuple[str, str]:
    """The loss formula for ``st.latex`` and the same with the current numbers substituted.

    The soft term, any extra term and whether T^2 applies come from the method's registered
    :class:`~kdcore.registry.MethodSpec`.
    """
    spec = LOSSES.spec(loss)
    scaled = t2 and spec.uses_temperature
    extra = f"\\,{spec.extra_formula}" if spec.extra_formula else ""
    general = (r"\mathcal{L} = \alpha\,\mathrm{CE}\big(y,\,\sigma(z_s)\big) + (1-\alpha)\,"
               + (r"T^2\," if scaled else "") + spec.formula + extra)
    factor = T * T if scaled else 1.0
    numbers = (rf"\mathcal{{L}} = {alpha:.2f}\cdot\mathrm{{CE}} + {1 - alpha:.2f}"
               + (rf"\cdot {factor:g}" if factor != 1.0 else "") + r"\cdot\mathcal{L}_{\mathrm{soft}}" + extra)
    return general, numbers


def cli_prefix(runs_dir: str | os.PathLike | None = None) -> str:
    """``python -m kdcore``, with ``--runs-dir`` when the history is not the CLI's default ./runs."""
    if runs_dir is None or Path(runs_dir).resolve() == Path("runs").resolve():
        return "python -m kdcore"
    return f"python -m kdcore --runs-dir {shlex.quote(str(runs_dir))}"


def replay_command(run_id: int, runs_dir: str | os.PathLike | None = None) -> str:
    """The shell command that replays a stored run headless through the same code path."""
    return (f"{cli_prefix(runs_dir)} runs config {int(run_id)} > run{int(run_id)}.json && "
            f"python -m kdcore run run{int(run_id)}.json")


def runs_json(store: RunStore, ids: list[int]) -> str:
    """Configs, status and final metrics of the given runs, as one JSON document."""
    return json.dumps([store.get(i) for i in ids], indent=2, default=str)


def runs_csv(store: RunStore, ids: list[int]) -> str:
    """Per-epoch metrics of the given runs with each run's config, as CSV text."""
    return store.epochs_table(ids).to_csv(index=False)


def comparison_table(store: RunStore, ids: list[int]) -> pd.DataFrame:
    """One row per run: setup and the test metrics of teacher (ensemble), baseline and distilled student."""
    rows = []
    for rid in ids:
        r = store.get(rid)
        c, m, f = r["config"], r["metrics"] or {}, run_row(r)
        d, gain = m.get("distilled") or {}, accuracy_gain(m)
        rows.append({
            "run": rid, "status": f["status"], "dataset": f["dataset"],
            "teacher": f"{f['teacher']} {params_text(c['teacher']['params'])}"
                       + (f" + {len(c.get('extra_teachers') or ())} more"
                          if c.get("extra_teachers") else ""),
            "student": f"{f['student']} {params_text(c['student']['params'])}",
            "loss": f["loss"], "T": f["T"], "alpha": f["alpha"],
            "epochs": c["optim"]["epochs"], "seed": f["seed"],
            "teacher acc": f["teacher_acc"], "ensemble acc": (m.get("ensemble") or {}).get("accuracy"),
            "baseline acc": f["baseline_acc"],
            "distilled acc": f["distilled_acc"], "gain (points)": None if gain is None else gain * 100,
            "distilled F1": d.get("f1"), "distilled ECE": d.get("ece"),
            "agreement": d.get("agreement"), "compression": d.get("compression"),
        })
    return pd.DataFrame(rows)


def loss_names() -> list[str]:
    """Every registered method (vanilla losses first, in registration order), for the loss picker."""
    return LOSSES.names()
