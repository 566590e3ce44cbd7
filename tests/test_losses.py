"""Losses against hand-written references: values and gradients."""
import math

import pytest
import torch

from kdcore import LossConfig
from kdcore.losses import hinton_kd, kd_div, soft_cross_entropy
from kdcore.registry import LOSSES


def ref_softmax(z, T):
    e = [math.exp(v / T) for v in z]
    s = sum(e)
    return [v / s for v in e]


def ref_kd(student, teacher, T, t2=True):
    """KL(p_teacher || p_student) at temperature T, batch mean, written out term by term."""
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        p = ref_softmax(t_row, T)
        q = ref_softmax(s_row, T)
        total += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    kl = total / len(student)
    return kl * T * T if t2 else kl


def ref_kd_grad(student, teacher, T, t2=True):
    """d/ds of T^2 KL = T (q - p) / B per logit (Hinton 2015, eq. 2), written out."""
    B = len(student)
    scale = T if t2 else 1.0 / T
    return [[scale * (qi - pi) / B for pi, qi in zip(ref_softmax(t, T), ref_softmax(s, T))]
            for s, t in zip(student, teacher)]


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(5, 4, generator=g, dtype=torch.float64) * 3
    t = torch.randn(5, 4, generator=g, dtype=torch.float64) * 3
    y = torch.tensor([0, 1, 2, 3, 1])
    return s, t, y


@pytest.mark.parametrize("T", [0.5, 1.0, 2.0, 4.0, 20.0])
@pytest.mark.parametrize("t2", [True, False])
def test_kd_div_matches_reference_value_and_gradient(logits, T, t2):
    s, t, _ = logits
    s = s.clone().requires_grad_(True)
    t = t.clone().requires_grad_(True)
    loss = kd_div(s, t, T, t2)
    assert loss.item() == pytest.approx(ref_kd(s.tolist(), t.tolist(), T, t2), rel=1e-10)
    loss.backward()
    assert torch.allclose(s.grad, torch.tensor(ref_kd_grad(s.tolist(), t.tolist(), T, t2), dtype=torch.float64))
    assert t.grad is None or torch.count_nonzero(t.grad) == 0  # no gradient reaches the teacher


def test_kl_direction_is_teacher_to_student(logits):
    s, t, _ = logits
    # swapping the arguments gives KL(student || teacher), which differs for these logits
    assert kd_div(s, t, 2.0).item() != pytest.approx(kd_div(t, s, 2.0).item(), rel=1e-3)
    assert kd_div(s, t, 2.0).item() == pytest.approx(ref_kd(s.tolist(), t.tolist(), 2.0), rel=1e-10)


def test_kd_is_zero_when_student_equals_teacher(logits):
    _, t, _ = logits
    assert kd_div(t.clone(), t, 3.0).item() == pytest.approx(0.0, abs=1e-12)


def test_t2_keeps_gradient_scale_as_T_grows():
    g = torch.Generator().manual_seed(1)
    s0 = torch.randn(64, 10, generator=g, dtype=torch.float64)
    t0 = torch.randn(64, 10, generator=g, dtype=torch.float64) * 2

    def grad_norm(T, t2):
        s = s0.clone().requires_grad_(True)
        kd_div(s, t0, T, t2).backward()
        return s.grad.norm().item()

    with_t2 = [grad_norm(T, True) for T in (2, 5, 10, 20)]
    without = [grad_norm(T, False) for T in (2, 5, 10, 20)]
    # with T^2 the magnitude stays within one order of magnitude over T in [2, 20] ...
    assert max(with_t2) / min(with_t2) < 10
    # ... while without it, it shrinks roughly as 1/T^2 (factor 100 from T=2 to T=20)
    assert without[0] / without[-1] > 30


def test_soft_ce_has_the_same_gradient_as_kd(logits):
    s, t, _ = logits
    a = s.clone().requires_grad_(True)
    b = s.clone().requires_grad_(True)
    kd_div(a, t, 3.0).backward()
    soft_cross_entropy(b, t, 3.0).backward()
    assert torch.allclose(a.grad, b.grad)
    # and differs in value by T^2 times the teacher's entropy
    p = torch.softmax(t / 3.0, 1)
    h = -(p * p.log()).sum(1).mean() * 9
    assert soft_cross_entropy(s, t, 3.0).item() == pytest.approx(kd_div(s, t, 3.0).item() + h.item())


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_hinton_combination_alpha_weighs_hard_labels(logits, alpha):
    s, t, y = logits
    s = s.clone().requires_grad_(True)
    terms = hinton_kd(s, t, y, T=4.0, alpha=alpha)
    ce_ref = -sum(math.log(ref_softmax(row, 1.0)[c]) for row, c in zip(s.tolist(), y.tolist())) / len(y)
    assert terms["ce"].item() == pytest.approx(alpha * ce_ref, rel=1e-10)
    assert terms["kd"].item() == pytest.approx((1 - alpha) * ref_kd(s.tolist(), t.tolist(), 4.0), rel=1e-10)
    sum(terms.values()).backward()
    # gradient: alpha * (softmax(s) - onehot)/B + (1 - alpha) * T (q - p)/B
    q1 = torch.softmax(s.detach(), 1)
    onehot = torch.nn.functional.one_hot(y, 4).double()
    expect = alpha * (q1 - onehot) / 5 + (1 - alpha) * torch.tensor(ref_kd_grad(s.tolist(), t.tolist(), 4.0), dtype=torch.float64)
    assert torch.allclose(s.grad, expect)


def test_registered_losses_return_named_terms(logits):
    s, t, y = logits
    for name in ("kd", "soft_ce", "mse_logits"):
        terms = LOSSES.get(name)(s, t, y, LossConfig(name=name, temperature=2.0, alpha=0.25))
        assert set(terms) == {"ce", "kd"}
    mse = LOSSES.get("mse_logits")(s, t, y, LossConfig(name="mse_logits", alpha=0.0))["kd"]
    assert mse.item() == pytest.approx(((s - t) ** 2).mean().item())
