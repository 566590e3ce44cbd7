"""The teaching lab's computations: temperature, T², dark knowledge, boundaries, the omitted class, sweeps.

Every number the lab pages show is computed here, from logits or models, so it can be tested
against a hand calculation. Nothing here imports Streamlit. Softmax at T, entropy and the class
similarity matrix live here and every page (Train included) shows them from here; the soft loss
and its gradient come from
:func:`kdcore.losses.kd_div` through autograd, never from a formula re-derived here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from ..lazy import pandas as pd  # imported on first use: start-up stays fast
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..events import EpochEnd, RunEnd
from ..losses import kd_div
from ..history.store import run_row
from ..train.trainer import predict_logits

__all__ = [
    "soft_targets", "entropy", "effective_classes", "parse_logits", "temperature_profile",
    "temperature_table", "kl_vs_temperature", "soft_gradient_vs_temperature",
    "shift_logit", "bias_sweep", "best_bias", "BIAS_DELTAS", "omitted_class_config",
    "omitted_summary", "class_similarity", "top_confusable",
    "disagreements", "Grid", "plane_grid", "grid_surface", "BoundaryRecorder",
    "boundary_recorder", "LAB_RECORDERS", "Boundaries", "load_boundaries", "sweep_frame", "sweep_grid",
    "best_cell", "sweep_cells_from_store", "log_temperatures",
]

def log_temperatures(lo: float = 0.1, hi: float = 100.0, n: int = 61) -> list[float]:
    """``n`` temperatures evenly spaced on a log scale from ``lo`` to ``hi`` (for curves vs T)."""
    if not (0 < lo < hi) or n < 2:
        raise ValueError(f"need 0 < lo < hi and n >= 2, got lo={lo}, hi={hi}, n={n}")
    return [float(t) for t in np.geomspace(lo, hi, n)]


# --------------------------------------------------------------------------------------------
# Temperature


def soft_targets(logits: torch.Tensor, T: float) -> torch.Tensor:
    """softmax(logits / T) along the last axis, in float64."""
    return F.softmax(logits.double() / T, dim=-1)


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of each distribution along the last axis (0·log 0 = 0)."""
    return -torch.special.xlogy(p, p).sum(-1)


def class_similarity(logits: torch.Tensor, labels: torch.Tensor, T: float, num_classes: int) -> torch.Tensor:
    """Row c = the average soft target softmax(z/T) over samples whose true class is c.

    Off-diagonal mass says which classes the model finds alike ("dark knowledge").
    """
    p = soft_targets(logits, T)
    out = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    for c in range(num_classes):
        m = labels == c
        if m.any():
            out[c] = p[m].mean(0)
    return out


def effective_classes(p: torch.Tensor) -> torch.Tensor:
    """exp(entropy): how many equally likely classes would be as uncertain (1 = sure, K = uniform).

    Args:
        p: probabilities [..., K].
    Returns:
        tensor [...] in [1, K].
    """
    return torch.exp(entropy(p))


def parse_logits(text: str, *, max_classes: int = 20) -> list[float]:
    """Logits typed by a person: numbers separated by commas or spaces.

    Raises:
        ConfigError: fewer than 2 or more than ``max_classes`` values, or a value that is not a
        finite number; the message shows what to type.
    """
    parts = [p for p in (text or "").replace(",", " ").replace(";", " ").split() if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        bad = next(p for p in parts if not _is_float(p))
        raise ConfigError(f"logits: {bad!r} is not a number; type numbers separated by commas, "
                          "e.g. 3, 1, 0.2, -1") from None
    if not 2 <= len(values) <= max_classes:
        raise ConfigError(f"logits: type between 2 and {max_classes} numbers (one per class), "
                          f"got {len(values)}")
    if not all(math.isfinite(v) and abs(v) <= 1e4 for v in values):
        raise ConfigError("logits: every value must be a finite number between -10000 and 10000")
    return values


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def temperature_profile(logits: torch.Tensor, temps: Iterable[float]) -> pd.DataFrame:
    """Entropy, effective number of classes and top probability of softmax(z/T) for each T.

    Args:
        logits: one sample [K] or a batch [N, K] (then each column is the mean over samples).
        temps: temperatures > 0.
    Returns:
        DataFrame with columns T, entropy (nats), effective_classes, max_prob.
    """
    z = torch.as_tensor(logits, dtype=torch.float64)
    z = z.unsqueeze(0) if z.dim() == 1 else z
    rows = []
    for T in temps:
        p = soft_targets(z, float(T))
        h = entropy(p)
        rows.append({"T": float(T), "entropy": h.mean().item(),
                     "effective_classes": torch.exp(h).mean().item(),
                     "max_prob": p.max(-1).values.mean().item()})
    return pd.DataFrame(rows, columns=["T", "entropy", "effective_classes", "max_prob"])


def temperature_table(logits: torch.Tensor, temps: Iterable[float],
                      classes: Sequence[str]) -> pd.DataFrame:
    """Long table of softmax(z/T) for one sample: one row per (T, class) with its probability."""
    z = torch.as_tensor(logits, dtype=torch.float64).reshape(-1)
    if len(classes) != len(z):
        raise ValueError(f"{len(classes)} class names for {len(z)} logits")
    rows = []
    for T in temps:
        for c, p in zip(classes, soft_targets(z, float(T)).tolist()):
            rows.append({"T": float(T), "class": c, "p": p})
    return pd.DataFrame(rows, columns=["T", "class", "p"])


def kl_vs_temperature(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                      temps: Iterable[float]) -> pd.DataFrame:
    """Mean KL(softmax(t/T) ‖ softmax(s/T)) over samples, for each T, from :func:`kd_div`.

    Args:
        teacher_logits, student_logits: [N, K] (or [K]).
        temps: temperatures > 0.
    Returns:
        DataFrame with T, kl (nats, the soft term without T²) and kl_t2 (with T², what KD minimises).
    """
    t = torch.as_tensor(teacher_logits, dtype=torch.float64)
    s = torch.as_tensor(student_logits, dtype=torch.float64)
    t, s = (t.unsqueeze(0), s.unsqueeze(0)) if t.dim() == 1 else (t, s)
    rows = []
    with torch.no_grad():
        for T in temps:
            kl = kd_div(s, t, float(T), t2=False).item()
            rows.append({"T": float(T), "kl": kl, "kl_t2": kl * float(T) ** 2})
    return pd.DataFrame(rows, columns=["T", "kl", "kl_t2"])


def soft_gradient_vs_temperature(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                                 temps: Iterable[float],
                                 labels: torch.Tensor | None = None) -> pd.DataFrame:
    """Size of the soft loss's gradient on the student's logits as T grows, with and without T².

    The gradient is taken by autograd through :func:`kdcore.losses.kd_div` — the loss the trainer
    uses — so the chart shows what training sees. Per sample, d KL / d z_s = (q - p) / T with
    q = softmax(z_s/T), p = softmax(z_t/T); for large T, q - p shrinks like 1/T too, so without
    T² the gradient fades like 1/T² and the soft term would stop mattering (Hinton 2015, §2).

    Args:
        student_logits, teacher_logits: [N, K] (or [K]).
        temps: temperatures > 0.
        labels: [N] true classes; when given, the column ``ce`` holds the hard-label
            cross-entropy's gradient size (it does not depend on T), for reference.
    Returns:
        DataFrame with T, without_t2, with_t2 (mean over samples of the per-sample L2 norm of the
        gradient) and, with labels, ce.
    """
    s0 = torch.as_tensor(student_logits, dtype=torch.float64).detach()
    t = torch.as_tensor(teacher_logits, dtype=torch.float64).detach()
    s0, t = (s0.unsqueeze(0), t.unsqueeze(0)) if s0.dim() == 1 else (s0, t)
    n = s0.shape[0]

    def grad_norm(loss_fn) -> float:
        s = s0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss_fn(s), s)
        return (g * n).norm(dim=1).mean().item()  # undo the batch mean: per-sample gradients

    ce = None
    if labels is not None:
        y = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        ce = grad_norm(lambda s: F.cross_entropy(s, y))
    rows = []
    for T in temps:
        T = float(T)
        row = {"T": T, "without_t2": grad_norm(lambda s: kd_div(s, t, T, t2=False)),
               "with_t2": grad_norm(lambda s: kd_div(s, t, T, t2=True))}
        if ce is not None:
            row["ce"] = ce
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Accuracy per class and the omitted class's bias


def shift_logit(logits: torch.Tensor, cls: int, delta: float) -> torch.Tensor:
    """The logits with ``delta`` added to class ``cls``'s output: raising that class's bias."""
    out = torch.as_tensor(logits).clone()
    out[:, cls] += delta
    return out


def bias_sweep(logits: torch.Tensor, labels: torch.Tensor, cls: int,
               deltas: Iterable[float]) -> pd.DataFrame:
    """Accuracy overall and on class ``cls`` after raising that class's logit by each delta.

    Hinton et al. (2015, §3) raise the omitted digit's bias by 3.5 and its test accuracy
    recovers from 13 % to 98.6 %.

    Args:
        logits: [N, K] a model's outputs. labels: [N]. cls: the class whose bias moves.
        deltas: the bias changes to try.
    Returns:
        DataFrame with delta, accuracy, errors, class_accuracy, class_errors (errors on
        samples of class ``cls``), false_positives (other samples now predicted as ``cls``).
    """
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels)
    mask = labels == cls
    n_cls = int(mask.sum())
    rows = []
    for d in deltas:
        pred = shift_logit(logits, cls, float(d)).argmax(1)
        wrong = pred != labels
        rows.append({"delta": float(d), "accuracy": 1 - wrong.double().mean().item(),
                     "errors": int(wrong.sum()),
                     "class_accuracy": 1 - wrong[mask].sum().item() / n_cls if n_cls else float("nan"),
                     "class_errors": int(wrong[mask].sum()),
                     "false_positives": int(((pred == cls) & ~mask).sum())})
    return pd.DataFrame(rows)


def best_bias(logits: torch.Tensor, labels: torch.Tensor, cls: int, deltas: Iterable[float]) -> float:
    """The delta with the highest overall accuracy (ties: the smallest change)."""
    table = bias_sweep(logits, labels, cls, deltas)
    table = table.assign(size=table["delta"].abs()).sort_values(["accuracy", "size"],
                                                                ascending=[False, True])
    return float(table["delta"].iloc[0])


BIAS_DELTAS = tuple(float(d) for d in np.arange(-2.0, 15.0001, 0.25))  # the range the lab searches


def omitted_class_config(dataset: str = "fashion_mnist", omit: int = 3, *, train_subset: int = 0,
                         teacher: tuple[str, dict] = ("cnn", {}), student_hidden: Sequence[int] = (512, 512),
                         epochs: int = 8, teacher_epochs: int = 5, T: float = 8.0, alpha: float = 0.1,
                         lr: float = 1e-3, batch_size: int = 128, seed: int = 0):
    """The omitted-class experiment (Hinton et al. 2015, §3) as a RunConfig.

    The teacher trains on every class; both students train on the transfer set without class
    ``omit``. A low α lets the soft targets — the only place the students can learn about the
    omitted class — dominate, as in the paper.
    """
    from ..config import DataConfig, LossConfig, ModelConfig, OptimConfig, RunConfig

    return RunConfig(
        data=DataConfig(name=dataset, train_subset=train_subset, omit_class=omit),
        teacher=ModelConfig(teacher[0], dict(teacher[1])),
        student=ModelConfig("mlp", {"hidden": [int(h) for h in student_hidden]}),
        loss=LossConfig(name="kd", temperature=T, alpha=alpha),
        optim=OptimConfig(epochs=epochs, lr=lr, batch_size=batch_size),
        teacher_optim=OptimConfig(epochs=teacher_epochs, lr=lr, batch_size=batch_size),
        seed=seed, name=f"omitted class {omit}")


def omitted_summary(test_logits: dict[str, torch.Tensor], y_test: torch.Tensor, cls: int,
                    val_logits: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
                    deltas: Iterable[float] = BIAS_DELTAS) -> dict:
    """The numbers Hinton et al. report for the omitted class, for each model and after correction.

    Args:
        test_logits: phase -> [N, K] test logits (teacher, baseline, distilled).
        y_test: [N]. cls: the omitted class.
        val_logits, y_val: the distilled student on the validation split, to choose the bias
            without looking at the test set (the paper tuned it on the test set; both are given).
        deltas: bias changes searched.
    Returns:
        {"class_total": n test samples of cls, "models": {phase: {errors, class_errors, accuracy,
        class_accuracy}}, "test_best": {...delta, errors...}, "val_best": {...} or None,
        "fixed_3_5": the distilled student with the paper's +3.5}.
    """
    deltas = list(deltas)
    def row(z: torch.Tensor, delta: float) -> dict:
        r = bias_sweep(z, y_test, cls, [delta]).to_dict("records")[0]
        return {k: (int(v) if k in ("errors", "class_errors", "false_positives") else float(v))
                for k, v in r.items()}

    models = {p: row(z, 0.0) for p, z in test_logits.items()}
    d = test_logits["distilled"]
    sweep = bias_sweep(d, y_test, cls, deltas)

    def at(delta: float) -> dict:
        return row(d, float(delta))

    out = {"class_total": int((torch.as_tensor(y_test) == cls).sum()), "models": models,
           "test_best": at(best_bias(d, y_test, cls, deltas)), "fixed_3_5": at(3.5), "val_best": None,
           "sweep": sweep}
    if val_logits is not None and y_val is not None:
        out["val_best"] = at(best_bias(val_logits, y_val, cls, deltas))
    return out


# --------------------------------------------------------------------------------------------
# Dark knowledge


def top_confusable(similarity: torch.Tensor, classes: Sequence[str], k: int = 3) -> pd.DataFrame:
    """For each true class, the ``k`` other classes that get most of its average soft target.

    Args:
        similarity: [K, K] from :func:`class_similarity` (row = true class).
        classes: names. k: how many per class.
    Returns:
        DataFrame: class, then ``k`` pairs of columns "n-th" (a class name) and "p n-th" (its
        share of the row's probability mass), and "off-diagonal" (the total mass not on the
        true class: how much dark knowledge the row carries).
    """
    sim = torch.as_tensor(similarity, dtype=torch.float64)
    kk = sim.shape[0]
    k = max(1, min(k, kk - 1))
    rows = []
    for c in range(kk):
        off = sim[c].clone()
        off[c] = -1.0
        vals, idx = torch.topk(off, k)
        row: dict[str, Any] = {"class": classes[c]}
        for j, (v, i) in enumerate(zip(vals.tolist(), idx.tolist()), start=1):
            row[f"#{j}"] = classes[i]
            row[f"p #{j}"] = v
        row["off-diagonal"] = (sim[c].sum() - sim[c, c]).item()
        rows.append(row)
    return pd.DataFrame(rows)


def disagreements(teacher_logits: torch.Tensor, student_logits: torch.Tensor, labels: torch.Tensor,
                  n: int = 12, T: float = 1.0) -> pd.DataFrame:
    """Test samples where teacher and student disagree most.

    Samples whose top class differs come first; within each group, a larger
    KL(softmax(t/T) ‖ softmax(s/T)) ranks higher.

    Returns:
        DataFrame with index (the test sample), label, teacher, student (predicted classes),
        p_teacher, p_student (each one's probability for its own top class at T = 1), kl, differ.
    """
    t = torch.as_tensor(teacher_logits, dtype=torch.float64)
    s = torch.as_tensor(student_logits, dtype=torch.float64)
    p_t, p_s = soft_targets(t, T), soft_targets(s, T)
    kl = (p_t * (torch.log(p_t.clamp_min(1e-300)) - torch.log(p_s.clamp_min(1e-300)))).sum(1)
    pt, ps = t.argmax(1), s.argmax(1)
    differ = pt != ps
    # sort by (differ, kl) descending; index order breaks ties so the result is deterministic
    order = sorted(range(len(kl)), key=lambda i: (-int(differ[i]), -kl[i].item(), i))[:n]
    p1_t, p1_s = soft_targets(t, 1.0), soft_targets(s, 1.0)
    rows = [{"index": i, "label": int(labels[i]), "teacher": int(pt[i]), "student": int(ps[i]),
             "p_teacher": p1_t[i, pt[i]].item(), "p_student": p1_s[i, ps[i]].item(),
             "kl": kl[i].item(), "differ": bool(differ[i])} for i in order]
    return pd.DataFrame(rows, columns=["index", "label", "teacher", "student", "p_teacher",
                                       "p_student", "kl", "differ"])


# --------------------------------------------------------------------------------------------
# Decision boundaries on the 2-D sets


@dataclass(frozen=True)
class Grid:
    """A regular grid over the plane: ``xs`` [n], ``ys`` [n]; ``points`` [n*n, 2], row-major in y."""

    xs: np.ndarray
    ys: np.ndarray

    @property
    def points(self) -> torch.Tensor:
        gx, gy = np.meshgrid(self.xs, self.ys)  # gx[i, j] = xs[j], gy[i, j] = ys[i]
        return torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32))

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.ys), len(self.xs)


def plane_grid(x: torch.Tensor, n: int = 80, margin: float = 0.5) -> Grid:
    """An ``n`` x ``n`` grid covering the 2-D points ``x`` plus ``margin`` on every side."""
    if not 2 <= n <= 400:
        raise ValueError(f"grid size n = {n} must be in [2, 400]")
    x = torch.as_tensor(x, dtype=torch.float32)
    lo, hi = x.min(0).values - margin, x.max(0).values + margin
    return Grid(np.linspace(lo[0].item(), hi[0].item(), n, dtype=np.float32),
                np.linspace(lo[1].item(), hi[1].item(), n, dtype=np.float32))


def grid_surface(model: nn.Module, grid: Grid, T: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A model's predicted class and softmax(z/T) per grid point.

    Returns:
        (pred [ny, nx] int, probs [ny, nx, K] float) — the confidence surface is ``probs.max(-1)``.
    """
    logits = predict_logits(model, grid.points)
    p = soft_targets(logits, T).numpy()
    ny, nx = grid.shape
    return logits.argmax(1).numpy().reshape(ny, nx), p.reshape(ny, nx, -1)


class BoundaryRecorder:
    """Callback that records students' predictions on a fixed grid while they train.

    Bounded: at most ``max_snapshots`` epochs per phase (evenly spaced, always the last), each
    stored as uint8 class and uint8 confidence maps — 80 x 80 x 40 x 2 bytes = 0.5 MB per phase
    before compression. On RunEnd it saves itself as the run's ``boundaries`` artifact.

    Args:
        grid: where to evaluate. phases: which phases to record. max_snapshots: per phase.
        store: a RunStore to save into on RunEnd (None = keep in memory only).
    """

    ARTIFACT = "boundaries"

    def __init__(self, grid: Grid, *, phases: Sequence[str] = ("baseline", "distilled"),
                 max_snapshots: int = 40, store=None):
        if max_snapshots < 1:
            raise ValueError(f"max_snapshots must be >= 1, got {max_snapshots}")
        self.grid, self.phases, self.max_snapshots, self.store = grid, tuple(phases), max_snapshots, store
        self._points = grid.points
        self.error = ""  # why the snapshots could not be saved, if they could not
        self.snapshots: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {p: [] for p in self.phases}

    def wants(self, epoch: int, epochs: int) -> bool:
        """Whether this epoch is one of the at most ``max_snapshots`` recorded (the last always is)."""
        stride = math.ceil(epochs / self.max_snapshots)
        return (epochs - epoch) % stride == 0

    def __call__(self, ev: Any) -> None:
        if isinstance(ev, EpochEnd) and ev.phase in self.phases and ev.model is not None:
            if self.wants(ev.epoch, ev.epochs):
                p = F.softmax(predict_logits(ev.model, self._points).double(), 1)
                conf, pred = p.max(1)
                ny, nx = self.grid.shape
                self.snapshots[ev.phase].append(
                    (ev.epoch, pred.to(torch.uint8).numpy().reshape(ny, nx),
                     torch.round(conf * 255).to(torch.uint8).numpy().reshape(ny, nx)))
        elif isinstance(ev, RunEnd) and self.store is not None and ev.run_id is not None:
            if any(self.snapshots.values()):
                try:
                    self.store.save_artifact(ev.run_id, self.ARTIFACT, self.to_arrays())
                except (OSError, ValueError) as e:  # a full disk must not fail a finished run
                    self.error = f"boundary snapshots not saved: {e}"

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The snapshots as plain arrays: xs, ys, and per phase <phase>_epochs/_pred/_conf."""
        out = {"xs": self.grid.xs, "ys": self.grid.ys}
        for phase, snaps in self.snapshots.items():
            if not snaps:
                continue
            out[f"{phase}_epochs"] = np.array([s[0] for s in snaps], dtype=np.int32)
            out[f"{phase}_pred"] = np.stack([s[1] for s in snaps])
            out[f"{phase}_conf"] = np.stack([s[2] for s in snaps])
        return out


def boundary_recorder(cfg, store, data) -> list[BoundaryRecorder]:
    """The recorder a run on a 2-D set gets (as a one-item list), or [] for other data.

    Args:
        cfg: the RunConfig. store: where the snapshots go on RunEnd. data: the run's loaded bundle.
    """
    from ..registry import DATASETS

    if store is None or DATASETS.get(cfg.data.name).kind != "2d":
        return []
    try:
        x = torch.cat([data.x_train, data.x_test])
        return [BoundaryRecorder(plane_grid(x, 80), store=store)]
    except Exception:  # noqa: BLE001  (snapshots are a teaching extra: never fail a run for them)
        return []


@dataclass
class Boundaries:
    """A run's recorded boundary snapshots (see :class:`BoundaryRecorder`)."""

    xs: np.ndarray
    ys: np.ndarray
    epochs: dict[str, np.ndarray] = field(default_factory=dict)  # phase -> [S] epoch numbers
    pred: dict[str, np.ndarray] = field(default_factory=dict)  # phase -> [S, ny, nx] uint8
    conf: dict[str, np.ndarray] = field(default_factory=dict)  # phase -> [S, ny, nx] in [0, 1]

    @property
    def grid(self) -> Grid:
        return Grid(self.xs, self.ys)

    def at(self, phase: str, epoch: int) -> tuple[int, np.ndarray, np.ndarray]:
        """The snapshot of ``phase`` at the last recorded epoch <= ``epoch`` (or the first one)."""
        eps = self.epochs[phase]
        i = int(np.searchsorted(eps, epoch, side="right")) - 1
        i = min(max(i, 0), len(eps) - 1)
        return int(eps[i]), self.pred[phase][i], self.conf[phase][i]


# what the lab records while any run trains: pass as run_experiment(recorders=LAB_RECORDERS)
LAB_RECORDERS = (boundary_recorder,)


def load_boundaries(store, run_id: int) -> Boundaries | None:
    """The boundary snapshots of a stored run, or None if it has none."""
    try:
        a = store.load_artifact(run_id, BoundaryRecorder.ARTIFACT)
    except KeyError:
        return None
    b = Boundaries(a["xs"], a["ys"])
    for key in a:
        if key.endswith("_epochs"):
            phase = key[: -len("_epochs")]
            b.epochs[phase] = a[key]
            b.pred[phase] = a[f"{phase}_pred"]
            b.conf[phase] = a[f"{phase}_conf"].astype(np.float32) / 255.0
    return b


# --------------------------------------------------------------------------------------------
# Sweeps


SWEEP_COLUMNS = ["alpha", "T", "status", "run_id", "teacher", "baseline", "distilled", "gain",
                 "seconds"]


def sweep_frame(cells: Iterable[dict]) -> pd.DataFrame:
    """One row per finished sweep cell, columns as :data:`SWEEP_COLUMNS`; gain = distilled - baseline."""
    rows = []
    for c in cells:
        row = {k: c.get(k) for k in SWEEP_COLUMNS}
        b, d = row["baseline"], row["distilled"]
        row["gain"] = d - b if b is not None and d is not None else None
        rows.append(row)
    df = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    for col in ("alpha", "T", "teacher", "baseline", "distilled", "gain", "seconds"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    return df


def sweep_grid(frame: pd.DataFrame, value: str = "distilled", *, alphas: Sequence[float] = (),
               temps: Sequence[float] = ()) -> pd.DataFrame:
    """The sweep as an α x T table of ``value`` (rows α, columns T); cells not run yet are NaN.

    A cell run more than once (it should not be) shows its mean.
    """
    a = sorted(set(map(float, alphas)) | set(frame["alpha"].dropna()))
    t = sorted(set(map(float, temps)) | set(frame["T"].dropna()))
    done = frame.dropna(subset=[value])
    grid = done.pivot_table(index="alpha", columns="T", values=value, aggfunc="mean") if len(done) else None
    out = pd.DataFrame(np.nan, index=pd.Index(a, name="alpha"), columns=pd.Index(t, name="T"))
    if grid is not None:
        out.update(grid)
    return out


def best_cell(frame: pd.DataFrame) -> dict | None:
    """The cell with the highest distilled accuracy (ties: lower T, then higher α), or None."""
    done = frame.dropna(subset=["distilled"])
    if done.empty:
        return None
    row = done.sort_values(["distilled", "T", "alpha"], ascending=[False, True, False]).iloc[0]
    return {k: (None if pd.isna(v) else v) for k, v in row.to_dict().items()}


def sweep_cells_from_store(store, group: str) -> list[dict]:
    """The cells of a stored sweep (kind ``sweep``, one group), oldest first."""
    cells = []
    for r in reversed(store.list(group=group)):
        f = run_row(r)
        cells.append({"alpha": f["alpha"], "T": f["T"], "status": f["status"], "run_id": f["id"],
                      **{p: f[f"{p}_acc"] for p in ("teacher", "baseline", "distilled")},
                      "seconds": (r["finished"] - r["created"]) if r["finished"] else None})
    return cells
