"""Adversarial KD: a discriminator tells teacher from student outputs; the student learns to fool it.

How both players are stepped with the trainer's one optimiser and one backward pass:

* ``disc`` = BCE(D(p_t), 1) + BCE(D(p_s.detach()), 0) is the discriminator's own loss. The
  student's probabilities enter detached, so this term sends gradient to D only.
* ``adv`` = gamma * BCE(D(p_s), 1) is the student's non-saturating "fool D" loss. It is computed
  with ``torch.func.functional_call`` on *detached copies* of D's parameters, so it sends
  gradient to the student only; D is a fixed critic inside it.

The sum ``ce + kd + adv + disc`` is back-propagated once: the student's gradient is exactly
d(ce + kd + adv)/d student and D's is exactly d disc / d D, i.e. one simultaneous gradient step
of each player on its own objective (the usual alternating GAN update with one D step per G
step, taken at the same point). The reported total therefore includes D's loss; the chart of
``disc`` shows D's side of the game (about 2 ln 2 = 1.39 when D cannot tell the two apart).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from ..losses import KL_FORMULA, hinton_kd
from ..train.trainer import Distiller
from ..registry import LOSSES, MethodSpec, Param
from .spec import method_params

__all__ = ["Discriminator", "AdversarialKD", "adversarial_terms"]


class Discriminator(nn.Sequential):
    """A small MLP: K class probabilities -> one logit, "came from the teacher"."""

    def __init__(self, num_classes: int, hidden: int = 64):
        super().__init__(nn.Linear(num_classes, hidden), nn.LeakyReLU(0.2),
                         nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))


def adversarial_terms(disc: nn.Module, p_student: torch.Tensor, p_teacher: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The two players' losses, each sending gradient to its own player only.

    Args:
        disc: the discriminator. p_student: [B, K] student probabilities (gradients flow).
        p_teacher: [B, K] teacher probabilities (constants).
    Returns:
        (fool, disc_loss): fool = BCE(D(p_s), 1) with D frozen, the student's term;
        disc_loss = BCE(D(p_t), 1) + BCE(D(p_s.detach()), 0), D's term.
    """
    frozen = {k: v.detach() for k, v in disc.named_parameters()}
    d_fake_for_student = functional_call(disc, frozen, (p_student,)).squeeze(1)
    fool = F.binary_cross_entropy_with_logits(d_fake_for_student, torch.ones_like(d_fake_for_student))
    d_real = disc(p_teacher.detach()).squeeze(1)
    d_fake = disc(p_student.detach()).squeeze(1)
    disc_loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                 + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
    return fool, disc_loss


@LOSSES.register(MethodSpec(
    name="adversarial", title="Adversarial KD (discriminator on soft outputs)",
    text="Besides vanilla KD, a small MLP discriminator looks at softmax(logits / T) and learns to "
         "tell the teacher's outputs from the student's; the student is also trained to fool it "
         "(after Xu et al. 2018 and Wang et al. 2018). Terms: ce and kd as in KD, adv = gamma * "
         "BCE(D(p_s), 'teacher') for the student, and disc = BCE(D(p_t), 'teacher') + "
         "BCE(D(p_s), 'student') for the discriminator, both stepped in the same update. When the "
         "student imitates the teacher well, disc approaches 2 ln 2 = 1.39 (D is guessing).",
    formula=KL_FORMULA,
    extra_formula=r"+ \gamma\,\mathrm{BCE}\big(D(p_s), 1\big) + \mathrm{BCE}\big(D(p_t), 1\big)"
                  r" + \mathrm{BCE}\big(D(p_s), 0\big)",
    params={"gamma": Param(0.5, "weight of the student's fool-the-discriminator term", 0.0, 100.0),
            "hidden": Param(64, "width of the discriminator's two hidden layers", 1, 4096)},
    kind="adversarial", terms=("ce", "kd", "adv", "disc")))
class AdversarialKD(Distiller):
    """Vanilla KD plus the adversarial game; works from cached teacher logits (no features)."""

    needs_in_shape = True  # sizes the discriminator from the student's number of outputs

    def __init__(self, student: nn.Module, teacher: nn.Module, loss_cfg, *, in_shape):
        super().__init__(student, teacher)
        self.loss_cfg = loss_cfg
        self.knobs = method_params(loss_cfg)
        p = next(iter(student.parameters()))
        was = student.training
        student.eval()
        with torch.no_grad():
            k = student(torch.zeros(2, *in_shape, device=p.device)).shape[1]
        student.train(was)
        self.disc = Discriminator(k, self.knobs["hidden"]).to(p.device)

    def forward(self, x, y, teacher_logits=None):
        if teacher_logits is None:
            teacher_logits = self.teacher_logits(x)
        logits = self.student(x)
        c = self.loss_cfg
        terms = hinton_kd(logits, teacher_logits, y, T=c.temperature, alpha=c.alpha, t2=c.t2)
        fool, disc = adversarial_terms(self.disc, F.softmax(logits / c.temperature, dim=1),
                                       F.softmax(teacher_logits.detach() / c.temperature, dim=1))
        terms["adv"] = self.knobs["gamma"] * fool
        terms["disc"] = disc
        return logits, terms
