"""What the backfill must do for one user: pure, no I/O.

Records are matched to moods by the id they carry (`ref`, or the legacy `mongoId`); among a
mood's records, the one Mongo's `atproto.rkey` names is its chosen record (else the smallest
rkey), as the audit defines it. A mood with no record carrying its id gets a new record even
if its pointer names some other record. The planner only ever creates records and
writes pointers; duplicates and orphans are reported for the audit and repair, never deleted here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from moods_pipeline.atproto.tid import parse_tid, tid_from_parts
from moods_pipeline.model import Mood, PdsRecord
from moods_pipeline.sync.mood_record import Invalid, build_record, rkeys_for


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
    for mood in moods:
        if not mood.live:
            continue
        plan.live += 1
        built = build_record(mood)
        if isinstance(built, Invalid):
            plan.invalid.append((mood.id, built.reason))
            continue
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
        # No record carries this mood's id. Whatever Mongo's pointer names (nothing, another
        # mood's record, a record without an id) is not this mood's record: the invariant wants
        # one that carries its `ref`, so create it; the pointer moves with the create.
        to_create[mood.id] = built

    if to_create:
        # Collisions are resolved over all of the user's moods, live and nuked, so a mood's key
        # depends neither on which others are synced already nor on nuking.
        wanted = rkeys_for(moods)
        rkeys = free_rkeys({m: wanted[m] for m in to_create}, set(by_rkey))
        plan.creates = [Create(mood_id, rkeys[mood_id], to_create[mood_id]) for mood_id in sorted(to_create)]

    plan.orphans = sorted(r.rkey for r in records if r.mood_ref not in mood_ids)
    return plan
