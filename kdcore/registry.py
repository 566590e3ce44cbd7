"""Name → factory registries for models, datasets and losses."""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection that refuses duplicates and lists known names on a miss."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

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
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(self.names()) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._items  # a list or dict is no name, not a crash

    def __len__(self) -> int:
        return len(self._items)


MODELS: Registry = Registry("model")
DATASETS: Registry = Registry("dataset")
LOSSES: Registry = Registry("loss")
