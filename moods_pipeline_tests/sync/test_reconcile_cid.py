"""The CID-exact audit: a chosen record whose CID is the expected CID is synced without a field
comparison; where the CIDs differ the fields decide, with today's statuses, and the row says
that the CID differs and why. The ``expected_cid`` and ``cid`` columns, in the frame, in the
audit engine's columns and through the audit store's Parquet."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa

from moods_pipeline.atproto.cid import record_cid
from moods_pipeline.model import RECONCILIATION_COLUMNS, Mood, PdsRecord, UserAccount
from moods_pipeline.storage.audits import SCHEMA, columns_to_table, frame_to_table, table_to_frame
from moods_pipeline.sync.audit import UserAudit
from moods_pipeline.sync.mood_record import build_record, expected_cid
from moods_pipeline.sync.reconcile import (
    CONTENT_MISMATCH,
    DUPLICATE,
    INVALID,
    LEGACY_FIELD,
    NUKED_ON_PDS,
    ORPHAN,
    POINTER_MISSING,
    SYNCED,
    analyze,
    reconcile,
)

USER = UserAccount(sub="auth0|cid", did="did:plc:cidaudit", handle="cid")
T0 = datetime(2025, 10, 9, 19, 0, 28, 821000, tzinfo=timezone.utc)


def mood(n: int, **kw) -> Mood:
    kw.setdefault("rkey", f"3lzaaaaaaa{n:03d}")
    return Mood(id=f"{0x68e8064c11885fb93a500000 + n:024x}", user=USER.sub, text=kw.pop("text", f"sunny {n}"),
                when=T0 + timedelta(minutes=n), **kw)


def stored(m: Mood, rkey: str | None = None, **changes) -> PdsRecord:
    """The record as a PDS holds it: the value and the CID of exactly that value."""
    value = dict(build_record(m), **changes)
    for key in [k for k, v in changes.items() if v is None]:
        del value[key]
    return PdsRecord(rkey or m.rkey, value, record_cid(value))


def row_of(frame, m: Mood):
    return frame[(frame["kind"] == "mood") & (frame["mood_id"] == m.id)].iloc[0]


def test_the_expected_cid_is_synced_and_both_columns_carry_it():
    m = mood(1)
    frame = reconcile(USER, [m], [stored(m)])
    row = row_of(frame, m)
    assert row["status"] == SYNCED and row["detail"] == ""
    assert row["expected_cid"] == row["cid"] == expected_cid(m)
    assert tuple(frame.columns) == RECONCILIATION_COLUMNS and RECONCILIATION_COLUMNS[-2:] == ("expected_cid", "cid")


def test_an_equal_cid_skips_the_field_comparison_but_not_the_pointer():
    """The CID stands for the exact bytes: a record listed with the expected CID is not read
    field by field (here its value is made to disagree, which no real PDS could list)."""
    m = mood(2)
    value = dict(build_record(m), mood="something else", when="not a date")
    assert reconcile(USER, [m], [PdsRecord(m.rkey, value, expected_cid(m))]).iloc[0]["status"] == SYNCED
    unpointed = Mood(m.id, m.user, m.text, m.when, rkey=None)
    row = reconcile(USER, [unpointed], [stored(m)]).iloc[0]
    assert row["status"] == POINTER_MISSING and "record CID" not in row["detail"]


def test_same_instant_written_differently_is_synced_and_says_why_the_cid_differs():
    m = mood(3)
    record = stored(m, when="2025-10-09T19:03:28.821+00:00")
    row = row_of(reconcile(USER, [m], [record]), m)
    assert row["status"] == SYNCED
    assert row["cid"] == record.cid != row["expected_cid"]
    assert row["detail"] == "record CID differs from the expected: record when is the same instant written differently"


def test_an_app_written_record_keeps_its_status_and_names_every_cid_difference():
    m = mood(4)
    app = build_record(m)
    value = {"$type": app["$type"], "mood": app["mood"], "when": "2025-10-09T19:04:28.824Z", "mongoId": m.id,
             "client": "web"}
    row = row_of(reconcile(USER, [m], [PdsRecord(m.rkey, value, record_cid(value))]), m)
    assert row["status"] == LEGACY_FIELD and row["issues"] == LEGACY_FIELD
    assert row["detail"] == (
        f"record rkey {m.rkey} carries mongoId instead of ref; record CID differs from the expected: record "
        "carries mongoId instead of ref; record has further field(s) client; record when is 3 ms later (within tolerance)"
    )


def test_a_differing_cid_with_differing_fields_is_a_content_mismatch_as_before():
    m = mood(5)
    row = row_of(reconcile(USER, [m], [stored(m, mood="sunny 5!")]), m)
    assert row["status"] == CONTENT_MISMATCH
    assert "mood differs" in row["detail"] and "record CID" not in row["detail"]
    late = row_of(reconcile(USER, [m], [stored(m, when="2025-10-09T19:05:30.821Z")]), m)
    assert late["status"] == CONTENT_MISMATCH and "when differs by 2,000 ms" in late["detail"]


def test_no_reported_cid_falls_back_to_the_fields_without_a_note():
    m = mood(6)
    row = row_of(reconcile(USER, [m], [PdsRecord(m.rkey, build_record(m))]), m)
    assert row["status"] == SYNCED and row["detail"] == "" and row["cid"] is None
    assert row["expected_cid"] == expected_cid(m)


def test_unexplained_cid_difference_is_still_said():
    m = mood(7)
    row = row_of(reconcile(USER, [m], [PdsRecord(m.rkey, build_record(m), "bafyreiother")]), m)
    assert row["status"] == SYNCED
    assert row["detail"] == "record CID differs from the expected: the fields read the same, yet the stored encoding differs"


def test_odd_field_names_are_counted_not_echoed():
    m = mood(8)
    row = row_of(reconcile(USER, [m], [stored(m, **{"my secret mood text here": "x"})]), m)
    assert row["detail"].endswith("record has further field(s) 1 other")


def test_record_rows_and_moods_without_an_expected_record():
    live, nuked = mood(10), mood(11, deleted=True)
    invalid = mood(12, text="   ")
    dup = stored(live, rkey="3lzzzzzzzzzz1")
    orphan_value = {"$type": "computer.aesthetic.mood", "mood": "o", "when": "2025-01-01T00:00:00.000Z",
                    "ref": "0" * 24}
    records = [stored(live), dup, stored(nuked), PdsRecord("3lzzzzzzzzzz2", orphan_value, record_cid(orphan_value)),
               PdsRecord(invalid.rkey, {"mood": "   ", "ref": invalid.id}, "bafyreiinvalid")]
    frame = reconcile(USER, [live, nuked, invalid], records)
    by_status = {row["status"]: row for _, row in frame.iterrows()}
    assert by_status[DUPLICATE]["expected_cid"] == expected_cid(live) and by_status[DUPLICATE]["cid"] == dup.cid
    assert by_status[ORPHAN]["expected_cid"] is None and by_status[ORPHAN]["cid"] == record_cid(orphan_value)
    assert by_status[NUKED_ON_PDS]["expected_cid"] is None and by_status[NUKED_ON_PDS]["cid"] == stored(nuked).cid
    assert by_status[INVALID]["expected_cid"] is None and by_status[INVALID]["cid"] == "bafyreiinvalid"


def test_the_audit_engine_and_the_store_keep_the_cid_columns():
    m, legacy = mood(20), mood(21)
    moods = [m, legacy]
    records = [stored(m), stored(legacy, ref=None, mongoId=legacy.id)]
    frame = reconcile(USER, moods, records)
    audit = UserAudit(user=USER, rows=analyze(moods, records))
    assert audit.frame.equals(frame)
    back = table_to_frame(columns_to_table(audit.columns()))
    assert back.equals(frame)
    assert table_to_frame(frame_to_table(frame))[["expected_cid", "cid"]].equals(frame[["expected_cid", "cid"]])
    assert SCHEMA.field("expected_cid").type == SCHEMA.field("cid").type == pa.string()
    # A file written before the CID columns existed reads with them empty.
    old = columns_to_table(audit.columns()).drop_columns(["expected_cid", "cid"])
    assert table_to_frame(old)[["expected_cid", "cid"]].isna().all().all()


def test_the_ui_table_shows_both_cids():
    from moods_pipeline.defs.audit.assets import reconciliation_table

    m, other = mood(30), mood(31)
    audit = UserAudit(user=USER, rows=analyze([m, other], [stored(m), stored(other, when="2025-10-09T19:31:28.821+00:00")]))
    table = reconciliation_table(audit)
    assert [c.name for c in table.schema.columns][-2:] == ["expected_cid", "cid"]
    rows = {r.data["mood_id"]: r.data for r in table.records}
    assert rows[m.id]["expected_cid"] == rows[m.id]["cid"] == expected_cid(m)
    assert rows[other.id]["cid"] == stored(other, when="2025-10-09T19:31:28.821+00:00").cid != rows[other.id]["expected_cid"]
