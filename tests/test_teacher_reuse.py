"""A teacher is trained once: a run whose teacher matches a finished run's loads it (issue 13)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from kdcore import DataConfig, LossConfig, OptimConfig, RunConfig, replace, run_experiment
from kdcore.events import PhaseStart
from kdcore.train.experiment import find_trained_teacher, teacher_fingerprint
from kdcore.config import to_dict

CFG = RunConfig(data=DataConfig(n_samples=400, labelled=10, transfer_set=True, transfer_ratio=2),
                optim=OptimConfig(epochs=3, lr=1e-2, batch_size=4),
                teacher_optim=OptimConfig(epochs=3, lr=1e-2, batch_size=64))


def phases(events):
    return [e.phase for e in events if isinstance(e, PhaseStart)]


@pytest.mark.slow
def test_second_run_reuses_the_teacher_bit_identically(store):
    first = run_experiment(CFG, store=store)
    assert first.status == "completed" and first.teacher_from is None
    # only T changes: the teacher is the same, so it is loaded, not trained
    ev: list = []
    second = run_experiment(replace(CFG, loss=LossConfig(temperature=2.0)), store=store, callbacks=[ev.append])
    assert second.teacher_from == first.run_id and "teacher" not in phases(ev)
    assert f"run {first.run_id} trained the same one" in second.message
    # the same config again: every model bit-identical to the run that trained its teacher
    third = run_experiment(CFG, store=store)
    assert third.teacher_from in (first.run_id, second.run_id)
    for phase in ("teacher", "baseline", "distilled"):
        a, b = first.models[phase].state_dict(), third.models[phase].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), phase
    assert third.metrics["distilled"]["accuracy"] == first.metrics["distilled"]["accuracy"]


@pytest.mark.slow
def test_what_changes_the_teacher_and_what_does_not(store):
    base = to_dict(CFG)
    same = [replace(CFG, loss=LossConfig(temperature=9.0)), replace(CFG, optim=OptimConfig(epochs=7)),
            replace(CFG, data=dataclasses.replace(CFG.data, labelled=30, transfer_set=False)),
            replace(CFG, pseudo_arm=True)]
    for c in same:
        assert teacher_fingerprint(to_dict(c)) == teacher_fingerprint(base)
    other = [replace(CFG, seed=1), replace(CFG, teacher_optim=OptimConfig(epochs=4)),
             replace(CFG, data=dataclasses.replace(CFG.data, noise=0.3)),
             replace(CFG, data=dataclasses.replace(CFG.data, train_subset=100))]
    for c in other:
        assert teacher_fingerprint(to_dict(c)) != teacher_fingerprint(base)
    run_experiment(CFG, store=store)
    assert find_trained_teacher(store, replace(CFG, seed=1)) is None
    assert find_trained_teacher(store, replace(CFG, retrain_teacher=True)) is None


@pytest.mark.slow
def test_retrain_teacher_trains_it_again(store):
    run_experiment(CFG, store=store)
    ev: list = []
    again = run_experiment(replace(CFG, retrain_teacher=True), store=store, callbacks=[ev.append])
    assert again.teacher_from is None and phases(ev)[0] == "teacher"
