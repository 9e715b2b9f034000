"""The backfill planner on hand-made moods and records (pure logic)."""

from __future__ import annotations

from datetime import datetime, timezone

from moods_pipeline.atproto.tid import parse_tid
from moods_pipeline.model import Mood, PdsRecord
from moods_pipeline.sync.mood_record import rkeys_for
from moods_pipeline.sync.planner import free_rkeys, plan_user

WHEN = datetime(2025, 10, 9, 19, 0, 28, 821000, tzinfo=timezone.utc)


def mood(n: int, text="feeling sunny", rkey=None, deleted=False, when=WHEN) -> Mood:
    return Mood(id=f"{n:024x}", user="auth0|u", text=text, when=when, deleted=deleted, rkey=rkey)


def record(rkey: str, ref: str | None, field="ref", text="feeling sunny") -> PdsRecord:
    value = {"$type": "computer.aesthetic.mood", "mood": text, "when": "2025-10-09T19:00:28.821Z"}
    if ref:
        value[field] = ref
    return PdsRecord(rkey=rkey, value=value)


def test_fresh_user_gets_one_create_per_valid_live_mood_with_deterministic_rkeys():
    moods = [mood(1), mood(2), mood(3, deleted=True), mood(4, text="   ")]
    plan = plan_user(moods, [])
    assert plan.live == 3
    assert [c.mood_id for c in plan.creates] == [moods[0].id, moods[1].id]
    expected = rkeys_for(moods)
    assert {c.mood_id: c.rkey for c in plan.creates} == {m: expected[m] for m in (moods[0].id, moods[1].id)}
    assert plan.creates[0].record == {
        "$type": "computer.aesthetic.mood", "mood": "feeling sunny",
        "when": "2025-10-09T19:00:28.821Z", "ref": moods[0].id,
    }
    assert plan.invalid == [(moods[3].id, plan.invalid[0][1])] and "empty" in plan.invalid[0][1]


def test_record_carrying_ref_without_pointer_gets_a_pointer_and_no_write():
    m = mood(1)
    plan = plan_user([m], [record("3aaaaaaaaaaa2", m.id)])
    assert plan.creates == []
    assert plan.pointer_writes == [(m.id, "3aaaaaaaaaaa2")]


def test_legacy_mongoid_record_counts_as_the_moods_record():
    m = mood(1, rkey="3aaaaaaaaaaa2")
    plan = plan_user([m], [record("3aaaaaaaaaaa2", m.id, field="mongoId")])
    assert plan.is_empty and plan.already_synced == 1


def test_pointer_to_another_moods_record_is_rewritten_to_the_right_one():
    a, b = mood(1, rkey="3bbbbbbbbbbb2"), mood(2, rkey="3bbbbbbbbbbb2")
    plan = plan_user([a, b], [record("3aaaaaaaaaaa2", a.id), record("3bbbbbbbbbbb2", b.id)])
    assert plan.pointer_writes == [(a.id, "3aaaaaaaaaaa2")]
    assert plan.already_synced == 1 and plan.creates == []


def test_dangling_pointer_or_idless_record_at_pointer_means_create():
    a = mood(1, rkey="3zzzzzzzzzzz2")
    plan = plan_user([a], [record("3zzzzzzzzzzz2", None)])
    assert [c.mood_id for c in plan.creates] == [a.id]
    assert plan.creates[0].rkey != "3zzzzzzzzzzz2"
    assert plan.orphans == ["3zzzzzzzzzzz2"]


def test_duplicates_and_orphans_are_reported_not_touched():
    a = mood(1, rkey="3bbbbbbbbbbb2")
    records = [record("3aaaaaaaaaaa2", a.id), record("3bbbbbbbbbbb2", a.id), record("3ccccccccccc2", "f" * 24)]
    plan = plan_user([a], records)
    assert plan.already_synced == 1  # the pointed record is chosen
    assert plan.duplicates == [(a.id, "3aaaaaaaaaaa2")]
    assert plan.orphans == ["3ccccccccccc2"]
    assert plan.is_empty


def test_nuked_moods_records_are_neither_orphans_nor_written():
    a = mood(1, deleted=True)
    plan = plan_user([a], [record("3aaaaaaaaaaa2", a.id)])
    assert plan.is_empty and plan.orphans == [] and plan.live == 0


def test_deterministic_rkey_taken_by_another_record_moves_to_next_microsecond():
    a = mood(1)
    wanted = rkeys_for([a])[a.id]
    plan = plan_user([a], [record(wanted, None)])
    micros, clock = parse_tid(plan.creates[0].rkey)
    assert (micros - 1, clock) == parse_tid(wanted)


def test_plan_is_stable_across_reruns_and_input_order():
    moods = [mood(n, when=WHEN) for n in range(1, 30)]  # same when: TIDs may collide
    first = plan_user(moods, [])
    second = plan_user(list(reversed(moods)), [])
    assert {(c.mood_id, c.rkey) for c in first.creates} == {(c.mood_id, c.rkey) for c in second.creates}
    assert len({c.rkey for c in first.creates}) == len(moods)


def test_free_rkeys_keeps_free_keys_and_avoids_taken():
    assert free_rkeys({"a": "3aaaaaaaaaaa2"}, set()) == {"a": "3aaaaaaaaaaa2"}
    moved = free_rkeys({"a": "3aaaaaaaaaaa2", "b": "3aaaaaaaaaaa2"}, {"3aaaaaaaaaaa2"})
    assert len(set(moved.values())) == 2 and "3aaaaaaaaaaa2" not in moved.values()
