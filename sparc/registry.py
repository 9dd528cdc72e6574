"""Things known by name, one registry per kind (the timm / torchdistill pattern).

A registry maps a name (``"hga"``, ``"T"``) to an :class:`Entry`: what the files that know that name
registered under it, by role (a backbone's ``demo`` build, its ``paper`` size, the fixtures it
rebuilds; a technique's ``build``). Several files may add roles to one name, so a backbone's demo
size can live in the package and its paper size in ``benchmarks/``; the entry points list and look
up names here instead of keeping their own copies::

    BACKBONES = Registry("backbone")
    BACKBONES.register("hga", title="HGA", demo=...)

    @BACKBONES.register("hga", "paper")
    def paper_size(batch_size, seed=0): ...

    BACKBONES.names("paper")          # ("hga",)
    BACKBONES.get("hga", "paper")     # paper_size
    BACKBONES.get("hgaa")             # ValueError: unknown backbone 'hgaa'; choose one of hga
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Optional, Tuple

__all__ = ["Entry", "Registry"]


class Entry:
    """One registered name and what was registered under it, read as attributes (``entry.demo``)."""

    def __init__(self, kind: str, name: str):
        self.kind, self.name = kind, name
        self.roles: Dict[str, Any] = {}

    def __getattr__(self, role: str) -> Any:
        roles = self.__dict__.get("roles", {})
        if role in roles:
            return roles[role]
        raise AttributeError(f"{self.__dict__.get('kind')} {self.__dict__.get('name')!r} has no {role!r} "
                             f"(it has: {', '.join(roles) or 'nothing'})")

    def __contains__(self, role: str) -> bool:
        return role in self.roles

    def __repr__(self) -> str:
        return f"Entry({self.kind} {self.name!r}: {', '.join(self.roles)})"


class Registry:
    """Names of one ``kind`` (used in error messages: ``Registry("backbone")``), in registration order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Entry] = {}

    def register(self, name: str, role: Optional[str] = None, **roles: Any):
        """Add ``roles`` (role -> value) to ``name``, creating its entry; returns the entry.
        ``register(name, role)`` without values is a decorator that registers what it decorates under
        ``role``. A role already registered under ``name`` with another value is an error (two files
        claiming one backbone's paper size, say)."""
        if role is not None:
            if roles:
                raise TypeError("register(name, role) is a decorator; give either role or role=value pairs")

            def decorate(value: Callable) -> Callable:
                self.register(name, **{role: value})
                return value

            return decorate
        entry = self._entries.setdefault(name, Entry(self.kind, name))
        for key, value in roles.items():
            if key in entry.roles and entry.roles[key] is not value:
                raise ValueError(f"{self.kind} {name!r}: {key!r} is registered already")
            entry.roles[key] = value
        return entry

    def names(self, role: Optional[str] = None) -> Tuple[str, ...]:
        """Every registered name, or those that have ``role``."""
        return tuple(n for n, e in self._entries.items() if role is None or role in e)

    def get(self, name: str, role: Optional[str] = None) -> Any:
        """The entry of ``name``, or with ``role`` what is registered under it. An unknown name (or one
        without ``role``) is a ``ValueError`` listing the names there are."""
        known = self.names(role)
        if name not in known:
            choices = ", ".join(known) or "(none registered)"
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} has no {role!r}; choose one of {choices}")
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {choices}")
        entry = self._entries[name]
        return entry if role is None else entry.roles[role]

    def entries(self) -> Tuple[Entry, ...]:
        return tuple(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
