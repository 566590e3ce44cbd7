"""Multi-teacher KD: several trained teachers behind one module that any distiller can use.

The ensemble's logits are the weighted mean of its members' logits. At any temperature T,
softmax(sum_i w_i t_i / T) is proportional to prod_i softmax(t_i / T)^(w_i): the normalised
weighted *geometric* mean of the teachers' soft targets, one of the two ensembles Hinton et al.
(2015) name. Because the result is a logit tensor, every logit loss, the logit cache and the
adversarial method work unchanged; feature methods hook the first member (``tap_prefix``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

__all__ = ["Ensemble", "normalise_weights"]


def normalise_weights(weights: Sequence[float], n: int) -> list[float]:
    """``weights`` scaled to sum to 1, or ``n`` equal weights when ``weights`` is empty."""
    if not weights:
        return [1.0 / n] * n
    total = float(sum(weights))
    return [float(w) / total for w in weights]


class Ensemble(nn.Module):
    """Weighted mean of the logits of ``members`` (frozen teachers, eval mode)."""

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float] = ()):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one teacher")
        self.members = nn.ModuleList(members)
        self.weights = normalise_weights(weights, len(members))
        first = members[0]
        self.tap_prefix = "members.0."
        self.tap = self.tap_prefix + first.tap if hasattr(first, "tap") else ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for w, m in zip(self.weights, self.members):
            z = w * m(x)
            out = z if out is None else out + z
        return out
