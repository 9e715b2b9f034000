"""What the backfill must do for one user: pure, no I/O.

Records are matched to moods by the id they carry (`ref`, or the legacy `mongoId`) first and
by Mongo's `atproto.rkey` pointer second. The planner only ever creates records and writes
pointers; duplicates and orphans are reported for the audit and repair, never deleted here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from moods_pipeline.mood_record import Invalid, build_record
from moods_pipeline.sync.model import Mood, PdsRecord
from moods_pipeline.tid import assign_rkeys, parse_tid, tid_from_parts


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Create:
    mood_id: str
    rkey: str
    record: dict


@dataclass
class UserPlan:
    live: int = 0
    creates: list[Create] = field(default_factory=list)
    pointer_writes: list[tuple[str, str]] = field(default_factory=list)  # (mood_id, rkey)
    already_synced: int = 0
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (mood_id, reason)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (mood_id, extra rkey)
    orphans: list[str] = field(default_factory=list)  # rkeys

    @property
    def is_empty(self) -> bool:
        return not self.creates and not self.pointer_writes


def when_ms(when: datetime) -> int:
    """Milliseconds since the epoch, exactly (no float rounding)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (when - EPOCH) // timedelta(milliseconds=1)


def free_rkeys(wanted: dict[str, str], taken: set[str]) -> dict[str, str]:
    """Move any wanted rkey that another record already holds to the next free microsecond.

    ``wanted`` maps mood id -> deterministic rkey; processed in mood-id order so the result
    does not depend on input order.
    """
    taken = set(taken)
    result: dict[str, str] = {}
    for mood_id in sorted(wanted):
        rkey = wanted[mood_id]
        micros, clock_id = parse_tid(rkey)
        while rkey in taken:
            micros += 1
            rkey = tid_from_parts(micros, clock_id)
        taken.add(rkey)
        result[mood_id] = rkey
    return result


def plan_user(moods: list[Mood], records: list[PdsRecord]) -> UserPlan:
    plan = UserPlan()
    by_ref: dict[str, list[PdsRecord]] = defaultdict(list)
    by_rkey = {r.rkey: r for r in records}
    for record in records:
        if record.mood_ref:
            by_ref[record.mood_ref].append(record)
    mood_ids = {m.id for m in moods}

    to_create: dict[str, dict] = {}
    valid_when_ms: dict[str, int] = {}
    for mood in moods:
        if not mood.live:
            continue
        plan.live += 1
        built = build_record(mood)
        if isinstance(built, Invalid):
            plan.invalid.append((mood.id, built.reason))
            continue
        valid_when_ms[mood.id] = when_ms(mood.when)
        carrying = sorted(by_ref.get(mood.id, []), key=lambda r: r.rkey)
        if carrying:
            pointed = next((r for r in carrying if r.rkey == mood.rkey), None)
            chosen = pointed or carrying[0]
            plan.duplicates.extend((mood.id, r.rkey) for r in carrying if r is not chosen)
            if mood.rkey == chosen.rkey:
                plan.already_synced += 1
            else:
                plan.pointer_writes.append((mood.id, chosen.rkey))
            continue
        pointed = by_rkey.get(mood.rkey) if mood.rkey else None
        if pointed is not None and pointed.mood_ref is None:
            # A record at the pointer that carries no id at all: it is this mood's record by
            # rkey (the audit judges its content).
            plan.already_synced += 1
            continue
        to_create[mood.id] = built

    if to_create:
        # Collisions are resolved over all of the user's valid live moods, so a mood's key does
        # not depend on which of the others happen to be synced already.
        wanted = assign_rkeys(valid_when_ms.items())
        rkeys = free_rkeys({m: wanted[m] for m in to_create}, set(by_rkey))
        plan.creates = [Create(mood_id, rkeys[mood_id], to_create[mood_id]) for mood_id in sorted(to_create)]

    pointed_rkeys = {m.rkey for m in moods if m.rkey}
    plan.orphans = sorted(
        r.rkey
        for r in records
        if (r.mood_ref not in mood_ids) and not (r.mood_ref is None and r.rkey in pointed_rkeys)
    )
    return plan
