"""One small registry type for every name -> object table in fernb (datasets, models, losses, samplers,
transforms)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from .errors import UnknownNameError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names (case-insensitive, with aliases) mapped to objects, filled by a decorator where each object is defined.

    Example::

        DATASETS: Registry[DatasetInfo] = Registry("dataset")
        DATASETS.add("rafdb", info, aliases=("raf-db",))
        DATASETS.get("RAF-DB")  # -> info
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def add(self, name: str, obj: T, *, aliases: tuple[str, ...] = ()) -> T:
        """Register ``obj`` as ``name``; registering a name again replaces the entry (a reloaded module)."""
        self._items[name] = obj
        for alias in (name, *aliases):
            self._aliases[alias.lower()] = name
        return obj

    def register(self, name: str | None = None, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator form of :meth:`add`, where the object is defined; ``name`` defaults to its ``__name__``.

        Raises:
            ValueError: the name or an alias is taken (two definitions under one name are a mistake, not a reload).
        """

        def deco(obj: T) -> T:
            key = name if name is not None else getattr(obj, "__name__", None)
            if not isinstance(key, str):
                raise TypeError(f"{obj!r} has no __name__: give the {self.kind} a name, register(name)(obj)")
            taken = [n for n in (key, *aliases) if n in self]
            if taken:
                raise ValueError(f"{self.kind} {taken[0]!r} is registered twice")
            return self.add(key, obj, aliases=aliases)

        return deco

    def remove(self, name: str) -> None:
        """Forget ``name`` and its aliases."""
        name = self.canonical(name)
        del self._items[name]
        self._aliases = {a: n for a, n in self._aliases.items() if n != name}

    @contextmanager
    def scoped(self, name: str, obj: T) -> Iterator[T]:
        """Register ``obj`` as ``name`` for the duration of a ``with`` block (toy models in tests, experiments)."""
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self.add(name, obj)
        try:
            yield obj
        finally:
            self.remove(name)

    def canonical(self, name: str) -> str:
        """The registered name behind ``name`` or one of its aliases.

        Raises:
            KeyError: an unknown name; the message lists the known ones.
        """
        try:
            return self._aliases[name.lower()]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}") from None

    def get(self, name: str) -> T:
        """The object registered as ``name`` (or an alias); unknown names raise a ``KeyError`` listing the known."""
        return self._items[self.canonical(name)]

    def names(self) -> list[str]:
        """Registered names, sorted (aliases left out)."""
        return sorted(self._items)

    def aliases(self) -> list[str]:
        """Aliases, sorted (lower case; registered names left out)."""
        return sorted(a for a, n in self._aliases.items() if a != n.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
