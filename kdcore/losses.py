"""Logit-level distillation losses.

Convention used everywhere in KD Playground: ``alpha`` weighs the hard-label cross-entropy and
``1 - alpha`` weighs the soft (teacher) term. ``alpha = 1`` is the student trained alone;
``alpha = 0`` learns from the teacher only.

Each registered loss has the signature ``fn(student_logits, teacher_logits, labels, cfg)`` where
``cfg`` is the :class:`~kdcore.config.LossConfig`, and returns a dict of *weighted* terms whose
sum is the loss that is back-propagated, so every term can be charted on its own. The vanilla
losses register here like every other method, each with its :class:`~kdcore.registry.MethodSpec`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import LOSSES, MethodSpec

__all__ = ["kd_div", "soft_cross_entropy", "hinton_kd", "soft_ce", "mse_logits", "hard_ce", "UNLABELLED",
           "KL_FORMULA"]

UNLABELLED = -1  # the label of a transfer-set sample: the student gets only the teacher's outputs


def hard_ce(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The hard-label cross-entropy, mean over the samples that have a label.

    Transfer-set samples carry ``UNLABELLED`` and are left out of the mean; every batch the
    trainer builds holds labelled samples, so the mean is never over an empty set.

    Args:
        student_logits: [B, K]. labels: [B] class indices, or UNLABELLED.
    Returns:
        scalar tensor.
    """
    return F.cross_entropy(student_logits, labels, ignore_index=UNLABELLED)


def kd_div(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float,
           t2: bool = True, *, weight: float = 1.0) -> torch.Tensor:
    """Hinton et al. (2015) soft loss: T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean.

    Args:
        student_logits: [B, K] student outputs (gradients flow here).
        teacher_logits: [B, K] teacher outputs (treated as constants).
        T: temperature > 0.
        t2: multiply by T^2 so the gradient scale does not shrink as 1/T^2 when T grows.
        weight: a factor folded into the same multiplication (the loss's 1 - alpha), which saves
            a tiny student's step one more tensor operation.
    Returns:
        scalar tensor.
    """
    log_p_s = F.log_softmax(student_logits / T, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / T, dim=1)
    # F.kl_div(input=log q, target=log p, log_target=True) = sum p (log p - log q) = KL(p || q)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    scale = weight * (T * T if t2 else 1.0)
    return kl if scale == 1.0 else kl * scale


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float,
                       t2: bool = True) -> torch.Tensor:
    """Cross-entropy to the teacher's soft targets: -sum softmax(t/T) log softmax(s/T), times T^2.

    Equals :func:`kd_div` plus the teacher's entropy (a constant), so the gradients are identical.

    Args:
        student_logits: [B, K]; teacher_logits: [B, K]; T: temperature; t2: scale by T^2.
    Returns:
        scalar tensor.
    """
    p_t = F.softmax(teacher_logits.detach() / T, dim=1)
    ce = -(p_t * F.log_softmax(student_logits / T, dim=1)).sum(dim=1).mean()
    return ce * (T * T) if t2 else ce


def _combine(student_logits, labels, soft, alpha: float) -> dict[str, torch.Tensor]:
    ce = hard_ce(student_logits, labels)
    return {"ce": alpha * ce, "kd": (1.0 - alpha) * soft}


def hinton_kd(student_logits, teacher_logits, labels, *, T: float, alpha: float,
              t2: bool = True) -> dict[str, torch.Tensor]:
    """alpha * CE(labels, s) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T)).

    Args:
        student_logits: [B, K]; teacher_logits: [B, K]; labels: [B] class indices.
        T: temperature; alpha: weight of the hard-label CE; t2: keep the T^2 factor.
    Returns:
        {"ce": alpha * CE, "kd": (1 - alpha) * soft term}.
    """
    return {"ce": alpha * hard_ce(student_logits, labels),
            "kd": kd_div(student_logits, teacher_logits, T, t2, weight=1.0 - alpha)}


# the soft term of Hinton's KD, which the feature and adversarial methods add to
KL_FORMULA = r"\mathrm{KL}\big(\sigma(z_t/T)\,\|\,\sigma(z_s/T)\big)"


@LOSSES.register(MethodSpec(
    name="kd", title="Vanilla KD (Hinton et al. 2015)",
    text="The student matches the teacher's temperature-softened distribution: "
         "alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T)).",
    formula=KL_FORMULA))
def _kd(student_logits, teacher_logits, labels, cfg):
    return hinton_kd(student_logits, teacher_logits, labels, T=cfg.temperature, alpha=cfg.alpha,
                     t2=cfg.t2)


@LOSSES.register(MethodSpec(
    name="soft_ce", title="Soft cross-entropy",
    text="Cross-entropy to the teacher's soft targets instead of KL; differs from KD by the "
         "teacher's entropy, a constant, so the gradients are the same.",
    formula=r"\mathrm{CE}\big(\sigma(z_t/T),\,\sigma(z_s/T)\big)"))
def soft_ce(student_logits, teacher_logits, labels, cfg):
    """alpha * CE(labels, s) + (1 - alpha) * T^2 * CE(softmax(t/T), softmax(s/T))."""
    soft = soft_cross_entropy(student_logits, teacher_logits, cfg.temperature, cfg.t2)
    return _combine(student_logits, labels, soft, cfg.alpha)


@LOSSES.register(MethodSpec(
    name="mse_logits", title="Logit matching (Ba & Caruana 2014)",
    text="Mean squared error between student and teacher logits; the high-temperature limit of "
         "KD, so the temperature does not enter.",
    formula=r"\tfrac{1}{K}\lVert z_s - z_t\rVert^2", uses_temperature=False))
def mse_logits(student_logits, teacher_logits, labels, cfg):
    """Ba & Caruana (2014) logit matching: alpha * CE + (1 - alpha) * mean (s - t)^2.

    Temperature does not enter: matching logits is the high-T limit of KD (Hinton 2015, §2.1).
    """
    soft = F.mse_loss(student_logits, teacher_logits.detach())
    return _combine(student_logits, labels, soft, cfg.alpha)
