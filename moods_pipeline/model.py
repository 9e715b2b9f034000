"""The shared facts: a user's account, a mood, a record of a repo (``PdsRecord``, from the protocol
layer), a user's backfill outcome and the reconciliation table's columns, independent of where
they came from. Everything above the protocol layer speaks in these."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from moods_pipeline.atproto.lexicon import is_did
from moods_pipeline.atproto.repo import PdsRecord
from moods_pipeline.secret import Secret

__all__ = ["UserAccount", "Mood", "PdsRecord", "UserOutcome", "RECONCILIATION_COLUMNS", "did_problem", "iso_when"]


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


def iso_when(when: datetime) -> str:
    """Mongo `when` as the lexicon wants it: ISO 8601, milliseconds, `Z`."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


@dataclass
class UserOutcome:
    """What happened to one user; what the per-user materialization's metadata shows."""

    sub: str
    did: str | None
    handle: str | None
    dry_run: bool = False
    live: int = 0
    created: int = 0
    already_synced: int = 0
    pointers_written: int = 0
    recovered: int = 0
    would_create: int = 0
    would_write_pointers: int = 0
    skipped_invalid: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    duplicates: int = 0
    orphans: int = 0
    # Moods whose record exists but differs, and further records carrying a mood's id: the
    # backfill never rewrites or deletes a record, so these wait for `moods-pipeline repair`.
    needs_repair: int = 0
    needs_repair_reasons: list[tuple[str, str]] = field(default_factory=list)  # (mood_id, reason)
    batches: int = 0
    error: str | None = None  # the user as a whole failed (login, unreadable repo, Mongo)
    no_account: bool = False
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"@{self.handle}" if self.handle else (self.did or self.sub)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed

    @property
    def records_per_second(self) -> float:
        return self.created / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["records_per_second"] = round(self.records_per_second, 2)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "UserOutcome":
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        data["skipped_invalid"] = [tuple(x) for x in data.get("skipped_invalid", [])]
        data["failed"] = [tuple(x) for x in data.get("failed", [])]
        data["needs_repair_reasons"] = [tuple(x) for x in data.get("needs_repair_reasons", [])]
        return cls(**data)


# The reconciliation table's columns (one row per mood, one per extra record): what the audit
# writes and the audit store reads back.
RECONCILIATION_COLUMNS: tuple[str, ...] = (
    "did",
    "sub",
    "handle",
    "kind",
    "mood_id",
    "rkey",
    "pointer",
    "status",
    "issues",
    "problem",
    "detail",
    "mood_len",
    "mood_hash",
    "expected_cid",  # the CID of the record this project writes for the mood (live, valid moods)
    "cid",  # the CID the PDS reports for the row's record
)
