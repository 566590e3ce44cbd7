"""Methods beyond vanilla KD: every loss against a hand-written reference (values and gradients),
short runs that must clear an accuracy floor, multi-teacher runs, and config-time errors.

The references below are plain Python over lists of floats, written from the papers' formulas;
gradients are compared with central finite differences of those references.
"""
import json
import math

import pytest
import torch

from kdcore import (LOSSES, METHOD_INFO, ConfigError, DataConfig, EpochEnd, LossConfig, ModelConfig,
                    OptimConfig, RunConfig, StepEnd, from_json, replace, run_experiment, to_json)
from kdcore.cli import main
from kdcore.data import load_data
from kdcore.train.experiment import build_models
from kdcore.methods.adversarial import AdversarialKD
from kdcore.methods.ensemble import Ensemble
from kdcore.methods.feature import FitNets, at_loss, rkd_angle_loss, rkd_distance_loss, sp_loss
from kdcore.methods.logit import dkd_terms
from kdcore.train.trainer import Alone, Distiller, LogitDistiller, fit, make_distiller, predict_logits

# --- plain-Python references ------------------------------------------------------------------


def softmax(z, T=1.0):
    m = max(z)
    e = [math.exp((v - m) / T) for v in z]
    s = sum(e)
    return [v / s for v in e]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def ce(z, y):
    return -math.log(softmax(z)[y])


def ref_kd(S, Tl, T, t2=True):
    v = sum(kl(softmax(t, T), softmax(s, T)) for s, t in zip(S, Tl)) / len(S)
    return v * T * T if t2 else v


def ref_dkd(S, Tl, Y, T):
    """TCKD and NCKD of Zhao et al. (2022), eq. (1)-(4), batch means, times T^2."""
    tckd = nckd = 0.0
    for s, t, y in zip(S, Tl, Y):
        ps, pt = softmax(s, T), softmax(t, T)
        tckd += kl([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]])
        hs = [p / (1 - ps[y]) for j, p in enumerate(ps) if j != y]
        ht = [p / (1 - pt[y]) for j, p in enumerate(pt) if j != y]
        nckd += kl(ht, hs)
    return tckd / len(S) * T * T, nckd / len(S) * T * T


def zscore(z):
    m = sum(z) / len(z)
    sd = math.sqrt(sum((v - m) ** 2 for v in z) / (len(z) - 1))
    return [(v - m) / (sd + 1e-7) for v in z]


def normalize(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / max(n, 1e-12) for x in v]


def huber(a, b):
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def flat(x):  # nested list -> flat list
    return [v for row in x for v in (flat(row) if isinstance(row, list) else [row])]


def attention(f, p=2.0):
    """f: [C][H][W] -> mean_c |f|^p as [H][W]."""
    C, H, W = len(f), len(f[0]), len(f[0][0])
    return [[sum(abs(f[c][i][j]) ** p for c in range(C)) / C for j in range(W)] for i in range(H)]


def avg_pool(m, h, w):
    """Adaptive average pooling of an [H][W] map to [h][w] when H, W are multiples of h, w."""
    H, W = len(m), len(m[0])
    a, b = H // h, W // w
    return [[sum(m[i * a + u][j * b + v] for u in range(a) for v in range(b)) / (a * b) for j in range(w)]
            for i in range(h)]


def ref_at(FS, FT, p=2.0):
    total, n = 0.0, 0
    for fs, ft in zip(FS, FT):
        ms, mt = attention(fs, p), attention(ft, p)
        h, w = min(len(ms), len(mt)), min(len(ms[0]), len(mt[0]))
        qs, qt = normalize(flat(avg_pool(ms, h, w))), normalize(flat(avg_pool(mt, h, w)))
        total += sum((a - b) ** 2 for a, b in zip(qs, qt))
        n += len(qs)
    return total / n


def ref_sp(FS, FT):
    def gram(F_):
        rows = [flat(f) for f in F_]
        return [normalize([sum(a * b for a, b in zip(r, q)) for q in rows]) for r in rows]

    gs, gt = gram(FS), gram(FT)
    B = len(FS)
    return sum((gs[i][j] - gt[i][j]) ** 2 for i in range(B) for j in range(B)) / (B * B)


def dist(a, b):
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def ref_rkd_dist(ES, ET):
    B = len(ES)

    def normed(E):
        d = [[dist(E[i], E[j]) for j in range(B)] for i in range(B)]
        mu = sum(d[i][j] for i in range(B) for j in range(B) if i != j) / (B * (B - 1))
        return [[v / mu for v in row] for row in d]

    ds, dt = normed(ES), normed(ET)
    return sum(huber(ds[i][j], dt[i][j]) for i in range(B) for j in range(B)) / (B * B)


def ref_rkd_angle(ES, ET):
    B = len(ES)

    def cosines(E):
        out = []
        for i in range(B):
            for j in range(B):
                for k in range(B):
                    u = normalize([a - b for a, b in zip(E[j], E[i])])
                    v = normalize([a - b for a, b in zip(E[k], E[i])])
                    out.append(sum(a * b for a, b in zip(u, v)))
        return out

    return sum(huber(a, b) for a, b in zip(cosines(ES), cosines(ET))) / B ** 3


def numgrad(f, x, eps=1e-6):
    """Central differences of a scalar function of a nested list, same nesting as x."""
    if not isinstance(x, list):
        raise TypeError
    g = []
    for i, v in enumerate(x):
        if isinstance(v, list):
            g.append(numgrad(lambda sub: f(x[:i] + [sub] + x[i + 1:]), v, eps))
        else:
            g.append((f(x[:i] + [v + eps] + x[i + 1:]) - f(x[:i] + [v - eps] + x[i + 1:])) / (2 * eps))
    return g


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                          atol=tol, rtol=tol)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 5, generator=g, dtype=torch.float64) * 2
    t = torch.randn(4, 5, generator=g, dtype=torch.float64) * 3
    y = torch.tensor([0, 3, 4, 1])
    return s, t, y


# --- logit variants -----------------------------------------------------------------------------

@pytest.mark.parametrize("T", [1.0, 4.0])
def test_dkd_matches_reference_value_and_gradient(logits, T):
    s, t, y = logits
    S, Tl, Y = s.tolist(), t.tolist(), y.tolist()
    a = 0.3
    cfg = LossConfig("dkd", temperature=T, alpha=a, params={"alpha_dkd": 2.0, "beta_dkd": 5.0})
    s = s.clone().requires_grad_(True)
    terms = LOSSES.get("dkd")(s, t, y, cfg)
    assert set(terms) == {"ce", "tckd", "nckd"} == set(METHOD_INFO["dkd"].terms)

    def ref_parts(S_):
        tc, nc = ref_dkd(S_, Tl, Y, T)
        return a * sum(ce(z, c) for z, c in zip(S_, Y)) / len(Y), (1 - a) * 2.0 * tc, (1 - a) * 5.0 * nc

    for got, want in zip((terms["ce"], terms["tckd"], terms["nckd"]), ref_parts(S)):
        assert got.item() == pytest.approx(want, rel=1e-10)
    sum(terms.values()).backward()
    assert close(s.grad, numgrad(lambda S_: sum(ref_parts(S_)), S))


@pytest.mark.parametrize("epoch, warmup", [(1, 20), (7, 20), (3, 4), (20, 20), (30, 20)])
def test_dkd_warmup_scales_only_the_dkd_term_by_min_epoch_over_warmup(logits, epoch, warmup):
    # Zhao et al.'s code: loss_dkd = min(epoch / warmup, 1) * dkd_loss(...), epochs from 1; CE unscaled
    s, t, y = logits
    S, Tl, Y = s.tolist(), t.tolist(), y.tolist()
    f = min(epoch / warmup, 1.0)
    a, T = 0.3, 2.0
    knobs = {"alpha_dkd": 2.0, "beta_dkd": 5.0}
    warm = LossConfig("dkd", temperature=T, alpha=a, params={**knobs, "warmup": warmup})
    cold = LossConfig("dkd", temperature=T, alpha=a, params=knobs)

    def ref_parts(S_):
        tc, nc = ref_dkd(S_, Tl, Y, T)
        return a * sum(ce(z, c) for z, c in zip(S_, Y)) / len(Y), f * (1 - a) * 2.0 * tc, f * (1 - a) * 5.0 * nc

    sw, sc = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    got = LOSSES.get("dkd")(sw, t, y, warm, epoch=epoch)
    unwarmed = LOSSES.get("dkd")(sc, t, y, cold, epoch=epoch)
    for k, want in zip(("ce", "tckd", "nckd"), ref_parts(S)):
        assert got[k].item() == pytest.approx(want, rel=1e-10)
    assert torch.equal(got["ce"], unwarmed["ce"])
    for k in ("tckd", "nckd"):
        assert got[k].item() == pytest.approx(f * unwarmed[k].item(), rel=1e-12)
    # the gradient of the DKD part w.r.t. the student logits scales by the same factor
    (gw,) = torch.autograd.grad(got["tckd"] + got["nckd"], sw, retain_graph=True)
    (gc,) = torch.autograd.grad(unwarmed["tckd"] + unwarmed["nckd"], sc)
    assert close(gw, f * gc, tol=1e-12)
    sum(got.values()).backward()
    assert close(sw.grad, numgrad(lambda S_: sum(ref_parts(S_)), S))


def test_dkd_warmup_zero_is_the_unwarmed_loss_exactly(logits):
    s, t, y = logits
    before = LOSSES.get("dkd")(s, t, y, LossConfig("dkd", temperature=4.0, alpha=0.3))  # as the old call
    for epoch in (1, 5, None):
        off = LOSSES.get("dkd")(s, t, y, LossConfig("dkd", temperature=4.0, alpha=0.3, params={"warmup": 0}),
                                epoch=epoch)
        assert all(torch.equal(off[k], before[k]) for k in before)
    # outside a training run there is no epoch, so no warm-up either
    outside = LOSSES.get("dkd")(s, t, y, LossConfig("dkd", temperature=4.0, alpha=0.3, params={"warmup": 20}))
    assert all(torch.equal(outside[k], before[k]) for k in before)


def test_dkd_warmup_reaches_the_loss_through_fit_from_cached_teacher_logits():
    cfg = RunConfig(data=DataConfig(name="moons", n_samples=400, noise=0.15),
                    teacher=ModelConfig("mlp", {"hidden": [16]}), student=ModelConfig("mlp", {"hidden": [8]}))
    data = load_data(cfg.data)
    teacher, _ = build_models(cfg, data.in_shape, 2)
    cache = predict_logits(teacher, data.x_train)
    firsts = {}
    for warmup in (0, 4):
        torch.manual_seed(0)
        _, student = build_models(cfg, data.in_shape, 2)
        loss = LossConfig("dkd", temperature=2.0, alpha=0.5, params={"warmup": warmup})
        d = make_distiller(loss, student, teacher)
        assert type(d) is LogitDistiller and d.uses_teacher_logits_only  # the trainer may cache
        d.__dict__["teacher"] = None  # proves the cache is used: a live teacher call would fail
        steps = []
        r = fit(d, data, OptimConfig(epochs=2, lr=1e-2, batch_size=64), phase="d", seed=0, teacher_logits=cache,
                callbacks=[lambda e: steps.append(e) if isinstance(e, StepEnd) else None])
        assert r.status == "completed"
        firsts[warmup] = steps[0].terms  # same init, same batch: only the warm-up differs
    assert firsts[4]["ce"] == firsts[0]["ce"]
    for k in ("tckd", "nckd"):
        assert firsts[4][k] == pytest.approx(firsts[0][k] / 4, rel=1e-6)


def test_dkd_decomposes_vanilla_kd(logits):
    # Zhao et al. eq. (5): KD = TCKD + (1 - p_t(gt)) NCKD, sample by sample
    s, t, y = logits
    for i in range(len(y)):
        tckd, nckd = dkd_terms(s[i:i + 1], t[i:i + 1], y[i:i + 1], T=2.0)
        p_gt = torch.softmax(t[i] / 2.0, 0)[y[i]]
        kd = ref_kd(s[i:i + 1].tolist(), t[i:i + 1].tolist(), 2.0)
        assert (tckd + (1 - p_gt) * nckd).item() == pytest.approx(kd, rel=1e-10)


def test_dkd_stays_finite_for_a_certain_teacher():
    s = torch.zeros(2, 4, requires_grad=True)
    t = torch.tensor([[200.0, 0, 0, 0], [0, 0, 300.0, 0]])  # softmax underflows in float32
    tckd, nckd = dkd_terms(s, t, torch.tensor([0, 2]), T=1.0)
    (tckd + nckd).backward()
    assert torch.isfinite(tckd) and torch.isfinite(nckd) and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("T", [1.0, 3.0])
def test_logit_std_matches_reference_value_and_gradient(logits, T):
    s, t, y = logits
    S, Tl, Y = s.tolist(), t.tolist(), y.tolist()
    cfg = LossConfig("logit_std", temperature=T, alpha=0.25)
    s = s.clone().requires_grad_(True)
    terms = LOSSES.get("logit_std")(s, t, y, cfg)

    def ref(S_):
        c = 0.25 * sum(ce(z, k) for z, k in zip(S_, Y)) / len(Y)
        return c, 0.75 * ref_kd([zscore(z) for z in S_], [zscore(z) for z in Tl], T)

    assert terms["ce"].item() == pytest.approx(ref(S)[0], rel=1e-10)
    assert terms["kd"].item() == pytest.approx(ref(S)[1], rel=1e-8)
    sum(terms.values()).backward()
    assert close(s.grad, numgrad(lambda S_: sum(ref(S_)), S))
    # scale-free: a teacher with 10x larger logits gives the same soft term
    assert LOSSES.get("logit_std")(s, 10 * t, y, cfg)["kd"].item() == pytest.approx(terms["kd"].item(), rel=1e-6)


# --- feature terms --------------------------------------------------------------------------------

@pytest.fixture
def maps():
    g = torch.Generator().manual_seed(1)
    fs = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    ft = torch.randn(3, 3, 2, 2, generator=g, dtype=torch.float64)
    return fs, ft


def test_attention_transfer_matches_reference(maps):
    fs, ft = maps
    FS, FT = fs.tolist(), ft.tolist()
    fs = fs.clone().requires_grad_(True)
    loss = at_loss(fs, ft, 2.0)
    assert loss.item() == pytest.approx(ref_at(FS, FT), rel=1e-10)
    loss.backward()
    assert close(fs.grad, numgrad(lambda x: ref_at(x, FT), FS))


@pytest.mark.parametrize("shape_s, shape_t", [((4, 3), (4, 6)), ((4, 2, 2, 2), (4, 5))])
def test_similarity_preserving_matches_reference(shape_s, shape_t):
    g = torch.Generator().manual_seed(2)
    fs = torch.randn(*shape_s, generator=g, dtype=torch.float64)
    ft = torch.randn(*shape_t, generator=g, dtype=torch.float64)
    FS, FT = fs.tolist(), ft.tolist()
    fs.requires_grad_(True)
    loss = sp_loss(fs, ft)
    assert loss.item() == pytest.approx(ref_sp(FS, FT), rel=1e-10)
    loss.backward()
    assert close(fs.grad, numgrad(lambda x: ref_sp(x, FT), FS))


def test_relational_kd_matches_reference():
    g = torch.Generator().manual_seed(3)
    es = torch.randn(4, 3, generator=g, dtype=torch.float64)
    et = torch.randn(4, 5, generator=g, dtype=torch.float64) * 4
    ES, ET = es.tolist(), et.tolist()
    es.requires_grad_(True)
    d, a = rkd_distance_loss(es, et), rkd_angle_loss(es, et)
    assert d.item() == pytest.approx(ref_rkd_dist(ES, ET), rel=1e-9)
    assert a.item() == pytest.approx(ref_rkd_angle(ES, ET), rel=1e-9)
    (25 * d + 50 * a).backward()
    want = numgrad(lambda x: 25 * ref_rkd_dist(x, ET) + 50 * ref_rkd_angle(x, ET), ES)
    assert close(es.grad, want, tol=1e-5)
    # the relations do not change when the whole embedding is scaled
    assert rkd_distance_loss(3 * es, et).item() == pytest.approx(d.item(), rel=1e-9)
    assert rkd_distance_loss(es[:1], et[:1]).item() == 0.0  # one sample: no pairs, no NaN


class _Feat(torch.nn.Module):
    """A tiny model whose tapped 'features' submodule is the given module."""

    def __init__(self, features, width):
        super().__init__()
        self.features = features
        self.head = torch.nn.Linear(width, 3)
        self.tap = "features"

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def test_fitnets_regressor_and_pooling_match_reference(maps):
    fs, ft = maps  # student map [3, 2, 4, 4], teacher map [3, 3, 2, 2]
    # the shapes the distiller sizes its regressor from: student [B, 2, 4, 4], teacher [B, 3, 2, 2]
    s_model = _Feat(torch.nn.Identity(), 2 * 4 * 4)
    t_model = _Feat(torch.nn.Conv2d(2, 3, 2, stride=2), 3 * 2 * 2)
    d = FitNets(s_model, t_model, LossConfig("fitnets"), in_shape=(2, 4, 4)).double()
    assert isinstance(d.regressor, torch.nn.Conv2d) and d.regressor.weight.shape == (3, 2, 1, 1)
    W = d.regressor.weight.detach()[:, :, 0, 0].tolist()
    b = d.regressor.bias.detach().tolist()
    FS, FT = fs.tolist(), ft.tolist()

    def ref(FS_):
        total, n = 0.0, 0
        for f, t in zip(FS_, FT):
            for o in range(3):  # 1x1 conv = the same matrix at every pixel, then 2x2 average pooling
                r = [[b[o] + sum(W[o][c] * f[c][i][j] for c in range(2)) for j in range(4)] for i in range(4)]
                pooled = avg_pool(r, 2, 2)
                total += sum((pooled[i][j] - t[o][i][j]) ** 2 for i in range(2) for j in range(2))
                n += 4
        return total / n

    fs = fs.clone().requires_grad_(True)
    hint = d.feature_terms(fs, ft)["hint"]
    assert hint.item() == pytest.approx(ref(FS), rel=1e-10)
    hint.backward()
    assert close(fs.grad, numgrad(ref, FS))
    assert d.regressor.weight.grad is not None  # the regressor learns too


# --- adversarial ----------------------------------------------------------------------------------

def test_adversarial_terms_match_reference_and_each_player_gets_only_its_gradient(logits):
    s, t, y = logits
    cfg = LossConfig("adversarial", temperature=2.0, alpha=0.5, params={"gamma": 0.7, "hidden": 3})
    student, teacher = torch.nn.Linear(1, 5), torch.nn.Linear(1, 5)
    d = AdversarialKD(student, teacher, cfg, in_shape=(1,)).double()
    lin = [m for m in d.disc if isinstance(m, torch.nn.Linear)]
    theta = [[m.weight.tolist(), m.bias.tolist()] for m in lin]
    S, Tl, Y = s.tolist(), t.tolist(), y.tolist()

    def D(th, p):  # the discriminator written out: two LeakyReLU(0.2) layers and a linear output
        h = p
        for li, (Wm, bv) in enumerate(th):
            h = [bv[o] + sum(Wm[o][i] * h[i] for i in range(len(h))) for o in range(len(bv))]
            if li < 2:
                h = [v if v > 0 else 0.2 * v for v in h]
        return h[0]

    def bce(z, label):  # -log sigmoid(z) or -log(1 - sigmoid(z))
        return math.log1p(math.exp(-z)) if label else math.log1p(math.exp(z))

    def student_loss(S_, th=theta):  # what the student minimises, D fixed
        c = 0.5 * sum(ce(z, k) for z, k in zip(S_, Y)) / len(Y)
        kd = 0.5 * ref_kd(S_, Tl, 2.0)
        fool = sum(bce(D(th, softmax(z, 2.0)), 1) for z in S_) / len(S_)
        return c + kd + 0.7 * fool

    def disc_loss(th, S_=S):  # what D minimises, student fixed
        real = sum(bce(D(th, softmax(z, 2.0)), 1) for z in Tl) / len(Tl)
        fake = sum(bce(D(th, softmax(z, 2.0)), 0) for z in S_) / len(S_)
        return real + fake

    s = s.clone().requires_grad_(True)
    logits_in = s

    class Fixed(torch.nn.Module):  # a "student" whose output is the logits above
        def forward(self, x):
            return logits_in

    d.student = Fixed()
    _, terms = d(torch.zeros(4, 1, dtype=torch.float64), y, t)
    assert set(terms) == {"ce", "kd", "adv", "disc"}
    assert sum(terms[k] for k in ("ce", "kd", "adv")).item() == pytest.approx(student_loss(S), rel=1e-10)
    assert terms["disc"].item() == pytest.approx(disc_loss(theta), rel=1e-10)
    sum(terms.values()).backward()
    # the student's gradient is that of ce + kd + adv only (disc sees detached student outputs) ...
    assert close(s.grad, numgrad(student_loss, S))
    # ... and D's is that of its own loss only (adv uses frozen copies of D's weights)
    g_theta = numgrad(disc_loss, theta)
    for m, (gw, gb) in zip(lin, g_theta):
        assert close(m.weight.grad, gw) and close(m.bias.grad, gb)


# --- multi-teacher ensemble ---------------------------------------------------------------------

def test_ensemble_is_weighted_logit_mean_and_geometric_mean_of_soft_targets():
    a, b = torch.nn.Linear(3, 4).double(), torch.nn.Linear(3, 4).double()
    a.tap = b.tap = ""
    x = torch.randn(5, 3, dtype=torch.float64)
    ens = Ensemble([a, b], [3.0, 1.0])
    assert ens.weights == [0.75, 0.25]
    z = ens(x)
    assert torch.allclose(z, 0.75 * a(x) + 0.25 * b(x))
    T = 2.5
    pa, pb = torch.softmax(a(x) / T, 1), torch.softmax(b(x) / T, 1)
    geo = pa ** 0.75 * pb ** 0.25
    assert torch.allclose(torch.softmax(z / T, 1), geo / geo.sum(1, keepdim=True))
    assert Ensemble([a, b]).weights == [0.5, 0.5]


# --- short runs: every method completes and clears a floor ---------------------------------------

VEC = RunConfig(
    data=DataConfig(name="blobs", n_classes=4, n_samples=800, noise=0.2),
    teacher=ModelConfig("mlp", {"hidden": [64, 64]}),
    student=ModelConfig("mlp", {"hidden": [8]}),
    loss=LossConfig(temperature=2.0, alpha=0.5),
    optim=OptimConfig(epochs=6, lr=1e-2, batch_size=64),
    teacher_optim=OptimConfig(epochs=6, lr=1e-2, batch_size=64),
)


@pytest.fixture(scope="module")
def vec_phases():
    res = run_experiment(VEC)
    assert res.status == "completed", res.message
    return {"teacher": res.models["teacher"], "baseline": res.models["baseline"]}, load_data(VEC.data), res


@pytest.mark.parametrize("name", ["dkd", "logit_std", "fitnets", "sp", "rkd", "adversarial"])
@pytest.mark.slow
def test_vector_methods_train_and_clear_a_floor(vec_phases, name):
    reuse, data, _ = vec_phases
    seen = []
    res = run_experiment(replace(VEC, loss=replace(VEC.loss, name=name)), reuse=dict(reuse), data=data,
                         callbacks=[lambda e: seen.append(e) if isinstance(e, EpochEnd) else None])
    assert res.status == "completed", res.message
    assert res.metrics["distilled"]["accuracy"] > 0.75, res.metrics["distilled"]["accuracy"]  # chance: 0.25
    terms = [e.terms for e in seen if e.phase == "distilled"]
    assert len(terms) == VEC.optim.epochs and set(terms[0]) == set(METHOD_INFO[name].terms)
    assert all(math.isfinite(v) for v in terms[-1].values())
    if name == "adversarial":  # the discriminator is trained: its loss falls below chance (2 ln 2)
        assert min(t["disc"] for t in terms) < 2 * math.log(2)


@pytest.fixture(scope="module")
def conv_phases(tmp_path_factory):
    from tests.idx import write_fashion_idx

    root = write_fashion_idx(tmp_path_factory.mktemp("fmnist"), n_train=420, n_test=100)
    cfg = RunConfig(data=DataConfig(name="fashion_mnist", data_dir=str(root)),
                    teacher=ModelConfig("cnn", {"width": 4, "hidden": 32}),
                    student=ModelConfig("cnn", {"width": 4, "hidden": 16}),
                    loss=LossConfig(temperature=4.0, alpha=0.5),
                    optim=OptimConfig(epochs=3, lr=1e-2, batch_size=64),
                    teacher_optim=OptimConfig(epochs=3, lr=1e-2, batch_size=64))
    res = run_experiment(cfg)
    assert res.status == "completed", res.message
    return cfg, {"teacher": res.models["teacher"], "baseline": res.models["baseline"]}


@pytest.mark.parametrize("name", ["at", "fitnets", "sp", "rkd"])
@pytest.mark.slow
def test_feature_methods_on_conv_maps_train_and_clear_a_floor(conv_phases, name):
    cfg, reuse = conv_phases
    res = run_experiment(replace(cfg, loss=replace(cfg.loss, name=name)), reuse=dict(reuse))
    assert res.status == "completed", res.message
    assert res.metrics["distilled"]["accuracy"] > 0.6, res.metrics["distilled"]["accuracy"]  # chance: 0.1
    assert set(res.history["distilled"][0]["terms"]) == set(METHOD_INFO[name].terms)
    # the hooks lived for one forward pass each: nothing is left on the trained models
    for m in (res.models["distilled"], res.models["teacher"]):
        assert not any(mod._forward_hooks for mod in m.modules())


# --- schedules: fit() tells the distiller the epoch (DKD warm-up, FitNets' hint stage) -------------

def test_fit_tells_the_distiller_each_epoch_before_its_steps():
    class Recording(Alone):
        def set_epoch(self, epoch, epochs):
            super().set_epoch(epoch, epochs)
            self.calls.append((epoch, epochs))

    data = load_data(DataConfig(name="moons", n_samples=200))
    d = Recording(torch.nn.Linear(2, 2))
    d.calls = []
    seen = []
    r = fit(d, data, OptimConfig(epochs=3, batch_size=64), phase="d", seed=0,
            callbacks=[lambda e: seen.append((e.epoch, d.epoch)) if isinstance(e, StepEnd) else None])
    assert r.status == "completed"
    assert d.calls == [(1, 3), (2, 3), (3, 3)]
    assert seen and all(a == b for a, b in seen)  # every step ran under its own epoch
    assert {e for e, _ in seen} == {1, 2, 3}


def _params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


@pytest.mark.parametrize("hint_in_stage2", [True, False])
@pytest.mark.slow
def test_fitnets_hint_stage_trains_only_up_to_the_tap_then_the_full_loss(vec_phases, hint_in_stage2):
    reuse, data, _ = vec_phases
    _, student = build_models(VEC, data.in_shape, 4)  # fresh weights, not the trained baseline
    d = make_distiller(LossConfig("fitnets", temperature=2.0, alpha=0.5,
                                  params={"hint_epochs": 2, "hint_in_stage2": hint_in_stage2}),
                       student, reuse["teacher"], in_shape=data.in_shape)
    init = _params(student)
    snaps = []

    def snap(e):
        if isinstance(e, EpochEnd):
            snaps.append((_params(student), _params(d.regressor), e.terms))

    # SGD with momentum and weight decay: a head that got a zero gradient would still move
    optim = OptimConfig(epochs=3, lr=1e-2, batch_size=64, optimizer="sgd", weight_decay=1e-3)
    r = fit(d, data, optim, phase="d", seed=0, callbacks=[snap])
    assert r.status == "completed"
    reg0 = None
    for epoch, (p, reg, terms) in enumerate(snaps, 1):
        assert set(terms) == {"ce", "kd", "hint"}  # constant, for the charts
        if epoch <= 2:  # stage 1: the hint alone trains the student up to its tap and the regressor
            assert terms["ce"] == 0.0 and terms["kd"] == 0.0
            assert all(torch.equal(p[k], init[k]) for k in init if k.startswith("classifier"))
            assert all(not torch.equal(p[k], init[k]) for k in init if k.startswith("features"))
            assert reg0 is None or any(not torch.equal(reg[k], reg0[k]) for k in reg)
            reg0 = reg
        else:  # stage 2: the full loss trains every layer
            assert terms["ce"] > 0 and terms["kd"] > 0
            assert all(not torch.equal(p[k], init[k]) for k in init)
            # with the paper's stage 2 (KD alone) the hint is 0 and the regressor stops
            assert (terms["hint"] > 0) == hint_in_stage2
            assert all(torch.equal(reg[k], reg0[k]) for k in reg) == (not hint_in_stage2)
    assert snaps[1][2]["hint"] < snaps[0][2]["hint"]


@pytest.mark.slow
def test_fitnets_hint_stage_must_leave_epochs_for_the_full_loss(vec_phases):
    reuse, data, _ = vec_phases
    n = VEC.optim.epochs
    # refused when the config is built, before the teacher or the baseline trains
    with pytest.raises(ConfigError, match=rf"loss.params.hint_epochs = {n} .*\[0, {n - 1}\]"):
        replace(VEC, loss=LossConfig("fitnets", params={"hint_epochs": n}))
    _, student = build_models(VEC, data.in_shape, 4)
    d = make_distiller(LossConfig("fitnets", params={"hint_epochs": 2}), student, reuse["teacher"],
                       in_shape=data.in_shape)
    steps = []
    with pytest.raises(ConfigError, match=r"loss.params.hint_epochs = 2 .*\[0, 1\]"):
        fit(d, data, OptimConfig(epochs=2), phase="d", seed=0, callbacks=[steps.append])
    assert not any(isinstance(e, StepEnd) for e in steps)  # refused before the first step
    # the longest allowed hint stage still leaves one full epoch
    res = run_experiment(replace(VEC, loss=LossConfig("fitnets", params={"hint_epochs": n - 1})),
                         reuse=dict(reuse), data=data)
    assert res.status == "completed", res.message
    assert res.history["distilled"][-2]["terms"]["ce"] == 0.0 < res.history["distilled"][-1]["terms"]["ce"]


MOONS = RunConfig(data=DataConfig(name="moons", n_samples=600, noise=0.15),
                  teacher=ModelConfig("mlp", {"hidden": [32, 32]}), student=ModelConfig("mlp", {"hidden": [8]}),
                  optim=OptimConfig(epochs=4, lr=1e-2, batch_size=64),
                  teacher_optim=OptimConfig(epochs=4, lr=1e-2, batch_size=64))


@pytest.mark.parametrize("name, params", [("dkd", {"warmup": 3}), ("fitnets", {"hint_epochs": 2})])
@pytest.mark.slow
def test_schedules_run_end_to_end_on_moons(name, params):
    res = run_experiment(replace(MOONS, loss=LossConfig(name, temperature=2.0, alpha=0.5, params=params)))
    assert res.status == "completed", res.message
    hist = res.history["distilled"]
    assert len(hist) == 4 and all(set(h["terms"]) == set(METHOD_INFO[name].terms) for h in hist)
    assert all(math.isfinite(v) for h in hist for v in h["terms"].values())
    assert res.metrics["distilled"]["accuracy"] > 0.75, res.metrics["distilled"]["accuracy"]  # chance: 0.5
    if name == "fitnets":
        assert [h["terms"]["kd"] == 0.0 for h in hist] == [True, True, False, False]


@pytest.mark.distributed
def test_fitnets_hint_stage_under_two_gloo_ranks():
    # DDP wraps the distiller: the epoch must still reach it, and the head's unused stage-1
    # parameters must neither stall DDP nor move
    from kdcore.train.distributed import run_distributed

    cfg = replace(MOONS, data=DataConfig(name="moons", n_samples=800, noise=0.15),
                  loss=LossConfig("fitnets", temperature=2.0, alpha=0.5, params={"hint_epochs": 1}),
                  optim=OptimConfig(epochs=2, lr=1e-2, batch_size=64, weight_decay=1e-3),
                  teacher_optim=OptimConfig(epochs=1, lr=1e-2, batch_size=64))
    d = run_distributed(cfg, 2, timeout_s=120)
    assert d.result.status == "completed", d.result.message
    hist = d.result.history["distilled"]
    assert hist[0]["terms"]["ce"] == 0.0 == hist[0]["terms"]["kd"] and hist[1]["terms"]["ce"] > 0
    one = run_experiment(cfg)
    for k, v in one.models["distilled"].state_dict().items():
        assert torch.equal(d.rank_weights[0]["distilled"][k], d.rank_weights[1]["distilled"][k]), k
        assert torch.allclose(v, d.rank_weights[0]["distilled"][k], atol=1e-5), k


@pytest.mark.slow
def test_feature_methods_run_the_teacher_live_and_train_their_own_parts(vec_phases):
    reuse, data, _ = vec_phases
    cfg = replace(VEC, loss=replace(VEC.loss, name="fitnets"))
    d = make_distiller(cfg.loss, reuse["baseline"], reuse["teacher"], in_shape=data.in_shape)
    assert isinstance(d, Distiller) and not d.uses_teacher_logits_only
    names = {n for n, _ in d.named_parameters()}
    assert {"regressor.weight", "regressor.bias"} <= names  # trained by fit()'s optimiser
    assert not any(n.startswith("teacher") for n in names)  # the teacher is never trained
    with pytest.raises(ValueError, match="in_shape"):
        make_distiller(cfg.loss, reuse["baseline"], reuse["teacher"])


@pytest.mark.slow
def test_multi_teacher_run_reports_every_teacher_and_the_ensemble(vec_phases):
    reuse, data, single = vec_phases
    cfg = replace(VEC, extra_teachers=(ModelConfig("mlp", {"hidden": [32]}),), teacher_weights=(2, 1))
    res = run_experiment(cfg, data=data)
    assert res.status == "completed", res.message
    assert list(res.metrics) == ["teacher", "teacher_2", "ensemble", "baseline", "distilled"]
    for phase in ("teacher", "teacher_2", "ensemble"):
        assert res.metrics[phase]["accuracy"] > 0.85
    assert len(res.history["teacher_2"]) == VEC.teacher_optim.epochs
    ens = res.models["ensemble"]
    x = data.x_test[:50]
    assert torch.allclose(ens(x), (2 * res.models["teacher"](x) + res.models["teacher_2"](x)) / 3, atol=1e-6)
    # agreement is measured against the ensemble the student learned from
    from kdcore.metrics import teacher_agreement

    want = teacher_agreement(predict_logits(res.models["distilled"], data.x_test), predict_logits(ens, data.x_test))
    assert res.metrics["distilled"]["agreement"] == pytest.approx(want["agreement"])
    # single-teacher phases are untouched: same teacher and baseline as the one-teacher run
    for phase in ("teacher", "baseline"):
        for a, b in zip(res.models[phase].state_dict().values(), single.models[phase].state_dict().values()):
            assert torch.equal(a, b)


@pytest.mark.slow
def test_extra_teacher_loaded_from_history_and_compare_rows(store):
    cfg = replace(VEC, optim=OptimConfig(epochs=2, lr=1e-2, batch_size=64),
                  teacher_optim=OptimConfig(epochs=2, lr=1e-2, batch_size=64))
    first = run_experiment(cfg, store=store)
    multi = replace(cfg, extra_teachers=(cfg.teacher,), extra_teacher_sources=(f"run:{first.run_id}",))
    res = run_experiment(multi, store=store)
    assert res.status == "completed", res.message
    assert "teacher_2" not in res.history  # loaded, not trained
    assert res.metrics["teacher_2"]["accuracy"] == first.metrics["teacher"]["accuracy"]
    assert store.load_weights(res.run_id, "teacher_2")  # every member is saved
    from kdcore import compare

    out = compare(replace(multi, extra_teacher_sources=()), seeds=[0])
    assert list(out.table["model"]) == ["teacher", "teacher_2", "ensemble", "baseline", "distilled"]


# --- config-time errors --------------------------------------------------------------------------

IMG = dict(data=DataConfig(name="fashion_mnist"), teacher=ModelConfig("cnn"))


def test_missing_tap_is_a_config_error_naming_the_tap_and_the_choices():
    with pytest.raises(ConfigError) as e:
        RunConfig(**IMG, student=ModelConfig("resnet8"), loss=LossConfig("fitnets", params={"student_tap": "layer9"}))
    msg = str(e.value)
    assert "student_tap" in msg and "layer9" in msg and "layer3" in msg and "resnet8" in msg
    with pytest.raises(ConfigError, match="teacher_tap.*features.9"):
        RunConfig(**IMG, student=ModelConfig("cnn"), loss=LossConfig("at", params={"teacher_tap": "features.9"}))
    # an existing inner tap is fine
    RunConfig(**IMG, student=ModelConfig("resnet8"), loss=LossConfig("at", params={"student_tap": "layer2"}))


def test_feature_maps_a_method_cannot_match_are_config_errors():
    with pytest.raises(ConfigError) as e:
        RunConfig(**IMG, student=ModelConfig("mlp", {"hidden": [16]}), loss=LossConfig("at"))
    msg = str(e.value)
    assert "attention transfer" in msg and "[B, C, H, W]" in msg and "[B, 16]" in msg and "student" in msg
    with pytest.raises(ConfigError, match="teacher's tap 'features' outputs \\[B, 128\\]"):
        RunConfig(data=DataConfig(name="fashion_mnist"), teacher=ModelConfig("mlp", {"hidden": [128]}),
                  student=ModelConfig("cnn"), loss=LossConfig("at"))
    # the same students are fine for methods that take vectors
    for name in ("fitnets", "sp", "rkd"):
        RunConfig(**IMG, student=ModelConfig("mlp", {"hidden": [16]}), loss=LossConfig(name))


@pytest.mark.parametrize("name, params, words", [
    ("dkd", {"beta": 8}, ["unknown knob 'beta'", "alpha_dkd", "beta_dkd"]),
    ("dkd", {"beta_dkd": -1}, ["loss.params.beta_dkd = -1", "[0.0, 100.0]"]),
    ("dkd", {"beta_dkd": "8"}, ["loss.params.beta_dkd", "a number"]),
    ("adversarial", {"hidden": 2.5}, ["loss.params.hidden = 2.5", "an integer"]),
    ("at", {"p": True}, ["loss.params.p = True"]),
    ("fitnets", {"student_tap": 3}, ["loss.params.student_tap = 3", "a string"]),
    ("fitnets", {"hint_epochs": -1}, ["loss.params.hint_epochs = -1", "an integer in [0, 10000]"]),
    ("fitnets", {"hint_epochs": 1.5}, ["loss.params.hint_epochs = 1.5", "an integer"]),
    ("fitnets", {"hint_epochs": True}, ["loss.params.hint_epochs = True", "an integer"]),
    ("dkd", {"warmup": -2}, ["loss.params.warmup = -2", "an integer in [0, 10000]"]),
    ("dkd", {"warmup": 20.0}, ["loss.params.warmup = 20.0", "an integer", "20 on CIFAR-100"]),
    ("kd", {"beta": 1}, ["unknown knob 'beta'", "no knobs"]),
    ("sp", [1], ["loss.params", "JSON object"]),
])
def test_bad_method_knobs_are_named(name, params, words):
    with pytest.raises(ConfigError) as e:
        LossConfig(name, params=params)
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("kwargs, words", [
    (dict(teacher_weights=(1.0,)), ["teacher_weights", "2 numbers"]),
    (dict(teacher_weights=(1.0, -1.0)), ["teacher_weights", ">= 0"]),
    (dict(teacher_weights=(0, 0)), ["teacher_weights", "not all 0"]),
    (dict(extra_teacher_sources=("train", "train")), ["extra_teacher_sources", "1 source"]),
    (dict(extra_teacher_sources=("nowhere",)), ["extra_teacher_sources[0]", "run:<id>"]),
])
def test_multi_teacher_config_errors(kwargs, words):
    with pytest.raises(ConfigError) as e:
        replace(VEC, extra_teachers=(ModelConfig("mlp"),), **kwargs)
    for w in words:
        assert w in str(e.value)


def test_extra_teacher_must_fit_the_dataset_and_round_trips_through_json():
    with pytest.raises(ConfigError, match="teacher_2.*lenet5"):
        replace(VEC, extra_teachers=(ModelConfig("lenet5"),))
    cfg = replace(VEC, extra_teachers=[ModelConfig("mlp", {"hidden": [4]})], teacher_weights=[1, 2],
                  loss=LossConfig("rkd", params={"w_angle": 0.0}))
    assert isinstance(cfg.extra_teachers, tuple)
    again = from_json(to_json(cfg))
    assert again == cfg and again.extra_teachers[0].params == {"hidden": [4]}


def test_method_info_describes_every_loss_and_its_defaults_are_valid():
    assert set(LOSSES.names()) == set(METHOD_INFO)
    for name, info in METHOD_INFO.items():
        title, text, params = info.title, info.text, info.params
        assert title and len(text) > 40
        LossConfig(name, params={k: p.default for k, p in params.items()})
        for knob, (default, help_, *_r) in params.items():
            assert help_, (name, knob)
        entry = LOSSES.get(name)
        is_feature = isinstance(entry, type) and not entry.uses_teacher_logits_only
        assert is_feature == (info.kind == "feature"), name


@pytest.mark.slow
def test_cli_runs_a_method_with_its_knobs_and_explains_methods(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(to_json(replace(VEC, optim=OptimConfig(epochs=2, batch_size=64),
                                   teacher_optim=OptimConfig(epochs=2, batch_size=64))))
    runs = str(tmp_path / "runs")
    assert main(["--runs-dir", runs, "run", str(cfg), "--set", "loss.name=dkd",
                 "--set", 'loss.params={"beta_dkd": 4}',
                 "--set", 'extra_teachers=[{"name": "mlp", "params": {"hidden": [16]}}]']) == 0
    out = capsys.readouterr().out
    assert "tckd=" in out and "nckd=" in out and "teacher_2" in out and "ensemble" in out
    assert main(["--runs-dir", runs, "runs", "config", "1"]) == 0
    stored = json.loads(capsys.readouterr().out)
    assert stored["loss"]["params"] == {"beta_dkd": 4} and stored["extra_teachers"][0]["name"] == "mlp"
    assert main(["--runs-dir", runs, "run", str(cfg), "--set", "loss.name=dkd", "--set", 'loss.params={"beta": 8}']) == 2
    assert "unknown knob 'beta'" in capsys.readouterr().err
    assert main(["methods", "at"]) == 0
    out = capsys.readouterr().out
    assert "Attention transfer" in out and "loss.params.beta" in out and "loss.params.student_tap" in out
