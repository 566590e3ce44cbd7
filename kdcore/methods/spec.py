"""What each distillation method is called, what it does, and which knobs it takes.

``METHOD_INFO`` maps every registered loss name to a :class:`MethodInfo` (title, one-paragraph
explanation, ``{knob: Param(default, help, ...)}``) so a page can render the controls of any
method generically and the CLI can explain it. The same table validates ``LossConfig.params``
at construction: an unknown knob or a bad value raises a ``ConfigError`` that names
``loss.params.<knob>``, the value and what is allowed.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

from ..errors import ConfigError
from ..registry import LOSSES

__all__ = ["Param", "MethodInfo", "METHOD_INFO", "MULTI_TEACHER_INFO", "register_method",
           "check_loss_params", "method_params"]


class Param(NamedTuple):
    """One method knob; unpacks as ``default, help, *_``."""

    default: Any  # its type (float, int, str, bool) is the type the knob must have
    help: str  # one sentence a person can act on
    low: float | None = None  # inclusive bounds for numbers; None = unbounded
    high: float | None = None
    choices: tuple | None = None  # allowed strings, if the set is closed


class MethodInfo(NamedTuple):
    """How the dashboard and the CLI describe a method; unpacks as ``title, text, params, *_``."""

    title: str
    text: str  # one paragraph: what the method does, its paper and its formula
    params: dict[str, Param]
    kind: str = "logit"  # logit | feature | adversarial: feature methods need a live teacher
    terms: tuple[str, ...] = ("ce", "kd")  # the named loss terms a run of it reports
    # False when the loss reads the labels beyond the CE term (DKD splits on the true class), so
    # it cannot train on unlabelled transfer-set samples
    labels_only_in_ce: bool = True


METHOD_INFO: dict[str, MethodInfo] = {}


def register_method(name: str, info: MethodInfo) -> Callable:
    """Decorator: register ``obj`` in ``LOSSES`` under ``name`` and describe it in METHOD_INFO."""

    def deco(obj):
        LOSSES.register(name)(obj)
        METHOD_INFO[name] = info
        return obj

    return deco


def _check_value(name: str, knob: str, p: Param, v: Any) -> None:
    field = f"loss.params.{knob}"

    def bad(allowed: str) -> ConfigError:
        return ConfigError(f"{field} = {v!r} is not allowed for loss {name!r}; {field} must be {allowed}"
                           f" ({p.help})")

    if isinstance(p.default, bool):
        if not isinstance(v, bool):
            raise bad("true or false")
        return
    if isinstance(p.default, str):
        if not isinstance(v, str):
            raise bad("a string")
        if p.choices is not None and v not in p.choices:
            raise bad("one of " + ", ".join(map(repr, p.choices)))
        return
    want_int = isinstance(p.default, int)
    ok = (isinstance(v, int) if want_int else isinstance(v, (int, float))) and not isinstance(v, bool)
    rng = ("" if p.low is None and p.high is None else
           f" in [{'-inf' if p.low is None else p.low}, {'inf' if p.high is None else p.high}]")
    if not ok or not math.isfinite(v):
        raise bad(("an integer" if want_int else "a number") + rng)
    if (p.low is not None and v < p.low) or (p.high is not None and v > p.high):
        raise bad(("an integer" if want_int else "a number") + rng)


def check_loss_params(name: str, params: Any) -> None:
    """Validate ``LossConfig.params`` against the method's declared knobs.

    Args:
        name: a registered loss name. params: the user's knobs (a dict).
    Raises:
        ConfigError: params is not a dict, a knob is unknown, or a value is not allowed. A loss
            registered without a METHOD_INFO entry (a plug-in) gets its params unchecked.
    """
    if not isinstance(params, dict):
        raise ConfigError(f"loss.params = {params!r} must be a JSON object (dict) of knob -> value")
    info = METHOD_INFO.get(name)
    if info is None:
        return
    unknown = sorted(set(params) - set(info.params))
    if unknown:
        known = ", ".join(info.params) or "(none: this loss has no knobs)"
        raise ConfigError(f"loss.params has unknown knob {unknown[0]!r} for loss {name!r}; "
                          f"known knobs: {known}")
    for knob, v in params.items():
        _check_value(name, knob, info.params[knob], v)


def method_params(cfg) -> dict[str, Any]:
    """The knobs of ``cfg.name`` (a LossConfig): declared defaults overridden by ``cfg.params``."""
    info = METHOD_INFO.get(cfg.name)
    out = {k: p.default for k, p in info.params.items()} if info else {}
    out.update(cfg.params)
    return out


# The vanilla losses live in kdcore.losses; described here so every loss has an entry.
METHOD_INFO.update({
    "kd": MethodInfo(
        "Vanilla KD (Hinton et al. 2015)",
        "The student matches the teacher's temperature-softened distribution: "
        "alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T)).", {}),
    "soft_ce": MethodInfo(
        "Soft cross-entropy",
        "Cross-entropy to the teacher's soft targets instead of KL; differs from KD by the "
        "teacher's entropy, a constant, so the gradients are the same.", {}),
    "mse_logits": MethodInfo(
        "Logit matching (Ba & Caruana 2014)",
        "Mean squared error between student and teacher logits; the high-temperature limit of "
        "KD, so the temperature does not enter.", {}),
})

MULTI_TEACHER_INFO = MethodInfo(
    "Multi-teacher KD (ensemble of teachers)",
    "Several teachers (other architectures, or the same one with another seed) are trained or "
    "loaded, and the student learns from their weighted ensemble with any loss above. The "
    "ensemble's logits are the weighted mean of the teachers' logits, so its softened "
    "distribution softmax(sum_i w_i t_i / T) is the normalised weighted geometric mean of the "
    "teachers' softened distributions (Hinton et al. 2015, section 4). Feature methods take "
    "their features from the first teacher. Set these on the RunConfig, not in loss.params.",
    {"extra_teachers": Param([], "list of {name, params} model configs: teacher_2, teacher_3, ..."),
     "extra_teacher_sources": Param([], "one per extra teacher: train | run:<id> | file:<path>; "
                                        "empty = train them all"),
     "teacher_weights": Param([], "one weight >= 0 per teacher, the first teacher first; empty = "
                                  "equal weights; normalised to sum to 1")},
    kind="multi")
