"""Name → factory registries for models, datasets and losses.

The built-in entries live in modules that import torch, so ``kdcore`` fills the registries on
their first lookup (``fill_with``), not on import: ``python -m kdcore --help`` never loads torch.
"""
from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

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


MODELS: Registry = Registry("model")
DATASETS: Registry = Registry("dataset")
LOSSES: Registry = Registry("loss")
