"""torchvision models by name as teacher or student (no download: weights=None, local files, or
weights="DEFAULT" from a hub cache the test fills itself)."""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from kdcore import ConfigError, from_dict, run_experiment
from kdcore.models import build_model


@pytest.fixture(autouse=True)
def _decoders():
    """Image-folder tests leave no decode workers behind."""
    from kdcore.data.own import close_decoders

    yield
    close_decoders()


def _tv(arch="resnet18", **kw):
    return {"name": "torchvision", "params": {"arch": arch, **kw}}


@pytest.mark.slow
def test_any_classifier_by_name_gets_a_new_head():
    for arch, tap in (("resnet18", "layer4"), ("mobilenet_v3_small", "features"), ("squeezenet1_0", "features")):
        m = build_model("torchvision", in_shape=(3, 32, 32), num_classes=5, params={"arch": arch})
        assert m(torch.randn(2, 3, 32, 32)).shape == (2, 5), arch
        assert m.tap == tap
    grey = build_model("torchvision", in_shape=(1, 32, 32), num_classes=4, params={"arch": "resnet18"})
    assert grey.conv1.in_channels == 1 and grey(torch.randn(2, 1, 32, 32)).shape == (2, 4)
    with pytest.raises(ConfigError, match="arch = 'resnet1800'.*known: .*resnet50"):
        build_model("torchvision", in_shape=(3, 32, 32), num_classes=5, params={"arch": "resnet1800"})
    with pytest.raises(ConfigError, match="weights = 'imagenet' must be null"):
        build_model("torchvision", in_shape=(3, 32, 32), num_classes=5, params={"weights": "imagenet"})
    with pytest.raises(ConfigError, match="1- or 3-channel"):
        build_model("torchvision", in_shape=(2, 32, 32), num_classes=5, params={})


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
@pytest.mark.slow
def test_local_weights_file_loads_backbone_and_replaces_head(tmp_path, fmt):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = torchvision.models.resnet18(weights=None)  # ImageNet-shaped: 1000-class head
    path = tmp_path / f"r18.{fmt}"
    (torch.save if fmt == "pt" else save_file)(src.state_dict(), str(path))
    m = build_model("torchvision", in_shape=(3, 16, 16), num_classes=3,
                    params={"arch": "resnet18", "weights": f"file:{path}"})
    assert torch.equal(m.layer3[0].conv1.weight, src.layer3[0].conv1.weight)
    assert m.fc.out_features == 3
    # grey input: the RGB kernels summed, so a grey image gives the RGB model's response
    g = build_model("torchvision", in_shape=(1, 16, 16), num_classes=3,
                    params={"arch": "resnet18", "weights": f"file:{path}"})
    assert torch.allclose(g.conv1.weight, src.conv1.weight.sum(1, keepdim=True))
    # a file of the already adapted model (its fine-tuned head) loads as it is
    path2 = tmp_path / "adapted.pt"
    torch.save(g.state_dict(), path2)
    g2 = build_model("torchvision", in_shape=(1, 16, 16), num_classes=3,
                     params={"arch": "resnet18", "weights": f"file:{path2}"})
    assert torch.equal(g2.fc.weight, g.fc.weight)
    with pytest.raises(ConfigError, match="do not fit"):
        build_model("torchvision", in_shape=(3, 16, 16), num_classes=3,
                    params={"arch": "mobilenet_v3_small", "weights": f"file:{path}"})


def test_offline_default_weights_say_how_to_get_them(monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError) as e:
        build_model("torchvision", in_shape=(3, 32, 32), num_classes=5,
                    params={"arch": "resnet18", "weights": "DEFAULT"})
    msg = str(e.value)
    assert "could not be downloaded" in msg and "resnet18-f37072fd.pth" in msg
    assert "weights='DEFAULT'" in msg and "file:<path>" in msg
    # checking a config builds on the meta device and never asks for the weights
    from_dict({"data": {"name": "fashion_mnist"}, "teacher": _tv(weights="DEFAULT")})


@pytest.fixture
def cached_default(tmp_path, monkeypatch):
    """weights="DEFAULT" for mobilenet_v3_small, offline: the file torchvision would download is put
    in torch's hub cache (TORCH_HOME) under its exact name, made from a randomly initialised model.
    A download attempt fails the test. Returns (arch, the file's model, the file)."""
    import os

    def no_network(*a, **k):
        raise AssertionError("weights='DEFAULT' tried to download although the file is cached")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    arch = "mobilenet_v3_small"
    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(7)
    src = torchvision.models.get_model(arch, weights=None)  # ImageNet-shaped: 1000-class head
    torch.save(src.state_dict(), cache / os.path.basename(url))
    return arch, src, cache / os.path.basename(url)


HEAD = {"classifier.3.weight", "classifier.3.bias"}  # mobilenet_v3_small's last Linear


def test_default_weights_load_from_torchs_cache_without_network(cached_default):
    """The online branch of weights="DEFAULT", run without a network."""
    from kdcore.models.pretrained import torchvision_model

    arch, src, file = cached_default
    m = build_model("torchvision", in_shape=(3, 32, 32), num_classes=4, params={"arch": arch, "weights": "DEFAULT"})
    for name, p in m.state_dict().items():
        if name not in HEAD:
            assert torch.equal(p, src.state_dict()[name]), name  # every backbone tensor is the file's
    assert m.classifier[3].out_features == 4 and src.classifier[3].out_features == 1000
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    assert all(p.requires_grad for p in m.parameters())  # fine-tuned whole unless frozen
    frozen = torchvision_model(in_shape=(3, 32, 32), num_classes=4, arch=arch, weights="DEFAULT",
                               freeze_backbone=True)
    assert {n for n, p in frozen.named_parameters() if p.requires_grad} == HEAD
    assert torch.equal(frozen.features[0][0].weight, src.features[0][0].weight)
    # a file of another model under that name is refused, naming the file, not half-loaded
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), file)
    with pytest.raises(ConfigError, match=f"weights in .*{file.name} do not fit it"):
        build_model("torchvision", in_shape=(3, 32, 32), num_classes=4, params={"arch": arch, "weights": "DEFAULT"})


@pytest.mark.slow
def test_frozen_pretrained_backbone_trains_only_the_head(tmp_path, cached_default):
    from tests.helpers import make_folder

    arch, src, _ = cached_default
    path = make_folder(tmp_path / "shapes", n_per_class=8)
    cfg = from_dict({"data": {"name": "image_folder", "path": path, "image_size": 16},
                     "teacher": _tv(arch, weights="DEFAULT", freeze_backbone=True),
                     "student": {"name": "mlp", "params": {"hidden": [8]}},
                     "optim": {"epochs": 1}, "teacher_optim": {"epochs": 1, "batch_size": 8}})
    torch.manual_seed(cfg.seed)
    init = build_model("torchvision", in_shape=(3, 16, 16), num_classes=3, params=cfg.teacher.params)
    res = run_experiment(cfg)
    assert res.status == "completed", res.message
    t = res.models["teacher"]
    for name, p in t.named_parameters():
        if name not in HEAD:  # the pretrained features stay exactly as the file has them
            assert torch.equal(p, src.get_parameter(name)), name
    assert not torch.equal(t.classifier[3].weight, init.classifier[3].weight)  # the head learned


def test_safetensors_teacher_upload(tmp_path):
    from kdapp import ui
    from kdcore.history.weights import safetensors_bytes

    cfg = from_dict({"data": {"name": "moons"}, "teacher": {"name": "mlp", "params": {"hidden": [16]}}})
    model = build_model("mlp", in_shape=(2,), num_classes=2, params={"hidden": [16]})
    src = ui.save_teacher_upload(safetensors_bytes(model.state_dict(), {}), cfg, tmp_path)
    assert src.endswith(".safetensors")
    res = run_experiment(from_dict({**__import__("kdcore").to_dict(cfg), "teacher_source": src,
                                    "optim": {"epochs": 1}}))
    assert res.status == "completed", res.message
    assert torch.equal(res.models["teacher"].state_dict()["classifier.1.weight"],
                       model.state_dict()["classifier.1.weight"])
    other = build_model("mlp", in_shape=(2,), num_classes=2, params={"hidden": [4]})
    with pytest.raises(ConfigError, match="do not fit"):
        ui.save_teacher_upload(safetensors_bytes(other.state_dict(), {}), cfg, tmp_path)
    with pytest.raises(ConfigError, match="not a valid .safetensors file"):
        ui.save_teacher_upload(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage", cfg, tmp_path)
    with pytest.raises(ConfigError, match="not a plain PyTorch state_dict .* nor a .safetensors file"):
        ui.save_teacher_upload(b"hello, not weights", cfg, tmp_path)
    assert sorted(p.suffix for p in (tmp_path / "uploads").iterdir()) == [".safetensors"]  # refused ones removed
