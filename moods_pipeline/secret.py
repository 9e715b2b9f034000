"""A string that never shows itself: passwords, tokens and the admin password travel in this."""

from __future__ import annotations


class Secret:
    """Wraps a credential so that repr(), str(), f-strings and logging print a mask.

    Only ``reveal()`` gives the value, and only the request that needs it should call it.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self):  # pickling would copy the value into run storage
        raise TypeError("Secret values cannot be pickled")
