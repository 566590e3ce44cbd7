"""kdcore.metrics against hand-computed cases and a plain-Python reference.

Every test-set figure the dashboard and the CLI show (accuracy, macro precision/recall/F1, NLL,
ECE, per-class accuracy, confusion, agreement, KL to the teacher, compression) comes from these
functions. The rules pinned here: a class with no samples or no predictions counts 0 in the macro
means (sklearn's zero_division=0, averaged over all K classes); per_class_accuracy gives a class with
no samples NaN (no accuracy), classification_metrics' stored list 0; ECE bins are (b/n, (b+1)/n].
"""
import math
import random

import pytest
import torch

from kdcore.metrics import (classification_metrics, compression, expected_calibration_error, per_class_accuracy,
                            teacher_agreement)

LN2 = math.log(2)


def logits_of(probs) -> torch.Tensor:
    """Logits whose softmax is exactly ``probs`` (float64)."""
    return torch.tensor(probs, dtype=torch.float64).log()


# --- plain-Python references, written from the definitions ---------------------------------------

def ref_ece(probs: list[list[float]], labels: list[int], n_bins: int) -> float:
    """Guo et al. 2017: sum over bins (b/n, (b+1)/n] of (share of samples) * |accuracy - mean confidence|."""
    bins: dict[int, list[tuple[float, bool]]] = {}
    for p, y in zip(probs, labels):
        conf = max(p)
        pred = p.index(conf)
        b = next(b for b in range(n_bins) if b / n_bins < conf <= (b + 1) / n_bins)
        bins.setdefault(b, []).append((conf, pred == y))
    n = len(labels)
    return sum(len(v) / n * abs(sum(c for _, c in v) / len(v) - sum(f for f, _ in v) / len(v))
               for v in bins.values())


def ref_macro(labels: list[int], preds: list[int], k: int) -> dict:
    """Macro precision/recall/F1 over all k classes; 0 for a class with nothing to divide by."""
    prec, rec, f1 = [], [], []
    for c in range(k):
        tp = sum(1 for y, p in zip(labels, preds) if y == c and p == c)
        predicted = sum(1 for p in preds if p == c)
        actual = sum(1 for y in labels if y == c)
        pc = tp / predicted if predicted else 0.0
        rc = tp / actual if actual else 0.0
        prec.append(pc)
        rec.append(rc)
        f1.append(2 * pc * rc / (pc + rc) if pc + rc else 0.0)
    return {"precision": sum(prec) / k, "recall": sum(rec) / k, "f1": sum(f1) / k, "per_class": rec}


# --- expected calibration error ----------------------------------------------------------------

def test_ece_by_hand_five_bins():
    # confidences 0.95 (right), 0.85 (wrong), 0.65 (right), 0.55 (right)
    probs = torch.tensor([[0.95, 0.05], [0.85, 0.15], [0.35, 0.65], [0.55, 0.45]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 0])
    # (0.8, 1]: two samples, accuracy 0.5, confidence 0.9 -> 2/4 * 0.4
    # (0.6, 0.8]: 1/4 * |1 - 0.65|;  (0.4, 0.6]: 1/4 * |1 - 0.55|
    assert expected_calibration_error(probs, labels, n_bins=5) == pytest.approx(0.2 + 0.0875 + 0.1125)
    # with the default 15 bins every confidence has its own bin: the mean of |correct - confidence|
    assert expected_calibration_error(probs, labels) == pytest.approx((0.05 + 0.85 + 0.35 + 0.45) / 4)


def test_ece_bins_are_closed_on_the_right():
    # 0.4 and 0.5 share the bin (0.25, 0.5] of 4 bins: accuracy 1/2, confidence 0.45
    probs = torch.tensor([[0.5, 0.25, 0.25], [0.4, 0.3, 0.3]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    assert expected_calibration_error(probs, labels, n_bins=4) == pytest.approx(0.05)


def test_ece_is_zero_for_confident_correct_predictions_and_for_matched_confidence():
    probs = torch.eye(3, dtype=torch.float64)
    assert expected_calibration_error(probs, torch.tensor([0, 1, 2])) == 0.0
    # confidence 1 and always wrong: the worst calibration there is
    assert expected_calibration_error(probs, torch.tensor([1, 2, 0])) == pytest.approx(1.0)
    # 0.75 confident and right 3 times in 4: calibrated
    probs = torch.tensor([[0.75, 0.25]] * 4, dtype=torch.float64)
    assert expected_calibration_error(probs, torch.tensor([0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_matches_the_reference_on_random_predictions(seed):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(200, 5, generator=g, dtype=torch.float64) * 2, 1)
    labels = torch.randint(0, 5, (200,), generator=g)
    for n_bins in (1, 10, 15):
        # (the per-bin accuracy is a float32 mean: agreement to 1e-6, not to the last digit)
        assert expected_calibration_error(probs, labels, n_bins=n_bins) == pytest.approx(
            ref_ece(probs.tolist(), labels.tolist(), n_bins), abs=1e-6)


# --- classification_metrics ----------------------------------------------------------------------

# six samples, three classes; rows are probabilities, labels 0 0 1 1 2 2, predictions 0 1 1 1 0 2
HALF = [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.5, 0.25], [0.25, 0.5, 0.25],
        [0.5, 0.25, 0.25], [0.25, 0.25, 0.5]]
HALF_LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


def test_classification_metrics_by_hand():
    m = classification_metrics(logits_of(HALF), HALF_LABELS)
    assert m["confusion"] == [[1, 1, 0],
                              [0, 2, 0],
                              [1, 0, 1]]  # rows: true class, columns: predicted
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class: precision 1/2, 2/3, 1; recall 1/2, 1, 1/2; F1 1/2, 4/5, 2/3
    assert m["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert m["per_class_accuracy"] == pytest.approx([0.5, 1.0, 0.5])
    # the true class gets 1/2 four times and 1/4 twice: -(4 ln 1/2 + 2 ln 1/4) / 6
    assert m["nll"] == pytest.approx(8 * LN2 / 6)
    # every confidence is 0.5 (one bin) and 4 of 6 are right
    assert m["ece"] == pytest.approx(4 / 6 - 0.5)


def test_macro_f1_is_not_accuracy():
    # 9 of class 0 all right, 1 of class 1 missed: accuracy 0.9, but class 1's F1 is 0
    labels = torch.tensor([0] * 9 + [1])
    logits = torch.tensor([[2.0, 0.0]] * 10)
    m = classification_metrics(logits, labels)
    assert m["accuracy"] == pytest.approx(0.9)
    assert m["f1"] == pytest.approx((2 * 0.9 * 1.0 / 1.9 + 0.0) / 2)
    assert m["per_class_accuracy"] == [1.0, 0.0]


def test_a_class_with_no_samples_counts_zero_in_the_macro_means():
    # K = 3, class 2 never occurs and is never predicted; classes 0 and 1 are perfect
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [3.0, 0.0, 0.0]])
    m = classification_metrics(logits, torch.tensor([0, 1, 0]))
    assert m["accuracy"] == 1.0
    assert m["per_class_accuracy"] == [1.0, 1.0, 0.0]
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["confusion"][2] == [0, 0, 0] and [r[2] for r in m["confusion"]] == [0, 0, 0]


def test_a_predicted_class_with_no_samples_has_zero_precision():
    # class 1 is predicted once but never occurs: its precision, recall and F1 are all 0
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0]])
    m = classification_metrics(logits, torch.tensor([0, 0, 0]))
    assert m["confusion"] == [[2, 1], [0, 0]]
    assert m["precision"] == pytest.approx((1.0 + 0.0) / 2)
    assert m["recall"] == pytest.approx((2 / 3 + 0.0) / 2)
    assert m["f1"] == pytest.approx((2 * 1.0 * (2 / 3) / (1 + 2 / 3)) / 2)
    assert m["per_class_accuracy"] == pytest.approx([2 / 3, 0.0])


def test_a_single_class_problem():
    # one output: every prediction is class 0 with probability 1
    m = classification_metrics(torch.randn(5, 1, dtype=torch.float64), torch.zeros(5, dtype=torch.long))
    assert m["confusion"] == [[5]]
    assert m["accuracy"] == m["precision"] == m["recall"] == m["f1"] == 1.0
    assert m["per_class_accuracy"] == [1.0]
    assert m["nll"] == pytest.approx(0.0, abs=1e-12) and m["ece"] == pytest.approx(0.0, abs=1e-12)


def test_perfect_predictions():
    labels = torch.tensor([0, 1, 2, 3, 2, 1])
    m = classification_metrics(torch.nn.functional.one_hot(labels, 4).double() * 50, labels)
    assert m["accuracy"] == m["precision"] == m["recall"] == m["f1"] == 1.0
    assert m["per_class_accuracy"] == [1.0] * 4
    assert m["confusion"] == [[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]
    assert m["nll"] == pytest.approx(0.0, abs=1e-12)  # log(1 + 3 e^-50)
    assert m["ece"] == pytest.approx(0.0, abs=1e-12)


def test_nll_is_the_mean_cross_entropy_of_the_true_class():
    probs = [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]
    m = classification_metrics(logits_of(probs), torch.tensor([0, 2, 1]))
    assert m["nll"] == pytest.approx(-(math.log(0.7) + math.log(0.3) + math.log(0.2)) / 3)
    # float32 logits give the same figure (the metric works in float64)
    m32 = classification_metrics(logits_of(probs).float(), torch.tensor([0, 2, 1]))
    assert m32["nll"] == pytest.approx(m["nll"], rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_the_reference_on_random_predictions(seed):
    rng = random.Random(seed)
    k = 4
    labels = [rng.randrange(k) for _ in range(60)]
    # mostly right, sometimes a random class; class 3 is rare
    preds = [y if rng.random() < 0.6 else rng.randrange(k - 1) for y in labels]
    logits = torch.nn.functional.one_hot(torch.tensor(preds), k).double() * 3
    m = classification_metrics(logits, torch.tensor(labels))
    want = ref_macro(labels, preds, k)
    assert m["precision"] == pytest.approx(want["precision"])
    assert m["recall"] == pytest.approx(want["recall"])
    assert m["f1"] == pytest.approx(want["f1"])
    assert m["per_class_accuracy"] == pytest.approx(want["per_class"])
    assert m["accuracy"] == pytest.approx(sum(y == p for y, p in zip(labels, preds)) / len(labels))
    assert sum(map(sum, m["confusion"])) == len(labels)
    assert [sum(r) for r in m["confusion"]] == [labels.count(c) for c in range(k)]
    assert [sum(r[c] for r in m["confusion"]) for c in range(k)] == [preds.count(c) for c in range(k)]


# --- per-class accuracy ----------------------------------------------------------------------------

def test_per_class_accuracy_by_hand():
    assert per_class_accuracy(logits_of(HALF), HALF_LABELS) == pytest.approx([0.5, 1.0, 0.5])
    # the same list classification_metrics stores when every class has samples
    assert per_class_accuracy(logits_of(HALF), HALF_LABELS) == pytest.approx(
        classification_metrics(logits_of(HALF), HALF_LABELS)["per_class_accuracy"])


def test_per_class_accuracy_of_a_class_with_no_samples_is_nan():
    # the omitted-class page: class 2 has no test samples here, so it has no accuracy (not 0)
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]])
    acc = per_class_accuracy(logits, torch.tensor([0, 1, 0, 1]))
    assert acc[:2] == pytest.approx([0.5, 0.5]) and math.isnan(acc[2])
    # num_classes wider than the logits: the extra classes have no samples either
    two = torch.tensor([[3.0, 0.0], [0.0, 3.0], [0.0, 3.0], [0.0, 3.0]])
    acc = per_class_accuracy(two, torch.tensor([0, 1, 0, 1]), num_classes=4)
    assert acc[:2] == pytest.approx([0.5, 1.0]) and all(math.isnan(a) for a in acc[2:])
    # a class that is present but never predicted right is 0, not NaN
    assert per_class_accuracy(torch.tensor([[0.0, 3.0]] * 2), torch.tensor([0, 1])) == [0.0, 1.0]


# --- agreement with the teacher --------------------------------------------------------------------

def test_teacher_agreement_and_kl_by_hand():
    # teacher (1/2, 1/2) twice; student (1/4, 3/4) then (3/4, 1/4)
    teacher = logits_of([[0.5, 0.5], [0.5, 0.5]])
    student = logits_of([[0.25, 0.75], [0.75, 0.25]])
    out = teacher_agreement(student, teacher)
    # KL(teacher || student) per row: 1/2 ln(2) + 1/2 ln(2/3); the batch mean of two equal rows
    assert out["kl_teacher"] == pytest.approx(0.5 * LN2 + 0.5 * math.log(2 / 3))
    # the other direction, KL(student || teacher), is a different number: the order is pinned
    assert abs(out["kl_teacher"] - (0.25 * math.log(0.5) + 0.75 * math.log(1.5))) > 0.01
    # the teacher's tie goes to class 0 (argmax takes the first maximum): one of two agree
    assert out["agreement"] == 0.5


def test_teacher_agreement_counts_equal_top_classes():
    teacher = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [0.0, 2.0, 0.0]])
    student = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 9.0]])
    assert teacher_agreement(student, teacher)["agreement"] == 0.5
    same = teacher_agreement(teacher, teacher)
    assert same["agreement"] == 1.0 and same["kl_teacher"] == pytest.approx(0.0, abs=1e-12)
    # same argmax everywhere but a softer student: full agreement, KL above 0
    soft = teacher_agreement(teacher / 4, teacher)
    assert soft["agreement"] == 1.0 and soft["kl_teacher"] > 0.1


# --- compression ------------------------------------------------------------------------------

def test_compression_and_speedup():
    out = compression({"params": 1_000, "latency_ms": 0.5}, {"params": 417_000, "latency_ms": 2.0})
    assert out == {"compression": pytest.approx(417.0), "speedup": pytest.approx(4.0)}
    # a student bigger and slower than its teacher: ratios below 1, not clipped
    out = compression({"params": 200, "latency_ms": 4.0}, {"params": 100, "latency_ms": 1.0})
    assert out == {"compression": pytest.approx(0.5), "speedup": pytest.approx(0.25)}


def test_compression_of_an_empty_or_instant_student_is_finite():
    # a student with no parameters or a latency below the clock's resolution divides by a floor
    out = compression({"params": 0, "latency_ms": 0.0}, {"params": 100, "latency_ms": 1.0})
    assert out["compression"] == 100.0
    assert math.isfinite(out["speedup"]) and out["speedup"] == pytest.approx(1e9)
