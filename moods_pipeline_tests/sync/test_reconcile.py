"""reconcile(): docs/interface.md's audit statuses, chosen record, precedence and problems."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from moods_pipeline.model import Mood, PdsRecord, UserAccount, iso_when
from moods_pipeline.sync.mood_record import Invalid, build_record
from moods_pipeline.sync.reconcile import (
    COLUMNS,
    PROBLEM_STATUSES,
    STATUSES,
    empty_frame,
    parse_when_us,
    reconcile,
    summarize,
)

USER = UserAccount(sub="auth0|alice", did="did:plc:alice", handle="alice")
T0 = datetime(2025, 10, 9, 19, 0, 28, 821000, tzinfo=timezone.utc)


def oid(n: int) -> str:
    return f"{0x68e8064c11885fb93a500000 + n:024x}"


def tid(n: int) -> str:
    """Distinct, valid-looking rkeys that sort by n."""
    alphabet = "234567abcdefghijklmnopqrstuvwxyz"
    out = []
    for _ in range(10):
        out.append(alphabet[n % 32])
        n //= 32
    return "3lz" + "".join(reversed(out))


def mood(n: int, text="feeling sunny {n}", when=None, deleted=False, rkey=None) -> Mood:
    if isinstance(text, str) and "{n}" in text:
        text = text.format(n=n)
    return Mood(
        id=oid(n), user=USER.sub, text=text, when=T0 + timedelta(minutes=n) if when is None else when,
        deleted=deleted, rkey=rkey,
    )


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


DROP = object()


def rows(df: pd.DataFrame) -> dict:
    """mood_id -> row for mood rows; rkey -> row for record rows."""
    out = {}
    for row in df.to_dict("records"):
        out[row["mood_id"] if row["kind"] == "mood" else row["rkey"]] = row
    return out


def status_of(moods, records, key, **kw) -> str:
    return rows(reconcile(USER, moods, records, **kw))[key]["status"]


# --- shape -------------------------------------------------------------------------------------


def test_columns_are_fixed_and_one_row_per_mood_and_extra_record():
    m1, m2 = mood(1, rkey=tid(1)), mood(2, deleted=True)
    df = reconcile(USER, [m1, m2], [good(m1, tid(1)), good(m1, tid(5)), PdsRecord(tid(9), {"mood": "x"})])
    assert tuple(df.columns) == COLUMNS
    assert list(df["kind"]) == ["mood", "mood", "record", "record"]
    assert list(df["status"]) == ["synced", "nuked", "duplicate", "orphan"]
    assert df["problem"].dtype == bool
    first = df.iloc[0]
    assert (first["did"], first["sub"], first["handle"]) == ("did:plc:alice", "auth0|alice", "alice")
    assert first["mood_len"] == len("feeling sunny 1".encode())
    assert isinstance(first["mood_hash"], str) and len(first["mood_hash"]) == 8
    # a duplicate's hash equals its mood's: same text, seen without reading it
    assert df.iloc[2]["mood_hash"] == first["mood_hash"]
    assert df.iloc[3]["mood_id"] is None and df.iloc[3]["pointer"] is None


def test_empty_inputs_give_the_fixed_columns():
    df = reconcile(USER, [], [])
    assert tuple(df.columns) == COLUMNS and len(df) == 0
    assert tuple(empty_frame().columns) == COLUMNS
    assert summarize(df)["sync_rate_pct"] == 100.0


def test_statuses_constant_and_problem_sets():
    assert STATUSES == (
        "invalid", "missing_on_pds", "stale_pointer", "content_mismatch", "pointer_missing",
        "legacy_field", "synced", "duplicate", "orphan", "nuked_on_pds", "nuked",
    )
    base = {"missing_on_pds", "stale_pointer", "content_mismatch", "pointer_missing", "duplicate", "orphan"}
    assert PROBLEM_STATUSES("keep", False) == base
    assert PROBLEM_STATUSES("delete", False) == base | {"nuked_on_pds"}
    assert PROBLEM_STATUSES("keep", True) == base | {"legacy_field"}
    with pytest.raises(ValueError):
        PROBLEM_STATUSES("purge", False)
    with pytest.raises(ValueError):
        reconcile(USER, [], [], nuke_policy="purge")


def test_duplicate_ids_in_input_are_refused():
    with pytest.raises(ValueError):
        reconcile(USER, [mood(1), mood(1)], [])
    m = mood(1)
    with pytest.raises(ValueError):
        reconcile(USER, [m], [good(m, tid(1)), good(m, tid(1))])


# --- each status -------------------------------------------------------------------------------


def test_synced():
    m = mood(1, rkey=tid(1))
    row = rows(reconcile(USER, [m], [good(m, tid(1))]))[m.id]
    assert (row["status"], row["problem"], row["detail"], row["rkey"], row["pointer"]) == (
        "synced", False, "", tid(1), tid(1))
    assert row["issues"] == "synced"


@pytest.mark.parametrize(
    "text, when",
    [
        ("", None),
        ("   \n\t ", None),
        ("x" * 5001, None),
        ("é" * 2501, None),  # 5002 UTF-8 bytes in 2501 characters
        (None, None),
        (42, None),
        ("ok", datetime(1969, 12, 31, 23, 59, 59, tzinfo=timezone.utc)),
        ("ok", datetime(2300, 1, 1, tzinfo=timezone.utc)),
        ("ok", "2025-01-01"),
    ],
)
def test_invalid_uses_build_records_reason(text, when):
    m = mood(1, text=text, when=when or T0)
    reason = build_record(m)
    assert isinstance(reason, Invalid)
    row = rows(reconcile(USER, [m], []))[m.id]
    assert (row["status"], row["problem"]) == ("invalid", False)
    assert row["detail"].startswith(reason.reason)


def test_text_at_the_limit_is_valid():
    m = mood(1, text="é" * 2500, rkey=tid(1))
    assert status_of([m], [good(m, tid(1))], m.id) == "synced"


def test_invalid_beats_everything_and_its_duplicates_are_still_duplicates():
    m = mood(1, text="", rkey=tid(7))
    rec = PdsRecord(tid(2), {"$type": "computer.aesthetic.mood", "mood": "", "when": iso_when(T0), "ref": m.id})
    dup = PdsRecord(tid(3), dict(rec.value))
    r = rows(reconcile(USER, [m], [rec, dup]))
    assert r[m.id]["status"] == "invalid" and r[m.id]["rkey"] == tid(2)
    assert r[tid(3)]["status"] == "duplicate" and r[tid(3)]["problem"]
    assert tid(2) not in r  # the chosen record of an invalid mood is not an orphan


def test_missing_on_pds_beats_a_stale_pointer():
    m = mood(1, rkey=tid(4))
    other = mood(2, rkey=tid(5))
    r = rows(reconcile(USER, [m, other], [good(other, tid(5))]))
    assert r[m.id]["status"] == "missing_on_pds" and r[m.id]["problem"]
    assert r[m.id]["rkey"] is None
    assert m.id in r[m.id]["detail"] and "does not exist" in r[m.id]["detail"]
    m = mood(1, rkey=tid(5))
    r = rows(reconcile(USER, [m, other], [good(other, tid(5))]))
    assert r[m.id]["status"] == "missing_on_pds"
    assert f"holds mood {other.id}'s record" in r[m.id]["detail"]


def test_stale_pointer_to_nothing_to_another_mood_and_to_an_orphan():
    m, other = mood(1, rkey=tid(9)), mood(2, rkey=tid(2))
    records = [good(m, tid(1)), good(other, tid(2))]
    r = rows(reconcile(USER, [m, other], records))
    assert r[m.id]["status"] == "stale_pointer" and r[m.id]["rkey"] == tid(1)
    assert f"pointer names rkey {tid(9)}, which does not exist" in r[m.id]["detail"]
    # pointing at another mood's record: the pointer is stale, that record is the other's
    m = mood(1, rkey=tid(2))
    r = rows(reconcile(USER, [m, other], records))
    assert r[m.id]["status"] == "stale_pointer"
    assert f"pointer names rkey {tid(2)}, which holds mood {other.id}'s record" in r[m.id]["detail"]
    assert r[other.id]["status"] == "synced"
    # pointing at a nuked mood's record
    nuked = mood(3, deleted=True)
    m = mood(1, rkey=tid(3))
    r = rows(reconcile(USER, [m, nuked], [good(m, tid(1)), good(nuked, tid(3))]))
    assert r[m.id]["status"] == "stale_pointer" and "(nuked)" in r[m.id]["detail"]
    # pointing at an orphan while the mood has its own record
    m = mood(1, rkey=tid(4))
    r = rows(reconcile(USER, [m], [good(m, tid(1)), PdsRecord(tid(4), {"mood": "?"})]))
    assert r[m.id]["status"] == "stale_pointer" and r[tid(4)]["status"] == "orphan"


def test_stale_pointer_hides_but_keeps_content_mismatch_in_issues():
    m = mood(1, rkey=tid(9))
    r = rows(reconcile(USER, [m], [good(m, tid(1), mood="something else")]))[m.id]
    assert r["status"] == "stale_pointer"
    assert r["issues"] == "stale_pointer,content_mismatch"
    assert "mood differs" in r["detail"]


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"mood": "feeling cloudy"}, "mood differs (record 14 bytes, Mongo 15 bytes)"),
        ({"mood": "feeling sunny 2"}, "mood differs (both 15 bytes)"),
        ({"mood": DROP, "text": "feeling sunny 1"}, "record lacks mood (has text)"),
        ({"mood": DROP}, "record lacks mood"),
        ({"mood": 7}, "record mood is not a string (int)"),
        ({"when": DROP}, "record lacks when"),
        ({"when": "yesterday"}, "record when is not an ISO 8601 datetime"),
        ({"when": "2025-10-09T19:00:28.821"}, "record when has no timezone"),
        ({"when": "2025-02-30T19:00:28.821Z"}, "record when is not a valid date"),
        ({"when": 1760036428821}, "record when is not a string (int)"),
        ({"when": iso_when(T0 + timedelta(milliseconds=1532))}, "when differs by 1,532 ms (tolerance 1,000; record later)"),
        ({"when": iso_when(T0 - timedelta(hours=1))}, "when differs by 3,600,000 ms (tolerance 1,000; record earlier)"),
        ({"$type": "app.bsky.feed.post"}, "record $type is not computer.aesthetic.mood"),
    ],
)
def test_content_mismatch(changes, expected):
    m = mood(1, when=T0, rkey=tid(1))
    row = rows(reconcile(USER, [m], [good(m, tid(1), **changes)]))[m.id]
    assert (row["status"], row["problem"]) == ("content_mismatch", True)
    assert expected in row["detail"]
    assert tid(1) in row["detail"]


@pytest.mark.parametrize(
    "when",
    [
        "2025-10-09T19:00:28.821Z",
        "2025-10-09T19:00:29.821Z",  # exactly the tolerance
        "2025-10-09T19:00:27.822Z",
        "2025-10-09T21:00:28.821+02:00",
        "2025-10-09T21:00:28.821+0200",
        "2025-10-09T14:00:28.821-05",
        "2025-10-09T19:00:28.821000Z",
        "2025-10-09T19:00:28.821000123Z",
        "2025-10-09T19:00:29Z",
        "2025-10-09 19:00:28.821z",
        "2025-10-09T19:00:28,821Z",
        "2025-10-09T19:00:28.821+00:00",
    ],
)
def test_when_within_tolerance_in_any_iso_variant_is_synced(when):
    m = mood(1, when=T0, rkey=tid(1))
    assert status_of([m], [good(m, tid(1), when=when)], m.id) == "synced"


def test_when_tolerance_is_a_setting():
    m = mood(1, when=T0, rkey=tid(1))
    drifted = [good(m, tid(1), when=iso_when(T0 + timedelta(milliseconds=5)))]
    assert status_of([m], drifted, m.id, when_tolerance_ms=5) == "synced"
    assert status_of([m], drifted, m.id, when_tolerance_ms=4) == "content_mismatch"
    assert status_of([m], drifted, m.id, when_tolerance_ms=0) == "content_mismatch"
    assert status_of([m], [good(m, tid(1))], m.id, when_tolerance_ms=0) == "synced"


def test_parse_when_us():
    assert parse_when_us("1970-01-01T00:00:00Z") == 0
    assert parse_when_us("1970-01-01T00:00:00.000001Z") == 1
    assert parse_when_us("1970-01-01T01:00:00+01:00") == 0
    assert parse_when_us("1969-12-31T23:59:59.5Z") == -500_000
    assert parse_when_us(iso_when(T0)) == int(T0.timestamp()) * 1_000_000 + 821_000
    for bad in ["", "2025-10-09", "2025-10-09T25:00:00Z", "2025-10-09T19:00:00+24:00", None, 3.5]:
        assert isinstance(parse_when_us(bad), str)


def test_pointer_missing_and_empty_pointer():
    for pointer in (None, ""):
        m = mood(1, rkey=pointer)
        row = rows(reconcile(USER, [m], [good(m, tid(1))]))[m.id]
        assert (row["status"], row["problem"], row["rkey"]) == ("pointer_missing", True, tid(1))
        assert tid(1) in row["detail"]


def test_content_mismatch_beats_pointer_missing():
    m = mood(1)
    row = rows(reconcile(USER, [m], [good(m, tid(1), mood=DROP, text="x")]))[m.id]
    assert row["status"] == "content_mismatch" and row["issues"] == "content_mismatch,pointer_missing"


def test_legacy_field_is_a_problem_only_when_rewriting_legacy():
    m = mood(1, rkey=tid(1))
    legacy = good(m, tid(1), ref=DROP, mongoId=m.id)
    row = rows(reconcile(USER, [m], [legacy]))[m.id]
    assert (row["status"], row["problem"]) == ("legacy_field", False)
    assert "mongoId instead of ref" in row["detail"]
    row = rows(reconcile(USER, [m], [legacy], rewrite_legacy=True))[m.id]
    assert (row["status"], row["problem"]) == ("legacy_field", True)
    # an empty ref beside the mongoId: the id is still carried only by mongoId
    assert status_of([m], [good(m, tid(1), ref="", mongoId=m.id)], m.id) == "legacy_field"
    # ref and mongoId both: not legacy
    assert status_of([m], [good(m, tid(1), mongoId=m.id)], m.id) == "synced"


def test_pointer_missing_beats_legacy_field():
    m = mood(1)
    row = rows(reconcile(USER, [m], [good(m, tid(1), ref=DROP, mongoId=m.id)]))[m.id]
    assert row["status"] == "pointer_missing" and row["issues"] == "pointer_missing,legacy_field"


def test_chosen_record_is_the_pointed_one_if_it_carries_the_id_else_the_smallest_rkey():
    m = mood(1, rkey=tid(3))
    records = [good(m, tid(2)), good(m, tid(3)), good(m, tid(1), mood="stale copy")]
    r = rows(reconcile(USER, [m], records))
    assert r[m.id]["status"] == "synced" and r[m.id]["rkey"] == tid(3)
    assert {r[tid(1)]["status"], r[tid(2)]["status"]} == {"duplicate"}
    assert r[tid(1)]["mood_id"] == m.id and tid(3) in r[tid(1)]["detail"]
    # without a pointer the smallest rkey is chosen, even with wrong content
    m = mood(1)
    r = rows(reconcile(USER, [m], records))
    assert r[m.id]["rkey"] == tid(1) and r[m.id]["status"] == "content_mismatch"
    assert r[tid(2)]["status"] == r[tid(3)]["status"] == "duplicate"
    # a pointer naming another mood's record: the smallest of its own is chosen
    other = mood(2, rkey=tid(9))
    m = mood(1, rkey=tid(9))
    r = rows(reconcile(USER, [m, other], records + [good(other, tid(9))]))
    assert r[m.id]["rkey"] == tid(1) and r[m.id]["status"] == "stale_pointer"


def test_legacy_records_are_matched_like_ref_records():
    m = mood(1, rkey=tid(2))
    records = [good(m, tid(1), ref=DROP, mongoId=m.id), good(m, tid(2))]
    r = rows(reconcile(USER, [m], records))
    assert r[m.id]["status"] == "synced"
    assert r[tid(1)]["status"] == "duplicate"


def test_orphans():
    m = mood(1, rkey=tid(1))
    records = [
        good(m, tid(1)),
        PdsRecord(tid(2), {"$type": "computer.aesthetic.mood", "mood": "hello", "when": iso_when(T0)}),
        PdsRecord(tid(3), {"mood": "x", "when": iso_when(T0), "ref": oid(99)}),
        PdsRecord(tid(4), {"mood": "x", "when": iso_when(T0), "mongoId": oid(98)}),
        PdsRecord(tid(5), {"mood": "x", "ref": 17}),
    ]
    r = rows(reconcile(USER, [m], records))
    assert [r[tid(n)]["status"] for n in (2, 3, 4, 5)] == ["orphan"] * 4
    assert all(r[tid(n)]["problem"] for n in (2, 3, 4, 5))
    assert "carries no mood id" in r[tid(2)]["detail"]
    assert f"record ref '{oid(99)}' names no mood of this user" in r[tid(3)]["detail"]
    assert f"record mongoId '{oid(98)}' names no mood" in r[tid(4)]["detail"]
    assert r[tid(2)]["mood_len"] == 5


def test_a_record_of_a_nuked_mood_is_not_an_orphan():
    nuked = mood(1, deleted=True, rkey=tid(1))
    bare = mood(2, deleted=True)
    records = [good(nuked, tid(1)), good(nuked, tid(2), ref=DROP, mongoId=nuked.id)]
    for policy, problem in (("keep", False), ("delete", True)):
        r = rows(reconcile(USER, [nuked, bare], records, nuke_policy=policy))
        assert (r[nuked.id]["status"], r[nuked.id]["problem"], r[nuked.id]["rkey"]) == ("nuked_on_pds", problem, tid(1))
        assert (r[bare.id]["status"], r[bare.id]["problem"]) == ("nuked", False)
        assert r[tid(2)]["status"] == "duplicate" and r[tid(2)]["mood_id"] == nuked.id


def test_nuked_moods_are_not_judged_for_validity_or_pointers():
    nuked = mood(1, text="", deleted=True, rkey=tid(8))
    assert status_of([nuked], [], nuked.id) == "nuked"


def test_only_records_carrying_the_id_are_the_moods_the_pointer_only_chooses_among_them():
    m = mood(1, rkey=tid(1))
    idless = PdsRecord(tid(1), {"$type": "computer.aesthetic.mood", "text": "feeling sunny 1", "when": iso_when(m.when)})
    r = rows(reconcile(USER, [m], [idless]))
    assert r[m.id]["status"] == "missing_on_pds" and r[m.id]["rkey"] is None
    assert "which holds a record that carries no mood id" in r[m.id]["detail"]
    assert r[tid(1)]["status"] == "orphan"
    assert f"named by the pointer of mood {m.id}" in r[tid(1)]["detail"]
    # with a record carrying the id elsewhere, the pointer is stale
    r = rows(reconcile(USER, [m], [idless, good(m, tid(5))]))
    assert r[m.id]["status"] == "stale_pointer" and r[m.id]["rkey"] == tid(5)
    assert r[tid(1)]["status"] == "orphan"
    # a nuked mood's pointer does not make a record its own either
    nuked = mood(1, deleted=True, rkey=tid(1))
    r = rows(reconcile(USER, [nuked], [idless]))
    assert r[nuked.id]["status"] == "nuked" and r[tid(1)]["status"] == "orphan"


def test_detail_never_contains_mood_text():
    secret = "my very private feeling 1234"
    m1 = mood(1, text=secret, rkey=tid(1))
    m2 = mood(2, text=secret + " two", rkey=tid(42))
    m3 = mood(3, text=" " * 3 + "x" * 5001)
    m4 = mood(4, text=secret + " nuked", deleted=True)
    records = [
        good(m1, tid(1), mood=secret + " but changed", when=iso_when(T0 + timedelta(days=1))),
        PdsRecord(tid(2), {"text": secret + " two", "ref": m2.id, "when": "bad"}),
        PdsRecord(tid(3), {"mood": secret + " orphan", "ref": secret}),
        PdsRecord(tid(4), {"mood": secret, "mongoId": secret * 3}),
        good(m4, tid(5)),
    ]
    df = reconcile(USER, [m1, m2, m3, m4], records, nuke_policy="delete")
    assert set(df["status"]) >= {"content_mismatch", "stale_pointer", "invalid", "orphan", "nuked_on_pds"}
    for detail in df["detail"]:
        assert secret not in detail
        assert "xxxxxxxx" not in detail
        assert "private" not in detail


# --- summarize -----------------------------------------------------------------------------


def test_summarize_counts_and_sync_rate():
    m = [mood(n, rkey=tid(n)) for n in range(1, 8)]
    m[5] = mood(6, text="")  # invalid
    m[6] = mood(7, deleted=True)
    records = [good(m[0], tid(1)), good(m[1], tid(2), ref=DROP, mongoId=m[1].id), good(m[2], tid(3), mood="other"),
               good(m[3], tid(40)), PdsRecord(tid(50), {})]
    df = reconcile(USER, m, records)
    s = summarize(df)
    assert s["by_status"] == {
        "invalid": 1, "missing_on_pds": 1, "stale_pointer": 1, "content_mismatch": 1, "pointer_missing": 0,
        "legacy_field": 1, "synced": 1, "duplicate": 0, "orphan": 1, "nuked_on_pds": 0, "nuked": 1,
    }
    assert (s["users"], s["moods"], s["moods_live"], s["moods_valid_live"], s["moods_nuked"]) == (1, 7, 6, 5, 1)
    assert s["problems"] == 4
    assert s["records_extra"] == 1
    assert s["sync_rate_pct"] == 40.0  # synced + legacy_field = 2 of 5 valid live moods
    # many users' frames concatenate
    other = UserAccount(sub="auth0|bob", did="did:plc:bob", handle=None)
    both = pd.concat([df, reconcile(other, [mood(100, rkey=tid(100))], [good(mood(100), tid(100))])])
    s2 = summarize(both)
    assert s2["users"] == 2 and s2["by_status"]["synced"] == 2 and s2["sync_rate_pct"] == 50.0


def test_sync_rate_never_rounds_up_to_100():
    moods = [mood(n, rkey=tid(n)) for n in range(1, 3002)]
    records = [good(m, tid(n)) for n, m in enumerate(moods[:-1], start=1)]
    s = summarize(reconcile(USER, moods, records))
    assert s["sync_rate_pct"] == 99.96
    s = summarize(reconcile(USER, moods[:1], records[:1]))
    assert s["sync_rate_pct"] == 100.0


def test_summarize_with_no_valid_live_moods():
    s = summarize(reconcile(USER, [mood(1, deleted=True), mood(2, text="")], []))
    assert s["moods_valid_live"] == 0 and s["sync_rate_pct"] == 100.0 and s["problems"] == 0


# --- size ----------------------------------------------------------------------------------
# How fast reconcile() is, and that it grows linearly with a user's size, is measured by
# bench/reconcile.py (timings belong in benchmarks, not in assertions on a busy machine).


def test_a_large_user_gets_one_row_per_mood_and_per_extra_record():
    moods = [mood(n, rkey=tid(n) if n % 10 else None) for n in range(250)]
    records = [good(m, tid(n), **({"mood": "changed"} if n % 7 == 0 else {})) for n, m in enumerate(moods)]
    records += [PdsRecord(tid(100_000 + n), {"mood": "o"}) for n in range(10)]
    frame = reconcile(USER, moods, records)
    assert len(frame) == 260
    assert (frame["status"] == "orphan").sum() == 10
