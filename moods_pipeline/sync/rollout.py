"""Which users this project's live writers serve (`MOODS_ROLLOUT`, docs/interface.md "Settings").

Pure: no I/O. The rule applies to the live writers only (the catch-up sensor's syncs and its
nuke-policy deletions); backfill, repair and erase never consult it.

Forms of the setting:

- ``all``: every user (the default);
- ``off``: nobody: the live writers write nothing;
- ``@a,@b``: the users whose bare handle (the ``@handles`` collection) is listed; handles
  compare case-insensitively, surrounding spaces are ignored. A user without a handle is out;
- ``N%`` (0..100): the users whose stable bucket is below N. A user's bucket is
  ``int.from_bytes(sha256(sub)[:8], "big") % 100``: it depends on the sub alone, so it never
  changes between processes or releases, and raising N only ever adds users (a user in at
  10% is in at 20%).

Parsing is strict: anything else is a ``ConfigError`` naming ``MOODS_ROLLOUT``. The grammar is
``moods_pipeline.settings.rollout_parts``, the one that ``load_settings`` validates the setting
with, so a value the settings accept always parses here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from moods_pipeline.settings import rollout_parts

__all__ = ["Rollout", "bucket", "parse_rollout", "in_rollout"]


def bucket(sub: str) -> int:
    """The user's stable rollout bucket, 0..99, from SHA-256 of the sub."""
    digest = hashlib.sha256(sub.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100


@dataclass(frozen=True)
class Rollout:
    """A parsed ``MOODS_ROLLOUT``: ``mode`` is all | off | handles | percent."""

    mode: str
    percent: int = 100
    handles: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, spec: str | None) -> "Rollout":
        mode, percent, handles = rollout_parts(spec)
        return cls(mode, percent=percent, handles=handles)

    @property
    def is_off(self) -> bool:
        return self.mode == "off" or (self.mode == "percent" and self.percent == 0)

    def includes(self, sub: str, handle: str | None = None) -> bool:
        """Whether the live writers serve the user with this sub (and bare handle, if any)."""
        if self.mode == "all":
            return True
        if self.mode == "off":
            return False
        if self.mode == "handles":
            return bool(handle) and handle.strip().lstrip("@").lower() in self.handles
        return bucket(sub) < self.percent

    def describe(self) -> str:
        if self.mode == "handles":
            return ",".join(f"@{h}" for h in sorted(self.handles))
        if self.mode == "percent":
            return f"{self.percent}%"
        return self.mode


def parse_rollout(spec: str | None) -> Rollout:
    return Rollout.parse(spec)


def in_rollout(spec: str | None, sub: str, handle: str | None = None) -> bool:
    """One-shot form of ``Rollout.parse(spec).includes(sub, handle)``."""
    return Rollout.parse(spec).includes(sub, handle)
