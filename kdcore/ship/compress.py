"""Compression after distillation: dynamic int8 quantization and magnitude pruning of a student.

Both work on a copy; the trained model is never changed. :func:`compression_table` measures every
variant the same way: size of the serialized ``state_dict`` (what a checkpoint costs on disk,
also gzip-compressed, which is where unstructured pruning pays off), CPU latency of one batch
(:func:`kdcore.models.profile`) and test accuracy.

Honest limits: dynamic quantization (``torch.ao.quantization.quantize_dynamic``, deprecated in
favour of torchao but still shipped) converts ``nn.Linear`` layers only, so conv layers stay
float32 and a conv net shrinks less; quantized models run on the CPU only. Unstructured
pruning zeroes weights but keeps dense tensors, so the plain size and the latency do not drop;
only the compressed size does.
"""
from __future__ import annotations

import copy
import io
import warnings
import zlib
from typing import Iterable

from ..lazy import pandas as pd  # imported on first use: start-up stays fast
import torch
import torch.nn as nn
from torch.nn.utils import prune

from ..errors import ConfigError
from ..models import profile
from ..train.trainer import predict_logits

__all__ = ["quantize_int8", "prune_magnitude", "sparsity", "serialized_mb", "compression_table",
           "load_run_model"]

_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def serialized_mb(model: nn.Module) -> tuple[float, float]:
    """Size in MiB of ``torch.save(model.state_dict())``, raw and zlib-compressed (level 6)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    raw = buf.getvalue()
    return len(raw) / 2**20, len(zlib.compress(raw, 6)) / 2**20


def sparsity(model: nn.Module) -> float:
    """Share of exactly-zero entries among the weights of Linear and Conv layers (0 if none).

    Int8 Linear layers from :func:`quantize_int8` count too, by their stored (dequantized) weights,
    so a pruned + int8 model reports the zeros it keeps, plus any small weights rounded to zero.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice
        from torch.ao.nn.quantized.dynamic import Linear as Int8Linear
    total = zeros = 0
    for m in model.modules():
        if isinstance(m, _PRUNABLE):
            w = m.weight.detach()
        elif isinstance(m, Int8Linear):
            w = m.weight().dequantize()
        else:
            continue
        total += w.numel()
        zeros += int((w == 0).sum())
    return zeros / total if total else 0.0


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` dynamically quantized to int8 (CPU only).

    Weights are stored as int8 with one scale per tensor; activations are quantized on the fly
    per batch. Other layers are left in float32.
    """
    m = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8)


def prune_magnitude(model: nn.Module, amount: float, *, scope: str = "global") -> nn.Module:
    """A copy of ``model`` with the smallest-magnitude weights of Linear/Conv layers set to zero.

    Args:
        model: a trained model. amount: share of weights to remove, in [0, 1).
        scope: "global" ranks all layers' weights together (layers lose different shares);
            "layer" removes ``amount`` of each layer's weights.
    Returns:
        The pruned copy; the pruning is made permanent (plain ``weight`` tensors, no masks).
    """
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 <= amount < 1:
        raise ConfigError(f"prune amount = {amount!r} is not allowed; it must be in [0, 1)")
    if scope not in ("global", "layer"):
        raise ConfigError(f"prune scope = {scope!r} is not allowed; use 'global' or 'layer'")
    m = copy.deepcopy(model)
    targets = [(mod, "weight") for mod in m.modules() if isinstance(mod, _PRUNABLE)]
    if not targets or amount == 0:
        return m
    if scope == "global":
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=float(amount))
    else:
        for mod, name in targets:
            prune.l1_unstructured(mod, name, amount=float(amount))
    for mod, name in targets:
        prune.remove(mod, name)
    return m


def _measure(name: str, model: nn.Module, data, device, batch_size: int) -> dict:
    model.eval()
    logits = predict_logits(model, data.x_test, device=device)
    size, size_gz = serialized_mb(model)
    lat = profile(model, tuple(data.in_shape), batch_size=batch_size, device=device).latency_ms
    return {"variant": name, "size_mb": size, "size_gzip_mb": size_gz, "sparsity": sparsity(model),
            "latency_ms": lat, "accuracy": (logits.argmax(1) == data.y_test).double().mean().item(),
            "device": str(device)}


def compression_table(model: nn.Module, data, *, prune_amounts: Iterable[float] = (0.5, 0.8),
                      scope: str = "global", quantize: bool = True, batch_size: int = 128) -> pd.DataFrame:
    """Size, CPU latency and test accuracy of a trained model before and after compression.

    Args:
        model: the trained (distilled) student; not modified.
        data: the DataBundle it was trained on (its test split is used).
        prune_amounts: magnitude-pruning levels to try; each also gets a pruned + int8 row.
        scope: "global" or "layer" pruning (see :func:`prune_magnitude`).
        quantize: add the int8 rows.
        batch_size: rows of the timed batch.
    Returns:
        One row per variant: variant, size_mb, size_gzip_mb, sparsity, latency_ms, accuracy,
        device, and the changes against the original (size_ratio, speedup, accuracy_change in
        points). Everything runs on the CPU.
    """
    device = torch.device("cpu")
    base = copy.deepcopy(model).to(device).eval()
    variants = [("float32 (as trained)", base)]
    if quantize:
        variants.append(("int8 dynamic", quantize_int8(base)))
    for a in prune_amounts:
        pruned = prune_magnitude(base, a, scope=scope)
        variants.append((f"pruned {a:.0%} ({scope})", pruned))
        if quantize:
            variants.append((f"pruned {a:.0%} ({scope}) + int8", quantize_int8(pruned)))
    rows = [_measure(n, m, data, device, batch_size) for n, m in variants]
    t = pd.DataFrame(rows)
    ref = t.iloc[0]
    t["size_ratio"] = ref["size_mb"] / t["size_mb"]
    t["speedup"] = ref["latency_ms"] / t["latency_ms"]
    t["accuracy_change"] = (t["accuracy"] - ref["accuracy"]) * 100
    return t


def check_phase(phase: str, label: str = "--phase") -> str:
    """A phase name typed by a person: a model name like distilled or teacher_2, never a path."""
    from ..history.store import PHASE_NAME

    if not isinstance(phase, str) or not PHASE_NAME.fullmatch(phase):
        raise ConfigError(f"{label} {phase!r} is not a model name; use distilled, baseline, teacher "
                          "or teacher_2, teacher_3, ... (lowercase letters, digits and _)")
    return phase


def load_run_model(store, run_id: int, phase: str = "distilled"):
    """Rebuild one trained model of a stored run, with the run's config and data.

    Args:
        store: a RunStore. run_id: the run. phase: "distilled", "baseline", "teacher", ...
    Returns:
        (model in eval mode, DataBundle, RunConfig).
    Raises:
        ConfigError: the run or its weights for ``phase`` do not exist.
    """
    from ..config import from_dict, phase_architectures
    from ..data import load_data
    from ..history.rebuild import phase_models

    check_phase(phase, "phase")
    try:
        cfg = from_dict(store.get(int(run_id))["config"])
        state = store.load_weights(int(run_id), phase)
    except KeyError as e:
        raise ConfigError(str(e.args[0]) if e.args else str(e)) from None
    arch = phase_architectures(cfg)
    if phase not in arch:
        raise ConfigError(f"phase {phase!r} is not a model of run {run_id}; use one of {', '.join(arch)}")
    data = load_data(cfg.data)  # first: data no longer on disk says how to get it
    return phase_models(cfg, {phase: state})[phase], data, cfg
