"""Config validation, JSON round-trip and the registries."""
import json

import pytest

from kdcore import (DATASETS, LOSSES, MODELS, ConfigError, DataConfig, LossConfig, ModelConfig,
                    OptimConfig, Registry, RunConfig, from_dict, from_json, replace, to_json)


def test_round_trip_through_json():
    cfg = RunConfig(data=DataConfig(name="spirals", n_classes=4), loss=LossConfig(temperature=2.5, alpha=0.1),
                    student=ModelConfig("mlp", {"hidden": [16, 8]}), seed=7, name="x")
    again = from_json(to_json(cfg))
    assert again == cfg
    assert json.loads(to_json(again))["loss"]["temperature"] == 2.5


@pytest.mark.parametrize("kwargs, words", [
    (dict(temperature=0), ["loss.temperature", "0", "> 0"]),
    (dict(temperature=-1.0), ["loss.temperature", "-1.0"]),
    (dict(alpha=1.5), ["loss.alpha", "1.5", "[0, 1]"]),
    (dict(alpha=float("nan")), ["loss.alpha", "nan"]),
    (dict(name="nope"), ["nope", "kd", "soft_ce", "mse_logits"]),
])
def test_loss_validation_names_field_value_and_allowed(kwargs, words):
    with pytest.raises(ConfigError) as e:
        LossConfig(**kwargs)
    for w in words:
        assert w in str(e.value)


def test_optim_and_data_validation():
    with pytest.raises(ConfigError, match="epochs"):
        OptimConfig(epochs=0)
    with pytest.raises(ConfigError, match="lr"):
        OptimConfig(lr=-1)
    with pytest.raises(ConfigError, match="batch_size"):
        OptimConfig(batch_size=0)
    with pytest.raises(ConfigError, match="cifar10.*fashion_mnist|moons"):
        DataConfig(name="imagenet")
    with pytest.raises(ConfigError, match="train_subset"):
        DataConfig(train_subset=-5)


def test_student_must_fit_the_dataset():
    # a conv net cannot take 2-D points: caught at construction, naming the role and model
    with pytest.raises(ConfigError) as e:
        RunConfig(student=ModelConfig("lenet5"))
    assert "student" in str(e.value) and "lenet5" in str(e.value)
    with pytest.raises(ConfigError, match="teacher"):
        RunConfig(teacher=ModelConfig("mlp", {"hidden": "big"}))
    with pytest.raises(ConfigError, match="unknown_knob"):
        RunConfig(student=ModelConfig("mlp", {"unknown_knob": 1}))
    # image models fit image sets (metadata only, nothing is loaded)
    RunConfig(data=DataConfig(name="fashion_mnist"), teacher=ModelConfig("cnn"),
              student=ModelConfig("mlp", {"hidden": [32]}))


def test_from_dict_rejects_unknown_fields_and_fills_defaults():
    with pytest.raises(ConfigError, match="temprature"):
        from_dict({"loss": {"temprature": 3}})
    cfg = from_dict({"loss": {"alpha": 0.2}})
    assert cfg.loss.alpha == 0.2 and cfg.loss.temperature == LossConfig().temperature
    with pytest.raises(ConfigError, match="not valid JSON"):
        from_json("{")


def test_teacher_source_validation():
    with pytest.raises(ConfigError, match="teacher_source"):
        RunConfig(teacher_source="somewhere")
    assert replace(RunConfig(), teacher_source="run:3").teacher_source == "run:3"


def test_registries_are_filled_and_strict():
    assert {"mlp", "lenet5", "cnn", "resnet8", "resnet20", "resnet32", "resnet18",
            "mobilenet_v3_small"} <= set(MODELS.names())
    assert DATASETS.names()[:4] == ["moons", "circles", "spirals", "blobs"]
    assert {"fashion_mnist", "mnist", "cifar10"} <= set(DATASETS.names())
    assert {"kd", "soft_ce", "mse_logits"} <= set(LOSSES.names())
    with pytest.raises(KeyError) as e:
        LOSSES.get("hinton")
    assert "kd" in str(e.value) and "mse_logits" in str(e.value)
    reg = Registry("thing")
    reg.register("a")(object)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(object)
