"""Rebuilding a run's trained models from its config and saved weights.

One place for what the Runs page, the lab pages, compression, export and the distributed ranks
all need: the architecture of each phase (:func:`kdcore.config.phase_architectures`), the
dataset's input shape and classes (:meth:`kdcore.config.DataConfig.shape`), a strict
``load_state_dict``, eval mode.
"""
from __future__ import annotations

import torch.nn as nn

from ..config import RunConfig, from_dict, phase_architectures
from ..models import build_model

__all__ = ["phase_models", "run_models"]


def phase_models(cfg: RunConfig, states: dict[str, dict]) -> dict[str, nn.Module]:
    """Models of ``cfg``'s phases with the given weights, in eval mode.

    Args:
        cfg: the run's config. states: phase ("teacher", "teacher_2", "baseline", "distilled",
            "pseudo") -> its state_dict.
    Returns:
        phase -> model.
    Raises:
        KeyError: a phase the run does not have. RuntimeError: weights that do not fit.
    """
    in_shape, k = cfg.data.shape()
    arch = phase_architectures(cfg)
    models = {}
    for phase, state in states.items():
        model = build_model(arch[phase].name, in_shape=in_shape, num_classes=k, params=arch[phase].params)
        model.load_state_dict(state, strict=True)
        models[phase] = model.eval()
    return models


def run_models(store, run_id: int, phases=None) -> tuple[RunConfig, dict[str, nn.Module]]:
    """Rebuild a stored run's models with their saved weights, in eval mode.

    Args:
        store: a RunStore. run_id: the run. phases: which phases (default: all the run has).
    Returns:
        (config, {phase: model}) for every asked phase whose weights are on disk; when all the
        teachers of a multi-teacher run are there, also its "ensemble", rebuilt with the run's weights.
    Raises:
        KeyError: no such run. ConfigError: the stored config is no longer valid.
    """
    from ..methods.ensemble import Ensemble

    cfg = from_dict(store.get(run_id)["config"])
    states = {}
    for phase in phase_architectures(cfg) if phases is None else phases:
        try:
            states[phase] = store.load_weights(run_id, phase)
        except KeyError:
            continue
    models = phase_models(cfg, states)
    members = [p for p in phase_architectures(cfg) if p.startswith("teacher")]
    if cfg.extra_teachers and all(m in models for m in members):
        models["ensemble"] = Ensemble([models[m] for m in members], cfg.teacher_weights).eval()
    return cfg, models
