"""The one name -> entry registry behind the backbone, benchmark, model and study registries.

Each is a module-level instance (``Registry("backbone")``) wrapped by that module's public functions
(``register_backbone``, ``get_backbone``, ...), which add their own checks (entry types, a study's option, HSNet's
model staying registered); the instance holds the entries, in registration order.
"""
from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one ``kind`` ("backbone", "benchmark", ...) by name, in registration order; the errors name the
    kind and, for an unknown name, list the registered ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Add ``entry`` as ``name``; a name already taken is an error unless ``replace``."""
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered (pass replace=True to replace it)")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (an unknown one is :meth:`get`'s error)."""
        self.get(name)
        del self._entries[name]

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def entries(self) -> list[T]:
        """The registered entries, in registration order."""
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries
