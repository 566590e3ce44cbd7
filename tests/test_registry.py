"""The one way to add a method: ``LOSSES.register(MethodSpec(...))``.

Every registered method carries complete metadata that matches what it does (its terms, its
use of T, what its implementation needs from the trainer), and a method registered here, in a
test, reaches the config check, the trainer, the CLI and the dashboard's formula with no other
edit.
"""
import copy
import inspect

import pytest
import torch

from kdcore import LOSSES, METHOD_INFO, ConfigError, LossConfig
from kdcore.cli import main
from kdcore.losses import hard_ce
from kdcore.models import build_model, seeded_init
from kdcore.registry import MethodSpec, Param
from kdcore.train.trainer import Distiller, LogitDistiller, make_distiller
from kdapp.ui import loss_latex

IN_SHAPE, K = (1, 8, 8), 5  # a small conv net: its tap is a feature map, which every method takes


@pytest.fixture(scope="module")
def batch():
    with seeded_init(0):
        student = build_model("cnn", in_shape=IN_SHAPE, num_classes=K, params={"width": 2, "hidden": 8})
        teacher = build_model("cnn", in_shape=IN_SHAPE, num_classes=K, params={"width": 4, "hidden": 8}).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, *IN_SHAPE, generator=g)
    y = torch.randint(0, K, (6,), generator=g)
    return student, teacher, x, y


def terms_at(name: str, T: float, batch) -> dict[str, float]:
    """Every loss term of method ``name`` at temperature T on the same batch, models and init."""
    student, teacher, x, y = batch
    d = make_distiller(LossConfig(name, temperature=T, alpha=0.5), copy.deepcopy(student), teacher,
                       in_shape=IN_SHAPE, seed=0)
    d.set_epoch(1, 2)
    with torch.no_grad():
        t_logits = teacher(x) if d.uses_teacher_logits_only else None
        _, terms = d(x, y, t_logits)
    return {k: float(v) for k, v in terms.items()}


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_method_has_complete_metadata_that_matches_its_implementation(name):
    spec = METHOD_INFO[name]
    assert spec is LOSSES.spec(name) and spec.name == name
    assert spec.title and len(spec.text) > 40 and spec.formula and spec.terms[0] == "ce"
    assert all(p.help for p in spec.params.values())
    LossConfig(name, params={k: p.default for k, p in spec.params.items()})  # the defaults are valid
    entry = LOSSES.get(name)
    if isinstance(entry, type):
        assert issubclass(entry, Distiller) and spec.kind in ("feature", "adversarial")
        assert entry.uses_teacher_logits_only == (spec.kind != "feature")
        assert not spec.takes_epoch  # a Distiller reads self.epoch; takes_epoch is for logit losses
    else:
        assert spec.kind == "logit"
        assert ("epoch" in inspect.signature(entry).parameters) == spec.takes_epoch


@pytest.mark.parametrize("name", LOSSES.names())
def test_a_method_reports_the_terms_its_spec_names_and_uses_T_exactly_when_it_says_so(name, batch):
    cold, hot = terms_at(name, 1.0, batch), terms_at(name, 8.0, batch)
    assert tuple(cold) == METHOD_INFO[name].terms
    if METHOD_INFO[name].uses_temperature:
        assert any(abs(cold[k] - hot[k]) > 1e-4 for k in cold), (cold, hot)
    else:  # the page disables the T slider for it: T must then change nothing
        assert cold == hot


def test_registration_takes_a_complete_spec_and_refuses_a_bare_name_or_a_duplicate():
    with pytest.raises(TypeError, match="MethodSpec"):
        LOSSES.register("bare")
    with pytest.raises(ValueError, match="formula"):
        MethodSpec(name="x", title="X", text="what it does", formula="")
    with pytest.raises(ValueError, match="help"):
        MethodSpec(name="x", title="X", text="t", formula="f", params={"k": Param(1.0, "")})
    with pytest.raises(ValueError, match="already registered"):
        LOSSES.register(MethodSpec(name="kd", title="KD again", text="t", formula="f"))(lambda *a: {})
    assert "bare" not in LOSSES and "x" not in LOSSES


@pytest.fixture
def plug_in():
    """A logit method registered the one documented way, removed again after the test."""
    spec = MethodSpec(
        name="test_l1_logits", title="L1 logit matching (a test's plug-in)",
        text="Mean absolute error between student and teacher logits, weighed by a knob; a method "
             "registered by a test to show that one registration reaches every consumer.",
        formula=r"\lambda\,\tfrac{1}{K}\lVert z_s - z_t\rVert_1",
        params={"lam": Param(2.0, "weight of the L1 term", 0.0, 10.0)},
        terms=("ce", "l1"), uses_temperature=False)

    @LOSSES.register(spec)
    def l1_logits(student_logits, teacher_logits, labels, cfg):
        lam = cfg.params.get("lam", 2.0)
        return {"ce": cfg.alpha * hard_ce(student_logits, labels),
                "l1": (1 - cfg.alpha) * lam * (student_logits - teacher_logits.detach()).abs().mean()}

    yield spec
    LOSSES.unregister(spec.name)
    assert spec.name not in LOSSES and spec.name not in METHOD_INFO


def test_a_method_registered_once_reaches_config_trainer_cli_and_formula(plug_in, batch, capsys):
    name = plug_in.name
    assert LOSSES.names()[-1] == name and METHOD_INFO[name] is plug_in
    with pytest.raises(ConfigError, match="loss.params.lam = 11"):
        LossConfig(name, params={"lam": 11})
    d = make_distiller(LossConfig(name, params={"lam": 3.0}), batch[0], batch[1], in_shape=IN_SHAPE)
    assert type(d) is LogitDistiller
    assert terms_at(name, 1.0, batch) == terms_at(name, 8.0, batch)
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert f"{name}: {plug_in.title} [logit; terms: ce, l1; T unused]" in out
    assert main(["methods", name]) == 0
    assert "loss.params.lam (default 2.0): weight of the L1 term" in capsys.readouterr().out
    general, numbers = loss_latex(name, 0.25, 4.0, True)
    assert general.endswith(plug_in.formula) and "T^2" not in general and "16" not in numbers


def test_the_formula_scales_by_T_squared_only_for_methods_that_use_T():
    general, numbers = loss_latex("kd", 0.25, 4.0, True)
    assert r"(1-\alpha)\,T^2\," + METHOD_INFO["kd"].formula in general and r"0.75\cdot 16" in numbers
    general, numbers = loss_latex("mse_logits", 0.25, 4.0, True)
    assert "T^2" not in general and r"0.75\cdot\mathcal" in numbers
    assert loss_latex("fitnets", 0.5, 2.0, False)[0].endswith(METHOD_INFO["fitnets"].extra_formula)


def test_the_train_page_disables_T_for_any_method_whose_spec_says_it_ignores_T(plug_in, runs_dir):
    from tests.apptest import app, ok

    at = ok(app())
    assert not at.slider(key="T").disabled  # kd
    at.selectbox(key="loss").set_value(plug_in.name).run()
    ok(at)
    assert at.slider(key="T").disabled
    assert at.number_input(key=f"{plug_in.name}_lam").value == 2.0  # its knob, drawn from the spec
    at.selectbox(key="loss").set_value("mse_logits").run()
    assert ok(at).slider(key="T").disabled


def test_a_sweep_over_T_is_refused_for_every_method_that_ignores_T():
    from kdcore import ConfigError, RunConfig, replace
    from kdcore.config import LossConfig
    from kdcore.train.sweep import SweepPlan

    plain = replace(RunConfig(), data=replace(RunConfig().data, transfer_set=False))  # dkd reads labels
    logit = [n for n in LOSSES.names() if LOSSES.spec(n).kind == "logit"]
    assert "mse_logits" in logit and "kd" in logit
    for name in logit:
        base = replace(plain, loss=LossConfig(name=name))
        if LOSSES.spec(name).uses_temperature:
            assert SweepPlan(base, (0.5,), (1.0, 4.0)).temps == (1.0, 4.0)
        else:
            with pytest.raises(ConfigError, match=f"loss {name} does not use T"):
                SweepPlan(base, (0.5,), (1.0, 4.0))
