"""Name → factory registries for models, datasets and losses (distillation methods).

The built-in entries live in modules that import torch, so ``kdcore`` fills the registries on
their first lookup (``fill_with``), not on import: ``python -m kdcore --help`` never loads torch.

``LOSSES`` is the one home of every method, vanilla KD included: each registers once, with a
:class:`MethodSpec` that carries what the dashboard, the CLI and the config checks need
(title, explanation, LaTeX formula, knobs and their bounds, whether T is used, the names of its
loss terms). See docs/methods.md, "Adding a method".
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Mapping, NamedTuple, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection that refuses duplicates and lists known names on a miss."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._fill: Callable[[], None] | None = None
        self._filling: int | None = None  # the thread running the fill (its own lookups see it part-filled)
        self._lock = threading.RLock()

    def fill_with(self, fill: Callable[[], None]) -> None:
        """Run ``fill`` (imports that register the built-in entries) once, before the first lookup."""
        self._fill = fill

    def _ensure_filled(self) -> None:
        if self._fill is None:
            return
        with self._lock:  # another thread's first lookup waits for a full registry, not a partial one
            if self._fill is None or self._filling == threading.get_ident():
                return
            self._filling = threading.get_ident()
            try:
                self._fill()
                self._fill = None
            finally:
                self._filling = None

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@MODELS.register("mlp")``. A duplicate name raises ValueError."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a test's or a plug-in's own entry); an unknown name raises KeyError."""
        self.get(name)  # fills first, and names the known entries on a miss
        with self._lock:
            del self._items[name]

    def get(self, name: str) -> T:
        """Return the entry called ``name``; an unknown name raises KeyError naming the known ones."""
        self._ensure_filled()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(self.names()) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def names(self) -> list[str]:
        self._ensure_filled()
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        self._ensure_filled()
        return isinstance(name, str) and name in self._items  # a list or dict is no name, not a crash

    def __len__(self) -> int:
        self._ensure_filled()
        return len(self._items)


class Param(NamedTuple):
    """One method knob (``loss.params.<knob>``); unpacks as ``default, help, *_``."""

    default: Any  # its type (float, int, str, bool) is the type the knob must have
    help: str  # one sentence a person can act on
    low: float | None = None  # inclusive bounds for numbers; None = unbounded
    high: float | None = None
    choices: tuple | None = None  # allowed strings, if the set is closed


METHOD_KINDS = ("logit", "feature", "adversarial", "multi")


@dataclass(frozen=True, kw_only=True)
class MethodSpec:
    """Everything the dashboard, the CLI and the config checks know about a method.

    What a method *needs from the trainer* is not here: a :class:`~kdcore.train.trainer.Distiller`
    subclass declares it in the class attributes that base documents; a logit loss (a plain
    function) needs nothing beyond the batch, or the epoch when ``takes_epoch`` is set.
    """

    name: str  # the LOSSES key and LossConfig.name
    title: str  # how a select box or the CLI names it, with its paper
    text: str  # one paragraph: what the method does, its paper and its formula in words
    # LaTeX of the soft term that 1 - alpha weighs (without T^2: the page adds it when T is used)
    formula: str
    extra_formula: str = ""  # LaTeX added after the weighted soft term (a feature or adversarial term)
    params: Mapping[str, Param] = field(default_factory=dict)  # knob -> Param; LossConfig.params checks
    kind: str = "logit"  # logit | feature | adversarial (| multi): feature methods need a live teacher
    terms: tuple[str, ...] = ("ce", "kd")  # the named loss terms a run of it reports, in chart order
    uses_temperature: bool = True  # False: T never enters the loss (the page disables its slider)
    # False when the loss reads the labels beyond the CE term (DKD splits on the true class), so
    # it cannot train on unlabelled transfer-set samples
    labels_only_in_ce: bool = True
    # logit losses only: LogitDistiller also passes epoch= (1-based; None outside fit()), for a
    # loss that follows the schedule (DKD's warm-up); the others keep the four-argument signature
    takes_epoch: bool = False

    def __post_init__(self):
        missing = [f for f in ("name", "title", "text", "formula") if not getattr(self, f)]
        if missing:
            raise ValueError(f"method {self.name!r}: MethodSpec needs {', '.join(missing)}")
        if self.kind not in METHOD_KINDS:
            raise ValueError(f"method {self.name!r}: kind {self.kind!r} is not one of {', '.join(METHOD_KINDS)}")
        if not self.terms or not all(isinstance(t, str) and t for t in self.terms):
            raise ValueError(f"method {self.name!r}: terms must name at least one loss term")
        bad = [k for k, p in self.params.items() if not isinstance(p, Param) or not p.help]
        if bad:
            raise ValueError(f"method {self.name!r}: knob {bad[0]!r} needs a Param with a help text")
        object.__setattr__(self, "terms", tuple(self.terms))


class MethodRegistry(Registry):
    """The ``LOSSES`` registry: every entry registers together with its :class:`MethodSpec`.

    An entry is a logit loss ``fn(student_logits, teacher_logits, labels, cfg) -> {term: value}``
    or a :class:`~kdcore.train.trainer.Distiller` subclass; ``get`` returns it, ``spec`` its metadata.
    """

    def __init__(self, kind: str):
        super().__init__(kind)
        self._specs: dict[str, MethodSpec] = {}

    def register(self, spec: MethodSpec) -> Callable:  # type: ignore[override]
        """Decorator: ``@LOSSES.register(MethodSpec(name="kd", ...))``. A duplicate name raises."""
        if not isinstance(spec, MethodSpec):
            raise TypeError(f"a {self.kind} registers with its metadata: LOSSES.register(MethodSpec("
                            f"name={spec!r}, title=..., text=..., formula=..., ...)), not a bare name")
        if spec.kind == "multi":
            raise ValueError(f"{self.kind} {spec.name!r}: kind 'multi' describes a RunConfig setting, "
                             "not a registrable loss")
        add = super().register(spec.name)

        def deco(obj):
            add(obj)
            self._specs[spec.name] = spec
            return obj

        return deco

    def unregister(self, name: str) -> None:
        super().unregister(name)
        del self._specs[name]

    def spec(self, name: str) -> MethodSpec:
        """The metadata of ``name``; an unknown name raises KeyError naming the known ones."""
        self.get(name)
        return self._specs[name]


MODELS: Registry = Registry("model")
DATASETS: Registry = Registry("dataset")
LOSSES: MethodRegistry = MethodRegistry("loss")
