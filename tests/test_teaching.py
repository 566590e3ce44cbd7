"""The teaching lab's computations against hand calculations, and its sweep and snapshot machinery."""
import math
import threading

import numpy as np
import pytest
import torch
import torch.nn as nn

from kdcore import ConfigError, EpochEnd, PhaseStart, RunConfig, RunEnd, run_experiment
from kdcore.lab import teaching as tg
from kdcore.metrics import per_class_accuracy
from kdapp.live import RunLimitReached
from kdapp.sweep_run import SweepRun
from kdcore.train.sweep import SweepPlan, preset_plan, run_sweep
from tests.helpers import SMALL

LN2, LN3 = math.log(2), math.log(3)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train fastest on one thread, and spinning OpenMP threads slow a busy machine
    down many times over (what the dashboard's workers do too, see kdapp.live.worker_threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- temperature ---------------------------------------------------------------------------

def test_entropy_and_effective_classes_by_hand():
    p = torch.tensor([0.5, 0.25, 0.25])
    # H = 1/2 ln 2 + 2 * 1/4 ln 4 = 3/2 ln 2; exp(H) = 2^1.5
    assert tg.entropy(p).item() == pytest.approx(1.5 * LN2)
    assert tg.effective_classes(p).item() == pytest.approx(2 ** 1.5)
    assert tg.effective_classes(torch.full((4,), 0.25)).item() == pytest.approx(4.0)
    one_hot = torch.tensor([0.0, 1.0, 0.0])
    assert tg.entropy(one_hot).item() == 0.0 and tg.effective_classes(one_hot).item() == 1.0


def test_temperature_profile_by_hand():
    # logits (ln 2, 0): T = 1 gives (2/3, 1/3); T = 1/2 doubles them: (4/5, 1/5)
    prof = tg.temperature_profile(torch.tensor([LN2, 0.0]), [0.5, 1.0, 1e6])
    h1 = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    h05 = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    assert prof["entropy"].tolist()[:2] == pytest.approx([h05, h1])
    assert prof["max_prob"].tolist()[:2] == pytest.approx([0.8, 2 / 3])
    assert prof["effective_classes"].iloc[1] == pytest.approx(math.exp(h1))
    assert prof["effective_classes"].iloc[2] == pytest.approx(2.0, abs=1e-9)  # T -> inf: uniform
    # a batch averages per-sample values
    batch = tg.temperature_profile(torch.tensor([[LN2, 0.0], [0.0, 0.0]]), [1.0])
    assert batch["entropy"].iloc[0] == pytest.approx((h1 + LN2) / 2)
    table = tg.temperature_table(torch.tensor([LN2, 0.0]), [1.0], ["a", "b"])
    assert table["p"].tolist() == pytest.approx([2 / 3, 1 / 3]) and table["class"].tolist() == ["a", "b"]


def test_parse_logits_accepts_numbers_and_explains_mistakes():
    assert tg.parse_logits("3, 1 0.2;-1") == [3.0, 1.0, 0.2, -1.0]
    for bad, words in (("3, x", "'x' is not a number"), ("5", "between 2 and 20"), ("1, nan", "finite"),
                       (",".join(["1"] * 21), "between 2 and 20")):
        with pytest.raises(ConfigError, match=words):
            tg.parse_logits(bad)


def test_kl_vs_temperature_by_hand():
    # teacher (ln 3, 0) -> p = (3/4, 1/4); student (0, 0) -> q = (1/2, 1/2)
    df = tg.kl_vs_temperature(torch.tensor([LN3, 0.0]), torch.tensor([0.0, 0.0]), [1.0, 2.0])
    kl1 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    p = math.sqrt(3) / (math.sqrt(3) + 1)  # softmax(ln3 / 2, 0)
    kl2 = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
    assert df["kl"].tolist() == pytest.approx([kl1, kl2])
    assert df["kl_t2"].tolist() == pytest.approx([kl1, 4 * kl2])


def test_soft_gradient_magnitude_by_hand():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    df = tg.soft_gradient_vs_temperature(s, t, [1.0, 2.0, 1000.0], labels=torch.tensor([0]))
    # dKL/dz_s = (softmax(s/T) - softmax(t/T)) / T; two opposite entries of size |1/2 - sigma(2/T)| / T
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    g1, g2 = (0.5 - sig(2.0)) * math.sqrt(2), (0.5 - sig(1.0)) / 2 * math.sqrt(2)
    assert df["without_t2"].tolist()[:2] == pytest.approx([abs(g1), abs(g2)])
    assert df["with_t2"].tolist()[:2] == pytest.approx([abs(g1), 4 * abs(g2)])
    # high T: T^2 keeps the gradient at (z_t - mean z_t)/K = (1, -1)/2, size 1/sqrt(2); without it, 1/T^2
    assert df["with_t2"].iloc[2] == pytest.approx(1 / math.sqrt(2), rel=1e-4)
    assert df["without_t2"].iloc[2] == pytest.approx(1 / math.sqrt(2) / 1000 ** 2, rel=1e-4)
    # hard-label CE at s = (0, 0), label 0: softmax - onehot = (-1/2, 1/2)
    assert df["ce"].iloc[0] == pytest.approx(1 / math.sqrt(2))
    # per-sample sizes: a batch of two copies reports the same, not half
    df2 = tg.soft_gradient_vs_temperature(s.repeat(2, 1), t.repeat(2, 1), [1.0])
    assert df2["without_t2"].iloc[0] == pytest.approx(abs(g1))


# -- omitted class -------------------------------------------------------------------------

# 4 samples, 3 classes, class 2 is the one whose bias moves
LOGITS = torch.tensor([[2.0, 0.0, 1.0], [3.0, 0.0, 0.0], [0.0, 2.0, 0.2], [1.0, 0.0, 0.0]])
LABELS = torch.tensor([2, 0, 1, 2])


def test_bias_sweep_by_hand():
    df = tg.bias_sweep(LOGITS, LABELS, 2, [0.0, 1.5, 2.5, 4.0]).set_index("delta")
    # +0: both class-2 samples wrong. +1.5: all right. +2.5: sample 2 flips to class 2. +4: sample 1 too.
    assert df["accuracy"].tolist() == [0.5, 1.0, 0.75, 0.5]
    assert df["class_accuracy"].tolist() == [0.0, 1.0, 1.0, 1.0]
    assert df["errors"].tolist() == [2, 0, 1, 2] and df["class_errors"].tolist() == [2, 0, 0, 0]
    assert df["false_positives"].tolist() == [0, 0, 1, 2]
    assert tg.best_bias(LOGITS, LABELS, 2, [0.0, 1.5, 2.5, 4.0]) == 1.5
    assert tg.best_bias(LOGITS, LABELS, 2, [2.0, 1.5]) == 1.5  # tie at 100 %: the smaller change
    before = LOGITS.clone()
    assert tg.shift_logit(LOGITS, 2, 1.0)[:, 2].tolist() == pytest.approx([2.0, 1.0, 1.2, 1.0])
    assert torch.equal(LOGITS, before)  # the input is not modified


def test_per_class_accuracy_and_omitted_summary_by_hand():
    assert per_class_accuracy(LOGITS, LABELS, 4)[:3] == [1.0, 1.0, 0.0]
    assert math.isnan(per_class_accuracy(LOGITS, LABELS, 4)[3])  # no samples of class 3
    s = tg.omitted_summary({"teacher": LOGITS, "baseline": LOGITS, "distilled": LOGITS}, LABELS, 2,
                           LOGITS, LABELS, deltas=[0.0, 1.5, 2.5])
    assert s["class_total"] == 2
    assert s["models"]["distilled"] == {"delta": 0.0, "accuracy": 0.5, "errors": 2, "class_accuracy": 0.0,
                                        "class_errors": 2, "false_positives": 0}
    assert s["test_best"]["delta"] == s["val_best"]["delta"] == 1.5 and s["test_best"]["errors"] == 0
    assert s["fixed_3_5"]["delta"] == 3.5 and s["fixed_3_5"]["errors"] == 2  # samples 1 and 2 flip


def test_omitted_class_config_is_the_paper_setup():
    cfg = tg.omitted_class_config("fashion_mnist", 3, train_subset=1000)
    assert cfg.data.omit_class == 3 and cfg.loss.alpha == 0.1 and cfg.loss.temperature == 8.0
    assert cfg.teacher.name == "cnn" and cfg.student.params == {"hidden": [512, 512]}


# -- dark knowledge ------------------------------------------------------------------------

def test_class_similarity_and_top_confusable_by_hand():
    # logits = log p, T = 1: two class-0 samples (0.8, 0.2, 0) and (0.6, 0.4, 0) -> row 0 = (0.7, 0.3, 0)
    p = torch.tensor([[0.8, 0.2, 1e-12], [0.6, 0.4, 1e-12], [0.1, 0.9, 1e-12], [0.05, 0.15, 0.8]],
                     dtype=torch.float64)
    sim = tg.class_similarity(torch.log(p), torch.tensor([0, 0, 1, 2]), 1.0, 3)
    assert sim[0].tolist() == pytest.approx([0.7, 0.3, 0.0], abs=1e-9)
    assert sim[2].tolist() == pytest.approx([0.05, 0.15, 0.8])
    top = tg.top_confusable(sim, ["a", "b", "c"], k=2)
    assert top["#1"].tolist() == ["b", "a", "b"]
    assert top["p #1"].tolist() == pytest.approx([0.3, 0.1, 0.15], abs=1e-9)
    assert top["#2"].tolist()[2] == "a"
    assert top["off-diagonal"].tolist() == pytest.approx([0.3, 0.1, 0.2], abs=1e-9)
    assert list(tg.top_confusable(sim, ["a", "b", "c"], k=9).columns).count("#2") == 1  # k capped at K-1


def test_disagreements_put_different_top_classes_first():
    t = torch.tensor([[3.0, 0.0], [0.0, 3.0], [1.0, 0.0], [2.0, 0.0]])
    s = torch.tensor([[3.0, 0.0], [0.0, -3.0], [0.0, 1.0], [-1.0, 0.0]])
    df = tg.disagreements(t, s, torch.tensor([0, 1, 0, 0]), n=3)
    # samples 1, 2, 3 differ; sample 1 (logit gap 6) has a larger KL than 3 (gap 3) and 2 (gap 2)
    assert df["index"].tolist() == [1, 3, 2] and df["differ"].all()
    assert df["teacher"].tolist() == [1, 0, 0] and df["student"].tolist() == [0, 1, 1]
    assert df["p_teacher"].iloc[0] == pytest.approx(1 / (1 + math.exp(-3)))
    assert len(tg.disagreements(t, t, torch.zeros(4, dtype=torch.long), n=2)) == 2  # none differ: by KL


# -- decision boundaries -------------------------------------------------------------------

def _sign_model() -> nn.Module:
    """Class 1 where x1 > 0, with logit gap 2 * x1 (confidence grows away from the line)."""
    m = nn.Linear(2, 2)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        m.bias.zero_()
    return m


def test_grid_and_surface():
    g = tg.plane_grid(torch.tensor([[-1.0, -2.0], [1.0, 2.0]]), n=5, margin=1.0)
    assert g.xs.tolist() == pytest.approx([-2, -1, 0, 1, 2]) and g.ys.tolist() == pytest.approx([-3, -1.5, 0, 1.5, 3])
    assert g.points.shape == (25, 2) and g.points[1].tolist() == pytest.approx([-1.0, -3.0])  # row-major in y
    pred, probs = tg.grid_surface(_sign_model(), g, T=1.0)
    assert pred.shape == (5, 5) and (pred[:, 3:] == 1).all() and (pred[:, :2] == 0).all()
    # at x1 = 1 the logits are (-1, 1): p = sigmoid(2); at T = 2, sigmoid(1)
    assert probs[0, 3, 1] == pytest.approx(1 / (1 + math.exp(-2)))
    assert tg.grid_surface(_sign_model(), g, T=2.0)[1][0, 3, 1] == pytest.approx(1 / (1 + math.exp(-1)))


def test_boundary_recorder_is_bounded_and_round_trips_through_the_store(store):
    g = tg.plane_grid(torch.tensor([[-1.0, -1.0], [1.0, 1.0]]), n=8)
    rec = tg.BoundaryRecorder(g, max_snapshots=40, store=store)
    wanted = [e for e in range(1, 101) if rec.wants(e, 100)]
    assert len(wanted) <= 40 and wanted[-1] == 100 and len(wanted) == 34  # every 3rd epoch
    assert [e for e in range(1, 41) if rec.wants(e, 40)] == list(range(1, 41))
    m = _sign_model()
    for e in range(1, 101):
        rec(EpochEnd("distilled", e, 100, 0.0, {}, 0.0, 0.0, 0.0, 0.0, model=m))
    rec(EpochEnd("teacher", 1, 1, 0.0, {}, 0.0, 0.0, 0.0, 0.0, model=m))  # not a recorded phase
    arrays = rec.to_arrays()
    assert arrays["distilled_pred"].shape == (34, 8, 8) and arrays["distilled_pred"].dtype == np.uint8
    assert "teacher_pred" not in arrays and "baseline_pred" not in arrays
    rid = store.create_run({"x": 1})
    rec(RunEnd("completed", "", {}, rid))
    assert store.artifacts(rid) == {"boundaries": store.artifact_path(rid, "boundaries").stat().st_size}
    b = tg.load_boundaries(store, rid)
    ep, pred, conf = b.at("distilled", 50)
    assert ep == 49 and (pred[:, -1] == 1).all() and (pred[:, 0] == 0).all()  # 49 = 100 - 17 * 3
    assert conf.max() <= 1.0 and conf[0, -1] == pytest.approx(1 / (1 + math.exp(-2 * 1.5)), abs=1 / 255)
    assert b.at("distilled", 0)[0] == 1  # before the first snapshot: the first one
    store.finish_run(rid, "completed", "", {})  # a run still training cannot be deleted
    store.delete(rid)
    assert tg.load_boundaries(store, rid) is None


def test_store_artifacts_refuse_odd_names(store):
    rid = store.create_run({})
    with pytest.raises(ValueError, match="lowercase"):
        store.save_artifact(rid, "../evil", {"a": np.zeros(1)})
    with pytest.raises(KeyError):
        store.load_artifact(rid, "missing")


def test_runs_on_2d_sets_record_boundaries_when_the_caller_passes_the_lab_recorders(store):
    res = run_experiment(SMALL, store=store, recorders=tg.LAB_RECORDERS)
    assert res.status == "completed", res.message
    assert tg.load_boundaries(store, run_experiment(SMALL, store=store).run_id) is None  # the engine alone records none
    b = tg.load_boundaries(store, res.run_id)
    assert set(b.epochs) == {"baseline", "distilled"} and b.epochs["distilled"].tolist() == [1, 2, 3]
    assert b.pred["distilled"].shape == (3, 80, 80)


# -- sweeps --------------------------------------------------------------------------------

def test_sweep_aggregation_by_hand():
    cells = [{"alpha": 0.5, "T": 1.0, "status": "completed", "run_id": 1, "teacher": 0.9, "baseline": 0.8,
              "distilled": 0.82},
             {"alpha": 0.5, "T": 4.0, "status": "completed", "run_id": 2, "teacher": 0.9, "baseline": 0.8,
              "distilled": 0.85},
             {"alpha": 0.1, "T": 2.0, "status": "completed", "run_id": 3, "teacher": 0.9, "baseline": 0.8,
              "distilled": 0.85},
             {"alpha": 0.1, "T": 4.0, "status": "diverged", "run_id": 4, "teacher": 0.9, "baseline": 0.8,
              "distilled": None}]
    f = tg.sweep_frame(cells)
    assert f["gain"].tolist()[:3] == pytest.approx([0.02, 0.05, 0.05]) and math.isnan(f["gain"].iloc[3])
    grid = tg.sweep_grid(f, "gain", alphas=[0.1, 0.5, 0.9], temps=[1.0, 2.0, 4.0])
    assert grid.index.tolist() == [0.1, 0.5, 0.9] and grid.columns.tolist() == [1.0, 2.0, 4.0]
    assert grid.loc[0.5, 4.0] == pytest.approx(0.05) and grid.loc[0.1, 2.0] == pytest.approx(0.05)
    assert grid.isna().sum().sum() == 6  # 9 cells, 3 with a value (the diverged one has none)
    best = tg.best_cell(f)
    assert (best["alpha"], best["T"]) == (0.1, 2.0)  # tie at 0.85: the lower T
    assert tg.best_cell(tg.sweep_frame([])) is None
    twice = tg.sweep_frame(cells[:1] + [{**cells[0], "distilled": 0.84}])
    assert tg.sweep_grid(twice, "distilled").loc[0.5, 1.0] == pytest.approx(0.83)  # a repeated cell: mean


def test_sweep_plan_validates_every_cell():
    with pytest.raises(ConfigError, match="at least one"):
        SweepPlan(SMALL, (), (1.0,))
    with pytest.raises(ConfigError, match="repeats"):
        SweepPlan(SMALL, (0.5, 0.5), (1.0,))
    with pytest.raises(ConfigError, match="loss.alpha"):
        SweepPlan(SMALL, (0.5, 1.5), (1.0,))
    with pytest.raises(ConfigError, match="cells"):
        SweepPlan(SMALL, tuple(i / 10 for i in range(9)), tuple(range(1, 9)))
    plan = SweepPlan(SMALL, (0.0, 0.5), (1, 4))
    assert plan.cells == [(0.0, 1.0), (0.0, 4.0), (0.5, 1.0), (0.5, 4.0)]
    assert plan.config(0.5, 4.0).loss.alpha == 0.5 and plan.config(0.5, 4.0).name == "sweep α=0.5 T=4"
    p = preset_plan()
    assert len(p.cells) == 12 and p.base.data.name == "fashion_mnist" and p.base.data.train_subset == 10000


def test_sweep_trains_teacher_and_baseline_once_and_files_every_cell(store):
    events, cells = [], []
    plan = SweepPlan(SMALL, (0.0, 0.5), (1.0, 4.0))
    res = run_sweep(plan, store=store, callbacks=[events.append], on_cell=cells.append)
    assert res.status == "completed" and len(res.cells) == 4 == len(cells)
    starts = [e.phase for e in events if isinstance(e, PhaseStart)]
    assert starts.count("teacher") == 1 and starts.count("baseline") == 1 and starts.count("distilled") == 4
    assert len({c["teacher"] for c in cells}) == 1 and len({c["baseline"] for c in cells}) == 1
    runs = store.list(group=res.group)
    assert len(runs) == 4 and {r["kind"] for r in runs} == {"sweep"}
    stored = tg.sweep_frame(tg.sweep_cells_from_store(store, res.group))
    assert stored[["alpha", "T"]].values.tolist() == [[0.0, 1.0], [0.0, 4.0], [0.5, 1.0], [0.5, 4.0]]
    assert stored["distilled"].tolist() == pytest.approx([c["distilled"] for c in cells])


def test_sweep_run_in_the_background_shares_the_run_limit(store, monkeypatch):
    monkeypatch.setenv("KD_MAX_RUNS", "1")
    monkeypatch.setattr("kdapp.live.worker_threads", lambda: 1)  # 1 run would get both cores
    sw = SweepRun(SweepPlan(SMALL, (0.5,), (1.0, 4.0)), store=store).start()
    try:
        with pytest.raises(RunLimitReached, match="KD_MAX_RUNS=1"):
            SweepRun(SweepPlan(SMALL, (0.5,), (2.0,)), store=store).start()
    finally:
        assert sw.join(60)
    snap = sw.snapshot()
    assert snap.status == "completed" and snap.progress == 1.0 and len(snap.cells) == 2
    assert snap.current is None and snap.eta_s == 0.0
    # a stop request ends a sweep between steps, with what it finished kept
    stop = threading.Event()
    stop.set()
    res = run_sweep(SweepPlan(SMALL, (0.5,), (1.0, 4.0)), store=store, stop=stop)
    assert res.status == "stopped" and res.cells == []


def test_sweep_that_cannot_get_its_teacher_stops_with_the_reason(store):
    bad = RunConfig(data=SMALL.data, teacher=SMALL.teacher, student=SMALL.student, optim=SMALL.optim,
                    teacher_source="file:/nonexistent/teacher.pt")
    res = run_sweep(SweepPlan(bad, (0.5,), (1.0, 4.0, 8.0)), store=store)
    # one failed cell and the reason, not three identical failures
    assert res.status == "failed" and len(res.cells) == 1
    assert "α=0.5, T=1" in res.message and "does not exist" in res.message


def test_sweep_teacher_remembers_only_slices_of_the_data():
    from types import SimpleNamespace

    from kdcore.train.sweep import _remembering
    from kdcore.train.trainer import predict_logits

    calls = []

    class Counting(nn.Linear):
        def forward(self, x):
            calls.append(len(x))
            return super().forward(x)

    teacher = Counting(2, 3)
    x = torch.randn(2500, 2)
    data = SimpleNamespace(x_train=x, x_val=x[:10].clone(), x_test=x[:100].clone())
    twin = _remembering(teacher, data)
    first = predict_logits(twin, x)  # three slices of 1024, 1024, 452 rows
    assert torch.equal(first, predict_logits(teacher, x)) and calls == [1024, 1024, 452] * 2
    calls.clear()
    assert torch.equal(predict_logits(twin, x), first) and calls == []  # remembered
    predict_logits(twin, x.clone())  # same values, other memory: computed
    with torch.no_grad():
        twin(x[torch.tensor([0, 1])])  # a fancy-indexed batch is a copy: computed
    twin(x[:5])  # with autograd on: computed
    assert calls == [1024, 1024, 452, 2, 5]
    assert list(twin.state_dict()) == list(teacher.state_dict())  # saved and loaded as the teacher
