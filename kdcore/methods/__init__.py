"""Distillation methods beyond vanilla KD, each registered once in ``LOSSES`` with its ``MethodSpec``.

* Logit variants (plain functions ``fn(s, t, y, cfg) -> terms``): ``dkd``, ``logit_std``.
* Feature methods (``Distiller`` subclasses hooking ``model.tap``): ``fitnets``, ``at``, ``sp``,
  ``rkd``.
* ``adversarial``: KD plus a discriminator on the soft outputs.
* Multi-teacher KD is a RunConfig setting (``extra_teachers``), usable with every loss; see
  :class:`~kdcore.methods.ensemble.Ensemble`.

``METHOD_INFO[name]`` is the registered :class:`~kdcore.registry.MethodSpec` of every loss,
vanilla ones included (title, explanation, formula, knobs with default and help, kind, reported
terms, whether T is used) for the dashboard and the CLI; ``LossConfig.params`` is validated
against it. docs/methods.md says how to add a method.
"""
from . import logit  # noqa: F401, I001  (registration order = the order a select box lists them)
from . import feature  # noqa: F401
from . import adversarial  # noqa: F401
from .ensemble import Ensemble
from .spec import METHOD_INFO, MULTI_TEACHER_INFO, MethodSpec, Param, check_loss_params, method_params

__all__ = ["METHOD_INFO", "MULTI_TEACHER_INFO", "MethodSpec", "Param", "check_loss_params",
           "method_params", "Ensemble"]
