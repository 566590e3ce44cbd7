"""Teacher and student networks, a registry-driven builder, and a size/latency profiler.

Every factory is registered in ``MODELS`` and called as
``factory(in_shape=..., num_classes=..., **params)``; ``in_shape`` is ``(D,)`` for tabular
data or ``(C, H, W)`` for images. A bad param, or an input a model cannot take, raises
``ConfigError`` naming the model, the param or shape, and what is allowed.

Feature tap: every model carries ``model.tap``, the dotted name of the submodule
(``model.get_submodule(model.tap)``) whose forward output is the penultimate feature that
feature-based KD hooks. For ``mlp`` it is the last hidden activation, shape ``[B, D]``
(the flattened input when ``hidden`` is empty). For every conv net it is the last 4-D
feature map ``[B, C, H, W]`` before pooling/flattening and the classifier head: the conv
stack of ``lenet5``/``cnn``, ``layer3`` of the CIFAR ResNets, ``layer4`` of ``resnet18``
and ``features`` of ``mobilenet_v3_small``.
"""
from __future__ import annotations

import inspect
import math
import statistics
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import MODELS

_IO_ARGS = ("in_shape", "num_classes")


# --- validation -------------------------------------------------------------------------

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _io(name: str, in_shape, num_classes) -> tuple[int, ...]:
    shape = tuple(in_shape) if isinstance(in_shape, (list, tuple)) else None
    if not shape or not all(_is_int(d) and d > 0 for d in shape):
        raise ConfigError(f"model {name!r}: in_shape must be a tuple of positive ints; got {in_shape!r}")
    if not _is_int(num_classes) or num_classes < 2:
        raise ConfigError(f"model {name!r}: num_classes must be an int >= 2; got {num_classes!r}")
    return shape


def _image(name: str, in_shape, num_classes, min_hw: int) -> tuple[int, int, int]:
    shape = _io(name, in_shape, num_classes)
    if len(shape) != 3:
        raise ConfigError(f"model {name!r} needs image input (C, H, W); got {shape}")
    if min(shape[1:]) < min_hw:
        raise ConfigError(f"model {name!r} needs images of at least {min_hw}x{min_hw}; got {shape}")
    return shape


def _bad(name: str, param: str, value, allowed: str) -> ConfigError:
    return ConfigError(f"model {name!r}: {param} must be {allowed}; got {value!r}")


def _pos_int(name: str, param: str, v) -> int:
    if not _is_int(v) or v < 1:
        raise _bad(name, param, v, "a positive int")
    return v


def _pos_num(name: str, param: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, Real) or not v > 0 or not math.isfinite(v):
        raise _bad(name, param, v, "a positive number")
    return float(v)


def _prob(name: str, param: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, Real) or not 0 <= v < 1:
        raise _bad(name, param, v, "a number in [0, 1)")
    return float(v)


def _tapped(model: nn.Module, tap: str) -> nn.Module:
    model.get_submodule(tap)  # fail at build time, not inside someone's hook
    model.tap = tap
    return model


# --- models -----------------------------------------------------------------------------

@MODELS.register("mlp")
def mlp(*, in_shape, num_classes, hidden=(64, 64), dropout=0.0) -> nn.Module:
    """Fully connected ReLU net that flattens any input.

    Args:
        in_shape: input shape without batch, ``(D,)`` or ``(C, H, W)``.
        num_classes: number of output logits.
        hidden: widths of the hidden layers; empty gives a linear classifier.
        dropout: drop probability after each hidden activation.

    Returns:
        The model, with ``tap = "features"`` (last hidden activation).
    """
    shape = _io("mlp", in_shape, num_classes)
    if not isinstance(hidden, (list, tuple)) or not all(_is_int(h) and h > 0 for h in hidden):
        raise _bad("mlp", "hidden", hidden, "a list of positive ints, e.g. [64, 64]")
    p = _prob("mlp", "dropout", dropout)
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(shape)
    for i, h in enumerate(hidden):
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        if i < len(hidden) - 1:
            layers.append(nn.Dropout(p))
        width = h
    # The last dropout lives in the head so the tapped feature is never dropped out.
    head = nn.Sequential(nn.Dropout(p), nn.Linear(width, num_classes))
    return _tapped(nn.Sequential(OrderedDict(features=nn.Sequential(*layers), classifier=head)), "features")


@MODELS.register("lenet5")
def lenet5(*, in_shape, num_classes) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling; images under 32 px are padded by 2.

    Args:
        in_shape: ``(C, H, W)`` with H, W >= 12, e.g. ``(1, 28, 28)`` or ``(3, 32, 32)``.
        num_classes: number of output logits.

    Returns:
        The model, with ``tap = "features"`` (the 16-channel map after the second pool).
    """
    c, h, w = _image("lenet5", in_shape, num_classes, min_hw=12)
    pad = 2 if min(h, w) < 32 else 0  # LeCun padded 28x28 MNIST to 32x32

    def out(n: int) -> int:
        return ((n + 2 * pad - 4) // 2 - 4) // 2

    features = nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=pad), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
    )
    classifier = nn.Sequential(
        nn.Flatten(), nn.Linear(16 * out(h) * out(w), 120), nn.ReLU(inplace=True),
        nn.Linear(120, 84), nn.ReLU(inplace=True), nn.Linear(84, num_classes),
    )
    return _tapped(nn.Sequential(OrderedDict(features=features, classifier=classifier)), "features")


@MODELS.register("cnn")
def cnn(*, in_shape, num_classes, width=16, hidden=256, dropout=0.0) -> nn.Module:
    """Two 5x5 conv/pool blocks and a two-layer head; ~417k params on 1x28x28 with defaults.

    Args:
        in_shape: ``(C, H, W)`` with H, W >= 4.
        num_classes: number of output logits.
        width: channels of the first conv; the second has ``2 * width``.
        hidden: width of the fully connected hidden layer.
        dropout: drop probability before the last layer.

    Returns:
        The model, with ``tap = "features"`` (the ``2*width``-channel map after the second pool).
    """
    c, h, w = _image("cnn", in_shape, num_classes, min_hw=4)
    width, hidden = _pos_int("cnn", "width", width), _pos_int("cnn", "hidden", hidden)
    p = _prob("cnn", "dropout", dropout)
    features = nn.Sequential(
        nn.Conv2d(c, width, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
    )
    classifier = nn.Sequential(
        nn.Flatten(), nn.Linear(2 * width * (h // 4) * (w // 4), hidden), nn.ReLU(inplace=True),
        nn.Dropout(p), nn.Linear(hidden, num_classes),
    )
    return _tapped(nn.Sequential(OrderedDict(features=features, classifier=classifier)), "features")


class _BasicBlock(nn.Module):
    """Two 3x3 convs with a parameter-free shortcut (option A of He et al. 2016)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.stride != 1 or self.extra:
            # Option A keeps the CIFAR ResNets at the paper's parameter counts.
            x = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))
        return F.relu(out + x)


def _cifar_resnet(name: str, n: int, in_shape, num_classes, width_mult) -> nn.Module:
    c, _, _ = _image(name, in_shape, num_classes, min_hw=8)
    base = round(16 * _pos_num(name, "width_mult", width_mult))
    if base < 1:
        raise _bad(name, "width_mult", width_mult, "at least 1/16")
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        stem=nn.Sequential(nn.Conv2d(c, base, 3, 1, 1, bias=False), nn.BatchNorm2d(base), nn.ReLU(inplace=True))
    )
    cin = base
    for stage, (cout, stride) in enumerate([(base, 1), (2 * base, 2), (4 * base, 2)], start=1):
        blocks = [_BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)]
        layers[f"layer{stage}"] = nn.Sequential(*blocks)
        cin = cout
    layers.update(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(cin, num_classes))
    model = nn.Sequential(layers)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
    return _tapped(model, "layer3")


@MODELS.register("resnet8")
def resnet8(*, in_shape, num_classes, width_mult=1) -> nn.Module:
    """CIFAR ResNet-8 (He et al. 2016, 6n+2 layers with n=1).

    Args:
        in_shape: ``(C, H, W)`` with H, W >= 8.
        num_classes: number of output logits.
        width_mult: scales the stage widths 16/32/64 (e.g. 4 gives "resnet8x4").

    Returns:
        The model, with ``tap = "layer3"`` (the last residual stage).
    """
    return _cifar_resnet("resnet8", 1, in_shape, num_classes, width_mult)


@MODELS.register("resnet20")
def resnet20(*, in_shape, num_classes, width_mult=1) -> nn.Module:
    """CIFAR ResNet-20 (He et al. 2016, 6n+2 layers with n=3).

    Args:
        in_shape: ``(C, H, W)`` with H, W >= 8.
        num_classes: number of output logits.
        width_mult: scales the stage widths 16/32/64.

    Returns:
        The model, with ``tap = "layer3"`` (the last residual stage).
    """
    return _cifar_resnet("resnet20", 3, in_shape, num_classes, width_mult)


@MODELS.register("resnet32")
def resnet32(*, in_shape, num_classes, width_mult=1) -> nn.Module:
    """CIFAR ResNet-32 (He et al. 2016, 6n+2 layers with n=5).

    Args:
        in_shape: ``(C, H, W)`` with H, W >= 8.
        num_classes: number of output logits.
        width_mult: scales the stage widths 16/32/64.

    Returns:
        The model, with ``tap = "layer3"`` (the last residual stage).
    """
    return _cifar_resnet("resnet32", 5, in_shape, num_classes, width_mult)


@MODELS.register("resnet18")
def resnet18(*, in_shape, num_classes) -> nn.Module:
    """torchvision ResNet-18, untrained, with a 3x3 stride-1 stem and no max-pool for small images.

    Args:
        in_shape: ``(C, H, W)`` with H, W >= 8.
        num_classes: number of output logits.

    Returns:
        The model, with ``tap = "layer4"`` (the last residual stage).
    """
    from torchvision import models as tvm  # here, not at the top: it costs ~1 s of every start-up

    c, _, _ = _image("resnet18", in_shape, num_classes, min_hw=8)
    model = tvm.resnet18(weights=None, num_classes=num_classes)
    # ImageNet's 7x7/2 stem and max-pool would shrink a 28 px image to 7 px before layer1.
    model.conv1 = nn.Conv2d(c, 64, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return _tapped(model, "layer4")


@MODELS.register("mobilenet_v3_small")
def mobilenet_v3_small(*, in_shape, num_classes, width_mult=1.0, dropout=0.2) -> nn.Module:
    """torchvision MobileNetV3-Small, untrained, whose first conv takes C channels at stride 1.

    Args:
        in_shape: ``(C, H, W)`` with H, W >= 16.
        num_classes: number of output logits.
        width_mult: scales every layer's channels (torchvision's ``width_mult``).
        dropout: drop probability in the classifier head.

    Returns:
        The model, with ``tap = "features"`` (the last feature map before pooling).
    """
    from torchvision import models as tvm  # here, not at the top: it costs ~1 s of every start-up

    c, _, _ = _image("mobilenet_v3_small", in_shape, num_classes, min_hw=16)
    wm = _pos_num("mobilenet_v3_small", "width_mult", width_mult)
    p = _prob("mobilenet_v3_small", "dropout", dropout)
    model = tvm.mobilenet_v3_small(weights=None, num_classes=num_classes, width_mult=wm, dropout=p)
    old = model.features[0][0]
    # Stride 1 keeps a 2x2 map at the end for 28-32 px input instead of 1x1.
    model.features[0][0] = nn.Conv2d(c, old.out_channels, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(model.features[0][0].weight, mode="fan_out")
    return _tapped(model, "features")


# --- building and profiling ------------------------------------------------------------

# Module constructors draw their initial weights from torch's one process-wide generator, so two
# threads building models at once (two browser sessions starting runs) would interleave draws and
# change each other's weights. Every seeded build takes this lock.
_INIT_LOCK = threading.RLock()


@contextmanager
def seeded_init(seed: int):
    """Build models inside this to draw their init from ``seed``, alone among threads.

    The process RNG is restored afterwards: training draws from the run's own generators
    (data order, augmentation, dropout), never from the process-wide one.
    """
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_model(name: str, *, in_shape, num_classes: int, params: dict | None = None) -> nn.Module:
    """Build the registered model ``name`` with its ``params``.

    Args:
        name: a name from ``MODELS.names()``.
        in_shape: input shape without batch, ``(D,)`` or ``(C, H, W)``.
        num_classes: number of output logits.
        params: the model's own keyword params; ``None`` means all defaults.

    Returns:
        The model, with its ``tap`` attribute set.
    """
    try:
        factory = MODELS.get(name)
    except KeyError as e:
        raise ConfigError(e.args[0]) from None
    params = dict(params or {})
    accepted = [p for p in inspect.signature(factory).parameters if p not in _IO_ARGS]
    try:
        with _INIT_LOCK:  # an unseeded build (a probe) never lands in the middle of a seeded one
            return factory(in_shape=in_shape, num_classes=num_classes, **params)
    except TypeError:
        unknown = sorted(set(params) - set(accepted))
        if not unknown:
            raise
        raise ConfigError(
            f"model {name!r} has no param {unknown[0]!r}; accepted params: {', '.join(accepted) or '(none)'}"
        ) from None


def count_params(model: nn.Module) -> int:
    """Count the parameters of ``model``, trainable or not.

    Args:
        model: any module.

    Returns:
        The number of scalar parameters.
    """
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class ModelProfile:
    """How big and how fast a model is."""

    params: int  # what the "fewer parameters" claim of a student is measured in
    size_mb: float  # parameters + buffers in MiB, i.e. what a checkpoint of the weights costs
    latency_ms: float  # median forward time of one batch, eval mode, no autograd
    latency_spread_ms: float = 0.0  # half the interquartile range of those times: how noisy the median is


def profile(model: nn.Module, in_shape, *, batch_size: int = 128, device="cpu", repeats: int = 9) -> ModelProfile:
    """Measure the size of ``model`` and its median forward latency on a random batch.

    Args:
        model: a module that already lives on ``device``; its train/eval mode is restored.
        in_shape: input shape without batch.
        batch_size: rows in the timed batch.
        device: where the random batch is made.
        repeats: timed forward passes after two warm-up passes.

    Returns:
        A ``ModelProfile`` with parameter count, size in MiB, the median latency in ms per batch
        and its spread (half the interquartile range).
    """
    if not _is_int(batch_size) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int; got {batch_size!r}")
    if not _is_int(repeats) or repeats < 1:
        raise ConfigError(f"repeats must be a positive int; got {repeats!r}")
    tensors = [*model.parameters(), *model.buffers()]
    size_mb = sum(t.numel() * t.element_size() for t in tensors) / 2**20
    device = torch.device(device)
    with _INIT_LOCK:  # a profile's draw never lands inside another thread's seeded build
        x = torch.randn(batch_size, *in_shape, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.inference_mode():
            for _ in range(2):
                model(x)
            for _ in range(repeats):
                sync()
                t0 = time.perf_counter()
                model(x)
                sync()
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        model.train(was_training)
    q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0],) * 3
    return ModelProfile(params=count_params(model), size_mb=size_mb, latency_ms=statistics.median(times),
                        latency_spread_ms=(q3 - q1) / 2)
