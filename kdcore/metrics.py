"""Test-set metrics computed from logits (pure functions, no model code)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import kd_div

__all__ = ["classification_metrics", "expected_calibration_error", "per_class_accuracy",
           "teacher_agreement", "compression"]


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """ECE (Guo et al. 2017): sum over equal-width confidence bins of |acc - conf| * share of samples.

    Args:
        probs: [N, K] predicted probabilities. labels: [N]. n_bins: number of bins over (0, 1].
    Returns:
        ECE in [0, 1].
    """
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).float()
    # bin b holds confidences in (b/n, (b+1)/n]; conf is never 0 for a softmax output
    bins = torch.clamp(torch.ceil(conf * n_bins).long() - 1, 0, n_bins - 1)
    n = len(labels)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.sum().item() / n * abs(correct[m].mean().item() - conf[m].mean().item())
    return ece


def _confusion(pred: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """K x K counts (float64), rows = true class, columns = predicted."""
    return torch.bincount(labels * k + pred, minlength=k * k).reshape(k, k).double()


def _recall(cm: torch.Tensor) -> torch.Tensor:
    """Per-class share of samples predicted correctly from a confusion matrix; NaN with no samples."""
    n = cm.sum(1)
    return torch.where(n > 0, cm.diag() / n.clamp_min(1), torch.full_like(n, float("nan")))


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> list[float]:
    """Share of each class's samples predicted correctly (the class's recall).

    The one rule: a class with no samples has no accuracy, so it is NaN here (a chart draws no bar
    for it); :func:`classification_metrics` counts it 0 in its macro means and stored list.

    Args:
        logits: [N, K]. labels: [N] class indices. num_classes: K (default: the logits' width).
    Returns:
        K floats in [0, 1] or NaN.
    """
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels).long()
    k = logits.shape[1] if num_classes is None else num_classes
    return _recall(_confusion(logits.argmax(1), labels, k)).tolist()


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Accuracy, macro precision/recall/F1, confusion matrix, NLL and 15-bin ECE.

    Args:
        logits: [N, K]. labels: [N] class indices.
    Returns:
        dict; ``confusion`` is a K x K list of lists, rows = true class, columns = predicted;
        ``per_class_accuracy`` is :func:`per_class_accuracy` with 0 for a class with no samples
        (as the macro means count it; JSON has no NaN).
    """
    k = logits.shape[1]
    pred = logits.argmax(1)
    cm = _confusion(pred, labels, k)
    tp = cm.diag()
    # classes with no predictions (or no samples) count 0 for that class, as sklearn's zero_division=0
    precision = torch.where(cm.sum(0) > 0, tp / cm.sum(0).clamp_min(1), torch.zeros_like(tp))
    recall = _recall(cm).nan_to_num(0.0)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12),
                     torch.zeros_like(tp))
    return {
        "accuracy": (pred == labels).double().mean().item(),
        "precision": precision.mean().item(),
        "recall": recall.mean().item(),
        "f1": f1.mean().item(),
        "nll": F.cross_entropy(logits.double(), labels).item(),
        "ece": expected_calibration_error(F.softmax(logits.double(), 1), labels),
        "confusion": cm.long().tolist(),
        "per_class_accuracy": recall.tolist(),
    }


def teacher_agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> dict:
    """Top-1 agreement with the teacher and mean KL(teacher || student) at T = 1.

    Args:
        student_logits: [N, K]. teacher_logits: [N, K].
    Returns:
        {"agreement": share of equal argmax, "kl_teacher": mean KL in nats}.
    """
    agree = (student_logits.argmax(1) == teacher_logits.argmax(1)).double().mean().item()
    kl = kd_div(student_logits.double(), teacher_logits.double(), 1.0, t2=False).item()
    return {"agreement": agree, "kl_teacher": kl}


def compression(student: dict, teacher: dict) -> dict:
    """Compression ratio (teacher / student parameters) and speed-up (teacher / student latency).

    Args:
        student, teacher: dicts with ``params`` and ``latency_ms``.
    """
    return {
        "compression": teacher["params"] / max(student["params"], 1),
        "speedup": teacher["latency_ms"] / max(student["latency_ms"], 1e-9),
    }
