"""Reading and writing state_dict files safely: ``.pt`` (``weights_only=True``) and ``.safetensors``.

Neither format runs code when read: ``torch.load(weights_only=True)`` refuses pickled objects
other than tensors and plain containers, and safetensors is a JSON header plus raw bytes.
A ``.safetensors`` file written here carries the model's config in its string metadata, so it
can be rebuilt without the run history (nanoGPT's ``model_args`` beside the weights).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .errors import ConfigError

__all__ = ["read_state_dict", "is_safetensors", "safetensors_bytes", "read_safetensors_metadata",
           "MAX_STATE_BYTES"]

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
    """A state_dict from a ``.pt`` / ``.pth`` (torch.save) or ``.safetensors`` file, never unpickled.

    The format is told by the file's first bytes, not its name, so a renamed file still loads.

    Args:
        path: the file.
    Returns:
        Parameter name -> tensor, on the CPU.
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
    else:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # a pickle with code, a zip bomb, random bytes...
            raise ConfigError(f"weights file {p.name!r} is not a plain PyTorch state_dict saved with "
                              "torch.save(model.state_dict(), ...) nor a .safetensors file; loading it "
                              f"safely failed: {load_cause(e)}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"weights file {p.name!r} must hold a state_dict: a dict of parameter "
                          "name -> tensor")
    return state


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
