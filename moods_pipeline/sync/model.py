"""The facts the planner, writer and reconciler work on, independent of where they came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from moods_pipeline.secret import Secret


@dataclass(frozen=True)
class UserAccount:
    """A `users` document with its PDS credentials (syncable users only carry both)."""

    sub: str
    did: str | None
    handle: str | None  # bare handle from `@handles`, no "@"
    password: Secret | None = field(default=None, repr=False)
    pds_handle: str | None = None  # users.atproto.handle
    # Why this user's credentials must not be used although they exist (a malformed DID, a DID
    # that several users claim): the user fails with this reason before any request.
    problem: str | None = None

    @property
    def has_account(self) -> bool:
        return bool(self.did) and bool(self.password)

    @property
    def label(self) -> str:
        """How logs name the user: @handle if known, else the DID, else the sub."""
        return f"@{self.handle}" if self.handle else (self.did or self.sub)


def did_problem(did: object) -> str | None:
    """Why a stored ``users.atproto.did`` cannot name a repo (atproto DID syntax), or None.

    Checked before any request: the PDS answers a malformed repo with a bare 500, which the
    client would retry for seconds before the user fails with no useful reason."""
    from moods_pipeline.lexicon import is_did

    if not isinstance(did, str):
        return f"users.atproto.did is not a DID: a {type(did).__name__}, not a string"
    if not is_did(did):
        return f"users.atproto.did {did[:80]!r} is not a DID (did:<method>:<identifier>)"
    return None


@dataclass(frozen=True)
class Mood:
    """A `moods` document as read from Mongo (fields kept raw; the validator judges them)."""

    id: str  # ObjectId as 24 hex chars
    user: str | None  # the author's sub
    text: Any  # usually str; kept raw so the validator can report non-strings
    when: Any  # usually datetime (aware, UTC); kept raw for the same reason
    deleted: bool = False
    rkey: str | None = None  # Mongo's atproto.rkey pointer

    @property
    def live(self) -> bool:
        return not self.deleted


@dataclass(frozen=True)
class PdsRecord:
    """A record of computer.aesthetic.mood in a user's repo."""

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


def iso_when(when: datetime) -> str:
    """Mongo `when` as the lexicon wants it: ISO 8601, milliseconds, `Z`."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
