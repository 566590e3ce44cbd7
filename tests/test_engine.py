"""Training: smoke runs with an accuracy floor, events, caching, determinism, divergence, stop."""
import threading

import pytest
import torch

from kdcore import (DataConfig, EpochEnd, LossConfig, ModelConfig, OptimConfig, PhaseEnd, PhaseStart,
                    RunConfig, RunEnd, StepEnd, compare, replace, run_experiment)
from kdcore.data import load_data
from kdcore.train.experiment import build_models
from kdcore.train.trainer import Alone, LogitDistiller, fit, predict_logits
from tests.helpers import FAST


def test_one_run_clears_accuracy_floor_and_emits_events():
    events = []
    res = run_experiment(FAST, callbacks=[events.append])
    assert res.status == "completed", res.message
    for phase in ("teacher", "baseline", "distilled"):
        assert res.metrics[phase]["accuracy"] > 0.85, (phase, res.metrics[phase]["accuracy"])
        assert len(res.history[phase]) == 8
    kinds = [type(e) for e in events]
    assert kinds[0] is PhaseStart and kinds[-1] is RunEnd
    assert sum(k is PhaseStart for k in kinds) == 3 and sum(k is EpochEnd for k in kinds) == 24
    steps = [e for e in events if isinstance(e, StepEnd) and e.phase == "distilled"]
    n_train = len(load_data(FAST.data).x_train)
    assert steps[-1].step == steps[-1].total_steps == 8 * -(-n_train // 64)
    assert set(steps[0].terms) == {"ce", "kd"}
    assert steps[0].loss == pytest.approx(sum(steps[0].terms.values()), rel=1e-6)
    base_steps = [e for e in events if isinstance(e, StepEnd) and e.phase == "baseline"]
    assert set(base_steps[0].terms) == {"ce"}
    assert events[-1].status == "completed" and "points, 95 % CI" in events[-1].message
    m = res.metrics["distilled"]
    assert 0 <= m["agreement"] <= 1 and m["compression"] > 1 and len(m["confusion"]) == 2


@pytest.mark.slow
def test_same_seed_is_bit_for_bit_repeatable_and_baseline_shares_init():
    a = run_experiment(FAST)
    b = run_experiment(FAST)
    for phase in ("teacher", "baseline", "distilled"):
        for (k, va), vb in zip(a.models[phase].state_dict().items(), b.models[phase].state_dict().values()):
            assert torch.equal(va, vb), (phase, k)
    assert [e["train_loss"] for e in a.history["distilled"]] == [e["train_loss"] for e in b.history["distilled"]]
    # with alpha = 1 the distilled student IS the baseline: same init, data order and schedule
    same = run_experiment(replace(FAST, loss=LossConfig(temperature=3.0, alpha=1.0)))
    for va, vb in zip(same.models["baseline"].state_dict().values(),
                      same.models["distilled"].state_dict().values()):
        assert torch.equal(va, vb)
    c = run_experiment(replace(FAST, seed=1))
    assert not torch.equal(next(iter(c.models["distilled"].parameters())),
                           next(iter(a.models["distilled"].parameters())))


def test_cached_teacher_logits_give_the_same_training_as_live_teacher():
    data = load_data(FAST.data)
    teacher, _ = build_models(FAST, data.in_shape, 2)
    teacher.eval()
    cache = predict_logits(teacher, data.x_train)
    losses = {}
    for name, t_log in (("cached", cache), ("live", None)):
        _, student = build_models(FAST, data.in_shape, 2)
        seen = []
        fit(LogitDistiller(student, teacher, FAST.loss), data, FAST.optim, phase="d", seed=0,
            callbacks=[lambda e: seen.append(e.loss) if isinstance(e, StepEnd) else None],
            teacher_logits=t_log)
        losses[name] = seen
    assert losses["cached"] == pytest.approx(losses["live"], rel=1e-5, abs=1e-7)
    # the teacher was never updated
    assert torch.equal(predict_logits(teacher, data.x_train), cache)


def test_divergence_ends_the_run_with_a_message():
    cfg = replace(FAST, teacher_optim=OptimConfig(epochs=3, lr=10.0, optimizer="sgd"))
    res = run_experiment(cfg)
    assert res.status == "diverged"
    assert "teacher" in res.message and "learning rate" in res.message
    assert "baseline" not in res.metrics


def test_stop_flag_is_honoured_between_steps():
    stop = threading.Event()
    events = []

    def cb(e):
        events.append(e)
        if isinstance(e, StepEnd) and e.phase == "baseline" and e.step == 3:
            stop.set()

    res = run_experiment(FAST, callbacks=[cb], stop=stop)
    assert res.status == "stopped"
    assert max(e.step for e in events if isinstance(e, StepEnd) and e.phase == "baseline") == 3
    assert not any(isinstance(e, StepEnd) and e.phase == "distilled" for e in events)
    assert isinstance(events[-1], RunEnd) and events[-1].status == "stopped"


@pytest.mark.slow
def test_alpha_zero_follows_the_teacher_alpha_one_follows_the_labels():
    # a teacher that names the wrong class on purpose: swap the rows of its output layer
    data = load_data(FAST.data)
    teacher, _ = build_models(FAST, data.in_shape, 2)
    fit(Alone(teacher), data, FAST.teacher_optim, phase="teacher", seed=0)
    last = [m for m in teacher.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.copy_(last.weight.flip(0))
        last.bias.copy_(last.bias.flip(0))
    optim = OptimConfig(epochs=10, lr=1e-2, batch_size=32)
    only_teacher = run_experiment(replace(FAST, optim=optim, loss=LossConfig(temperature=1.0, alpha=0.0)),
                                  reuse={"teacher": teacher}, data=data)
    assert only_teacher.metrics["teacher"]["accuracy"] < 0.1
    assert only_teacher.metrics["distilled"]["agreement"] > 0.9
    assert only_teacher.metrics["distilled"]["accuracy"] < 0.1
    only_labels = run_experiment(replace(FAST, optim=optim, loss=LossConfig(temperature=1.0, alpha=1.0)),
                                 reuse={"teacher": teacher}, data=data)
    assert only_labels.metrics["distilled"]["accuracy"] > 0.8
    assert only_labels.metrics["distilled"]["agreement"] < 0.2


@pytest.mark.slow
def test_compare_summarises_seeds(store):
    cfg = replace(FAST, optim=OptimConfig(epochs=3, lr=1e-2, batch_size=64),
                  teacher_optim=OptimConfig(epochs=3, lr=1e-2, batch_size=64))
    out = compare(cfg, seeds=[0, 1], store=store)
    assert list(out.table["model"]) == ["teacher", "baseline", "distilled"]
    assert (out.table["seeds"] == 2).all()
    gains = [r.gain for r in out.runs]
    assert out.gain_mean == pytest.approx(sum(gains) / 2)
    assert len(store.list(group=out.group)) == 2


@pytest.mark.slow
def test_augmented_images_use_live_teacher(tmp_path):
    from tests.idx import write_fashion_idx

    root = write_fashion_idx(tmp_path, n_train=120, n_test=40)
    cfg = RunConfig(data=DataConfig(name="fashion_mnist", data_dir=str(root), augment=True),
                    teacher=ModelConfig("lenet5"), student=ModelConfig("mlp", {"hidden": [16]}),
                    optim=OptimConfig(epochs=1, batch_size=32), teacher_optim=OptimConfig(epochs=1, batch_size=32))
    events = []
    res = run_experiment(cfg, callbacks=[events.append])
    assert res.status == "completed", res.message
    assert res.metrics["distilled"]["params"] == 784 * 16 + 16 + 16 * 10 + 10
    assert any(isinstance(e, PhaseEnd) and e.phase == "distilled" for e in events)


def test_omitted_class_is_absent_from_student_training_only():
    cfg = replace(FAST, data=DataConfig(name="blobs", n_classes=3, n_samples=600, noise=0.5, omit_class=1))
    steps_per_epoch = {}

    def cb(e):
        if isinstance(e, PhaseStart):
            steps_per_epoch[e.phase] = e.steps_per_epoch
    res = run_experiment(cfg, callbacks=[cb])
    assert res.status == "completed", res.message
    # the teacher trains on every training sample, the students on all but class 1's (same batch size)
    y = load_data(cfg.data).y_train
    assert steps_per_epoch == {"teacher": -(-len(y) // 64), "baseline": -(-int((y != 1).sum()) // 64),
                               "distilled": -(-int((y != 1).sum()) // 64)}
    assert steps_per_epoch["baseline"] < steps_per_epoch["teacher"]
    # the baseline never saw class 1, so it never predicts it; the teacher did
    assert res.metrics["baseline"]["per_class_accuracy"][1] == 0.0
    assert res.metrics["teacher"]["per_class_accuracy"][1] > 0.5


@pytest.mark.slow
def test_real_fashion_mnist_distillation_run(fashion_mnist_installed):
    cfg = RunConfig(data=DataConfig(name="fashion_mnist", train_subset=4000),
                    teacher=ModelConfig("cnn", {"width": 8, "hidden": 64}),
                    student=ModelConfig("mlp", {"hidden": [32]}),
                    loss=LossConfig(temperature=4.0, alpha=0.5),
                    optim=OptimConfig(epochs=2, batch_size=128), teacher_optim=OptimConfig(epochs=2))
    res = run_experiment(cfg)
    assert res.status == "completed", res.message
    # 10 classes: chance is 0.10; a few thousand real images get every model well past it
    for phase in ("teacher", "baseline", "distilled"):
        assert res.metrics[phase]["accuracy"] > 0.65, (phase, res.metrics[phase]["accuracy"])
    assert len(res.metrics["distilled"]["confusion"]) == 10
