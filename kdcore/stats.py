"""How sure a verdict is: paired tests of two models on the same test set, and intervals over seeds.

Two students tested on the same samples are compared sample by sample (a *paired* comparison):
only the samples one gets right and the other wrong carry information.

- :func:`mcnemar_exact`: McNemar's exact test, the two-sided binomial test on those discordant
  samples (McNemar 1947; Dietterich 1998 recommends it for comparing two classifiers).
- :func:`bootstrap_diff_ci`: a percentile bootstrap 95 % interval of the accuracy difference,
  resampling test samples with replacement (Efron & Tibshirani 1993).
- :func:`seed_interval`: mean, std and the Student-t 95 % interval of per-seed gains.
- :func:`paired_comparison` bundles the first two; :func:`verdict_word` turns an interval into words.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

__all__ = ["mcnemar_exact", "bootstrap_diff_ci", "paired_comparison", "PairedComparison",
           "seed_interval", "t_quantile_975", "verdict_word"]

# two-sided 95 % quantiles t_{0.975, df} of Student's t, df = 1..30 (standard tables; a test
# integrates the t density to check each one); beyond 30 the normal's 1.96 is within 2 %
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
N_BOOT = 5000  # bootstrap resamples: the interval's ends move by < 0.1 point between seeds of it


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs.

    Args:
        b: samples model A gets right and model B wrong. c: the reverse.
    Returns:
        ``min(1, 2 * P(X <= min(b, c)))`` for X ~ Binomial(b + c, 1/2); 1.0 when b + c = 0.
    """
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1))  # exact integers: no underflow for large n
    return min(1.0, 2 * tail / 2 ** n)


def bootstrap_diff_ci(correct_a: torch.Tensor, correct_b: torch.Tensor, *, n_boot: int = N_BOOT,
                      level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(correct_b) - mean(correct_a)`` over paired samples.

    Resampling n test samples with replacement and counting the discordant ones is a draw from
    Multinomial(n, (p_a_only, p_b_only, p_same)); it is drawn as two binomials, which gives the
    same distribution as resampling indices at a fraction of the cost.

    Args:
        correct_a, correct_b: [N] bools, whether each model got each test sample right.
        n_boot: resamples. level: coverage. seed: the generator's seed (the interval is reproducible).
    Returns:
        (low, high) as fractions (multiply by 100 for points).
    """
    a, b = correct_a.bool().flatten(), correct_b.bool().flatten()
    if a.shape != b.shape or len(a) == 0:
        raise ValueError(f"need two equal, non-empty sets of paired results, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    n = len(a)
    n_a_only, n_b_only = int((a & ~b).sum()), int((b & ~a).sum())
    g = torch.Generator().manual_seed(seed)
    total = torch.full((n_boot,), float(n), dtype=torch.float64)
    p_a = torch.full_like(total, n_a_only / n)
    k_a = torch.binomial(total, p_a, generator=g)
    rest = n - n_a_only
    p_b = torch.full_like(total, n_b_only / rest if rest else 0.0)
    k_b = torch.binomial(total - k_a, p_b, generator=g)
    diffs = (k_b - k_a) / n
    q = torch.tensor([(1 - level) / 2, 1 - (1 - level) / 2], dtype=torch.float64)
    low, high = torch.quantile(diffs, q).tolist()
    return low, high


@dataclass(frozen=True)
class PairedComparison:
    """Model B against model A on the same test samples (B - A, fractions)."""

    gain: float  # accuracy(B) - accuracy(A)
    ci_low: float  # bootstrap 95 % interval of the gain
    ci_high: float
    p_value: float  # exact McNemar
    a_only: int  # samples only A gets right
    b_only: int  # samples only B gets right
    n: int  # test samples

    def as_metrics(self, prefix: str = "gain") -> dict[str, float]:
        """Flat keys for a run's stored metrics: gain, gain_ci_low, gain_ci_high, gain_p, ..."""
        d = asdict(self)
        return {prefix: d["gain"], f"{prefix}_ci_low": d["ci_low"], f"{prefix}_ci_high": d["ci_high"],
                f"{prefix}_p": d["p_value"], f"{prefix}_lost": d["a_only"], f"{prefix}_won": d["b_only"]}


def paired_comparison(pred_a: torch.Tensor, pred_b: torch.Tensor, labels: torch.Tensor, *,
                      n_boot: int = N_BOOT, seed: int = 0) -> PairedComparison:
    """Compare two models' test predictions: gain, bootstrap interval, McNemar p.

    Args:
        pred_a, pred_b: [N] predicted classes of model A (e.g. the baseline) and model B.
        labels: [N] true classes.
    Returns:
        PairedComparison of B against A.
    """
    ca, cb = pred_a == labels, pred_b == labels
    low, high = bootstrap_diff_ci(ca, cb, n_boot=n_boot, seed=seed)
    a_only, b_only = int((ca & ~cb).sum()), int((cb & ~ca).sum())
    return PairedComparison(gain=(cb.double().mean() - ca.double().mean()).item(), ci_low=low,
                            ci_high=high, p_value=mcnemar_exact(a_only, b_only), a_only=a_only,
                            b_only=b_only, n=len(labels))


def t_quantile_975(df: int) -> float:
    """Two-sided 95 % Student-t quantile for ``df`` >= 1 degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def seed_interval(values: list[float]) -> dict[str, float]:
    """Mean, sample std and the t-based 95 % interval of the mean over seeds.

    Args:
        values: one number per seed (e.g. each seed's gain).
    Returns:
        {"n", "mean", "std", "ci_low", "ci_high"}; with one seed std is 0 and the interval NaN
        (one seed says nothing about the spread over seeds).
    """
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": 0.0, "ci_low": math.nan, "ci_high": math.nan}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def verdict_word(ci_low: float, ci_high: float) -> str:
    """"helped" when the whole 95 % interval is above 0, "hurt" when below, else "no clear difference"."""
    if ci_low > 0:
        return "helped"
    if ci_high < 0:
        return "hurt"
    return "no clear difference"
