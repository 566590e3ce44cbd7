"""Any torchvision classification model by name, pretrained or not, as a teacher or a student.

Registered as the model ``torchvision``; its params:

    arch             a torchvision classification model name (``torchvision.models.list_models``),
                     e.g. resnet50, efficientnet_b0, convnext_tiny, mobilenet_v3_large
    weights          null: random init; "DEFAULT": torchvision's pretrained weights (downloaded once
                     into torch's hub cache, so online, or with the file already in that cache);
                     "file:<path>": a local .pt or .safetensors state_dict of the model (its
                     ImageNet head, or the head already replaced for this dataset)
    freeze_backbone  true: only the new head trains (the pretrained features stay as they are)

The classifier head (the last Linear, or SqueezeNet's last 1x1 conv) is replaced by a fresh one
for the dataset's classes and is trained (fine-tuned) with the rest unless frozen. Grey images
(1 channel) go through a first conv whose RGB kernels are summed into one, so pretrained weights
still apply. Inputs keep the dataset's own normalisation (not ImageNet's); fine-tuning adapts.

Building on the ``meta`` device (the config check) never loads or downloads weights.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import MODELS

__all__ = ["torchvision_model", "classification_archs", "weights_help"]

_TAPS = ("layer4", "features", "trunk_output")  # the last 4-D feature map, where a model has one


def classification_archs() -> list[str]:
    """torchvision's classification model names (not detection, segmentation, video...)."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def weights_help(arch: str) -> str:
    """How to get ``arch``'s pretrained weights onto a machine without internet."""
    import torchvision.models as tvm

    try:
        url = tvm.get_model_weights(arch).DEFAULT.url
    except Exception:  # noqa: BLE001  (a model without pretrained weights)
        return f"torchvision has no pretrained weights for {arch!r}; use weights null or file:<path>"
    hub = os.path.join(torch.hub.get_dir(), "checkpoints")
    return (f"To use {arch}'s pretrained weights offline: on a machine with internet run "
            f"python -c \"import torchvision; torchvision.models.get_model('{arch}', weights='DEFAULT')\" "
            f"(or download {url}), then copy the file {os.path.basename(url)} into {hub} on this "
            f"machine (set TORCH_HOME to move that folder); or pass it as weights \"file:<path>\"")


def _is_meta() -> bool:
    return torch.empty(0).device.type == "meta"


def _head(model: nn.Module) -> tuple[str, nn.Module]:
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
                                        and m.out_channels == 1000):
            last = (name, m)
    if last is None:
        raise ConfigError("model 'torchvision': found no classifier head (a last Linear layer) to replace")
    return last


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    return None


def _load(model: nn.Module, state: dict, arch: str, source: str) -> bool:
    """Load ``state`` strictly; False when only shapes differ (a head or stem adapted already)."""
    try:
        model.load_state_dict(state, strict=True)
        return True
    except RuntimeError as e:
        if "size mismatch" in str(e) and "Missing key" not in str(e) and "Unexpected key" not in str(e):
            return False
        raise ConfigError(f"model 'torchvision' {arch}: the weights in {source} do not fit it: "
                          f"{str(e).splitlines()[0][:300]}") from None


@MODELS.register("torchvision")
def torchvision_model(*, in_shape, num_classes, arch="resnet18", weights=None,
                      freeze_backbone=False) -> nn.Module:
    """A torchvision classification model with its head replaced for ``num_classes``.

    Args:
        in_shape: ``(C, H, W)`` with C = 1 or 3.
        num_classes: number of output logits.
        arch: torchvision model name. weights: None, "DEFAULT" or "file:<path>".
        freeze_backbone: train only the new head.
    Returns:
        The model; ``tap`` is its last 4-D feature map (``layer4``/``features``) where it has one.
    Raises:
        ConfigError: unknown arch, bad weights value, grey/RGB mismatch, or pretrained weights that
            cannot be had offline (the message says how to get them).
    """
    import torchvision.models as tvm

    from . import _image

    c, _, _ = _image("torchvision", in_shape, num_classes, min_hw=8)
    if not isinstance(arch, str) or arch not in classification_archs():
        raise ConfigError(f"model 'torchvision': arch = {arch!r} is not a torchvision classification "
                          f"model; known: {', '.join(classification_archs())}")
    if not (weights is None or weights == "DEFAULT" or (isinstance(weights, str) and weights.startswith("file:")
                                                        and len(weights) > 5)):
        raise ConfigError(f"model 'torchvision': weights = {weights!r} must be null (random init), "
                          "\"DEFAULT\" (torchvision's pretrained weights) or \"file:<path>\" (.pt or .safetensors)")
    if not isinstance(freeze_backbone, bool):
        raise ConfigError(f"model 'torchvision': freeze_backbone = {freeze_backbone!r} must be true or false")
    if c not in (1, 3):
        raise ConfigError(f"model 'torchvision' takes 1- or 3-channel images; got {c} channels")
    kwargs = {"aux_logits": False, "init_weights": False} if arch in ("googlenet", "inception_v3") else {}
    model = tvm.get_model(arch, weights=None, **kwargs)
    pending = None  # a file whose shapes fit only the adapted model
    if weights is not None and not _is_meta():
        if weights == "DEFAULT":
            try:
                state = tvm.get_model_weights(arch).DEFAULT.get_state_dict(progress=False, check_hash=False)
            except Exception as e:  # noqa: BLE001  (URLError, OSError, HTTPError: offline or blocked)
                raise ConfigError(f"model 'torchvision' {arch}: the pretrained weights are not in "
                                  f"{os.path.join(torch.hub.get_dir(), 'checkpoints')} and could not be "
                                  f"downloaded ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__}). "
                                  + weights_help(arch)) from None
            cached = os.path.join(torch.hub.get_dir(), "checkpoints",
                                  os.path.basename(tvm.get_model_weights(arch).DEFAULT.url))
            _load(model, state, arch, f"torchvision's DEFAULT file {cached}")
        else:
            from ..history.weights import read_state_dict

            state = read_state_dict(weights[5:])
            if not _load(model, state, arch, weights[5:]):
                pending = state
    head_name, head = _head(model)
    if isinstance(head, nn.Linear):
        new_head: nn.Module = nn.Linear(head.in_features, num_classes)
    else:
        new_head = nn.Conv2d(head.in_channels, num_classes, 1)
    model.set_submodule(head_name, new_head)
    if c == 1:
        stem = _first_conv(model)
        if stem is not None and stem[1].in_channels == 3:
            old = stem[1]
            conv = nn.Conv2d(1, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation,
                             old.groups, old.bias is not None, old.padding_mode)
            with torch.no_grad():  # grey = R = G = B, so summing the kernels keeps the response
                conv.weight.copy_(old.weight.sum(1, keepdim=True))
                if old.bias is not None:
                    conv.bias.copy_(old.bias)
            model.set_submodule(stem[0], conv)
    if pending is not None:
        try:
            model.load_state_dict(pending, strict=True)
        except RuntimeError as e:
            raise ConfigError(f"model 'torchvision' {arch}: the weights in {weights[5:]} fit neither its "
                              f"ImageNet head nor this dataset's {num_classes} classes: "
                              f"{str(e).splitlines()[0][:300]}") from None
    if freeze_backbone:
        head_params = {id(p) for p in model.get_submodule(head_name).parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in head_params)
    for tap in _TAPS:
        if hasattr(model, tap):
            model.tap = tap
            break
    return model
