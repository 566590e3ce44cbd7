"""Feature-based KD through forward hooks: FitNets hints, attention transfer, similarity-preserving
KD and relational KD.

Every model declares ``model.tap``, the submodule whose output is its penultimate feature
(``[B, D]`` for an MLP, ``[B, C, H, W]`` for a conv net). A :class:`FeatureDistiller` hooks that
submodule on the student and the teacher for the length of one forward pass (no hook outlives
it), adds its feature term to vanilla KD (``{"ce", "kd", <feature terms>}``), and owns any extra
trainable part (the FitNets regressor) so the trainer's optimiser trains it with the student.
The feature term's weight is its own knob; ``alpha`` still splits CE and KD, so ``alpha = 1``
gives CE + feature term only.

Which taps fit which method is checked on meta-device models when the RunConfig is built
(``check_models``), so a tap that does not exist or a shape the method cannot use fails before
anything trains; FitNets' ``hint_epochs`` is checked against the student's epochs there too
(``check_schedule``), and again when :func:`~kdcore.train.trainer.fit` starts (``set_epoch``).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..losses import KL_FORMULA, hinton_kd
from ..train.trainer import Distiller
from ..registry import LOSSES, MethodSpec, Param
from .spec import method_params

__all__ = ["FeatureDistiller", "capture", "hint_loss", "attention_map", "at_loss", "sp_loss",
           "rkd_distance_loss", "rkd_angle_loss", "FitNets", "AttentionTransfer",
           "SimilarityPreserving", "RelationalKD"]

_TAP_PARAMS = {
    "student_tap": Param("", "dotted submodule of the student to hook; empty = the model's "
                             "declared tap (its penultimate feature)"),
    "teacher_tap": Param("", "dotted submodule of the (first) teacher to hook; empty = its "
                             "declared tap"),
}


@contextlib.contextmanager
def capture(model: nn.Module, tap: str) -> Iterator[dict]:
    """Record the output of ``model.get_submodule(tap)`` during the forward passes in the block.

    The output is cloned, so a later in-place op (``ReLU(inplace=True)``) cannot change it.
    Yields a dict whose ``"f"`` is the last output seen.
    """
    out: dict = {}

    def hook(_module, _inputs, output):
        out["f"] = output.clone() if isinstance(output, torch.Tensor) else output

    handle = model.get_submodule(tap).register_forward_hook(hook)
    try:
        yield out
    finally:
        handle.remove()


def _pool_to(f: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return f if tuple(f.shape[-2:]) == hw else F.adaptive_avg_pool2d(f, hw)


def _embed(f: torch.Tensor) -> torch.Tensor:
    """[B, D] as is; [B, C, H, W] global-average-pooled to [B, C]."""
    return f.mean(dim=(2, 3)) if f.dim() == 4 else f


# --- the maths ----------------------------------------------------------------------------------

def hint_loss(student_regressed: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """FitNets (Romero et al. 2015) hint: mean over all elements of (r(f_s) - f_t)^2."""
    return F.mse_loss(student_regressed, teacher_feature.detach())


def attention_map(f: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Zagoruyko & Komodakis (2017) spatial attention: mean_c |f_c|^p, flattened, L2-normalised.

    Args:
        f: [B, C, H, W]. p: the power (2 in the paper).
    Returns:
        [B, H * W], each row of unit norm.
    """
    return F.normalize(f.abs().pow(p).mean(dim=1).flatten(1), dim=1)


def at_loss(fs: torch.Tensor, ft: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Attention transfer: mean over batch and positions of (Q_s - Q_t)^2 for unit-norm maps Q.

    Maps of different spatial size are average-pooled to the smaller one before normalising;
    channel counts may differ (the map averages over channels).
    """
    hw = (min(fs.shape[2], ft.shape[2]), min(fs.shape[3], ft.shape[3]))
    qs = attention_map(_pool_to(fs.abs().pow(p).mean(1, keepdim=True), hw), 1.0)
    qt = attention_map(_pool_to(ft.detach().abs().pow(p).mean(1, keepdim=True), hw), 1.0)
    return (qs - qt).pow(2).mean()


def sp_loss(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving KD (Tung & Mori 2019): ||norm_rows(G_s) - norm_rows(G_t)||_F^2 / B^2.

    G = F F^T over the flattened features of the batch, [B, B]; rows are L2-normalised. Any
    feature shapes work since only the batch-by-batch similarities are compared.
    """
    b = fs.shape[0]
    gs = F.normalize(fs.flatten(1) @ fs.flatten(1).t(), dim=1)
    ft = ft.detach().flatten(1)
    gt = F.normalize(ft @ ft.t(), dim=1)
    return (gs - gt).pow(2).sum() / (b * b)


def _pdist(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    sq = e.pow(2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(e), dtype=e.dtype, device=e.device))  # exact zeros on the diagonal


def rkd_distance_loss(es: torch.Tensor, et: torch.Tensor) -> torch.Tensor:
    """Park et al. (2019) distance-wise RKD: Huber(d_s / mu_s, d_t / mu_t), mean over all B^2 pairs.

    d are the pairwise Euclidean distances of the embeddings, mu their mean over pairs i != j
    (Park et al. average the non-zero distances; the two differ only for duplicate samples).
    """
    b = len(es)
    if b < 2:  # a one-sample batch has no pairs
        return es.sum() * 0.0
    with torch.no_grad():
        dt = _pdist(et)
        dt = dt / (dt.sum() / (b * (b - 1))).clamp_min(1e-12)
    ds = _pdist(es)
    ds = ds / (ds.sum() / (b * (b - 1))).clamp_min(1e-12)
    return F.smooth_l1_loss(ds, dt)


def _angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e[None, :, :] - e[:, None, :], dim=2)  # [i, j] = unit(e_j - e_i)
    return torch.bmm(diff, diff.transpose(1, 2))  # [i, j, k] = cos of the angle at e_i


def rkd_angle_loss(es: torch.Tensor, et: torch.Tensor) -> torch.Tensor:
    """Park et al. (2019) angle-wise RKD: Huber(cos angle_s(i,j,k), cos angle_t(i,j,k)), mean over B^3."""
    with torch.no_grad():
        at = _angles(et)
    return F.smooth_l1_loss(_angles(es), at)


# --- the distillers -----------------------------------------------------------------------------

def _tap_of(model: nn.Module, user_tap: str) -> str:
    # an ensemble of teachers hooks its first member; a user's tap is relative to that member
    return getattr(model, "tap_prefix", "") + user_tap if user_tap else model.tap


def _resolve(model: nn.Module, role: str, user_tap: str) -> str:
    tap = _tap_of(model, user_tap)
    try:
        model.get_submodule(tap)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n and n.count(".") < 2]
        shown = ", ".join(names[:25]) + (", ..." if len(names) > 25 else "")
        raise ConfigError(f"loss.params.{role}_tap = {user_tap or tap!r}: the {role} has no submodule "
                          f"{tap!r}; its submodules include: {shown}") from None
    return tap


def _fmt(shape) -> str:
    return "[" + ", ".join(["B", *map(str, shape[1:])]) + "]"


def _probe(model: nn.Module, tap: str, role: str, in_shape) -> tuple[int, ...]:
    """Shape of the tapped output for a batch of 2 (no gradients, eval mode, model's device)."""
    p = next(iter(model.parameters()), None)
    x = torch.zeros(2, *in_shape, device=p.device if p is not None else "cpu")
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), capture(model, tap) as got:
            model(x)
    finally:
        model.train(was)
    if "f" not in got:
        raise ConfigError(f"loss tap {tap!r} of the {role} never runs in its forward pass; "
                          "choose a submodule that does")
    if not isinstance(got["f"], torch.Tensor):
        raise ConfigError(f"loss tap {tap!r} of the {role} outputs {type(got['f']).__name__}, not "
                          "a tensor; choose a submodule that returns one tensor")
    shape = tuple(got["f"].shape)
    if len(shape) not in (2, 4):
        raise ConfigError(f"loss tap {tap!r} of the {role} outputs shape {_fmt(shape)}; feature "
                          "methods take [B, D] vectors or [B, C, H, W] maps")
    return shape


class FeatureDistiller(Distiller):
    """Vanilla KD plus a term on hooked features; subclasses define the term.

    Subclasses implement ``feature_terms(fs, ft) -> {name: unweighted tensor}`` and may override
    ``check_shapes`` (reject what they cannot match) and ``build`` (create trainable parts).
    """

    uses_teacher_logits_only = False  # needs the teacher's features, so the teacher runs live
    needs_in_shape = True  # make_distiller passes in_shape so parts can be sized at build time
    weights: dict[str, str] = {}  # feature term -> the knob that weighs it

    def __init__(self, student: nn.Module, teacher: nn.Module, loss_cfg, *, in_shape):
        super().__init__(student, teacher)
        self.loss_cfg = loss_cfg
        self.knobs = method_params(loss_cfg)
        self.s_tap, self.t_tap, s_shape, t_shape = self.taps_and_shapes(student, teacher, in_shape, loss_cfg)
        self.build(s_shape, t_shape)

    @classmethod
    def taps_and_shapes(cls, student, teacher, in_shape, loss_cfg):
        knobs = method_params(loss_cfg)
        s_tap = _resolve(student, "student", knobs["student_tap"])
        t_tap = _resolve(teacher, "teacher", knobs["teacher_tap"])
        s_shape, t_shape = _probe(student, s_tap, "student", in_shape), _probe(teacher, t_tap, "teacher", in_shape)
        cls.check_shapes(s_shape, t_shape, s_tap, t_tap)
        return s_tap, t_tap, s_shape, t_shape

    @classmethod
    def check_models(cls, *, student: nn.Module, teacher: nn.Module, in_shape, loss_cfg) -> None:
        """Config-time check on (meta-device) models: the taps exist and their shapes fit.

        Raises:
            ConfigError: naming the tap, the shapes and what the method needs.
        """
        cls.taps_and_shapes(student, teacher, in_shape, loss_cfg)

    @classmethod
    def check_shapes(cls, s_shape, t_shape, s_tap, t_tap) -> None:
        pass

    def build(self, s_shape, t_shape) -> None:
        pass

    def feature_terms(self, fs: torch.Tensor, ft: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x, y, teacher_logits=None):
        with torch.no_grad(), capture(self.teacher, self.t_tap) as tf:
            t_logits = self.teacher(x)
        with capture(self.student, self.s_tap) as sf:
            logits = self.student(x)
        terms = self.logit_terms(logits, t_logits, y)
        return logits, {**terms, **self.weighted_feature_terms(sf["f"], tf["f"])}

    def weighted_feature_terms(self, fs: torch.Tensor, ft: torch.Tensor) -> dict[str, torch.Tensor]:
        """The feature terms, each times its knob (``weights`` names which knob weighs which term)."""
        return {name: self.knobs[self.weights[name]] * value
                for name, value in self.feature_terms(fs, ft).items()}

    def logit_terms(self, logits: torch.Tensor, t_logits: torch.Tensor,
                    y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The vanilla-KD part ``{"ce", "kd"}`` that the feature term is added to."""
        c = self.loss_cfg
        return hinton_kd(logits, t_logits, y, T=c.temperature, alpha=c.alpha, t2=c.t2)


_FEATURE_NOTE = (" Added to vanilla KD (alpha * CE + (1 - alpha) * T^2 KL); the teacher runs live "
                 "on every batch because its features are needed.")


@LOSSES.register(MethodSpec(
    name="fitnets", title="FitNets hints (Romero et al. 2015)",
    text="The student's tapped feature is mapped by a learned regressor (a 1x1 convolution for "
         "feature maps, a linear layer for vectors) onto the teacher's tapped feature and pulled "
         "towards it with a mean squared error: beta * mean (r(f_s) - f_t)^2. Maps of different "
         "size are average-pooled to the smaller; a map facing a vector is first averaged over "
         "space. The regressor trains with the student and is thrown away afterwards. With "
         "hint_epochs = H > 0 the paper's two stages: epochs 1..H train only the hint (the student "
         "up to the tap, and the regressor; CE and KD are reported as 0 and the layers after the "
         "tap stay as initialised), then KD plus beta * hint trains every layer; with "
         "hint_in_stage2 = false stage 2 is KD alone, as in the paper. H = 0 trains the full loss "
         "from the start." + _FEATURE_NOTE,
    formula=KL_FORMULA, extra_formula=r"+ \beta\,\tfrac{1}{N}\lVert r(f_s) - f_t\rVert^2",
    params={"beta": Param(1.0, "weight of the hint term", 0.0, 1e6),
            "hint_epochs": Param(0, "stage 1: epochs that train only the hint, before the full loss; 0 = "
                                    "one stage; must be less than the student's epochs", 0, 10000),
            "hint_in_stage2": Param(True, "after a hint stage (hint_epochs > 0), keep the hint term in "
                                          "the loss; false = KD alone, as in the paper's stage 2"),
            **_TAP_PARAMS},
    kind="feature", terms=("ce", "kd", "hint")))
class FitNets(FeatureDistiller):
    weights = {"hint": "beta"}

    def __init__(self, student, teacher, loss_cfg, *, in_shape):
        super().__init__(student, teacher, loss_cfg, in_shape=in_shape)
        self.has_idle_parameters = self.knobs["hint_epochs"] > 0  # the head sits out stage 1

    @staticmethod
    def check_schedule(loss_cfg, epochs: int) -> None:
        """Raise ConfigError unless the hint stage leaves at least one epoch for the full loss."""
        h = method_params(loss_cfg)["hint_epochs"]
        if h > 0 and h >= epochs:
            raise ConfigError(
                f"loss.params.hint_epochs = {h} is not allowed with {epochs} student epochs "
                f"(optim.epochs): loss.params.hint_epochs must be an integer in [0, {epochs - 1}], "
                "so that the full loss trains for at least one epoch after the hint stage")

    def set_epoch(self, epoch, epochs):
        self.check_schedule(self.loss_cfg, epochs)  # fit() may be called without a RunConfig
        super().set_epoch(epoch, epochs)

    def in_hint_stage(self) -> bool:
        """True during stage 1 (epochs 1..hint_epochs of a fit()); False outside fit()."""
        return self.epoch is not None and self.epoch <= self.knobs["hint_epochs"]

    def logit_terms(self, logits, t_logits, y):
        if self.in_hint_stage():
            # Romero et al.'s stage 1 trains W_guided and W_r on the hint alone: with no CE or KD
            # in the graph the head gets no gradient (grad None), so the optimiser skips it, weight
            # decay and momentum included. Zeros keep the term names constant for the charts.
            zero = logits.new_zeros(())
            return {"ce": zero, "kd": zero}
        return super().logit_terms(logits, t_logits, y)

    def weighted_feature_terms(self, fs, ft):
        k = self.knobs
        stage2 = k["hint_epochs"] > 0 and self.epoch is not None and not self.in_hint_stage()
        if stage2 and not k["hint_in_stage2"]:
            # the paper's stage 2: KD alone. The hint is not computed; a constant zero keeps the
            # term for the charts and leaves the regressor without a gradient
            return {"hint": fs.new_zeros(())}
        return super().weighted_feature_terms(fs, ft)

    def build(self, s_shape, t_shape):
        if len(s_shape) == 4 and len(t_shape) == 4:
            self.regressor = nn.Conv2d(s_shape[1], t_shape[1], kernel_size=1)
        else:
            self.regressor = nn.Linear(s_shape[1], t_shape[1])

    def feature_terms(self, fs, ft):
        if fs.dim() == 4 and ft.dim() == 4:
            r = self.regressor(fs)
            hw = (min(r.shape[2], ft.shape[2]), min(r.shape[3], ft.shape[3]))
            r, ft = _pool_to(r, hw), _pool_to(ft, hw)
        else:
            r, ft = self.regressor(_embed(fs)), _embed(ft)
        return {"hint": hint_loss(r, ft)}


@LOSSES.register(MethodSpec(
    name="at", title="Attention transfer (Zagoruyko & Komodakis 2017)",
    text="Turns each feature map into a spatial attention map Q = mean over channels of |f|^p, "
         "flattened and L2-normalised, and asks the student to attend where the teacher does: "
         "beta * mean (Q_s - Q_t)^2. Needs [B, C, H, W] maps on both sides (conv nets); channel "
         "counts may differ and spatial sizes are matched by average pooling." + _FEATURE_NOTE,
    formula=KL_FORMULA, extra_formula=r"+ \beta\,\tfrac{1}{N}\lVert Q_s - Q_t\rVert^2",
    params={"beta": Param(1000.0, "weight of the attention term (1000 in the paper's code)", 0.0, 1e7),
            "p": Param(2.0, "power of |f| in the attention map", 0.5, 8.0), **_TAP_PARAMS},
    kind="feature", terms=("ce", "kd", "at")))
class AttentionTransfer(FeatureDistiller):
    weights = {"at": "beta"}

    @classmethod
    def check_shapes(cls, s_shape, t_shape, s_tap, t_tap):
        for role, shape, tap in (("student", s_shape, s_tap), ("teacher", t_shape, t_tap)):
            if len(shape) != 4:
                raise ConfigError(
                    f"attention transfer needs [B, C, H, W] feature maps, but the {role}'s tap "
                    f"{tap!r} outputs {_fmt(shape)}; use a conv net for the {role} or another method "
                    "(fitnets, sp, rkd take vectors)")

    def feature_terms(self, fs, ft):
        return {"at": at_loss(fs, ft, self.knobs["p"])}


@LOSSES.register(MethodSpec(
    name="sp", title="Similarity-preserving KD (Tung & Mori 2019)",
    text="Compares how similar the samples of a batch are to each other, not the features "
         "themselves: G = F F^T over the batch's flattened features, rows L2-normalised, and "
         "gamma * ||G_s - G_t||_F^2 / B^2. Works for any feature shapes, student and teacher may "
         "differ freely." + _FEATURE_NOTE,
    formula=KL_FORMULA, extra_formula=r"+ \gamma\,\tfrac{1}{B^2}\lVert G_s - G_t\rVert_F^2",
    params={"gamma": Param(3000.0, "weight of the similarity term (3000 in the paper)", 0.0, 1e7), **_TAP_PARAMS},
    kind="feature", terms=("ce", "kd", "sp")))
class SimilarityPreserving(FeatureDistiller):
    weights = {"sp": "gamma"}

    def feature_terms(self, fs, ft):
        return {"sp": sp_loss(fs, ft)}


@LOSSES.register(MethodSpec(
    name="rkd", title="Relational KD (Park et al. 2019)",
    text="Transfers the geometry of the batch's embeddings (feature maps are averaged over space "
         "first): the pairwise distances, each divided by the mean distance, and the angles formed "
         "by every triplet, matched with a Huber loss: w_dist * Huber(d_s, d_t) + w_angle * "
         "Huber(cos angle_s, cos angle_t). Embedding sizes may differ. The angle term costs "
         "O(B^3) memory per batch." + _FEATURE_NOTE,
    formula=KL_FORMULA,
    extra_formula=(r"+ w_{\mathrm{dist}}\,\mathrm{Huber}(d_s, d_t)"
                   r" + w_{\mathrm{angle}}\,\mathrm{Huber}(\cos\angle_s, \cos\angle_t)"),
    params={"w_dist": Param(25.0, "weight of the distance term (25 in the paper)", 0.0, 1e6),
            "w_angle": Param(50.0, "weight of the angle term (50 in the paper)", 0.0, 1e6), **_TAP_PARAMS},
    kind="feature", terms=("ce", "kd", "rkd_dist", "rkd_angle")))
class RelationalKD(FeatureDistiller):
    weights = {"rkd_dist": "w_dist", "rkd_angle": "w_angle"}

    def feature_terms(self, fs, ft):
        es, et = _embed(fs), _embed(ft)
        return {"rkd_dist": rkd_distance_loss(es, et), "rkd_angle": rkd_angle_loss(es, et)}
