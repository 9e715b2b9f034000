"""Follows the PDS firehose for ``computer.aesthetic.mood`` commits: confirms that records
arrived, measures sync latency, reports records that match no Mongo mood. Plain Python.

    follower = FirehoseFollower(store, pds_url, state_dir, cursor=seq)  # seq: where to read from
    report = follower.drain(max_seconds=20)      # what arrived since then
    report.cursor                                # where the next drain reads from
    follower.stats()                             # p50/p95 latency and counts

Where to read from (the seq of the last event processed) is the caller's: the firehose sensor
keeps it in its Dagster cursor (``defs/live/sensors.py``), as Dagster means sensor cursors to be
used. Given none (a sensor's first tick, or a cursor an operator cleared), the follower starts
from the seq its statistics were counted through, if it has statistics for this PDS (the
upgrade from when that file was the only cursor: ``resumed_from`` says ``"file"``), else from
the live stream.

Statistics: ``<MOODS_STATE_DIR>/firehose/follower.json`` (through ``storage.files``: a local
path or an object store), one JSON object replaced whole after each processed batch of commits:
every count and sample, together with the seq they are counted through (``cursor``). Events
at or below that seq are read again but never counted again, so a tick that dies after a save
(its Dagster cursor not advanced) neither loses nor double-counts anything, and one that dies
before a save loses the batch's counts and its advance alike. A state whose PDS URL differs
from the one given, or a cursor the PDS calls ``FutureCursor`` (a reset PDS), starts over from
the live stream (a warning says so).

For each create or update of a mood record in a commit:

- **confirmed**: the record's ``ref`` (or legacy ``mongoId``) names a Mongo mood whose user's
  ``atproto.did`` is the commit's repo;
- **unmatched**: it names no mood, a mood of another user, or carries no id (kept with DID,
  rkey, the id it carries and the reason; never its text);
- **latency** (docs/interface.md "Latency"): for the first create of a confirmed mood whose Mongo
  ``when`` is at or after the follower's start (``started_at``, stored in the state on first
  use), the seconds from ``when`` to the commit's time. Backfilled history is excluded, and so
  is any mood seen with a latency before (a re-create after un-nuking).

The first drain ever follows the live stream (no cursor) and the follower starts then; the
cursor is set by the first event of any kind seen, so events between drains are never missed
after that.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Callable, Iterable

from upath import UPath

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.firehose import Commit, FirehoseError, iter_commits
from moods_pipeline.storage.files import read_json, state_path, write_json_atomic

log = logging.getLogger(__name__)

__all__ = ["FollowerState", "DrainReport", "FirehoseFollower", "percentile", "latency_stats", "STATE_FILE"]

STATE_FILE = PurePosixPath("firehose") / "follower.json"
MAX_SAMPLES = 10_000  # latency samples kept (the newest)
MAX_UNMATCHED = 1_000  # unmatched records kept (the newest)
STATE_VERSION = 1


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between ranks; None if empty."""
    data = sorted(values)
    if not data:
        return None
    if len(data) == 1:
        return float(data[0])
    rank = (len(data) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return float(data[low] + (data[high] - data[low]) * (rank - low))


@dataclass
class FollowerState:
    pds_url: str
    started_at: str  # ISO: latency counts moods whose `when` is at or after this
    cursor: int | None = None  # seq of the last event counted (read again, never counted again)
    version: int = STATE_VERSION
    commits: int = 0  # commits with mood ops processed
    ops: int = 0  # mood ops (create, update, delete)
    seen: int = 0  # records created or updated
    confirmed: int = 0
    unmatched: int = 0
    unreadable: int = 0  # create/update whose record the commit did not carry
    deletes: int = 0
    latency_count: int = 0  # samples ever taken (the list keeps the newest MAX_SAMPLES)
    latencies: list = field(default_factory=list)  # [mood_id, seconds, commit time ISO]
    unmatched_records: list = field(default_factory=list)  # {did, rkey, ref, reason, seq, time}
    drains: int = 0
    last_drain_at: str | None = None
    last_event_at: str | None = None

    @classmethod
    def from_dict(cls, data: dict) -> "FollowerState":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def counts(self) -> dict:
        return {k: getattr(self, k) for k in ("commits", "ops", "seen", "confirmed", "unmatched", "unreadable",
                                              "deletes", "latency_count")}


def latency_stats(state: FollowerState, since: datetime | None = None) -> dict:
    """p50/p95/max latency (seconds) over the kept samples (those committed at or after
    ``since``, if given), with the counts."""
    samples = [s for s in state.latencies if since is None or (_parse(s[2]) or since) >= since]
    values = [float(s[1]) for s in samples]
    stats = {
        **state.counts(),
        "samples": len(values),
        "p50_s": percentile(values, 50),
        "p95_s": percentile(values, 95),
        "max_s": max(values) if values else None,
        "started_at": state.started_at,
        "cursor": state.cursor,
        "last_event_at": state.last_event_at,
    }
    return stats


@dataclass
class DrainReport:
    events_from: int | None
    cursor: int | None
    commits: int = 0
    ops: int = 0
    seen: int = 0
    confirmed: int = 0
    unmatched: int = 0
    unreadable: int = 0
    deletes: int = 0
    latencies: list = field(default_factory=list)  # seconds, this drain
    stopped_because: str | None = None
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def changed(self) -> bool:
        return bool(self.ops)


class FirehoseFollower:
    """Drains the firehose since the persisted cursor and keeps counts and latency samples."""

    def __init__(
        self,
        store,
        pds_url: str,
        state_dir: str | os.PathLike | UPath,
        *,
        cursor: int | None = None,
        clock: Callable[[], float] = time.time,
        commits: Callable[..., Iterable[Commit]] = iter_commits,
        save_every: int = 200,
    ) -> None:
        self.store = store
        self.pds_url = pds_url.rstrip("/")
        self.state_dir = state_path(state_dir)
        self.path = self.state_dir / STATE_FILE
        self.clock = clock
        self._commits = commits
        self.save_every = max(1, save_every)
        self._dids: dict[str, str | None] = {}  # did -> sub
        self.state = self._load()
        # Where the stream is read from: the caller's cursor, else the statistics' own.
        self.resumed_from = "cursor" if cursor is not None else "file" if self.state.cursor is not None else "live"
        self.position: int | None = cursor if cursor is not None else self.state.cursor
        if self.resumed_from == "file":
            log.info("firehose follower: no cursor given; starting from seq %s kept in %s", self.position, self.path)

    # -- state --

    @staticmethod
    def load_state(state_dir: str | os.PathLike | UPath) -> FollowerState | None:
        data = read_json(state_path(state_dir) / STATE_FILE)
        return None if data is None else FollowerState.from_dict(data)

    def _fresh(self) -> FollowerState:
        now = datetime.fromtimestamp(self.clock(), tz=timezone.utc)
        return FollowerState(pds_url=self.pds_url, started_at=_iso(now))

    def _load(self) -> FollowerState:
        state = self.load_state(self.state_dir)
        if state is None:
            state = self._fresh()
            log.info("firehose follower starts now (%s) on %s", state.started_at, self.pds_url)
            self._save(state)
            return state
        if state.pds_url != self.pds_url:
            log.warning("firehose follower state is for %s, not %s: starting over", state.pds_url, self.pds_url)
            state = self._fresh()
            self._save(state)
        return state

    def _save(self, state: FollowerState | None = None) -> None:
        write_json_atomic(self.path, asdict(state or self.state))

    @property
    def started_at(self) -> datetime:
        return _parse(self.state.started_at)  # type: ignore[return-value]

    # -- draining --

    def drain(
        self, max_seconds: float = 10.0, idle_s: float | None = 2.0, max_events: int | None = None
    ) -> DrainReport:
        """Process the commits since the cursor for at most ``max_seconds`` (less if the stream
        goes idle for ``idle_s``); persist after every ``save_every`` commits and at the end."""
        began = time.monotonic()
        report = DrainReport(events_from=self.position, cursor=self.position)
        stream = self._commits(self.pds_url, cursor=self.position, collection=MOOD_COLLECTION,
                               stop_after_s=max_seconds, idle_s=idle_s, max_events=max_events)
        pending: list[Commit] = []
        try:
            for commit in stream:
                pending.append(commit)
                if len(pending) >= self.save_every:
                    self._process(pending, report)
                    pending = []
                    self._advance(getattr(stream, "last_seq", None))
            self._process(pending, report)
            pending = []
            self._advance(getattr(stream, "last_seq", None))
            report.stopped_because = getattr(stream, "stopped_because", None)
        except FirehoseError as exc:
            # What was processed is saved with its cursor; the rest comes next time.
            if pending:
                self._process(pending, report)
                self._advance(pending[-1].seq)
            report.error = str(exc)
            if exc.error == "FutureCursor":
                log.warning("firehose cursor %s is ahead of the PDS (reset?): following live from now",
                            self.position)
                # Both: the reset PDS numbers its events from 1 again, which must be counted.
                self.position = None
                self.state.cursor = None
            else:
                log.warning("firehose drain stopped: %s", exc)
        finally:
            close = getattr(stream, "close", None)
            if callable(close):
                close()
        self.state.drains += 1
        self.state.last_drain_at = _iso(datetime.fromtimestamp(self.clock(), tz=timezone.utc))
        self._save()
        report.cursor = self.position
        report.seconds = time.monotonic() - began
        log.info("firehose drain: %d commits, %d records seen, %d confirmed, %d unmatched, %d latencies; cursor %s",
                 report.commits, report.seen, report.confirmed, report.unmatched, len(report.latencies), report.cursor)
        return report

    def _advance(self, seq: int | None) -> None:
        if seq is not None and (self.state.cursor is None or seq > self.state.cursor):
            self.state.cursor = seq
        if seq is not None and (self.position is None or seq > self.position):
            self.position = seq
        self._save()

    def _sub_of(self, did: str) -> str | None:
        if did not in self._dids:
            user = self.store.user_by_did(did)
            self._dids[did] = user.sub if user else None
        return self._dids[did]

    def _process(self, commits: list[Commit], report: DrainReport) -> None:
        if not commits:
            return
        refs: set[str] = set()
        for commit in commits:
            for op in commit.ops:
                if op.record:
                    ref = op.record.get("ref") or op.record.get("mongoId")
                    if isinstance(ref, str):
                        refs.add(ref)
        moods = self.store.moods_by_id(sorted(refs))
        started = self.started_at
        measured = {s[0] for s in self.state.latencies}
        state = self.state
        for commit in commits:
            if commit.seq is not None and state.cursor is not None and commit.seq <= state.cursor:
                continue  # counted before: the caller's cursor lagged behind the saved statistics
            state.commits += 1
            report.commits += 1
            if commit.time is not None:
                state.last_event_at = _iso(commit.time)
            for op in commit.ops:
                if op.collection != MOOD_COLLECTION:
                    continue
                state.ops += 1
                report.ops += 1
                if op.action == "delete":
                    state.deletes += 1
                    report.deletes += 1
                    log.debug("firehose seq %s: %s deleted %s", commit.seq, commit.did, op.rkey)
                    continue
                state.seen += 1
                report.seen += 1
                if op.record is None:
                    state.unreadable += 1
                    report.unreadable += 1
                    continue
                ref = op.record.get("ref") or op.record.get("mongoId")
                mood = moods.get(ref) if isinstance(ref, str) else None
                reason = None
                if not isinstance(ref, str) or not ref:
                    reason = "record carries no mood id"
                elif mood is None:
                    reason = "no Mongo mood has this id"
                elif mood.user != self._sub_of(commit.did):
                    reason = "the mood belongs to another user"
                if reason:
                    state.unmatched += 1
                    report.unmatched += 1
                    state.unmatched_records.append({
                        "did": commit.did, "rkey": op.rkey, "ref": ref if isinstance(ref, str) else None,
                        "reason": reason, "seq": commit.seq,
                        "time": _iso(commit.time) if commit.time else None,
                    })
                    log.debug("firehose seq %s: %s/%s unmatched (%s)", commit.seq, commit.did, op.rkey, reason)
                    continue
                state.confirmed += 1
                report.confirmed += 1
                when = mood.when
                if (op.action == "create" and isinstance(when, datetime) and commit.time is not None
                        and _aware(when) >= started and ref not in measured):
                    seconds = (commit.time - _aware(when)).total_seconds()
                    state.latencies.append([ref, round(seconds, 3), _iso(commit.time)])
                    state.latency_count += 1
                    measured.add(ref)
                    report.latencies.append(seconds)
                    log.debug("firehose seq %s: mood %s arrived after %.3f s", commit.seq, ref, seconds)
                else:
                    log.debug("firehose seq %s: mood %s confirmed at %s", commit.seq, ref, op.rkey)
        del state.latencies[:-MAX_SAMPLES]
        del state.unmatched_records[:-MAX_UNMATCHED]

    def stats(self, since: datetime | None = None) -> dict:
        return latency_stats(self.state, since)
