"""The catch-up logic behind the live sensor: which moods to sync (or delete) now, and the
attempts/backoff bookkeeping. Plain Python, no Dagster (``defs/live/sensors.py`` is the thin layer).

The application writes a new mood's record itself, live; when that write fails (or was never
made), the mood stays without an ``atproto.rkey`` pointer. Each tick the sensor asks
``find_candidates`` for:

- **sync**: valid live moods without a pointer (no ``atproto`` document, or an
  ``atproto.rkey`` that is missing, null, empty or not a string: see
  ``MongoStore.unsynced_live_moods``), of users with a PDS account (did and password),
  whose ``when`` is older than ``MOODS_CATCHUP_GRACE_S`` (the grace leaves the application's
  own live write time to land first), whose user is within ``MOODS_ROLLOUT``, and that are not
  waiting out a backoff nor given up on. Newest first, so new moods are not held up behind an
  old backlog;
- **delete** (only with ``MOODS_NUKE_POLICY=delete``): nuked moods that still have a pointer,
  of users with an account within the rollout. Their records are removed and the pointers
  unset, so un-nuking a mood makes it a sync candidate again. (Records of nuked moods that
  Mongo does not point at are found by the audit, ``nuked_on_pds``, and removed by repair.)

Attempts live under ``MOODS_STATE_DIR/catchup/attempts/<mood id>.json`` (one small JSON file
per mood that has been tried and is not done, replaced whole through ``storage.files``, so the
state dir may be an object store), never in the application's mood documents. They stay there
rather than in the sensor's cursor because the runs write them too (each mood's outcome), and
a sensor cursor is written by its sensor alone; one object per mood also means two writers
never overwrite each other's moods. The tick's summary, which only the sensor writes, is the
sensor's cursor. An attempt is counted when the sensor requests the mood, so a
run that never finishes counts too; the run records the outcome. A mood that is done (synced,
deleted, or no longer a candidate) loses its file. After ``max_attempts`` failed attempts a
mood is **reported** (listed in the sensor's log and the next run's metadata, and by
``CatchupState.reported()``) and no longer retried; deleting its file retries it.

Backoff after the n-th failed attempt: ``min(backoff_max_s, backoff_base_s * 2**(n-1))``.

Extra settings (optional; read and validated by ``moods_pipeline.settings``, defaults in
``CatchupPolicy``): ``MOODS_CATCHUP_MAX_ATTEMPTS`` (6),
``MOODS_CATCHUP_BACKOFF_S`` (the base, 60; capped at an hour), ``MOODS_CATCHUP_BATCH`` (moods
per run, 100), ``MOODS_CATCHUP_RUNS_PER_TICK`` (4), ``MOODS_CATCHUP_MAX_AGE_S`` (unset: an
unsynced mood of any age is caught up, history included; set it to leave older moods to
backfill and repair).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Iterable

from bson import ObjectId
from upath import UPath

from moods_pipeline.model import Mood, UserAccount
from moods_pipeline.settings import Settings
from moods_pipeline.storage.files import list_files, read_bytes, read_many, remove, state_path, write_json_atomic
from moods_pipeline.sync.live import FAILED, SKIPPED, LiveResult, LiveSync
from moods_pipeline.sync.mood_record import Invalid, build_record
from moods_pipeline.sync.rollout import Rollout

log = logging.getLogger(__name__)

__all__ = [
    "CatchupPolicy",
    "Attempt",
    "CatchupState",
    "Candidates",
    "CatchupReport",
    "find_candidates",
    "run_catchup",
    "backoff_s",
]

SYNC, DELETE = "sync", "delete"


# --- policy --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatchupPolicy:
    # The defaults are settings.py's (docs/interface.md); the sensor takes them from Settings.
    grace_s: float = 120.0  # MOODS_CATCHUP_GRACE_S
    rollout: str = "all"  # MOODS_ROLLOUT
    nuke_policy: str = "keep"  # MOODS_NUKE_POLICY
    max_attempts: int = 6  # MOODS_CATCHUP_MAX_ATTEMPTS
    backoff_base_s: float = 60.0  # MOODS_CATCHUP_BACKOFF_S
    backoff_max_s: float = 3600.0
    batch_size: int = 100  # MOODS_CATCHUP_BATCH: moods per run
    runs_per_tick: int = 4  # MOODS_CATCHUP_RUNS_PER_TICK
    scan_limit: int = 20_000  # unsynced moods read per tick at most (newest first)
    max_age_s: float | None = None  # MOODS_CATCHUP_MAX_AGE_S: older unsynced moods are left to backfill/repair

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> "CatchupPolicy":
        """The policy of already validated settings (``moods_pipeline.settings.load_settings``)."""
        values = dict(
            grace_s=settings.catchup_grace_s,
            rollout=settings.rollout,
            nuke_policy=settings.nuke_policy,
            max_attempts=settings.catchup_max_attempts,
            backoff_base_s=settings.catchup_backoff_s,
            batch_size=settings.catchup_batch,
            runs_per_tick=settings.catchup_runs_per_tick,
            max_age_s=settings.catchup_max_age_s,
        )
        values.update(overrides)
        return cls(**values)

    def parsed_rollout(self) -> Rollout:
        """The rollout rule; a malformed spec is a ConfigError naming MOODS_ROLLOUT."""
        return Rollout.parse(self.rollout)


def backoff_s(attempts: int, policy: CatchupPolicy) -> float:
    """Seconds to wait after the ``attempts``-th attempt before the next one."""
    if attempts <= 0:
        return 0.0
    return min(policy.backoff_max_s, policy.backoff_base_s * (2 ** (attempts - 1)))


# --- attempts ------------------------------------------------------------------------------------


@dataclass
class Attempt:
    mood_id: str
    action: str  # sync | delete
    attempts: int = 0
    first_attempt_at: float = 0.0  # Unix seconds
    last_attempt_at: float = 0.0
    next_attempt_at: float = 0.0  # informative: the backoff of the policy at the time
    last_status: str | None = None  # requested | failed | ...
    last_reason: str | None = None  # PDS error text; never mood text
    reported_at: float | None = None  # when the sensor first reported it as given up

    def due_at(self, policy: CatchupPolicy) -> float:
        """When the next attempt may start, under the current policy's backoff."""
        return self.last_attempt_at + backoff_s(self.attempts, policy)

    def gave_up(self, policy: CatchupPolicy, now: float) -> bool:
        """Attempts used up: the last one failed, or never reported back within its backoff."""
        return self.attempts >= policy.max_attempts and (self.last_status == FAILED or now >= self.due_at(policy))


class CatchupState:
    """The attempt files under ``<state_dir>/catchup/``."""

    def __init__(self, state_dir: str | os.PathLike | UPath) -> None:
        self.root = state_path(state_dir) / "catchup"
        self.attempts_dir = self.root / "attempts"
        self.runs_dir = self.root / "runs"

    def _path(self, mood_id: str) -> UPath:
        if not ObjectId.is_valid(mood_id):
            raise ValueError("mood id must be an ObjectId")
        return self.attempts_dir / f"{mood_id}.json"

    @staticmethod
    def _parse(raw: bytes | None) -> Attempt | None:
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return Attempt(**{k: v for k, v in data.items() if k in Attempt.__dataclass_fields__})
        except (ValueError, TypeError, AttributeError):
            return None  # a damaged file counts as no attempt: the mood is simply tried again

    def get(self, mood_id: str) -> Attempt | None:
        try:
            return self._parse(read_bytes(self._path(mood_id)))
        except OSError:
            return None

    def all(self) -> dict[str, Attempt]:
        found: dict[str, Attempt] = {}
        paths = [p for p in list_files(self.attempts_dir, ".json") if ObjectId.is_valid(p.name[: -len(".json")])]
        data = read_many(paths)  # concurrent on an object store
        for path in paths:
            attempt = self._parse(data.get(str(path)))
            if attempt is not None:
                found[attempt.mood_id] = attempt
        return found

    def save(self, attempt: Attempt) -> None:
        write_json_atomic(self._path(attempt.mood_id), asdict(attempt))

    def forget(self, mood_id: str) -> None:
        remove(self._path(mood_id))

    def started(self, mood_id: str, action: str, now: float, policy: CatchupPolicy) -> Attempt:
        """Count an attempt as the sensor requests it; the next one waits out the backoff."""
        attempt = self.get(mood_id)
        if attempt is None or attempt.action != action:
            attempt = Attempt(mood_id, action, first_attempt_at=now)
        attempt.attempts += 1
        attempt.last_attempt_at = now
        attempt.next_attempt_at = now + backoff_s(attempt.attempts, policy)
        attempt.last_status = "requested"
        self.save(attempt)
        return attempt

    def finished(self, result: LiveResult, action: str, now: float) -> None:
        """Record a run's outcome: done (or nothing to do) forgets the mood; a failure stays."""
        if result.status != FAILED:
            self.forget(result.mood_id)
            return
        attempt = self.get(result.mood_id) or Attempt(result.mood_id, action, attempts=1, first_attempt_at=now,
                                                      last_attempt_at=now)
        attempt.action = action
        attempt.last_status = FAILED
        attempt.last_reason = (result.reason or "")[:500]
        self.save(attempt)

    def reported(self, policy: CatchupPolicy, now: float | None = None) -> list[Attempt]:
        """Moods given up on (attempts used up), oldest first."""
        now = time.time() if now is None else now
        return sorted((a for a in self.all().values() if a.gave_up(policy, now)), key=lambda a: a.first_attempt_at)

    def save_run(self, run_id: str, report: "CatchupReport") -> UPath:
        path = self.runs_dir / f"{run_id}.json"
        write_json_atomic(path, report.to_dict())
        return path


# --- candidates ----------------------------------------------------------------------------------


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


@dataclass
class Candidates:
    sync: list[str] = field(default_factory=list)  # mood ids to sync now (newest first)
    delete: list[str] = field(default_factory=list)  # nuked mood ids to delete now
    backlog: int = 0  # eligible, but beyond this tick's capacity
    waiting: int = 0  # in backoff
    reported: list[Attempt] = field(default_factory=list)  # given up (all of them)
    newly_reported: list[Attempt] = field(default_factory=list)  # given up since the last report
    invalid: int = 0
    no_account: int = 0
    out_of_rollout: int = 0
    scanned: int = 0
    truncated: bool = False  # scan_limit reached: counts are partial
    pruned: int = 0  # attempt files of moods no longer candidates, removed

    def summary(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k not in ("sync", "delete", "reported", "newly_reported")}
        data.update(sync=len(self.sync), delete=len(self.delete), reported=len(self.reported),
                    newly_reported=len(self.newly_reported))
        return data


class _Accounts:
    def __init__(self, store) -> None:
        self.store = store
        self.cache: dict[str, UserAccount | None] = {}

    def get(self, sub) -> UserAccount | None:
        if not isinstance(sub, str) or not sub:
            return None
        if sub not in self.cache:
            self.cache[sub] = self.store.user_by_sub(sub)
        return self.cache[sub]


def find_candidates(store, state: CatchupState, policy: CatchupPolicy, now: float | None = None) -> Candidates:
    """What the catch-up should do now (reads Mongo and the attempt files; writes only the
    pruning of stale attempt files)."""
    now = time.time() if now is None else now
    rollout = policy.parsed_rollout()
    found = Candidates()
    if rollout.is_off:
        return found
    capacity = policy.batch_size * policy.runs_per_tick
    attempts = state.all()
    accounts = _Accounts(store)
    seen: set[str] = set()

    def eligible(mood: Mood, action: str) -> bool:
        account = accounts.get(mood.user)
        if account is None or not account.has_account:
            found.no_account += 1
            return False
        if not rollout.includes(account.sub, account.handle):
            found.out_of_rollout += 1
            return False
        attempt = attempts.get(mood.id)
        if attempt is not None and attempt.action == action:
            if attempt.gave_up(policy, now):
                found.reported.append(attempt)
                if attempt.reported_at is None:
                    found.newly_reported.append(attempt)
                return False
            if attempt.due_at(policy) > now:
                found.waiting += 1
                return False
        return True

    horizon = now - policy.max_age_s if policy.max_age_s is not None else None
    for mood in store.unsynced_live_moods(_utc(now - policy.grace_s), policy.scan_limit,
                                          _utc(max(horizon, 0)) if horizon is not None else None):
        found.scanned += 1
        seen.add(mood.id)
        if isinstance(build_record(mood), Invalid):
            found.invalid += 1
            continue
        if not eligible(mood, SYNC):
            continue
        if len(found.sync) < capacity:
            found.sync.append(mood.id)
        else:
            found.backlog += 1
    found.truncated = found.scanned >= policy.scan_limit

    if policy.nuke_policy == "delete":
        scanned_nuked = 0
        for mood in store.nuked_moods_with_pointer(policy.scan_limit):
            scanned_nuked += 1
            seen.add(mood.id)
            if not eligible(mood, DELETE):
                continue
            if len(found.sync) + len(found.delete) < capacity:
                found.delete.append(mood.id)
            else:
                found.backlog += 1
        found.truncated = found.truncated or scanned_nuked >= policy.scan_limit

    if not found.truncated:
        # Files of moods that are no longer candidates (synced by a backfill or repair, nuked,
        # deleted, given a pointer by the application): done, forget them. Moods younger than
        # the grace never have files, so the scan saw every mood that might.
        for mood_id in attempts:
            if mood_id not in seen:
                state.forget(mood_id)
                found.pruned += 1
    return found


def mark_reported(state: CatchupState, attempts: Iterable[Attempt], now: float) -> None:
    for attempt in attempts:
        attempt.reported_at = now
        state.save(attempt)


def plan_runs(candidates: Candidates, policy: CatchupPolicy) -> list[dict]:
    """The candidates in runs of at most ``batch_size`` moods: [{"sync": [...], "delete": [...]}]."""
    items = [(SYNC, m) for m in candidates.sync] + [(DELETE, m) for m in candidates.delete]
    runs = []
    for start in range(0, len(items), policy.batch_size):
        chunk = items[start : start + policy.batch_size]
        runs.append({SYNC: [m for a, m in chunk if a == SYNC], DELETE: [m for a, m in chunk if a == DELETE]})
    return runs


# --- a run ---------------------------------------------------------------------------------------


@dataclass
class CatchupReport:
    """One catch-up run's outcome: ids, statuses and reasons, never mood text."""

    results: list[dict] = field(default_factory=list)  # LiveResult.to_dict() + "action_kind"
    reported: list[dict] = field(default_factory=list)  # attempts given up on
    seconds: float = 0.0

    def count(self, kind: str, status: str) -> int:
        return sum(1 for r in self.results if r["kind"] == kind and r["status"] == status)

    @property
    def counts(self) -> dict:
        return {
            "synced": self.count(SYNC, "synced"),
            "sync_failed": self.count(SYNC, FAILED),
            "sync_skipped": self.count(SYNC, SKIPPED),
            "created": sum(1 for r in self.results if r["kind"] == SYNC and r["action"] == "created"),
            "pointers_written": sum(1 for r in self.results if r["kind"] == SYNC and r["action"] == "pointer_written"),
            "deleted": self.count(DELETE, "deleted"),
            "records_removed": sum(len(r["removed"]) for r in self.results if r["kind"] == DELETE),
            "delete_failed": self.count(DELETE, FAILED),
            "delete_skipped": self.count(DELETE, SKIPPED),
            "reported": len(self.reported),
        }

    @property
    def failures(self) -> list[dict]:
        return [r for r in self.results if r["status"] == FAILED]

    def to_dict(self) -> dict:
        return {"counts": self.counts, "results": self.results, "reported": self.reported,
                "seconds": round(self.seconds, 3)}


def run_catchup(
    live: LiveSync,
    state: CatchupState,
    sync_ids: list[str],
    delete_ids: list[str],
    reported_ids: Iterable[str] = (),
    now: float | None = None,
) -> CatchupReport:
    """Sync and delete the given moods (what the sensor requested) and record the outcomes.

    A mood to delete is re-read first: one un-nuked since the sensor looked is left alone."""
    started = time.monotonic()
    report = CatchupReport()
    for result in live.sync_moods(sync_ids):
        state.finished(result, SYNC, time.time() if now is None else now)
        report.results.append({**result.to_dict(), "kind": SYNC})
    still_nuked, not_nuked = [], []
    for mood_id in delete_ids:
        mood = live.store.mood(mood_id) if ObjectId.is_valid(mood_id) else None
        (still_nuked if mood is not None and mood.deleted else not_nuked).append(mood_id)
    for mood_id in not_nuked:
        result = LiveResult(mood_id, SKIPPED, reason="no longer nuked (or gone): not deleted")
        state.finished(result, DELETE, time.time() if now is None else now)
        report.results.append({**result.to_dict(), "kind": DELETE})
    for result in live.delete_moods(still_nuked):
        state.finished(result, DELETE, time.time() if now is None else now)
        report.results.append({**result.to_dict(), "kind": DELETE})
    for mood_id in reported_ids:
        attempt = state.get(mood_id)
        if attempt is not None:
            report.reported.append(asdict(attempt))
    report.seconds = time.monotonic() - started
    return report
