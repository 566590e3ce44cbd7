"""Few labels, the transfer set, the hard-label arm, and verdicts with their uncertainty (issue 9)."""
from __future__ import annotations

import dataclasses
import math
import random
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from kdcore import ConfigError, DataConfig, LossConfig, OptimConfig, RunConfig, compare, run_experiment
from kdcore.data import epoch_batches, labelled_indices, load_data, student_views
from kdcore.train.experiment import parse_seeds, verdict
from kdcore.losses import UNLABELLED, hard_ce, hinton_kd
from kdcore.stats import (bootstrap_diff_ci, mcnemar_exact, paired_comparison, seed_interval,
                          t_quantile_975, verdict_word)


def small_cfg(**data) -> RunConfig:
    """Two moons, few labels, a transfer set: seconds per run."""
    d = dict(n_samples=600, labelled=12, balanced=True, transfer_set=True, transfer_ratio=3)
    d.update(data)
    return RunConfig(data=DataConfig(**d), optim=OptimConfig(epochs=6, lr=1e-2, batch_size=4),
                     teacher_optim=OptimConfig(epochs=4, lr=1e-2, batch_size=64))


# ---------------------------------------------------------------------------------------------
# statistics against hand-computed cases


@pytest.mark.parametrize("b, c, p", [
    (0, 0, 1.0),
    (0, 5, 2 / 32),  # one tail: only the all-one-way outcome
    (1, 4, 2 * (1 + 5) / 32),  # P(X <= 1), X ~ Bin(5, 1/2) = 6/32, doubled
    (3, 3, 1.0),  # capped at 1
    (2, 10, 2 * (1 + 12 + 66) / 4096),
])
def test_mcnemar_exact_hand_cases(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)
    assert mcnemar_exact(c, b) == pytest.approx(p, rel=1e-12)  # two-sided: symmetric


def test_mcnemar_large_counts_do_not_underflow():
    p = mcnemar_exact(400, 600)  # 2 * P(Bin(1000, .5) <= 400): about 2.7e-10
    assert 1e-10 < p < 1e-9


def test_bootstrap_interval_matches_index_resampling():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(400, generator=g) < 0.80
    b = torch.rand(400, generator=g) < 0.86
    low, high = bootstrap_diff_ci(a, b, n_boot=4000)
    # the textbook bootstrap: resample sample indices with replacement
    idx = torch.randint(0, 400, (4000, 400), generator=g)
    diffs = (b[idx].double().mean(1) - a[idx].double().mean(1))
    ref_low, ref_high = torch.quantile(diffs, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    assert low == pytest.approx(ref_low, abs=0.006)
    assert high == pytest.approx(ref_high, abs=0.006)
    assert low < (b.double().mean() - a.double().mean()).item() < high


def test_bootstrap_degenerate_cases():
    same = torch.tensor([True, False, True, True])
    assert bootstrap_diff_ci(same, same) == (0.0, 0.0)
    a, b = torch.zeros(50, dtype=torch.bool), torch.ones(50, dtype=torch.bool)
    assert bootstrap_diff_ci(a, b) == (1.0, 1.0)  # B wins every sample: no uncertainty left
    with pytest.raises(ValueError):
        bootstrap_diff_ci(a, b[:10])


def test_paired_comparison_counts_and_words():
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    base = torch.tensor([0, 1, 1, 0, 1, 0, 1, 0, 0, 1])  # right on 4
    dist = labels.clone()  # right on all 10
    pc = paired_comparison(base, dist, labels)
    assert (pc.a_only, pc.b_only, pc.n) == (0, 6, 10)
    assert pc.gain == pytest.approx(0.6)
    assert pc.p_value == pytest.approx(2 / 64)
    assert pc.ci_low > 0 and verdict_word(pc.ci_low, pc.ci_high) == "helped"
    assert verdict_word(-0.03, -0.01) == "hurt"
    assert verdict_word(-0.01, 0.02) == "no clear difference"


def _t_cdf_central(q: float, df: int) -> float:
    """P(|T| <= q) by Simpson's rule on Student's t density (independent of the table)."""
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    f = lambda x: c * (1 + x * x / df) ** (-(df + 1) / 2)  # noqa: E731
    n = 20000
    h = q / n
    s = f(0) + f(q) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, n))
    return 2 * s * h / 3


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 29])
def test_t_quantiles_cover_95_percent(df):
    assert _t_cdf_central(t_quantile_975(df), df) == pytest.approx(0.95, abs=2e-4)


def test_seed_interval_hand_case():
    iv = seed_interval([0.01, 0.03, 0.02])
    assert iv["mean"] == pytest.approx(0.02) and iv["std"] == pytest.approx(0.01)
    half = 4.303 * 0.01 / math.sqrt(3)
    assert (iv["ci_low"], iv["ci_high"]) == pytest.approx((0.02 - half, 0.02 + half))
    one = seed_interval([0.05])
    assert one["std"] == 0 and math.isnan(one["ci_low"])


# ---------------------------------------------------------------------------------------------
# the CE term only sees labelled samples


def test_hard_ce_ignores_unlabelled_rows_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 4, generator=g, requires_grad=True)
    y = torch.tensor([2, UNLABELLED, 0, UNLABELLED, 3, 1])
    ce = hard_ce(s, y)
    lab = y >= 0
    ref = -(F.log_softmax(s[lab], 1).gather(1, y[lab, None])).mean()  # written out by hand
    assert ce.item() == pytest.approx(ref.item(), rel=1e-6)
    ce.backward()
    assert torch.all(s.grad[~lab] == 0)  # unlabelled rows get no gradient from the CE term
    # in the KD loss the soft term still reaches every row
    s2 = s.detach().clone().requires_grad_(True)
    terms = hinton_kd(s2, torch.randn(6, 4, generator=g), y, T=2.0, alpha=0.5)
    sum(terms.values()).backward()
    assert torch.all(s2.grad[~lab].abs().sum(1) > 0)


# ---------------------------------------------------------------------------------------------
# data: the labelled set, the transfer set, and what never changes


def test_labelled_indices_balanced_and_seeded():
    y = torch.arange(10).repeat_interleave(50)  # 10 classes x 50
    idx = labelled_indices(y, 34, balanced=True, seed=3)
    counts = torch.bincount(y[idx], minlength=10)
    assert counts.sum() == 34 and counts.min() == 3 and counts.max() == 4
    assert torch.equal(idx, labelled_indices(y, 34, balanced=True, seed=3))
    assert not torch.equal(idx, labelled_indices(y, 34, balanced=True, seed=4))
    assert len(set(idx.tolist())) == 34
    with pytest.raises(ConfigError, match="data.labelled"):
        labelled_indices(y, 501, balanced=False, seed=0)
    with pytest.raises(ConfigError, match="class"):
        labelled_indices(torch.tensor([0] * 9 + [1]), 6, balanced=True, seed=0)


def test_student_views_keep_val_and_test_and_hide_transfer_labels():
    cfg = DataConfig(n_samples=600, labelled=20, balanced=True, transfer_set=True, transfer_ratio=3)
    data = load_data(cfg)
    plain = load_data(DataConfig(n_samples=600))  # the same set without few labels
    assert torch.equal(data.x_val, plain.x_val) and torch.equal(data.x_test, plain.x_test)
    assert torch.equal(data.x_train, plain.x_train)  # the teacher's split does not shrink
    lab, tr = student_views(data, cfg)
    assert len(lab.x_train) == 20 and lab.n_unlabelled == 0
    assert torch.equal(lab.x_val, data.x_val) and torch.equal(lab.x_test, data.x_test)
    assert len(tr.x_train) == len(data.x_train) and tr.n_unlabelled == len(data.x_train) - 20
    assert torch.equal(tr.x_train[:20], lab.x_train) and torch.equal(tr.y_train[:20], lab.y_train)
    assert torch.all(tr.y_train[20:] == UNLABELLED)
    # the transfer part is exactly the rest of the training split
    rows = {tuple(r) for r in data.x_train.tolist()}
    assert {tuple(r) for r in tr.x_train.tolist()} == rows
    # the labelled draw depends on the data seed only
    again, _ = student_views(data, dataclasses.replace(cfg))
    assert torch.equal(again.x_train, lab.x_train)
    _, none = student_views(data, DataConfig(n_samples=600, labelled=20))
    assert none is None


def test_epoch_batches_mix_labelled_and_transfer():
    cfg = DataConfig(n_samples=600, labelled=10, transfer_set=True, transfer_ratio=3)
    _, tr = student_views(load_data(cfg), cfg)
    got = list(epoch_batches(tr, 4, torch.Generator().manual_seed(0)))
    assert [len(b) for b in got] == [16, 16, 8]  # 4 + 12, 4 + 12, 2 + 6
    lab = torch.cat([b[b < 10] for b in got])
    assert sorted(lab.tolist()) == list(range(10))  # one pass over the labelled samples
    unl = torch.cat([b[b >= 10] for b in got])
    assert len(unl) == 30 and len(set(unl.tolist())) == 30  # no repeats inside one epoch
    assert all(bool((b[:len(b) // 4] < 10).all()) for b in got)  # labelled first in each batch


def test_config_refuses_what_cannot_run():
    with pytest.raises(ConfigError, match="data.transfer_set"):
        DataConfig(transfer_set=True)  # no labelled subset: nothing to transfer
    with pytest.raises(ConfigError, match="data.balanced"):
        DataConfig(name="blobs", n_classes=5, labelled=3, balanced=True)
    with pytest.raises(ConfigError, match="pseudo_arm"):
        RunConfig(data=DataConfig(labelled=10), pseudo_arm=True)
    with pytest.raises(ConfigError, match="dkd"):
        RunConfig(data=DataConfig(labelled=10, transfer_set=True), loss=LossConfig(name="dkd"))
    with pytest.raises(ConfigError, match="data.transfer_ratio"):
        DataConfig(labelled=10, transfer_set=True, transfer_ratio=0)


# ---------------------------------------------------------------------------------------------
# the pipeline


@pytest.mark.slow
def test_hidden_labels_never_reach_the_students():
    """Scramble every label outside the labelled set: the students come out bit-identical.

    (A class-balanced draw looks at labels to fill its quotas, so this uses the uniform draw.)
    """
    cfg = small_cfg(balanced=False)
    cfg = dataclasses.replace(cfg, pseudo_arm=True)
    data = load_data(cfg.data)
    first = run_experiment(cfg, data=data)
    assert first.status == "completed", first.message
    idx = labelled_indices(data.y_train, cfg.data.labelled, balanced=False, seed=cfg.data.seed)
    hidden = torch.ones(len(data.y_train), dtype=torch.bool)
    hidden[idx] = False
    y_bad = data.y_train.clone()
    y_bad[hidden] = 1 - y_bad[hidden]  # every hidden label wrong
    bad = dataclasses.replace(data, y_train=y_bad)
    teacher = {"teacher": first.models["teacher"]}  # the teacher may see every label: keep it fixed
    a = run_experiment(cfg, data=data, reuse=teacher)
    b = run_experiment(cfg, data=bad, reuse=teacher)
    for phase in ("baseline", "distilled", "pseudo"):
        sa, sb = a.models[phase].state_dict(), b.models[phase].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), phase


@pytest.mark.slow
def test_baseline_sees_only_labelled_samples(monkeypatch):
    import kdcore.train.experiment as ex

    seen = {}
    real_fit = ex.fit

    def spy(distiller, data, optim_cfg, **kw):
        seen[kw["phase"]] = (len(data.x_train), data.n_unlabelled)
        return real_fit(distiller, data, optim_cfg, **kw)

    monkeypatch.setattr(ex, "fit", spy)
    cfg = dataclasses.replace(small_cfg(), pseudo_arm=True)
    res = run_experiment(cfg)
    assert res.status == "completed", res.message
    n_train = len(load_data(cfg.data).x_train)
    assert seen["teacher"] == (n_train, 0)
    assert seen["baseline"] == (12, 0)
    assert seen["distilled"] == (n_train, n_train - 12)
    assert seen["pseudo"] == (n_train, n_train - 12)
    for phase in ("distilled", "pseudo"):  # paired with the baseline on the test set
        m = res.metrics[phase]
        assert m["gain_ci_low"] <= m["gain"] <= m["gain_ci_high"]
        assert m["gain"] == pytest.approx(m["accuracy"] - res.metrics["baseline"]["accuracy"])
    assert "vs_pseudo" in res.metrics["distilled"]
    assert verdict(res.metrics).startswith("Distillation")
    assert "95 % CI" in res.message


def test_pseudo_labels_are_the_teachers_argmax(monkeypatch):
    import kdcore.train.experiment as ex

    labels = {}
    real_fit = ex.fit

    def spy(distiller, data, optim_cfg, **kw):
        labels[kw["phase"]] = (data.x_train.clone(), data.y_train.clone(), data.n_labelled)
        return real_fit(distiller, data, optim_cfg, **kw)

    monkeypatch.setattr(ex, "fit", spy)
    cfg = dataclasses.replace(small_cfg(), pseudo_arm=True)
    res = run_experiment(cfg)
    x, y, n_lab = labels["pseudo"]
    teacher = res.models["teacher"].eval()
    with torch.no_grad():
        want = teacher(x[n_lab:]).argmax(1)
    assert torch.equal(y[n_lab:], want)
    assert torch.equal(y[:n_lab], labels["baseline"][1])


def test_verdict_words_follow_the_interval():
    base = {"accuracy": 0.80}
    d = {"accuracy": 0.824, "gain": 0.024, "gain_ci_low": 0.016, "gain_ci_high": 0.032,
         "gain_p": 0.001, "gain_won": 30, "gain_lost": 6}
    assert verdict({"baseline": base, "distilled": d}).startswith(
        "Distillation helped: +2.40 points, 95 % CI +1.60 to +3.20")
    d2 = {**d, "gain": 0.001, "gain_ci_low": -0.004, "gain_ci_high": 0.006}
    assert "no clear difference" in verdict({"baseline": base, "distilled": d2})
    d3 = {**d, "gain": -0.02, "gain_ci_low": -0.03, "gain_ci_high": -0.01}
    assert verdict({"baseline": base, "distilled": d3}).startswith("Distillation hurt")


# ---------------------------------------------------------------------------------------------
# seeds


def test_parse_seeds():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("3,7") == [3, 7]
    assert parse_seeds(" 4 , 0 ") == [4, 0]
    for bad in ("0", "-1", "a", "3,3", "1.5", "", "101"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


@pytest.mark.slow
def test_compare_shares_one_teacher_and_reports_the_interval(store):
    cfg = small_cfg()
    out = compare(cfg, seeds=[0, 5], store=store)
    assert [r.status for r in out.runs] == ["completed", "completed"]
    t0, t1 = (store.load_weights(r.run_id, "teacher") for r in out.runs)
    assert all(torch.equal(t0[k], t1[k]) for k in t0)  # one teacher for both seeds
    assert store.get(out.runs[1].run_id)["config"]["teacher_source"] == f"run:{out.runs[0].run_id}"
    row = out.table.set_index("model").loc["teacher"]
    assert row["agreement_mean"] == 1.0 and row["agreement_std"] == 0.0  # not nan ± nan
    assert out.gains == [r.gain for r in out.runs]
    lo, hi = out.gain_ci
    assert lo <= out.gain_mean <= hi
    assert "Over 2 seeds" in out.summary() and "95 % CI" in out.summary()
    per_seed = compare(cfg, seeds=[0, 5], share_teacher=False)
    assert per_seed.runs[1].metrics["teacher"]["accuracy"] != pytest.approx(-1)  # trains and finishes
    w0 = per_seed.runs[0].models["teacher"].state_dict()
    w1 = per_seed.runs[1].models["teacher"].state_dict()
    assert not all(torch.equal(w0[k], w1[k]) for k in w0)


@pytest.mark.slow
def test_cli_compare_refuses_zero_seeds(tmp_path):
    r = subprocess.run([sys.executable, "-m", "kdcore", "--runs-dir", str(tmp_path), "compare",
                        "--seeds", "0", "--no-save"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "--seeds" in r.stderr and "Traceback" not in r.stderr
