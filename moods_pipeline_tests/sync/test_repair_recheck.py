"""recheck_delete(): when the fresh facts read right before a delete no longer justify it.

Pure logic on made-up moods and records (the integration tests in test_repair_deletes.py run
it against the real PDS and Mongo-wire server)."""

from __future__ import annotations

from datetime import datetime, timezone

from moods_pipeline.model import Mood, PdsRecord
from moods_pipeline.sync.repair import DELETE_OP, Write, recheck_delete

SUB, OTHER = "auth0|me", "auth0|someone-else"
WHEN = datetime(2025, 1, 1, tzinfo=timezone.utc)


def oid(n: int) -> str:
    return f"{0x68e8064c11885fb93a500000 + n:024x}"


def mood(n: int, *, user: str = SUB, rkey: str | None = None, deleted: bool = False) -> Mood:
    return Mood(id=oid(n), user=user, text=f"text {n}", when=WHEN, deleted=deleted, rkey=rkey)


def record(rkey: str, ref: str | None) -> PdsRecord:
    value = {"$type": "computer.aesthetic.mood", "mood": "x", "when": "2025-01-01T00:00:00.000Z"}
    if ref is not None:
        value["ref"] = ref
    return PdsRecord(rkey=rkey, value=value)


def delete(action: str, rkey: str, mood_id: str | None = None) -> Write:
    return Write(action, mood_id, rkey, DELETE_OP)


def check(write: Write, records: list[PdsRecord], moods: list[Mood]) -> str | None:
    by_rkey = {r.rkey: r for r in records}
    user_moods = {m.id: m for m in moods if m.user == SUB}
    return recheck_delete(write, SUB, by_rkey, user_moods, {m.id: m for m in moods})


def test_an_orphan_still_an_orphan_is_deleted():
    assert check(delete("delete_orphan", "k1"), [record("k1", None)], [mood(1, rkey="k9")]) is None
    assert check(delete("delete_orphan", "k1"), [record("k1", oid(404))], [mood(1)]) is None
    # a record carrying another user's mood id is no record of this user's moods
    assert check(delete("delete_orphan", "k1"), [record("k1", oid(2))], [mood(2, user=OTHER)]) is None


def test_an_orphan_naming_a_mood_of_this_user_now_is_kept():
    # created during the repair, pointer not written yet
    why = check(delete("delete_orphan", "k1"), [record("k1", oid(3))], [mood(3)])
    assert why and oid(3) in why and "live" in why
    # synced: pointer names it
    assert "pointer names it" in check(delete("delete_orphan", "k1"), [record("k1", oid(3))], [mood(3, rkey="k1")])
    # a nuked mood's record is that mood's, not an orphan
    assert "nuked" in check(delete("delete_orphan", "k1"), [record("k1", oid(3))], [mood(3, deleted=True)])


def test_a_pointer_alone_does_not_keep_a_record_carrying_no_id():
    # the mood's new record is created in the same batch; its pointer still names the id-less record
    assert check(delete("delete_orphan", "k1"), [record("k1", None)], [mood(1, rkey="k1")]) is None


def test_a_duplicate_is_deleted_only_while_another_record_stays_its_chosen_one():
    m = mood(1, rkey="k1")
    records = [record("k1", oid(1)), record("k2", oid(1))]
    assert check(delete("delete_duplicate", "k2", oid(1)), records, [m]) is None
    assert oid(1) in check(delete("delete_duplicate", "k1", oid(1)), records, [m])  # the pointer names it
    # the chosen record went away meanwhile: the duplicate is all that is left
    assert check(delete("delete_duplicate", "k2", oid(1)), records[1:], [m]) is not None
    # no pointer: the smallest rkey is the chosen one
    assert check(delete("delete_duplicate", "k2", oid(1)), records, [mood(1)]) is None
    assert "chosen record" in check(delete("delete_duplicate", "k1", oid(1)), records, [mood(1)])
    # a nuked mood's duplicate (policy keep) follows the same rule
    assert check(delete("delete_duplicate", "k2", oid(1)), records, [mood(1, rkey="k1", deleted=True)]) is None
    assert check(delete("delete_duplicate", "k1", oid(1)), records, [mood(1, rkey="k1", deleted=True)])


def test_a_duplicate_whose_record_or_mood_changed_is_kept():
    records = [record("k1", oid(1)), record("k2", oid(2))]
    assert "no longer carries" in check(delete("delete_duplicate", "k2", oid(1)), records, [mood(1, rkey="k1"), mood(2)])
    records = [record("k1", oid(1)), record("k2", oid(1))]
    assert "no longer in Mongo" in check(delete("delete_duplicate", "k2", oid(1)), records, [])
    assert "no longer belongs" in check(delete("delete_duplicate", "k2", oid(1)), records,
                                        [mood(1, user=OTHER, rkey="k1")])


def test_a_nuked_record_is_deleted_only_while_its_mood_is_nuked_and_this_users():
    records = [record("k1", oid(1))]
    assert check(delete("delete_nuked", "k1", oid(1)), records, [mood(1, rkey="k1", deleted=True)]) is None
    assert check(delete("delete_nuked", "k1", oid(1)), records, [mood(1, deleted=True)]) is None
    assert "live again" in check(delete("delete_nuked", "k1", oid(1)), records, [mood(1)])
    assert "record now" in check(delete("delete_nuked", "k1", oid(1)), records, [mood(1, rkey="k1")])
    assert "no longer belongs" in check(delete("delete_nuked", "k1", oid(1)), records,
                                        [mood(1, user=OTHER, deleted=True)])
    assert "no longer carries" in check(delete("delete_nuked", "k1", oid(1)), [record("k1", None)],
                                        [mood(1, deleted=True)])
