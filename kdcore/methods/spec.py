"""What each distillation method is called, what it does, and which knobs it takes.

Every method registers once, through ``LOSSES.register(MethodSpec(...))`` (see
:mod:`kdcore.registry`). ``METHOD_INFO`` is the read-only ``{name: MethodSpec}`` view of that
registry, in registration order, so a page can render the controls of any method generically
and the CLI can explain it. The same metadata validates ``LossConfig.params`` at
construction: an unknown knob or a bad value raises a ``ConfigError`` that names
``loss.params.<knob>``, the value and what is allowed.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

from ..errors import ConfigError
from ..registry import LOSSES, MethodSpec, Param

__all__ = ["Param", "MethodSpec", "METHOD_INFO", "MULTI_TEACHER_INFO", "check_loss_params", "method_params"]


class _Specs(Mapping):
    """``{name: MethodSpec}`` of every registered loss, read live from ``LOSSES``."""

    def __getitem__(self, name: str) -> MethodSpec:
        if name not in LOSSES:
            raise KeyError(name)
        return LOSSES.spec(name)

    def __iter__(self) -> Iterator[str]:
        return iter(LOSSES.names())

    def __len__(self) -> int:
        return len(LOSSES)


METHOD_INFO: Mapping[str, MethodSpec] = _Specs()


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
        ConfigError: params is not a dict, a knob is unknown, or a value is not allowed. An
            unknown loss name is left to LossConfig's own check.
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


# Not a loss (it works with every loss), so described here and never registered.
MULTI_TEACHER_INFO = MethodSpec(
    name="multi_teacher",
    title="Multi-teacher KD (ensemble of teachers)",
    text="Several teachers (other architectures, or the same one with another seed) are trained or "
         "loaded, and the student learns from their weighted ensemble with any loss above. The "
         "ensemble's logits are the weighted mean of the teachers' logits, so its softened "
         "distribution softmax(sum_i w_i t_i / T) is the normalised weighted geometric mean of the "
         "teachers' softened distributions (Hinton et al. 2015, section 4). Feature methods take "
         "their features from the first teacher. Set these on the RunConfig, not in loss.params.",
    formula=r"z_t = \textstyle\sum_i w_i\, z_{t,i}",
    params={"extra_teachers": Param([], "list of {name, params} model configs: teacher_2, teacher_3, ..."),
            "extra_teacher_sources": Param([], "one per extra teacher: train | run:<id> | file:<path>; "
                                               "empty = train them all"),
            "teacher_weights": Param([], "one weight >= 0 per teacher, the first teacher first; empty = "
                                         "equal weights; normalised to sum to 1")},
    kind="multi")
