"""Logit-level variants of KD: decoupled KD and logit standardisation.

Both are plain functions ``fn(student_logits, teacher_logits, labels, cfg)`` registered in
``LOSSES`` with their :class:`~kdcore.registry.MethodSpec`; like the vanilla losses they work
from cached teacher logits and return weighted terms that sum to the loss. ``alpha`` weighs the
hard-label CE, ``1 - alpha`` the soft part. DKD also takes ``epoch=`` (its spec sets
``takes_epoch``, so :class:`~kdcore.train.trainer.LogitDistiller` passes the epoch
:func:`~kdcore.train.trainer.fit` is in) for the paper's linear warm-up of its distillation term.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import hard_ce, kd_div
from ..registry import LOSSES, MethodSpec, Param
from .spec import method_params

__all__ = ["dkd_terms", "dkd_warmup", "standardize_logits"]


def _log_binary(z: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """log [p_gt, 1 - p_gt] of softmax(z), [B, 2], computed in log space so neither underflows."""
    lse_all = torch.logsumexp(z, dim=1)
    log_gt = z.gather(1, gt[:, None]).squeeze(1) - lse_all
    log_rest = torch.logsumexp(z.masked_fill(F.one_hot(gt, z.shape[1]).bool(), float("-inf")), dim=1) - lse_all
    return torch.stack([log_gt, log_rest], dim=1)


def _non_target(z: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """The K - 1 non-target logits of each row, [B, K - 1], in class order."""
    keep = ~F.one_hot(gt, z.shape[1]).bool()
    return z[keep].view(z.shape[0], z.shape[1] - 1)


def dkd_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
              T: float, t2: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoupled KD (Zhao et al. 2022): the KD loss split into a target and a non-target part.

    With b = [p_gt, 1 - p_gt] the binary target-vs-rest distribution and p^ the distribution
    over the K - 1 non-target classes (both from softmax(z / T)):
    TCKD = KL(b_t || b_s), NCKD = KL(p^_t || p^_s), each a batch mean times T^2.
    Vanilla KD equals TCKD + (1 - p_gt^t) * NCKD; DKD drops the (1 - p_gt^t) coupling.

    Args:
        student_logits: [B, K]; teacher_logits: [B, K] (constants); labels: [B]; T: temperature;
        t2: multiply by T^2.
    Returns:
        (tckd, nckd), two scalars.
    """
    t = teacher_logits.detach() / T
    s = student_logits / T
    lb_s, lb_t = _log_binary(s, labels), _log_binary(t, labels)
    tckd = (lb_t.exp() * (lb_t - lb_s)).sum(1).mean()
    ln_s = F.log_softmax(_non_target(s, labels), dim=1)
    ln_t = F.log_softmax(_non_target(t, labels), dim=1)
    nckd = (ln_t.exp() * (ln_t - ln_s)).sum(1).mean()
    scale = T * T if t2 else 1.0
    return tckd * scale, nckd * scale


def dkd_warmup(epoch: int | None, warmup: int) -> float:
    """Zhao et al.'s (2022) linear warm-up of the DKD term: min(epoch / warmup, 1).

    As in their code (mdistiller's ``min(kwargs["epoch"] / self.warmup, 1.0)``) the epoch is
    1-based, so the first epoch already gets 1 / warmup, and the CE term is never scaled.

    Args:
        epoch: the 1-based training epoch, or None outside a training run (no warm-up then).
        warmup: epochs to reach full weight; 0 = no warm-up.
    Returns:
        The factor in (0, 1] that multiplies TCKD and NCKD.
    """
    if warmup <= 0 or epoch is None:
        return 1.0
    return min(epoch / warmup, 1.0)


@LOSSES.register(MethodSpec(
    name="dkd", title="Decoupled KD (Zhao et al. 2022)",
    text="Splits the KD loss into target-class KD (TCKD: does the student share the teacher's "
         "confidence in the true class?) and non-target KD (NCKD: how does it rank the wrong "
         "classes?). Vanilla KD weighs NCKD by 1 - p_t(true class), which shrinks exactly when the "
         "teacher is confident; DKD gives the two parts free weights: "
         "alpha * CE + (1 - alpha) * (alpha_dkd * TCKD + beta_dkd * NCKD), each part times T^2. "
         "With warmup = W > 0 the TCKD + NCKD part (not the CE) is multiplied by min(epoch / W, 1), "
         "epochs counted from 1, the paper's linear warm-up; warmup = 0 applies it at full weight "
         "from the first step.",
    formula=r"\big(\alpha_{\mathrm{dkd}}\,\mathrm{TCKD} + \beta_{\mathrm{dkd}}\,\mathrm{NCKD}\big)",
    params={"alpha_dkd": Param(1.0, "weight of TCKD (the paper's alpha, not loss.alpha)", 0.0, 100.0),
            "beta_dkd": Param(8.0, "weight of NCKD (the paper's beta; 8 on CIFAR-100)", 0.0, 100.0),
            "warmup": Param(0, "epochs over which the DKD term ramps up linearly to full weight; 0 = off "
                               "(the paper uses 20 on CIFAR-100)", 0, 10000)},
    terms=("ce", "tckd", "nckd"), labels_only_in_ce=False, takes_epoch=True))
def dkd(student_logits, teacher_logits, labels, cfg, *, epoch: int | None = None):
    p = method_params(cfg)
    tckd, nckd = dkd_terms(student_logits, teacher_logits, labels, T=cfg.temperature, t2=cfg.t2)
    w = (1.0 - cfg.alpha) * dkd_warmup(epoch, p["warmup"])
    return {"ce": cfg.alpha * hard_ce(student_logits, labels),
            "tckd": w * p["alpha_dkd"] * tckd, "nckd": w * p["beta_dkd"] * nckd}


def standardize_logits(z: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Z-score each row: (z - mean) / (std + eps), with the unbiased std as in Sun et al.'s code."""
    return (z - z.mean(dim=1, keepdim=True)) / (z.std(dim=1, keepdim=True) + eps)


@LOSSES.register(MethodSpec(
    name="logit_std", title="KD with logit standardisation (Sun et al. 2024)",
    text="Vanilla KD computed on z-scored logits: each row of student and teacher logits has its "
         "mean subtracted and is divided by its standard deviation before the temperature softmax. "
         "The student then only has to match the teacher's ranking and relative gaps, not its logit "
         "scale, which a small student often cannot reach. alpha * CE(y, s) + (1 - alpha) * T^2 * "
         "KL(softmax(z(t)/T) || softmax(z(s)/T)); the CE uses the raw logits.",
    formula=r"\mathrm{KL}\big(\sigma(\mathcal{Z}(z_t)/T)\,\|\,\sigma(\mathcal{Z}(z_s)/T)\big)"))
def logit_std(student_logits, teacher_logits, labels, cfg):
    soft = kd_div(standardize_logits(student_logits), standardize_logits(teacher_logits.detach()),
                  cfg.temperature, cfg.t2)
    return {"ce": cfg.alpha * hard_ce(student_logits, labels), "kd": (1.0 - cfg.alpha) * soft}
