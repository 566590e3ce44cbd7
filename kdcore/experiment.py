"""One distillation run (teacher → baseline student → distilled student) and the seed comparison.

The dashboard and the CLI both call :func:`run_experiment` / :func:`compare` with a RunConfig,
so a run made in the browser replays headless from its stored config.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

from .lazy import pandas as pd  # imported on first use: start-up stays fast
import torch
import torch.nn as nn

from .config import RunConfig, phase_architectures, replace, to_dict
from .data import load_data
from .errors import ConfigError
from .events import Callback, PhaseEnd, RunEnd
from .metrics import classification_metrics, compression, teacher_agreement
from .models import build_model, profile
from .store import RunStore
from .methods.ensemble import Ensemble, normalise_weights
from .trainer import Alone, fit, make_distiller, predict_logits

__all__ = ["RunResult", "run_experiment", "compare", "CompareResult", "load_teacher_weights",
           "build_models", "verdict", "extra_teacher_seed", "distillation_target", "results_table",
           "RESULT_KEYS"]

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

    @property
    def gain(self) -> float | None:
        """Distilled minus baseline test accuracy, or None if either is missing."""
        b, d = self.metrics.get("baseline"), self.metrics.get("distilled")
        return d["accuracy"] - b["accuracy"] if b and d else None


def build_models(cfg: RunConfig, in_shape, num_classes) -> tuple[nn.Module, nn.Module]:
    """Teacher and student as the config names them, initialised from ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    teacher = build_model(cfg.teacher.name, in_shape=in_shape, num_classes=num_classes,
                          params=cfg.teacher.params)
    torch.manual_seed(cfg.seed)
    student = build_model(cfg.student.name, in_shape=in_shape, num_classes=num_classes,
                          params=cfg.student.params)
    return teacher, student


def load_teacher_weights(model: nn.Module, source: str, store: RunStore | None = None) -> nn.Module:
    """Load ``run:<id>`` (from the history) or ``file:<path>`` (an untrusted .pt) into ``model``.

    The file is read with ``torch.load(weights_only=True)`` — never unpickled — and loaded
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
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a pickle with code, a zip bomb, random bytes...
            raise ConfigError("teacher weights file is not a plain PyTorch state_dict saved with "
                              f"torch.save(model.state_dict(), ...); loading it safely failed: "
                              f"{str(e).splitlines()[0][:300]}") from None
    else:
        raise ConfigError(f"teacher_source {source!r} is not a source of weights")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError("teacher weights must be a state_dict: a dict of parameter name → tensor")
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
    m.update(params=p.params, size_mb=p.size_mb, latency_ms=p.latency_ms)
    return m, logits


def verdict(metrics: dict) -> str:
    """A one-line, honest reading of baseline vs distilled test accuracy."""
    b, d = metrics.get("baseline"), metrics.get("distilled")
    if not b or not d:
        return "No verdict: the baseline and the distilled student did not both finish."
    gain = (d["accuracy"] - b["accuracy"]) * 100
    word = "helped" if gain > 0 else ("made no difference" if gain == 0 else "did not help")
    return (f"Distillation {word}: {gain:+.2f} points of test accuracy "
            f"({d['accuracy'] * 100:.2f}% distilled vs {b['accuracy'] * 100:.2f}% alone, one seed; "
            f"run compare over several seeds to see the spread).")


RESULT_KEYS = ("accuracy", "f1", "ece", "nll", "agreement", "kl_teacher", "params", "size_mb",
               "latency_ms", "compression", "speedup")  # the test metrics a run reports per model


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
                   group: str | None = None) -> RunResult:
    """Train (or load) the teacher, then the baseline and the distilled student, and test all three.

    Args:
        cfg: the run. store: where history and weights go (None = keep nothing).
        callbacks: receive every event. stop: set it to stop between steps.
        reuse: already trained models by phase ("teacher", "baseline") that are evaluated, not
            trained again; a sweep trains them once and reuses them in every cell.
        data: an already loaded DataBundle for cfg.data (saves reloading in sweeps).
        kind, group: how the run is filed in the history.
    Returns:
        RunResult; never raises for a run that diverges or is stopped (see ``status``).
    """
    t0 = time.perf_counter()
    run_id = store.create_run(to_dict(cfg), kind=kind, group=group, name=cfg.name) if store else None
    cbs = list(callbacks) + ([store.recorder(run_id)] if store else [])

    def emit(ev):
        for cb in cbs:
            cb(ev)

    res = RunResult("completed", "", {}, run_id=run_id)
    try:
        data = data if data is not None else load_data(cfg.data)  # inside: a missing set fails the run
        if store:  # 2-D sets: the students' boundary per epoch, saved on RunEnd, for the epoch scrubber
            from .teaching import boundary_recorder

            cbs[:0] = boundary_recorder(cfg, store, data)
        _pipeline(cfg, res, store, emit, stop, dict(reuse or {}), data)
    except ConfigError as e:
        res.status, res.message = "failed", str(e)
    except Exception as e:  # keep the history consistent; the UI shows the message
        res.status, res.message = "failed", f"{type(e).__name__}: {e}"
    res.seconds = time.perf_counter() - t0
    if res.status == "completed":
        res.message = verdict(res.metrics)
    if store:
        store.finish_run(run_id, res.status, res.message, res.metrics)
    emit(RunEnd(res.status, res.message, res.metrics, run_id))
    return res


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


def _pipeline(cfg, res: RunResult, store, emit, stop, reuse: dict, data) -> None:
    device = torch.device(cfg.device)
    # the teacher learns from every class; students may be denied one (the omitted-class experiment)
    student_data = without_class(data, cfg.data.omit_class) if cfg.data.omit_class >= 0 else data
    t_model, student = build_models(cfg, tuple(data.in_shape), len(data.classes))
    baseline = copy.deepcopy(student)  # the same initial weights as the distilled student
    bs = cfg.optim.batch_size

    def train(name, distiller, optim, phase_data, teacher_logits=None, seed=cfg.seed) -> bool:
        r = fit(distiller, phase_data, optim, phase=name, seed=seed, device=device, callbacks=[emit],
                stop=stop, teacher_logits=teacher_logits, run_id=res.run_id)
        res.history[name] = r.epochs
        if r.status != "completed":
            res.status, res.message = r.status, r.message
            emit(PhaseEnd(name, r.status, {}, r.message, res.run_id))
        return r.status == "completed"

    def finish(name, model, teacher_test=None, save=True):
        model.eval()
        res.models[name] = model
        m, logits = _evaluate(model, data, device, bs, teacher_test)
        if name in ("baseline", "distilled"):
            m.update(compression(m, res.metrics["teacher"]))
        res.metrics[name] = m
        if store and save:
            store.save_weights(res.run_id, name, model.state_dict())
        emit(PhaseEnd(name, "completed", m, "", res.run_id))
        return logits

    # 1. teacher: reused, loaded, or trained
    if "teacher" in reuse:
        t_model = reuse["teacher"]
    elif cfg.teacher_source == "train":
        if not train("teacher", Alone(t_model), cfg.teacher_optim, data):
            return
    else:
        load_teacher_weights(t_model, cfg.teacher_source, store)
    t_model.to(device).eval()
    for p in t_model.parameters():
        p.requires_grad_(False)
    t_test = finish("teacher", t_model)

    # 1b. multi-teacher KD: teacher_2, teacher_3, ... and their ensemble become "the teacher"
    if cfg.extra_teachers:
        members, member_logits = [t_model], {"teacher": t_test}
        for i, mcfg in enumerate(cfg.extra_teachers):
            name, seed_k = f"teacher_{i + 2}", extra_teacher_seed(cfg, i + 2)
            src = cfg.extra_teacher_sources[i] if cfg.extra_teacher_sources else "train"
            # a forked RNG keeps the baseline and the distilled student exactly as in the
            # single-teacher run with the same seed
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed_k)
                if name in reuse:
                    m = reuse[name]
                else:
                    m = build_model(mcfg.name, in_shape=tuple(data.in_shape), num_classes=len(data.classes),
                                    params=mcfg.params)
                    if src == "train":
                        if not train(name, Alone(m), cfg.teacher_optim, data, seed=seed_k):
                            return
                    else:
                        load_teacher_weights(m, src, store)
            m.to(device).eval()
            for p in m.parameters():
                p.requires_grad_(False)
            member_logits[name] = finish(name, m)
            members.append(m)
        t_model = Ensemble(members, cfg.teacher_weights).to(device).eval()
        t_test = finish("ensemble", t_model, save=False)  # its members are saved one by one
        for name, logits in member_logits.items():  # how far each teacher is from the ensemble
            res.metrics[name].update(teacher_agreement(logits, t_test))

    # 2. baseline and 3. distilled share init, data order and schedule (all from cfg.seed)
    if "baseline" in reuse:
        baseline = reuse["baseline"]
    elif not train("baseline", Alone(baseline), cfg.optim, student_data):
        return
    finish("baseline", baseline, t_test)
    distiller = make_distiller(cfg.loss, student, t_model, in_shape=tuple(data.in_shape))
    cache = None
    if student_data.augment is None and distiller.uses_teacher_logits_only:
        cache = predict_logits(t_model, student_data.x_train, device=device)
    if not train("distilled", distiller, cfg.optim, student_data, cache):
        return
    finish("distilled", distiller.student, t_test)


@dataclass
class CompareResult:
    table: pd.DataFrame  # one row per model: mean and std of each metric over seeds
    runs: list[RunResult]
    gain_mean: float | None  # distilled - baseline accuracy, mean over completed seeds
    gain_std: float | None
    group: str = ""


COMPARE_METRICS = ("accuracy", "f1", "ece", "nll", "agreement", "kl_teacher", "params", "size_mb",
                   "latency_ms")


def compare(cfg: RunConfig, *, seeds: Iterable[int] = (0, 1, 2), store: RunStore | None = None,
            callbacks: Iterable[Callback] = (), stop: threading.Event | None = None,
            nproc: int = 1) -> CompareResult:
    """Run teacher, baseline and distilled student once per seed and summarise mean ± std.

    Args:
        cfg: the run; its seed is replaced by each of ``seeds`` (init and data order).
        seeds: training seeds. store, callbacks, stop: as in :func:`run_experiment`.
        nproc: above 1, each seed trains on that many local processes
            (:func:`kdcore.distributed.run_distributed`; ``stop`` is then not checked).
    Returns:
        CompareResult with a pandas table (rows teacher/baseline/distilled, plus teacher_2, ...
        and ensemble for multi-teacher runs) and the gain.
    """
    group = f"compare-{uuid.uuid4().hex[:8]}"
    if nproc > 1:
        from .distributed import run_distributed

        def one(c):
            return run_distributed(c, nproc, runs_dir=None if store is None else store.root,
                                   callbacks=callbacks, kind="compare", group=group).result
    else:
        data = load_data(cfg.data)

        def one(c):
            return run_experiment(c, store=store, callbacks=callbacks, stop=stop, data=data,
                                  kind="compare", group=group)
    runs = []
    for s in seeds:
        r = one(replace(cfg, seed=s))
        runs.append(r)
        if r.status == "stopped":
            break
    rows = []
    # teacher, [teacher_2, ..., ensemble,] baseline, distilled: the order the runs report them
    phases = list(dict.fromkeys(p for r in runs for p in r.metrics))
    for phase in phases:
        vals = pd.DataFrame([r.metrics[phase] for r in runs if phase in r.metrics])
        if vals.empty:
            continue
        row = {"model": phase, "seeds": len(vals)}
        for k in COMPARE_METRICS:
            if k in vals:
                row[f"{k}_mean"] = vals[k].mean()
                row[f"{k}_std"] = vals[k].std(ddof=1) if len(vals) > 1 else 0.0
        rows.append(row)
    gains = pd.Series([r.gain for r in runs if r.gain is not None], dtype=float)
    return CompareResult(pd.DataFrame(rows), runs,
                         gains.mean() if len(gains) else None,
                         (gains.std(ddof=1) if len(gains) > 1 else 0.0) if len(gains) else None,
                         group)
