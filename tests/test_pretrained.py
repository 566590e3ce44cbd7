"""torchvision models by name as teacher or student (no download: weights=None or local files)."""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from kdcore import ConfigError, from_dict, run_experiment
from kdcore.models import build_model


def _tv(arch="resnet18", **kw):
    return {"name": "torchvision", "params": {"arch": arch, **kw}}


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


def test_frozen_backbone_trains_only_the_head(tmp_path):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_userdata import make_folder

    path = make_folder(tmp_path / "shapes", n_per_class=8)
    m = build_model("torchvision", in_shape=(3, 16, 16), num_classes=3,
                    params={"arch": "mobilenet_v3_small", "freeze_backbone": True})
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.3.weight", "classifier.3.bias"}
    cfg = from_dict({"data": {"name": "image_folder", "path": path, "image_size": 16},
                     "teacher": _tv("mobilenet_v3_small", freeze_backbone=True),
                     "student": {"name": "mlp", "params": {"hidden": [8]}},
                     "optim": {"epochs": 1}, "teacher_optim": {"epochs": 1, "batch_size": 8}})
    torch.manual_seed(cfg.seed)
    init = build_model("torchvision", in_shape=(3, 16, 16), num_classes=3, params=cfg.teacher.params)
    res = run_experiment(cfg)
    assert res.status == "completed", res.message
    t = res.models["teacher"]
    assert torch.equal(t.features[0][0].weight, init.features[0][0].weight)  # backbone untouched
    assert not torch.equal(t.classifier[3].weight, init.classifier[3].weight)  # the head learned


def test_safetensors_teacher_upload(tmp_path):
    from kdcore import ui_support as ui
    from kdcore.weights import safetensors_bytes

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
