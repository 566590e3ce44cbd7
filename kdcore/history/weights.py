"""Reading and writing state_dict files safely: ``.pt`` (``weights_only=True``) and ``.safetensors``.

Neither format runs code when read: ``torch.load(weights_only=True)`` refuses pickled objects
other than tensors and plain containers, and safetensors is a JSON header plus raw bytes.
A ``.safetensors`` file written here carries the model's config in its string metadata, and a
``.pt`` file the run history writes is ``{"state_dict": ..., "card": "<JSON>"}``: either can be
rebuilt without the run history (nanoGPT's ``model_args`` beside the weights; see :func:`model_card`
and :func:`load_model_file`). A plain ``torch.save(model.state_dict())`` file still reads.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import ConfigError

__all__ = ["read_state_dict", "read_weights", "is_safetensors", "safetensors_bytes",
           "read_safetensors_metadata", "model_card", "card_file", "load_model_file", "MAX_STATE_BYTES"]

MAX_STATE_BYTES = 2 * 2**30  # a safetensors header longer than this is not a real file


def is_safetensors(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) starts like a safetensors file.

    A safetensors file opens with an 8-byte little-endian header length followed by ``{``;
    a ``torch.save`` file is a zip (``PK``) or a legacy pickle (``\\x80``).
    """
    if len(head) < 9 or head[8:9] != b"{":
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= MAX_STATE_BYTES


def load_cause(e: Exception) -> str:
    """What torch.load(weights_only=True) refused (its real cause), without its advice to load unsafely."""
    skip = ("Weights only load failed", "Check the documentation", "Re-running")
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith(skip)]
    text = " ".join(lines).replace("Please file an issue with the following so that we can make "
                                   "`weights_only=True` compatible with your use case: ", "")
    return (text or type(e).__name__)[:500]


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state_dict from a ``.pt`` / ``.pth`` (torch.save) or ``.safetensors`` file, never unpickled
    (the state of :func:`read_weights`)."""
    return read_weights(path)[0]


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, model card) of a ``.pt`` / ``.pth`` (torch.save) or ``.safetensors`` file, never
    unpickled; the card is {} for a plain state_dict.

    The format is told by the file's first bytes, not its name, so a renamed file still loads.

    Args:
        path: the file.
    Returns:
        (parameter name -> tensor on the CPU, the card: a history file's, or a .safetensors file's
        metadata).
    Raises:
        ConfigError: missing, unreadable, or not a plain state_dict; the message names the file.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise ConfigError(f"weights file {str(p)!r} cannot be read ({e.strerror or e})") from None
    if is_safetensors(head):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise ConfigError(f"weights file {p.name!r} is not a valid .safetensors file: "
                              f"{str(e).splitlines()[0][:300]}") from None
        return unwrap(state, p.name)[0], read_safetensors_metadata(p)
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code, a zip bomb, random bytes...
        raise ConfigError(f"weights file {p.name!r} is not a plain PyTorch state_dict saved with "
                          "torch.save(model.state_dict(), ...) nor a .safetensors file; loading it "
                          f"safely failed: {load_cause(e)}") from None
    return unwrap(raw, p.name)


def unwrap(raw, name: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, card) of what torch.load read: a card file (:func:`card_file`) or a plain state_dict."""
    card: dict = {}
    if isinstance(raw, dict) and set(raw) == {"state_dict", "card"} and isinstance(raw["card"], str):
        try:
            card = json.loads(raw["card"])
        except json.JSONDecodeError:
            raise ConfigError(f"weights file {name!r}: its model card is not valid JSON") from None
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ConfigError(f"weights file {name!r} must hold a state_dict: a dict of parameter "
                          "name -> tensor")
    return raw, card


def model_card(cfg, phase: str, data, **extra) -> dict:
    """What rebuilds one model of a run without the history: architecture, input, classes, config.

    Args:
        cfg: the RunConfig. phase: teacher, teacher_2.., baseline, distilled, pseudo.
        data: the run's DataBundle (input shape, class names, normalisation).
        extra: more entries (an export adds its variant).
    """
    from ..config import phase_architectures, to_dict

    m = phase_architectures(cfg)[phase]
    return {"kdcore_format": 1, "phase": phase, "model": {"name": m.name, "params": m.params},
            "in_shape": list(data.in_shape), "classes": list(data.classes), "mean": list(data.mean),
            "std": list(data.std), "data_kind": data.kind, "run_config": to_dict(cfg), **extra}


def card_file(state: dict[str, torch.Tensor], card: dict) -> dict:
    """What the history saves with ``torch.save``: tensors and one JSON string, so it still loads
    with ``weights_only=True``."""
    return {"state_dict": state, "card": json.dumps(card, sort_keys=True, default=str)}


def load_model_file(path: str | os.PathLike):
    """Rebuild a model from a weights file that carries its card (a history ``.pt`` or an exported
    ``.safetensors``).

    Returns:
        (model in eval mode, the card: model, in_shape, classes, mean, std, run_config, ...).
    Raises:
        ConfigError: the file has no card or its weights do not fit the model it names.
    """
    from ..models import build_model

    state, card = read_weights(path)
    if not {"model", "in_shape", "classes"} <= set(card):
        raise ConfigError(f"{path}: no kdcore model card (model, in_shape, classes); it is a plain "
                          "state_dict, which needs the run's config to be rebuilt")
    params = dict(card["model"].get("params") or {})
    if "weights" in params:
        params["weights"] = None  # the file holds the weights; never download them again
    model = build_model(card["model"]["name"], in_shape=tuple(card["in_shape"]),
                        num_classes=len(card["classes"]), params=params)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ConfigError(f"{path}: weights do not fit {card['model']['name']}: "
                          f"{str(e).splitlines()[0][:300]}") from None
    return model.eval(), card


def safetensors_bytes(state: dict[str, torch.Tensor], metadata: dict[str, object]) -> bytes:
    """A state_dict as ``.safetensors`` bytes, with ``metadata`` values stored as JSON strings.

    Shared tensors (tied weights) are copied, as safetensors requires one buffer per name.
    """
    from safetensors.torch import save

    plain = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    return save(plain, metadata={k: json.dumps(v, sort_keys=True) for k, v in metadata.items()})


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, object]:
    """The metadata of a ``.safetensors`` file written by :func:`safetensors_bytes`, JSON-decoded."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    out = {}
    for k, v in meta.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out
