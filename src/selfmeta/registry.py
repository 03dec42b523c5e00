"""One explicit registry per kind of plug-in (data sources, encoders, methods).

A registry maps a name to a factory and feeds ``selfmeta list``, ``--help`` and the parametrized
contract tests. Unknown names fail with a message that lists the valid ones.

Example::

    ENCODERS = Registry("encoder")

    @ENCODERS.register("conv4")
    class Conv4(Encoder): ...

    ENCODERS.get("conv4")          # -> Conv4
    ENCODERS.get("conv5")          # SelfmetaError: unknown encoder 'conv5'; valid: conv4, mlp, resnet18
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from selfmeta.errors import SelfmetaError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise SelfmetaError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
