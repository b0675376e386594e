"""One behaviour for every d2ext extension point: name -> object, a duplicate name is an error.

d2ext's extension points (config adders, model I/O declarations, target
builders, evaluator types, trainer hooks) each keep a :class:`NamedRegistry`.
A project registers into them on import, through the public ``register_*``
function of each point; registering a name twice raises, so two projects (or a
project imported under two names) can never silently replace each other.
"""
from __future__ import annotations

from typing import Dict, Generic, Iterator, List, TypeVar

__all__ = ["DuplicateRegistrationError", "NamedRegistry"]

T = TypeVar("T")


class DuplicateRegistrationError(KeyError):
    """A name was registered twice in the same registry."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class NamedRegistry(Generic[T]):
    """A mapping from names to objects that refuses duplicates.

    Args:
        name: the registry's name, used in error messages.
        hint: how to register into it, appended to "not found" errors.
    """

    def __init__(self, name: str, hint: str = ""):
        self.name = name
        self._hint = hint
        self._objects: Dict[str, T] = {}

    def register(self, name: str, obj: T) -> T:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.name}: a registered name must be a non-empty string, got {name!r}")
        if name in self._objects:
            raise DuplicateRegistrationError(
                f"{name!r} is already registered in {self.name} "
                f"(by {_describe(self._objects[name])}); names must be unique"
            )
        self._objects[name] = obj
        return obj

    def get(self, name: str) -> T:
        if name not in self._objects:
            hint = f" {self._hint}" if self._hint else ""
            raise KeyError(f"no {name!r} in {self.name}; registered: {self.names()}.{hint}")
        return self._objects[name]

    def remove(self, name: str) -> None:
        """Forget ``name`` (for tests that register temporary components)."""
        self._objects.pop(name, None)

    def names(self) -> List[str]:
        return sorted(self._objects)

    def items(self):
        return sorted(self._objects.items())

    def __contains__(self, name: object) -> bool:
        return name in self._objects

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._objects)


def _describe(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if module and qualname:
        return f"{module}.{qualname}"
    return type(obj).__name__
