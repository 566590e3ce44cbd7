"""Self-describing weights: a history .pt file rebuilds its model without the history."""
from __future__ import annotations

import shutil

import pytest
import torch

from kdcore import ConfigError, RunStore
from kdcore.config import replace
from kdcore.train.experiment import run_experiment
from kdcore.history.weights import load_model_file, read_state_dict
from tests.helpers import FAST as CFG


@pytest.mark.slow
def test_a_history_weights_file_copied_elsewhere_rebuilds_its_model(tmp_path):
    store = RunStore(tmp_path / "runs")
    res = run_experiment(replace(CFG, optim=replace(CFG.optim, epochs=2), teacher_optim=replace(CFG.optim, epochs=2)),
                         store=store)
    for phase in ("teacher", "distilled"):
        shutil.copy(store.weights_path(res.run_id, phase), tmp_path / f"{phase}.pt")
    shutil.rmtree(tmp_path / "runs")  # no history left
    for phase in ("teacher", "distilled"):
        model, card = load_model_file(tmp_path / f"{phase}.pt")
        assert card["phase"] == phase and card["run_id"] == res.run_id
        assert card["model"]["name"] == "mlp" and card["in_shape"] == [2] and len(card["classes"]) == 2
        assert card["run_config"]["loss"]["temperature"] == CFG.loss.temperature
        x = torch.randn(16, 2)
        with torch.no_grad():
            assert torch.equal(model(x), res.models[phase].eval()(x))
        # the same file is also a plain state_dict to every reader of weights (a teacher "file:")
        assert read_state_dict(tmp_path / f"{phase}.pt").keys() == res.models[phase].state_dict().keys()


def test_a_plain_state_dict_still_loads_but_cannot_rebuild_itself(tmp_path):
    from kdcore.models import build_model

    m = build_model("mlp", in_shape=(2,), num_classes=2, params={"hidden": [4]})
    torch.save(m.state_dict(), tmp_path / "plain.pt")
    assert read_state_dict(tmp_path / "plain.pt").keys() == m.state_dict().keys()
    with pytest.raises(ConfigError, match="no kdcore model card"):
        load_model_file(tmp_path / "plain.pt")
