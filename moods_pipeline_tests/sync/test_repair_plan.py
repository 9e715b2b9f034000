"""plan_repair(): actions per audit status, and convergence for any mix of moods and records."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moods_pipeline.atproto.tid import mood_tid, parse_tid, tid_from_parts
from moods_pipeline.model import Mood, PdsRecord, UserAccount, iso_when
from moods_pipeline.sync.mood_record import Invalid, build_record, mood_when_ms
from moods_pipeline.sync.reconcile import PROBLEM_STATUSES, reconcile
from moods_pipeline.sync.repair_plan import (
    ACTIONS,
    CREATE_OP,
    DELETE_OP,
    UPDATE_OP,
    RepairPlan,
    apply_plan_in_memory,
    plan_repair,
)

USER = UserAccount(sub="auth0|alice", did="did:plc:alice", handle="alice")
T0 = datetime(2025, 10, 9, 19, 0, 28, 821000, tzinfo=timezone.utc)
COLLECTION = "computer.aesthetic.mood"
DROP = object()


def oid(n: int) -> str:
    return f"{0x68e8064c11885fb93a500000 + n:024x}"


def tid(n: int) -> str:
    return tid_from_parts(1_700_000_000_000_000 + n * 1000, 7)


def mood(n: int, text="feeling sunny {n}", when=None, deleted=False, rkey=None) -> Mood:
    if isinstance(text, str) and "{n}" in text:
        text = text.format(n=n)
    return Mood(id=oid(n), user=USER.sub, text=text, when=T0 + timedelta(minutes=n) if when is None else when,
                deleted=deleted, rkey=rkey)


def good(m: Mood, rkey: str, **changes) -> PdsRecord:
    value = build_record(m)
    assert not isinstance(value, Invalid), value
    value = dict(value)
    for key, new in changes.items():
        if new is DROP:
            value.pop(key, None)
        else:
            value[key] = new
    return PdsRecord(rkey=rkey, value=value)


def plan(moods, records, **kw) -> RepairPlan:
    return plan_repair(USER, moods, records, **kw)


def nonzero(p: RepairPlan) -> dict:
    return {k: v for k, v in p.counts().items() if v}


# --- examples: one per action --------------------------------------------------------------


def test_action_names_and_an_empty_plan_for_a_synced_user():
    assert ACTIONS == ("create_record", "rewrite_content", "rewrite_legacy", "delete_duplicate", "delete_nuked",
                       "delete_orphan", "write_pointer", "unset_pointer")
    m = mood(1, rkey=tid(1))
    p = plan([m], [good(m, tid(1))], delete_orphans=True, rewrite_legacy=True, nuke_policy="delete")
    assert p.is_empty and len(p) == 0
    assert p.counts() == {a: 0 for a in ACTIONS}
    assert p.writes() == [] and p.pointer_updates() == [] and p.pointer_unsets() == []
    assert (p.did, p.sub) == (USER.did, USER.sub)


def test_create_record_at_the_deterministic_rkey_then_write_pointer():
    m = mood(1, rkey=tid(99))  # a dangling pointer too: missing_on_pds wins, the pointer is rewritten
    p = plan([m], [])
    rkey = mood_tid(m.id, mood_when_ms(m))
    assert nonzero(p) == {"create_record": 1, "write_pointer": 1}
    assert p.writes() == [{"$type": CREATE_OP, "collection": COLLECTION, "rkey": rkey, "value": build_record(m)}]
    assert p.pointer_updates() == [(m.id, rkey)]


def test_create_record_takes_the_next_free_microsecond_when_its_rkey_is_taken():
    m = mood(1)
    rkey = mood_tid(m.id, mood_when_ms(m))
    micros, clock = parse_tid(rkey)
    squatter = PdsRecord(rkey, {"mood": "someone else", "ref": oid(500)})
    p = plan([m], [squatter])
    assert [w["rkey"] for w in p.writes()] == [tid_from_parts(micros + 1, clock)]
    # that one taken too, and an orphan deletion in the same plan does not free the rkey
    second = PdsRecord(tid_from_parts(micros + 1, clock), {})
    p = plan([m], [squatter, second], delete_orphans=True)
    creates = [w for w in p.writes() if w["$type"] == CREATE_OP]
    assert [w["rkey"] for w in creates] == [tid_from_parts(micros + 2, clock)]
    assert nonzero(p) == {"create_record": 1, "delete_orphan": 2, "write_pointer": 1}


def test_create_rkeys_agree_with_the_backfill_planner():
    planner = pytest.importorskip("moods_pipeline.sync.planner")
    moods = [mood(n) for n in range(5)] + [mood(9, when=T0), mood(10, deleted=True), mood(11, text="")]
    taken = PdsRecord(mood_tid(moods[2].id, mood_when_ms(moods[2])), {"mood": "squat"})
    records = [good(moods[0], tid(1)), taken]
    ours = {(a.mood_id, a.rkey) for a in plan(moods, records).of("create_record")}
    theirs = {(c.mood_id, c.rkey) for c in planner.plan_user(moods, records).creates}
    assert ours == theirs and len(ours) == 5


def test_stale_pointer_writes_the_pointer_and_never_touches_the_other_moods_record():
    m, other = mood(1, rkey=tid(2)), mood(2, rkey=tid(2))
    p = plan([m, other], [good(m, tid(1)), good(other, tid(2))])
    assert nonzero(p) == {"write_pointer": 1}
    assert p.pointer_updates() == [(m.id, tid(1))]


def test_stale_pointer_with_wrong_content_also_rewrites_content():
    m = mood(1, rkey=tid(9))
    p = plan([m], [good(m, tid(1), mood=DROP, text="feeling sunny 1")])
    assert nonzero(p) == {"rewrite_content": 1, "write_pointer": 1}
    assert p.writes() == [{"$type": UPDATE_OP, "collection": COLLECTION, "rkey": tid(1), "value": build_record(m)}]
    assert p.pointer_updates() == [(m.id, tid(1))]


def test_content_mismatch_rewrites_at_the_same_rkey():
    m = mood(1, rkey=tid(1))
    drifted = good(m, tid(1), when=iso_when(m.when + timedelta(seconds=2)))
    p = plan([m], [drifted])
    assert nonzero(p) == {"rewrite_content": 1}
    assert p.writes()[0]["value"]["when"] == iso_when(m.when)
    assert plan([m], [drifted], when_tolerance_ms=2000).is_empty


def test_pointer_missing_writes_the_pointer():
    m = mood(1)
    p = plan([m], [good(m, tid(3))])
    assert nonzero(p) == {"write_pointer": 1} and p.pointer_updates() == [(m.id, tid(3))]


def test_legacy_is_rewritten_only_when_asked_and_content_rewrite_covers_it():
    m = mood(1, rkey=tid(1))
    legacy = good(m, tid(1), ref=DROP, mongoId=m.id)
    assert plan([m], [legacy]).is_empty
    p = plan([m], [legacy], rewrite_legacy=True)
    assert nonzero(p) == {"rewrite_legacy": 1}
    assert p.writes() == [{"$type": UPDATE_OP, "collection": COLLECTION, "rkey": tid(1), "value": build_record(m)}]
    legacy_wrong = good(m, tid(1), ref=DROP, mongoId=m.id, mood="other")
    assert nonzero(plan([m], [legacy_wrong], rewrite_legacy=True)) == {"rewrite_content": 1}
    # no pointer as well: both fixes
    m0 = mood(1)
    assert nonzero(plan([m0], [legacy], rewrite_legacy=True)) == {"rewrite_legacy": 1, "write_pointer": 1}


def test_delete_duplicate_keeps_the_pointed_record_else_the_smallest_rkey():
    m = mood(1, rkey=tid(3))
    records = [good(m, tid(1)), good(m, tid(2), ref=DROP, mongoId=m.id), good(m, tid(3))]
    p = plan([m], records)
    assert nonzero(p) == {"delete_duplicate": 2}
    assert p.writes() == [{"$type": DELETE_OP, "collection": COLLECTION, "rkey": tid(n)} for n in (1, 2)]
    p = plan([replace(m, rkey=None)], records)
    assert [w["rkey"] for w in p.writes()] == [tid(2), tid(3)]
    assert p.pointer_updates() == [(m.id, tid(1))]


def test_nuked_records_are_deleted_only_under_the_delete_policy():
    nuked = mood(1, deleted=True, rkey=tid(1))
    unpointed = mood(2, deleted=True)
    records = [good(nuked, tid(1)), good(nuked, tid(5)), good(unpointed, tid(2))]
    p = plan([nuked, unpointed], records, nuke_policy="keep")
    assert nonzero(p) == {"delete_duplicate": 1}  # a further copy is not history
    p = plan([nuked, unpointed], records, nuke_policy="delete")
    assert nonzero(p) == {"delete_nuked": 3, "unset_pointer": 1}
    assert sorted(w["rkey"] for w in p.writes()) == [tid(1), tid(2), tid(5)]
    assert p.pointer_unsets() == [nuked.id]
    # a nuked mood with no record: under "keep" nothing to do, whatever its pointer; under
    # "delete" its pointer (if any) is removed too, without any write to the PDS
    pointed = mood(3, deleted=True, rkey=tid(8))
    assert plan([pointed], [], nuke_policy="keep").is_empty
    p = plan([pointed, mood(4, deleted=True), mood(5, deleted=True, rkey="")], [], nuke_policy="delete")
    assert nonzero(p) == {"unset_pointer": 1} and p.pointer_unsets() == [pointed.id] and p.writes() == []
    moods_after, _ = apply_plan_in_memory([pointed], [], p)
    assert moods_after[0].rkey is None


def test_a_nuked_mood_without_record_loses_its_pointer_beside_other_work():
    live, nuked = mood(1), mood(2, deleted=True, rkey=tid(2))  # tid(2) does not exist
    p = plan([live, nuked], [], nuke_policy="delete")
    assert nonzero(p) == {"create_record": 1, "write_pointer": 1, "unset_pointer": 1}
    assert p.pointer_unsets() == [nuked.id]
    assert nonzero(plan([live, nuked], [], nuke_policy="keep")) == {"create_record": 1, "write_pointer": 1}


def test_orphans_are_deleted_only_when_asked():
    m = mood(1, rkey=tid(1))
    records = [good(m, tid(1)), PdsRecord(tid(2), {"mood": "?"}), PdsRecord(tid(3), {"ref": oid(404)})]
    assert plan([m], records).is_empty
    p = plan([m], records, delete_orphans=True)
    assert nonzero(p) == {"delete_orphan": 2}
    assert [a.mood_id for a in p.actions] == [None, None]


def test_invalid_moods_get_no_action_but_their_duplicates_go():
    bad = mood(1, text="   ", rkey=tid(9))
    value = {"$type": COLLECTION, "mood": "   ", "when": iso_when(bad.when), "ref": bad.id}
    assert plan([bad], [], delete_orphans=True, rewrite_legacy=True).is_empty
    p = plan([bad], [PdsRecord(tid(1), value), PdsRecord(tid(2), dict(value))])
    assert nonzero(p) == {"delete_duplicate": 1} and p.writes()[0]["rkey"] == tid(2)


def test_an_id_less_record_at_the_pointer_is_replaced_not_rewritten():
    m = mood(1, rkey=tid(1))
    idless = PdsRecord(tid(1), {"$type": COLLECTION, "text": "feeling sunny 1", "when": iso_when(m.when)})
    p = plan([m], [idless], delete_orphans=True)
    assert nonzero(p) == {"create_record": 1, "delete_orphan": 1, "write_pointer": 1}
    created = p.of("create_record")[0].rkey
    assert p.pointer_updates() == [(m.id, created)] and created != tid(1)


def test_writes_come_creates_then_updates_then_deletes():
    a, b, c = mood(1), mood(2, rkey=tid(2)), mood(3, rkey=tid(3))
    records = [good(b, tid(2), mood="x"), good(c, tid(3)), good(c, tid(4)), PdsRecord(tid(5), {})]
    p = plan([a, b, c], records, delete_orphans=True)
    assert [w["$type"] for w in p.writes()] == [CREATE_OP, UPDATE_OP, DELETE_OP, DELETE_OP]


def test_a_given_reconciliation_gives_the_same_plan_and_an_outdated_one_is_refused():
    m1, m2 = mood(1, rkey=tid(9)), mood(2)
    records = [good(m1, tid(1), mood="x"), good(m1, tid(4)), PdsRecord(tid(5), {})]
    kw = dict(nuke_policy="delete", delete_orphans=True, rewrite_legacy=True, when_tolerance_ms=10)
    df = reconcile(USER, [m1, m2], records, when_tolerance_ms=10)
    assert plan_repair(USER, [m1, m2], records, df, **kw).actions == plan([m1, m2], records, **kw).actions
    with pytest.raises(ValueError, match="reconcile again"):
        plan_repair(USER, [m1], records, df, **kw)
    with pytest.raises(ValueError, match="reconcile again"):
        plan_repair(USER, [m1, m2], records[:2], df, **kw)
    with pytest.raises(ValueError, match="when_tolerance_ms"):
        plan_repair(USER, [m1, m2], records, df, **{**kw, "when_tolerance_ms": 1000})
    with pytest.raises(ValueError):
        plan([m1], records, nuke_policy="sometimes")


def test_plan_repr_never_shows_mood_text():
    m = mood(1, text="my very private feeling", rkey=tid(1))
    p = plan([m, mood(2, text="another private one")], [good(m, tid(1), mood="x")])
    assert len(p.writes()) == 2
    assert "private" not in repr(p) and all("private" not in repr(a) for a in p.actions)


def test_apply_plan_in_memory_refuses_what_the_pds_would_refuse():
    m = mood(1)
    p = plan([m], [])
    rkey = p.writes()[0]["rkey"]
    with pytest.raises(ValueError):
        apply_plan_in_memory([m], [PdsRecord(rkey, {})], p)
    p = plan([m], [good(m, tid(1), mood="x")])
    with pytest.raises(ValueError):
        apply_plan_in_memory([m], [], p)


# --- property: repair converges for any mix ------------------------------------------------

SECRET = "SECRET-mood-text"
VARIANTS = (
    "correct", "correct", "wrong_mood", "drift_in", "drift_out", "offset", "legacy", "legacy_wrong", "text",
    "no_when", "bad_when", "naive_when", "type", "idless", "both_ids",
)
MOOD_KINDS = ("valid",) * 12 + ("empty", "long", "not_text", "early", "late", "bad_id")


@st.composite
def scenarios(draw):
    tolerance = draw(st.sampled_from([0, 1, 1000]))
    n = draw(st.integers(0, 7))
    numbers = draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n, unique=True))
    same_when = T0 + timedelta(milliseconds=draw(st.integers(0, 5)))
    moods: list[Mood] = []
    for i, number in enumerate(numbers):
        kind = draw(st.sampled_from(MOOD_KINDS))
        text = f"{SECRET}-{i} {draw(st.sampled_from(['☀️', 'ok', 'two  words']))}"
        when = draw(st.one_of(
            st.just(same_when),  # same millisecond: exercises TID collision handling
            st.integers(0, 8_000_000_000_000).map(lambda ms: datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)),
        ))
        mood_id = oid(number)
        if kind == "empty":
            text = draw(st.sampled_from(["", "   "]))
        elif kind == "long":
            text = SECRET + "x" * 5000
        elif kind == "not_text":
            text = draw(st.sampled_from([None, 5]))
        elif kind == "early":
            when = datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)
        elif kind == "late":
            when = datetime(2300, 1, 1, tzinfo=timezone.utc)
        elif kind == "bad_id":
            mood_id = f"not-an-objectid-{number}"
        deleted = draw(st.sampled_from([False, False, False, True]))
        moods.append(Mood(id=mood_id, user=USER.sub, text=text, when=when, deleted=deleted))

    # rkeys: random TIDs, the moods' deterministic rkeys and their next microseconds, a non-TID
    special = []
    for m in moods:
        try:
            micros, clock = parse_tid(mood_tid(m.id, mood_when_ms(m)))
        except (ValueError, TypeError, AttributeError):
            continue
        special += [tid_from_parts(micros, clock), tid_from_parts(micros + 1, clock)]
    used: set[str] = set()

    def new_rkey() -> str:
        options = [st.integers(0, 2**20).map(lambda k: tid_from_parts(1_600_000_000_000_000 + k, k % 1024)),
                   st.just("self")]
        if special:
            options.append(st.sampled_from(special))
        rkey = draw(st.one_of(*options))
        while rkey in used:
            rkey = tid_from_parts(1_500_000_000_000_000 + len(used), 1)
        used.add(rkey)
        return rkey

    records: list[PdsRecord] = []
    own: dict[str, list[str]] = {}
    for m in moods:
        built = build_record(m)
        if isinstance(built, Invalid):
            built = {"$type": COLLECTION, "mood": m.text if isinstance(m.text, str) else "x",
                     "when": iso_when(T0), "ref": m.id}
        base_when = m.when if isinstance(m.when, datetime) and 1970 <= m.when.year < 9999 else T0
        for _ in range(draw(st.integers(0, 3))):
            value = dict(built)
            variant = draw(st.sampled_from(VARIANTS))
            if variant == "wrong_mood":
                value["mood"] = f"{SECRET} changed"
            elif variant in ("drift_in", "drift_out"):
                drift = draw(st.integers(0, tolerance) if variant == "drift_in" else st.integers(tolerance + 1, 10**8))
                drift *= draw(st.sampled_from([1, -1]))
                value["when"] = iso_when(base_when + timedelta(milliseconds=drift))
            elif variant == "offset":
                value["when"] = (base_when.astimezone(timezone(timedelta(hours=2)))).isoformat()
            elif variant in ("legacy", "legacy_wrong"):
                value["mongoId"] = value.pop("ref")
                if variant == "legacy_wrong":
                    value["mood"] = "wrong"
            elif variant == "text":
                value["text"] = value.pop("mood")
            elif variant == "no_when":
                del value["when"]
            elif variant == "bad_when":
                value["when"] = "not a date"
            elif variant == "naive_when":
                value["when"] = value["when"].rstrip("Z")
            elif variant == "type":
                value["$type"] = "app.bsky.feed.post"
            elif variant == "idless":
                del value["ref"]
            elif variant == "both_ids":
                value["mongoId"] = value["ref"]
            records.append(PdsRecord(new_rkey(), value))
            own.setdefault(m.id, []).append(records[-1].rkey)
    for _ in range(draw(st.integers(0, 3))):
        value = draw(st.sampled_from([
            {"$type": COLLECTION, "mood": f"{SECRET} orphan", "when": iso_when(T0)},
            {"$type": COLLECTION, "mood": f"{SECRET} orphan", "when": iso_when(T0), "ref": oid(99_999)},
            {"mongoId": oid(99_998), "text": SECRET},
            {},
        ]))
        records.append(PdsRecord(new_rkey(), value))

    # pointers: none, empty, any record's rkey, a dangling rkey, the mood's deterministic rkey
    rkeys = [r.rkey for r in records]
    with_pointers = []
    for m in moods:
        options = [st.none(), st.just(""), st.just(tid(123_456))]
        if rkeys:
            options += [st.sampled_from(rkeys)] * 3
        if special:
            options.append(st.sampled_from(special))
        if m.id in own:
            options += [st.sampled_from(own[m.id])] * 6
        with_pointers.append(replace(m, rkey=draw(st.one_of(*options))))
    nuke_policy = draw(st.sampled_from(["keep", "delete"]))
    return with_pointers, records, nuke_policy, tolerance


def valid_live(moods):
    return [m for m in moods if m.live and not isinstance(build_record(m), Invalid)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_repair_converges(scenario):
    moods, records, nuke_policy, tolerance = scenario
    kw = dict(nuke_policy=nuke_policy, when_tolerance_ms=tolerance)
    before = reconcile(USER, moods, records, rewrite_legacy=True, **kw)
    p = plan_repair(USER, moods, records, before, delete_orphans=True, rewrite_legacy=True, **kw)
    assert p.actions == plan_repair(USER, moods, records, delete_orphans=True, rewrite_legacy=True, **kw).actions

    moods2, records2 = apply_plan_in_memory(moods, records, p)  # raises where the PDS would refuse
    after = reconcile(USER, moods2, records2, rewrite_legacy=True, **kw)
    assert not after["problem"].any(), after[after["problem"]][["mood_id", "rkey", "status", "detail"]]
    assert set(after["status"]) <= {"synced", "invalid", "nuked", "nuked_on_pds"}
    assert plan_repair(USER, moods2, records2, delete_orphans=True, rewrite_legacy=True, **kw).is_empty

    for m in valid_live(moods2):
        carrying = [r for r in records2 if r.mood_ref == m.id]
        assert len(carrying) == 1, m.id
        assert carrying[0].value.get("ref") == m.id
        assert m.rkey == carrying[0].rkey
    # invalid and nuked moods: no pointer writes; invalid moods' records only lose duplicates
    pointed = {mood_id for mood_id, _ in p.pointer_updates()}
    assert not pointed & {m.id for m in moods if not m.live or isinstance(build_record(m), Invalid)}
    if nuke_policy == "keep":
        assert not p.of("delete_nuked") and not p.pointer_unsets()
    else:  # under "delete" no nuked mood keeps a pointer
        assert not [m.id for m in moods2 if m.deleted and m.rkey]
    # a mood already synced is left alone
    untouched = set(before.loc[before["status"] == "synced", "rkey"])
    assert not untouched & {w["rkey"] for w in p.writes()}
    # privacy: no text in details, before or after
    for df in (before, after):
        assert not df["detail"].str.contains(SECRET, regex=False).any()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_repair_without_orphan_deletion_leaves_only_orphans(scenario):
    moods, records, nuke_policy, tolerance = scenario
    kw = dict(nuke_policy=nuke_policy, when_tolerance_ms=tolerance)
    p = plan_repair(USER, moods, records, **kw)
    moods2, records2 = apply_plan_in_memory(moods, records, p)
    after = reconcile(USER, moods2, records2, **kw)
    left = set(after.loc[after["problem"], "status"])
    assert left <= {"orphan"}
    assert not (PROBLEM_STATUSES(nuke_policy) - {"orphan"}) & set(after["status"])
    assert set(after.loc[after["kind"] == "record", "rkey"]) == set(before_orphans(moods, records, kw))


def before_orphans(moods, records, kw) -> list[str]:
    df = reconcile(USER, moods, records, **kw)
    return list(df.loc[df["status"] == "orphan", "rkey"])
