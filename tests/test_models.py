"""Model registry, shapes, feature taps, param counts, profiling and config errors."""
import pytest
import torch
from torch import nn

from kdcore.errors import ConfigError
from kdcore.models import ModelProfile, build_model, count_params, profile
from kdcore.registry import MODELS

ALL = ["mlp", "lenet5", "cnn", "resnet8", "resnet20", "resnet32", "resnet18", "mobilenet_v3_small"]
CONV = [n for n in ALL if n != "mlp"]
MNIST, CIFAR = (1, 28, 28), (3, 32, 32)


def test_registry_has_every_model():
    assert set(ALL) <= set(MODELS.names())


@pytest.mark.parametrize("in_shape", [MNIST, CIFAR])
@pytest.mark.parametrize("name", ALL)
def test_forward_gives_logits_and_tap_fires(name, in_shape):
    torch.manual_seed(0)
    model = build_model(name, in_shape=in_shape, num_classes=10)
    seen = []
    model.get_submodule(model.tap).register_forward_hook(lambda mod, inp, out: seen.append(out))
    logits = model(torch.randn(2, *in_shape))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    assert len(seen) == 1 and isinstance(seen[0], torch.Tensor) and seen[0].shape[0] == 2
    # conv nets expose a feature map, the mlp a flat vector
    assert seen[0].dim() == (2 if name == "mlp" else 4)


def test_mlp_on_tabular_input():
    model = build_model("mlp", in_shape=(2,), num_classes=2, params={"hidden": [16, 8], "dropout": 0.1})
    seen = []
    model.get_submodule(model.tap).register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    assert model(torch.randn(5, 2)).shape == (5, 2)
    assert seen == [(5, 8)]


def test_models_train_backward():
    model = build_model("resnet8", in_shape=MNIST, num_classes=10)
    loss = nn.functional.cross_entropy(model(torch.randn(4, *MNIST)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_param_counts():
    assert 300_000 <= count_params(build_model("cnn", in_shape=MNIST, num_classes=10)) <= 500_000
    student = build_model("mlp", in_shape=MNIST, num_classes=10, params={"hidden": (32,)})
    assert count_params(student) == 784 * 32 + 32 + 32 * 10 + 10
    # He et al. 2016 report 0.27M and 0.46M for ResNet-20/32 (option A shortcuts)
    assert 265_000 <= count_params(build_model("resnet20", in_shape=CIFAR, num_classes=10)) <= 275_000
    assert 455_000 <= count_params(build_model("resnet32", in_shape=CIFAR, num_classes=10)) <= 470_000
    wide = build_model("resnet8", in_shape=CIFAR, num_classes=10, params={"width_mult": 2})
    assert count_params(wide) > 3 * count_params(build_model("resnet8", in_shape=CIFAR, num_classes=10))


def test_profile_reports_size_and_latency_and_keeps_mode():
    model = build_model("mlp", in_shape=MNIST, num_classes=10, params={"hidden": (32,)})
    model.train()
    prof = profile(model, MNIST, batch_size=16, repeats=3)
    assert isinstance(prof, ModelProfile)
    assert prof.params == count_params(model) > 0
    assert prof.size_mb == pytest.approx(prof.params * 4 / 2**20)
    assert prof.latency_ms > 0
    assert model.training
    model.eval()
    profile(model, MNIST, batch_size=4, repeats=1)
    assert not model.training


def test_profile_counts_buffers():
    model = build_model("resnet8", in_shape=MNIST, num_classes=10)
    prof = profile(model, MNIST, batch_size=2, repeats=1)
    assert prof.size_mb > prof.params * 4 / 2**20  # batch-norm running stats


@pytest.mark.parametrize("name", CONV)
def test_conv_net_rejects_flat_input(name):
    with pytest.raises(ConfigError, match=rf"model '{name}' needs image input \(C, H, W\); got \(2,\)"):
        build_model(name, in_shape=(2,), num_classes=2)


def test_too_small_image_is_rejected():
    with pytest.raises(ConfigError, match="resnet18.*at least 8x8.*\\(3, 4, 4\\)"):
        build_model("resnet18", in_shape=(3, 4, 4), num_classes=10)


def test_unknown_param_names_model_param_and_accepted():
    with pytest.raises(ConfigError) as err:
        build_model("cnn", in_shape=MNIST, num_classes=10, params={"depth": 3})
    msg = str(err.value)
    assert "'cnn'" in msg and "'depth'" in msg and "width" in msg and "hidden" in msg and "dropout" in msg


def test_unknown_model_is_config_error():
    with pytest.raises(ConfigError, match="nope.*mlp"):
        build_model("nope", in_shape=MNIST, num_classes=10)


@pytest.mark.parametrize(
    "name, params, needle",
    [
        ("mlp", {"hidden": 32}, "hidden"),
        ("mlp", {"hidden": [32, -1]}, "hidden"),
        ("mlp", {"dropout": 1.0}, "dropout"),
        ("cnn", {"width": 0}, "width"),
        ("cnn", {"hidden": 2.5}, "hidden"),
        ("resnet20", {"width_mult": 0}, "width_mult"),
        ("mobilenet_v3_small", {"dropout": -0.1}, "dropout"),
    ],
)
def test_bad_values_name_param_value_and_allowed(name, params, needle):
    (value,) = params.values()
    with pytest.raises(ConfigError) as err:
        build_model(name, in_shape=MNIST, num_classes=10, params=params)
    msg = str(err.value)
    assert needle in msg and repr(value) in msg and "must be" in msg


def test_bad_num_classes():
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("mlp", in_shape=(2,), num_classes=1)
