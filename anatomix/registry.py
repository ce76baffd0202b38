"""One registry style for every named family in anatomix.

A :class:`Registry` maps names to entries: classes, builder functions, templates, bundled model
records. An entry may be given as a ``"module:attribute"`` string, imported on first use, so
that listing names (``anatomix --help``, error messages) never imports torch. An unknown name
raises :class:`~anatomix.errors.UsageError` listing the valid ones.

Example:
    >>> BUILDERS = Registry("pixel architecture")
    >>> BUILDERS.register("unet", "anatomix.pixel.models:_monai_unet")
    >>> BUILDERS.get("unet")  # imports anatomix.pixel.models and returns _monai_unet
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from anatomix.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> entries, in registration order.

    Args:
        what: what an entry is, for messages (``"pixel architecture"``).
    """

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, entry: T | str) -> T | str:
        """Add (or replace) ``name``; ``entry`` may be a ``"module:attribute"`` string."""
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry of ``name`` (imported now if it was registered as a string).

        Raises:
            UsageError: unknown name; the message lists the valid names.
        """
        if name not in self._entries:
            raise UsageError(f"unknown {self.what} {name!r}; choose from: {', '.join(self._entries)}")
        entry = self._entries[name]
        if isinstance(entry, str) and ":" in entry:
            module, _, attribute = entry.partition(":")
            value: Any = importlib.import_module(module)
            for part in attribute.split("."):
                value = getattr(value, part)
            self._entries[name] = entry = value
        return entry  # type: ignore[return-value]

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order (nothing imported)."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._entries)})"
