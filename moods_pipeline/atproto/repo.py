"""A record as read from a repo: its record key, value and CID."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PdsRecord:
    """A record of a collection in a repo (this project reads ``computer.aesthetic.mood``).

    ``mood_ref`` and ``is_legacy`` read the two fields by which this project's records name their
    mood (``ref``, and ``mongoId`` in records the application wrote earlier)."""

    rkey: str
    value: dict
    cid: str | None = None

    @property
    def mood_ref(self) -> str | None:
        """The Mongo id the record claims: `ref`, or the legacy `mongoId`."""
        ref = self.value.get("ref")
        if isinstance(ref, str) and ref:
            return ref
        legacy = self.value.get("mongoId")
        if isinstance(legacy, str) and legacy:
            return legacy
        return None

    @property
    def is_legacy(self) -> bool:
        return "ref" not in self.value and isinstance(self.value.get("mongoId"), str)
