"""One distillation run (teacher → baseline student → distilled student) and the seed comparison.

The dashboard and the CLI both call :func:`run_experiment` / :func:`compare` with a RunConfig,
so a run made in the browser replays headless from its stored config.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..lazy import pandas as pd  # imported on first use: start-up stays fast
import torch
import torch.nn as nn

from ..config import RunConfig, from_dict, phase_architectures, replace, to_dict
from ..data import load_data, student_views
from ..errors import ConfigError
from ..losses import UNLABELLED
from ..events import Callback, PhaseEnd, RunEnd, SeedStart
from ..metrics import classification_metrics, compression, teacher_agreement
from ..stats import paired_comparison, seed_interval, verdict_word
from ..models import build_model, profile, seeded_init
from ..history.store import RunStore
from ..methods.ensemble import Ensemble, normalise_weights
from .trainer import Alone, fit, make_distiller, predict_logits
from ..history.weights import model_card

__all__ = ["RunResult", "run_experiment", "resume", "compare", "CompareResult", "load_teacher_weights",
           "build_models", "verdict", "extra_teacher_seed", "distillation_target", "results_table",
           "RESULT_KEYS", "STUDENT_ARMS", "arm_descriptions", "parse_seeds", "summarise", "little_to_distil",
           "find_trained_teacher", "teacher_fingerprint", "accuracy_gain"]

STUDENT_ARMS = ("baseline", "distilled", "pseudo")
# makes the callbacks that file more of a run once its data is loaded: recorder(cfg, store, data)
Recorders = Callable[[RunConfig, RunStore, Any], list[Callback]]  # students of one run; all start from one init


def arm_descriptions(cfg: RunConfig) -> dict[str, str]:
    """What each model of a run saw in training, in plain words (the UI and the CLI say it)."""
    d = cfg.data
    labels = f"{d.labelled:,} labelled samples" if d.labelled else "every training label"
    if d.omit_class >= 0:
        labels += f" (class {d.omit_class} left out)"
    out = {"teacher": "every label of the training split" if cfg.teacher_source == "train"
           else f"weights from {cfg.teacher_source} (not trained here)",
           "baseline": f"{labels}, nothing from the teacher"}
    if d.transfer_set:
        out["distilled"] = (f"{labels}, plus the teacher's soft targets on them and on the transfer "
                            "set (the rest of the training split, its labels hidden)")
    else:
        out["distilled"] = f"{labels} and the teacher's soft targets on the same samples"
    if cfg.pseudo_arm:
        out["pseudo"] = (f"{labels}, plus the teacher's hard (argmax) labels on the transfer set; "
                         "no soft targets")
    return out


MAX_WEIGHTS_BYTES = 200 * 2**20  # refuse larger teacher files: no model here needs more


@dataclass
class RunResult:
    status: str  # completed | stopped | diverged | failed
    message: str
    metrics: dict[str, dict[str, Any]]  # phase -> test metrics (+ params, size_mb, latency_ms)
    history: dict[str, list[dict]] = field(default_factory=dict)  # phase -> epoch dicts
    models: dict[str, nn.Module] = field(default_factory=dict)  # phase -> trained module
    run_id: int | None = None
    seconds: float = 0.0
    predictions: dict[str, torch.Tensor] = field(default_factory=dict)  # phase -> test-set classes
    seed: int | None = None  # the training seed of the run
    teacher_from: int | None = None  # the history run whose trained teacher this run reused

    @property
    def gain(self) -> float | None:
        """Distilled minus baseline test accuracy, or None if either is missing."""
        return accuracy_gain(self.metrics)


def accuracy_gain(metrics: dict) -> float | None:
    """Distilled minus baseline test accuracy (a fraction; x 100 for points) of a run's metrics.

    Args:
        metrics: phase -> test metrics, as a run stores them.
    Returns:
        The gain, or None when either model has no accuracy.
    """
    b, d = metrics.get("baseline") or {}, metrics.get("distilled") or {}
    return d["accuracy"] - b["accuracy"] if "accuracy" in b and "accuracy" in d else None


def build_models(cfg: RunConfig, in_shape, num_classes) -> tuple[nn.Module, nn.Module]:
    """Teacher and student as the config names them, initialised from ``cfg.seed``.

    Each build holds the init lock (``seeded_init``), so a run started while another thread
    builds models gets the same weights as when it runs alone.
    """
    with seeded_init(cfg.seed):
        teacher = build_model(cfg.teacher.name, in_shape=in_shape, num_classes=num_classes,
                              params=cfg.teacher.params)
    with seeded_init(cfg.seed):
        student = build_model(cfg.student.name, in_shape=in_shape, num_classes=num_classes,
                              params=cfg.student.params)
    return teacher, student


def load_teacher_weights(model: nn.Module, source: str, store: RunStore | None = None) -> nn.Module:
    """Load ``run:<id>`` (from the history) or ``file:<path>`` (an untrusted .pt or .safetensors).

    The file is read with ``torch.load(weights_only=True)`` or safetensors — never unpickled — and loaded
    strictly, so a file for another architecture is refused with the keys that differ.

    Raises:
        ConfigError: with a message a person can act on.
    """
    if source.startswith("run:"):
        if store is None:
            raise ConfigError("teacher_source 'run:<id>' needs the run history (a RunStore)")
        try:
            state = store.load_weights(int(source[4:]), "teacher")
        except (KeyError, ValueError) as e:
            raise ConfigError(f"teacher_source {source!r}: {e}") from None
    elif source.startswith("file:"):
        path = source[5:]
        try:
            size = os.path.getsize(path)
        except OSError:
            raise ConfigError(f"teacher weights file {path!r} does not exist") from None
        if size > MAX_WEIGHTS_BYTES:
            raise ConfigError(f"teacher weights file is {size / 2**20:.0f} MB; the limit is "
                              f"{MAX_WEIGHTS_BYTES // 2**20} MB")
        from ..history.weights import read_state_dict

        state = read_state_dict(path)  # .pt with weights_only=True, or .safetensors: never unpickled
    else:
        raise ConfigError(f"teacher_source {source!r} is not a source of weights")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError("teacher weights must be a state_dict: a dict of parameter name → tensor")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ConfigError(f"teacher weights hold NaN or infinite values (in {', '.join(map(str, bad[:3]))}"
                          f"{', ...' if len(bad) > 3 else ''}); a teacher must have finite weights")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        msg = str(e).replace("\n", " ")
        raise ConfigError(f"teacher weights do not fit the chosen teacher architecture: {msg[:600]}") from None
    return model


def _evaluate(model, data, device, batch_size, teacher_test_logits=None) -> tuple[dict, torch.Tensor]:
    logits = predict_logits(model, data.x_test, device=device)
    m = classification_metrics(logits, data.y_test)
    if teacher_test_logits is not None:
        m.update(teacher_agreement(logits, teacher_test_logits))
    p = profile(model, tuple(data.in_shape), batch_size=batch_size, device=device)
    m.update(params=p.params, size_mb=p.size_mb, latency_ms=p.latency_ms, latency_spread_ms=p.latency_spread_ms)
    return m, logits


def _interval_text(gain: float, low: float, high: float) -> str:
    return f"{gain * 100:+.2f} points, 95 % CI {low * 100:+.2f} to {high * 100:+.2f}"


def verdict(metrics: dict) -> str:
    """A one-line, honest reading of baseline vs distilled test accuracy, with its uncertainty.

    The words follow the paired bootstrap interval of the gain: "helped" when all of it is above
    0, "hurt" when all of it is below, else "no clear difference".
    """
    b, d = metrics.get("baseline"), metrics.get("distilled")
    if not b or not d:
        return "No verdict: the baseline and the distilled student did not both finish."
    accs = f"{d['accuracy'] * 100:.2f}% distilled vs {b['accuracy'] * 100:.2f}% alone"
    if "gain_ci_low" not in d:  # a run stored before verdicts carried an interval
        gain = accuracy_gain(metrics) * 100
        return f"Distillation: {gain:+.2f} points of test accuracy ({accs}, one seed, no interval stored)."
    word = verdict_word(d["gain_ci_low"], d["gain_ci_high"])
    head = {"helped": "Distillation helped", "hurt": "Distillation hurt",
            "no clear difference": "Distillation made no clear difference"}[word]
    n = d["gain_won"] + d["gain_lost"]
    text = (f"{head}: {_interval_text(d['gain'], d['gain_ci_low'], d['gain_ci_high'])} ({accs}; "
            f"{d['gain_won']} of {n} test samples they disagree on go to the distilled student, "
            f"McNemar p = {d['gain_p']:.2g}; one seed).")
    if "vs_pseudo" in d:
        text += (" Soft targets against the teacher's hard labels: "
                 f"{_interval_text(d['vs_pseudo'], d['vs_pseudo_ci_low'], d['vs_pseudo_ci_high'])}"
                 f" ({verdict_word(d['vs_pseudo_ci_low'], d['vs_pseudo_ci_high'])}).")
    return text


LITTLE_TO_DISTIL = 0.01  # a teacher within 1 point of the baseline has little to teach


def little_to_distil(metrics: dict) -> str | None:
    """A warning when the teacher the students learned from is not clearly better than the baseline."""
    t = metrics.get("ensemble") or metrics.get("teacher")
    b = metrics.get("baseline")
    if not t or not b or t["accuracy"] - b["accuracy"] >= LITTLE_TO_DISTIL:
        return None
    return (f"Little to distil: the teacher ({t['accuracy'] * 100:.2f} %) is not clearly better than the "
            f"student trained alone ({b['accuracy'] * 100:.2f} %), so its soft targets have little to add. "
            "Give the students fewer labels (the teacher keeps all of them), or the teacher more capacity "
            "or epochs.")


RESULT_KEYS = ("accuracy", "f1", "ece", "nll", "agreement", "kl_teacher", "params", "size_mb",
               "latency_ms", "latency_spread_ms", "compression", "speedup", "gain", "gain_ci_low", "gain_ci_high", "gain_p")  # the test metrics a run reports per model


def results_table(metrics: dict[str, dict], cfg: RunConfig | None = None) -> pd.DataFrame:
    """Every model a run tested, in the order it reported them, with the headline test metrics.

    Rows are the phases of ``metrics`` (teacher, [teacher_2, ..., ensemble,] baseline,
    distilled); a metric a model lacks is NaN. The model the students learned from (the
    ensemble in a multi-teacher run, else the teacher) agrees with itself: agreement 1.0.

    Args:
        metrics: phase -> test metrics, as ``RunResult.metrics`` or a stored run has them.
        cfg: the run's config; when given, an ``architecture`` column names each model.
    Returns:
        DataFrame with a ``model`` column, then ``architecture`` (with cfg), then RESULT_KEYS.
    """
    target = "ensemble" if "ensemble" in metrics else "teacher"  # read from metrics: cfg is optional
    arch = None
    if cfg is not None:
        arch = {p: f"{mc.name} {json.dumps(mc.params)}" for p, mc in phase_architectures(cfg).items()}
        weights = normalise_weights(cfg.teacher_weights, 1 + len(cfg.extra_teachers))
        arch["ensemble"] = "weights " + ", ".join(f"{w:.2f}" for w in weights)
    rows = []
    for phase, m in metrics.items():
        if not m:
            continue
        row = {"model": phase}
        if arch is not None:
            row["architecture"] = arch.get(phase, "")
        row.update({k: m.get(k, float("nan")) for k in RESULT_KEYS})
        if phase == target:
            row["agreement"] = 1.0
        rows.append(row)
    cols = ["model", *(["architecture"] if arch is not None else []), *RESULT_KEYS]
    return pd.DataFrame(rows, columns=cols)


def run_experiment(cfg: RunConfig, *, store: RunStore | None = None,
                   callbacks: Iterable[Callback] = (), stop: threading.Event | None = None,
                   reuse: dict[str, nn.Module] | None = None, data=None, kind: str = "run",
                   group: str | None = None, find_teacher: bool = True,
                   recorders: Iterable[Recorders] = ()) -> RunResult:
    """Train (or load) the teacher, then the baseline and the distilled student, and test all three.

    Args:
        cfg: the run. store: where history and weights go (None = keep nothing).
        callbacks: receive every event. stop: set it to stop between steps.
        reuse: already trained models by phase ("teacher", "baseline") that are evaluated, not
            trained again; a sweep trains them once and reuses them in every cell.
        data: an already loaded DataBundle for cfg.data (saves reloading in sweeps).
        kind, group: how the run is filed in the history.
        find_teacher: with a store, load a teacher that a finished run trained the same way instead
            of training it (:func:`find_trained_teacher`); distributed ranks decide this beforehand.
        recorders: with a store, each ``recorder(cfg, store, data)`` returns callbacks that
            file more of the run once its data is loaded; the lab passes
            :data:`kdcore.lab.teaching.LAB_RECORDERS` (decision boundaries per epoch, for 2-D sets).
    Returns:
        RunResult; never raises for a run that diverges or is stopped (see ``status``).
    Raises:
        ConfigError: with a store, ``$KD_CHECKPOINT_S`` is not a number of seconds (nothing filed).

    With a store, each phase keeps its last finished epoch as a checkpoint until the run ends, so
    a run whose process dies (``interrupted``) or that is stopped can be :func:`resume`\\ d.
    """
    every_s = checkpoint_every_s() if store else 0.0  # a bad $KD_CHECKPOINT_S files nothing
    run_id = store.create_run(to_dict(cfg), kind=kind, group=group, name=cfg.name) if store else None
    res = RunResult("completed", "", {}, run_id=run_id, seed=cfg.seed)
    return _Pipeline(cfg, res, store, callbacks, stop, dict(reuse or {}), data,
                     recorders=recorders, checkpoint_every_s=every_s).run(find_teacher)


CHECKPOINT_ENV = "KD_CHECKPOINT_S"
DEFAULT_CHECKPOINT_S = 5.0  # at most one checkpoint per phase per 5 s: a killed run redoes < 5 s


def checkpoint_every_s() -> float:
    """Seconds between two checkpoints of a phase: ``$KD_CHECKPOINT_S`` (0 = every epoch), else 5.

    Measured (benchmarks/checkpoint_cost.py): a checkpoint of the default 2-D run takes ~3 ms
    while its student's epoch takes ~2 ms, so checkpointing every epoch doubled that run.
    """
    text = os.environ.get(CHECKPOINT_ENV, "").strip()
    try:
        value = float(text) if text else DEFAULT_CHECKPOINT_S
    except ValueError:
        raise ConfigError(f"{CHECKPOINT_ENV}={text!r} must be a number of seconds (0 = every epoch)") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{CHECKPOINT_ENV}={text!r} must be 0 or more seconds")
    return value


def resume(run_id: int, *, store: RunStore, callbacks: Iterable[Callback] = (),
           stop: threading.Event | None = None, data=None, recorders: Iterable[Recorders] = ()) -> RunResult:
    """Train an ``interrupted`` or ``stopped`` run on from where it ended, under the same id.

    Phases that finished are loaded from their saved weights; the phase that was cut short goes on
    from its last finished epoch's checkpoint (weights, optimiser, schedule, data-order and dropout
    generators), so on the CPU the run ends with the weights an uninterrupted run would have.

    A phase with no checkpoint (cut short in its first epoch, or trained on several processes,
    which keep none) trains again from its start, on this one process.

    Args:
        run_id: the run. store: its history. callbacks, stop, data, recorders: as in
            :func:`run_experiment` (recorders see only the epochs trained after the resume).
    Raises:
        KeyError: no such run. ConfigError: the run is not interrupted or stopped, or
            ``$KD_CHECKPOINT_S`` is not a number of seconds.
    """
    cfg = from_dict(store.get(run_id)["config"])  # a config this version cannot read fails here
    every_s = checkpoint_every_s()
    store.reopen_run(run_id)
    done = {p: store.load_weights(run_id, p) for p in phase_architectures(cfg)
            if store.weights_path(run_id, p).is_file()}
    res = RunResult("completed", "", {}, run_id=run_id, seed=cfg.seed)
    return _Pipeline(cfg, res, store, callbacks, stop, {}, data, done=done,
                     recorders=recorders, checkpoint_every_s=every_s).run(find_teacher=False)



# DataConfig fields that decide only what the students see, or where files are looked for: a
# teacher trained under any value of them is the same teacher
STUDENT_ONLY_DATA = ("labelled", "balanced", "transfer_set", "transfer_ratio", "omit_class", "download",
                     "data_dir")


def teacher_fingerprint(config: dict) -> str:
    """What decides a trained teacher's weights, as one string (from a stored config dict)."""
    data = {k: v for k, v in config["data"].items() if k not in STUDENT_ONLY_DATA}
    return json.dumps({"data": data, "teacher": config["teacher"], "teacher_optim": config["teacher_optim"],
                       "seed": config["seed"], "device": str(config.get("device", "cpu")).split(":")[0]},
                      sort_keys=True, default=str)


def find_trained_teacher(store: RunStore, cfg: RunConfig, *, exclude: int | None = None) -> int | None:
    """The newest finished run that trained exactly the teacher ``cfg`` would train, or None.

    Only a run whose teacher was trained (``teacher_source = train``) and whose teacher weights
    are on disk counts; ``cfg.retrain_teacher`` or a teacher from elsewhere returns None.
    """
    if cfg.teacher_source != "train" or cfg.retrain_teacher:
        return None
    want = teacher_fingerprint(to_dict(cfg))
    for r in store.list(status="completed"):
        c = r["config"]
        if (r["id"] != exclude and c.get("teacher_source") == "train" and "teacher_optim" in c
                and teacher_fingerprint(c) == want and store.weights_path(r["id"], "teacher").exists()):
            return r["id"]
    return None


def without_class(data, k: int):
    """The bundle with class ``k`` removed from the training split only (validation and test keep it)."""
    keep = data.y_train != k
    return dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])


def distillation_target(cfg: RunConfig) -> str:
    """The phase whose outputs the students learned from: "ensemble" with extra teachers, else "teacher"."""
    return "ensemble" if cfg.extra_teachers else "teacher"


def extra_teacher_seed(cfg: RunConfig, k: int) -> int:
    """Init and data-order seed of teacher_k (k >= 2): far from the seeds a compare uses."""
    return cfg.seed + 1000 * (k - 1)


class _Pipeline:
    """One run's phases: the teacher(s), the baseline, the distilled student, the pseudo arm.

    :meth:`run` files the run and turns any failure into its status; each phase goes through
    :meth:`train` (fit it, or load it when it finished before an interruption) and :meth:`finish`
    (test it, save it).
    """

    def __init__(self, cfg: RunConfig, res: RunResult, store: RunStore | None, callbacks, stop,
                 reuse: dict[str, nn.Module], data, *, done: dict[str, dict] | None = None,
                 recorders: Iterable[Recorders] = (), checkpoint_every_s: float = 0.0):
        self.cfg, self.res, self.store, self.stop, self.reuse, self.data = cfg, res, store, stop, reuse, data
        self.done = done or {}  # phase -> state_dict of phases that finished before an interruption
        self.resuming = done is not None
        # the history files an event before anyone watching hears of it: a page's ETA then times
        # an epoch's filing as part of that epoch's end, as it is
        self.cbs = ([store.recorder(res.run_id)] if store else []) + list(callbacks)
        self.device = torch.device(cfg.device)
        self.recorders = tuple(recorders)
        self.checkpoint_every_s = checkpoint_every_s

    def emit(self, ev) -> None:
        for cb in self.cbs:
            cb(ev)

    def run(self, find_teacher: bool) -> RunResult:
        cfg, res, store = self.cfg, self.res, self.store
        t0 = time.perf_counter()
        try:
            if self.data is None:
                self.data = load_data(cfg.data)  # inside: a missing set fails the run
            if store:
                for make in self.recorders:
                    self.cbs[:0] = make(cfg, store, self.data)
            if find_teacher and store is not None and "teacher" not in self.reuse:  # a teacher is trained once
                res.teacher_from = find_trained_teacher(store, cfg, exclude=res.run_id)
                if res.teacher_from is not None:
                    t = build_model(cfg.teacher.name, in_shape=tuple(self.data.in_shape),
                                    num_classes=len(self.data.classes), params=cfg.teacher.params)
                    self.reuse["teacher"] = load_teacher_weights(t, f"run:{res.teacher_from}", store)
            self.phases()
        except ConfigError as e:
            res.status, res.message = "failed", str(e)
        except Exception as e:  # keep the history consistent; the UI shows the message
            res.status, res.message = "failed", f"{type(e).__name__}: {e}"
        res.seconds = time.perf_counter() - t0
        if res.status == "completed":
            res.message = verdict(res.metrics)
            if res.teacher_from is not None:
                res.message += (f" The teacher was not trained again: run {res.teacher_from} trained the same "
                                "one (architecture, data, optimiser, seed); retrain_teacher = true trains it anew.")
        if store:
            store.finish_run(res.run_id, res.status, res.message, res.metrics)
        self.emit(RunEnd(res.status, res.message, res.metrics, res.run_id))
        return res

    def train(self, name: str, distiller, optim, phase_data, teacher_logits=None, seed: int | None = None) -> bool:
        """Fit one phase (from its checkpoint when resuming); False when it stopped or diverged."""
        res, store = self.res, self.store
        if name in self.done:  # it finished before the run was interrupted: its weights are on disk
            distiller.student.load_state_dict(self.done[name])
            res.history[name] = store.phase_history(res.run_id, name)
            return True
        ckpt = (lambda state: store.save_checkpoint(res.run_id, name, state)) if store else None
        start = store.load_checkpoint(res.run_id, name) if self.resuming else None
        r = fit(distiller, phase_data, optim, phase=name, seed=self.cfg.seed if seed is None else seed,
                device=self.device, callbacks=[self.emit], stop=self.stop, teacher_logits=teacher_logits,
                run_id=res.run_id, checkpoint=ckpt, checkpoint_every_s=self.checkpoint_every_s, resume=start)
        res.history[name] = r.epochs
        if r.status != "completed":
            res.status, res.message = r.status, r.message
            self.emit(PhaseEnd(name, r.status, {}, r.message, res.run_id))
        return r.status == "completed"

    def finish(self, name: str, model: nn.Module, teacher_test=None, save: bool = True) -> torch.Tensor:
        """Test a trained phase, pair a student with the baseline, save the weights; its test logits."""
        res, data = self.res, self.data
        model.eval()
        res.models[name] = model
        m, logits = _evaluate(model, data, self.device, self.cfg.optim.batch_size, teacher_test)
        if name in STUDENT_ARMS:
            m.update(compression(m, res.metrics["teacher"]))
        if name in STUDENT_ARMS and name != "baseline":  # paired with the baseline on the test set
            m.update(paired_comparison(res.predictions["baseline"], logits.argmax(1), data.y_test).as_metrics())
        res.metrics[name] = m
        res.predictions[name] = logits.argmax(1)
        if self.store and save:
            self.store.save_weights(res.run_id, name, model.state_dict(),
                                    model_card(self.cfg, name, data, run_id=res.run_id))
        self.emit(PhaseEnd(name, "completed", m, "", res.run_id))
        return logits

    def frozen(self, model: nn.Module) -> nn.Module:
        model.to(self.device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def phases(self) -> None:
        cfg, data = self.cfg, self.data
        t_model, student = build_models(cfg, tuple(data.in_shape), len(data.classes))
        teacher = self.teacher(t_model)
        if teacher is None:
            return
        self.students(student, *teacher)

    def teacher(self, t_model: nn.Module) -> tuple[nn.Module, torch.Tensor] | None:
        """1. The teacher: reused, loaded or trained; with extra teachers, their ensemble.

        Returns:
            (the model the students learn from, its test logits), or None when training ended early.
        """
        cfg = self.cfg
        if "teacher" in self.reuse:
            t_model = self.reuse["teacher"]
        elif cfg.teacher_source == "train" or "teacher" in self.done:
            if not self.train("teacher", Alone(t_model), cfg.teacher_optim, self.data):
                return None
        else:
            load_teacher_weights(t_model, cfg.teacher_source, self.store)
        t_test = self.finish("teacher", self.frozen(t_model))
        if not cfg.extra_teachers:
            return t_model, t_test
        # multi-teacher KD: teacher_2, teacher_3, ... and their ensemble become "the teacher"
        members, member_logits = [t_model], {"teacher": t_test}
        for i, mcfg in enumerate(cfg.extra_teachers):
            name, seed_k = f"teacher_{i + 2}", extra_teacher_seed(cfg, i + 2)
            src = cfg.extra_teacher_sources[i] if cfg.extra_teacher_sources else "train"
            if name in self.reuse:
                m = self.reuse[name]
            else:
                with seeded_init(seed_k):
                    m = build_model(mcfg.name, in_shape=tuple(self.data.in_shape),
                                    num_classes=len(self.data.classes), params=mcfg.params)
                if src == "train" or name in self.done:
                    if not self.train(name, Alone(m), cfg.teacher_optim, self.data, seed=seed_k):
                        return None
                else:
                    load_teacher_weights(m, src, self.store)
            member_logits[name] = self.finish(name, self.frozen(m))
            members.append(m)
        ensemble = Ensemble(members, cfg.teacher_weights).to(self.device).eval()
        e_test = self.finish("ensemble", ensemble, save=False)  # its members are saved one by one
        for name, logits in member_logits.items():  # how far each teacher is from the ensemble
            self.res.metrics[name].update(teacher_agreement(logits, e_test))
        return ensemble, e_test

    def students(self, student: nn.Module, t_model: nn.Module, t_test: torch.Tensor) -> None:
        """2. the baseline, 3. the distilled student and 4. the pseudo-label arm: one init, one data order."""
        cfg, data, device = self.cfg, self.data, self.device
        # the teacher learns from every class; students may be denied one (the omitted-class experiment)
        student_data = without_class(data, cfg.data.omit_class) if cfg.data.omit_class >= 0 else data
        # few labels: the baseline sees only the labelled samples; the distilled student also the
        # transfer set (the rest of the training split, unlabelled) when there is one
        labelled, transfer = student_views(student_data, cfg.data)
        baseline = copy.deepcopy(student)  # the same initial weights as the distilled student
        pseudo = copy.deepcopy(student) if cfg.pseudo_arm else None  # ... and as the hard-label arm
        if "baseline" in self.reuse:
            baseline = self.reuse["baseline"]
        elif not self.train("baseline", Alone(baseline), cfg.optim, labelled):
            return
        self.finish("baseline", baseline, t_test)
        distiller = make_distiller(cfg.loss, student, t_model, in_shape=tuple(data.in_shape), seed=cfg.seed)
        distil_data = transfer if transfer is not None else labelled
        cache = None
        if distil_data.augment is None and (distiller.uses_teacher_logits_only or pseudo is not None):
            cache = predict_logits(t_model, distil_data.x_train, device=device)
        if not self.train("distilled", distiller, cfg.optim, distil_data,
                          cache if distiller.uses_teacher_logits_only else None):
            return
        self.finish("distilled", distiller.student, t_test)
        if pseudo is None:
            return
        # 4. the same student on the teacher's argmax over the transfer set
        hard = cache if cache is not None else predict_logits(t_model, distil_data.x_train, device=device)
        y = torch.where(distil_data.y_train == UNLABELLED, hard.argmax(1), distil_data.y_train)
        if not self.train("pseudo", Alone(pseudo), cfg.optim, dataclasses.replace(distil_data, y_train=y)):
            return
        self.finish("pseudo", pseudo, t_test)
        # what soft targets add to the teacher's answer: distilled against the hard-label arm
        self.res.metrics["distilled"].update(paired_comparison(
            self.res.predictions["pseudo"], self.res.predictions["distilled"], data.y_test).as_metrics("vs_pseudo"))



@dataclass
class CompareResult:
    table: pd.DataFrame  # one row per model: mean and std of each metric over seeds
    runs: list[RunResult]
    gain_mean: float | None  # distilled - baseline accuracy, mean over completed seeds
    gain_std: float | None
    group: str = ""
    gains: list[float] = field(default_factory=list)  # one per completed seed
    gain_ci: tuple[float, float] | None = None  # t-based 95 % interval of the mean gain (>= 2 seeds)

    @property
    def status(self) -> str:
        """completed when every seed completed, else the first other status."""
        return next((r.status for r in self.runs if r.status != "completed"), "completed")

    @property
    def message(self) -> str:
        bad = next((r for r in self.runs if r.status != "completed"), None)
        return self.summary() if bad is None else f"seed {bad.seed}: {bad.message}"

    def summary(self) -> str:
        """The verdict over seeds, one line, e.g. for the CLI and the Train page."""
        if not self.gains:
            return "No verdict: no seed finished both the baseline and the distilled student."
        k = len(self.gains)
        each = ", ".join(f"{g * 100:+.2f}" for g in self.gains)
        if self.gain_ci is None:
            return (f"Gain of distillation over the baseline: {self.gain_mean * 100:+.2f} points over "
                    "1 seed (run more seeds for an interval over seeds).")
        lo, hi = self.gain_ci
        word = {"helped": "helped", "hurt": "hurt",
                "no clear difference": "made no clear difference"}[verdict_word(lo, hi)]
        return (f"Over {k} seeds distillation {word}: {self.gain_mean * 100:+.2f} ± "
                f"{self.gain_std * 100:.2f} points (mean ± std), 95 % CI {lo * 100:+.2f} to "
                f"{hi * 100:+.2f}; per seed {each}.")


COMPARE_METRICS = ("accuracy", "f1", "ece", "nll", "agreement", "kl_teacher", "params", "size_mb",
                   "latency_ms", "gain", "gain_ci_low", "gain_ci_high")


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: a count ("3" -> 0, 1, 2) or a comma-separated list ("3,7").

    Raises:
        ConfigError: 0, a negative or non-integer seed, a repeat, or more than 100 seeds.
    """
    parts = [p.strip() for p in str(text).split(",")]
    if not all(p.isdigit() for p in parts):
        raise ConfigError(f"--seeds {text!r} must be a count (3 = seeds 0, 1, 2) or a list of seeds "
                          ">= 0 (3,7)")
    if len(parts) == 1:
        n = int(parts[0])
        if not 1 <= n <= 100:
            raise ConfigError(f"--seeds {text!r}: the count must be in [1, 100]")
        return list(range(n))
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds) or len(seeds) > 100:
        raise ConfigError(f"--seeds {text!r}: the seeds must be different, at most 100 of them")
    return seeds


def compare(cfg: RunConfig, *, seeds: Iterable[int] = (0, 1, 2), store: RunStore | None = None,
            callbacks: Iterable[Callback] = (), stop: threading.Event | None = None,
            runner: Callable[[RunConfig, dict, str], RunResult] | None = None,
            share_teacher: bool = True, data=None, recorders: Iterable[Recorders] = ()) -> CompareResult:
    """Run teacher, baseline and distilled student once per seed and summarise mean ± std.

    Args:
        cfg: the run; its seed is replaced by each of ``seeds`` (init and data order).
        seeds: training seeds. store, callbacks, stop, recorders: as in :func:`run_experiment`.
        runner: trains one seed, ``runner(cfg, reuse, group) -> RunResult``; None trains it here
            (:func:`run_experiment`); :func:`kdcore.train.distributed.seed_runner` trains it on several
            local processes (``stop`` is then not checked).
        share_teacher: train the teacher(s) once, with the first seed, and distil every seed from
            it, so the spread is the students'; with a store, later seeds record it as
            ``teacher_source = run:<first run>``. False trains a teacher per seed.
        data: an already loaded DataBundle for cfg.data (else it is loaded here).
    Returns:
        CompareResult with a pandas table (rows teacher/baseline/distilled, plus teacher_2, ...
        and ensemble for multi-teacher runs, and pseudo), each seed's gain and their interval.
    """
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("compare needs at least one seed")
    group = f"compare-{uuid.uuid4().hex[:8]}"
    if runner is None:
        data = data if data is not None else load_data(cfg.data)

        def runner(c, reuse, group):
            return run_experiment(c, store=store, callbacks=callbacks, stop=stop, data=data,
                                  kind="compare", group=group, reuse=reuse, recorders=recorders)
    runs: list[RunResult] = []
    reuse: dict[str, nn.Module] = {}
    cbs = list(callbacks)
    for i, s in enumerate(seeds):
        for cb in cbs:
            cb(SeedStart(s, i, len(seeds)))
        c = replace(cfg, seed=s)
        if runs and share_teacher and cfg.teacher_source == "train" and runs[0].status == "completed":
            if runs[0].run_id is not None:  # the stored config says where the teacher came from
                c = replace(c, teacher_source=f"run:{runs[0].run_id}")
            reuse = {p: m for p, m in runs[0].models.items() if p == "teacher" or p.startswith("teacher_")}
        r = runner(c, reuse, group)
        runs.append(r)
        if r.status == "stopped":
            break
    return summarise(runs, group)


def summarise(runs: list[RunResult], group: str = "") -> CompareResult:
    """Mean ± std of every model's metrics over runs, and the gain's interval over seeds."""
    rows = []
    # teacher, [teacher_2, ..., ensemble,] baseline, distilled, [pseudo]: the order runs report them
    phases = list(dict.fromkeys(p for r in runs for p in r.metrics))
    target = "ensemble" if "ensemble" in phases else "teacher"
    for phase in phases:
        vals = pd.DataFrame([r.metrics[phase] for r in runs if phase in r.metrics])
        if vals.empty:
            continue
        if phase == target:
            vals["agreement"] = 1.0  # the model the students learned from agrees with itself
        row = {"model": phase, "seeds": len(vals)}
        for k in COMPARE_METRICS:
            if k in vals:
                row[f"{k}_mean"] = vals[k].mean()
                row[f"{k}_std"] = vals[k].std(ddof=1) if len(vals) > 1 else 0.0
        rows.append(row)
    gains = [r.gain for r in runs if r.gain is not None]
    if not gains:
        return CompareResult(pd.DataFrame(rows), runs, None, None, group)
    iv = seed_interval(gains)
    ci = (iv["ci_low"], iv["ci_high"]) if len(gains) > 1 else None
    return CompareResult(pd.DataFrame(rows), runs, iv["mean"], iv["std"], group, gains, ci)
