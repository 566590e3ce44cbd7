"""Frozen events a training run emits to its callbacks (the only way progress leaves kdcore)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["SeedStart", "PhaseStart", "StepEnd", "EpochEnd", "PhaseEnd", "RunEnd", "Callback", "Event"]

PHASES = ("teacher", "baseline", "distilled")


@dataclass(frozen=True)
class SeedStart:
    """A comparison over seeds starts its next seed; that seed's run events follow."""

    seed: int
    index: int  # 0-based position in the comparison
    total: int  # seeds in the comparison


@dataclass(frozen=True)
class PhaseStart:
    phase: str  # teacher | baseline | distilled (or a method-specific name)
    epochs: int  # 0 when the phase only evaluates (a loaded teacher)
    steps_per_epoch: int
    run_id: int | None = None


@dataclass(frozen=True)
class StepEnd:
    phase: str
    epoch: int  # 1-based
    step: int  # 1-based, counted across the whole phase
    total_steps: int  # epochs * steps_per_epoch
    loss: float  # the back-propagated total
    terms: dict[str, float]  # the weighted terms that sum to loss, e.g. {"ce":..., "kd":...}
    lr: float
    run_id: int | None = None


@dataclass(frozen=True)
class EpochEnd:
    phase: str
    epoch: int  # 1-based
    epochs: int
    train_loss: float  # mean over the epoch's steps
    terms: dict[str, float]  # epoch means of each term
    train_acc: float  # accuracy of the predictions made while training this epoch
    val_loss: float  # CE on the validation split
    val_acc: float
    seconds: float  # wall time of the epoch
    run_id: int | None = None
    # the model being trained, for callbacks that snapshot it (e.g. decision boundaries); not stored
    model: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class PhaseEnd:
    phase: str
    status: str  # completed | stopped | diverged
    metrics: dict[str, Any] = field(default_factory=dict)  # test-set metrics of the phase's model
    message: str = ""
    run_id: int | None = None


@dataclass(frozen=True)
class RunEnd:
    status: str  # completed | stopped | diverged | failed
    message: str
    metrics: dict[str, Any]  # {"teacher": {...}, "baseline": {...}, "distilled": {...}}
    run_id: int | None = None


Event = SeedStart | PhaseStart | StepEnd | EpochEnd | PhaseEnd | RunEnd
Callback = Callable[[Event], None]
