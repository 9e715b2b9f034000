"""CID-checked writes: every create and update is compared with the CID applyWrites reports for
it; a difference fails that mood with both CIDs named, never silently, and the rest of the batch
lands as usual. Unit tests on stand-in repos; then the real PDS, once honest and once behind a
stand-in that changes one record on its way (so the PDS itself computes the other CID)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.cid import record_cid
from moods_pipeline.model import Mood, PdsRecord, UserAccount
from moods_pipeline.sync.planner import plan_user
from moods_pipeline.sync.reconcile import POINTER_MISSING, SYNCED, reconcile
from moods_pipeline.sync.repair import Execution, RepairWriter, Write
from moods_pipeline.sync.repair_plan import CREATE_OP, UPDATE_OP, WritePointer
from moods_pipeline.sync.writer import BatchWriter, WriteOptions

DID = "did:plc:cidcheckcidcheckcidcheck"
FAST = WriteOptions(min_batch_interval_s=0, retry_delay_s=0)


def moods(n: int) -> list[Mood]:
    base = datetime(2024, 5, 1, 8, 0, 0, 250000, tzinfo=timezone.utc)
    return [Mood(id=f"{i + 1:024x}", user="auth0|c", text=f"mood {i} ✨", when=base + timedelta(minutes=i))
            for i in range(n)]


class StandInRepo:
    """Stores what it is sent, except that ``tamper(value)`` may change a record on its way in;
    answers each write with the CID of what it stored, as a PDS does (``report`` off: no CIDs)."""

    def __init__(self, tamper=lambda rkey, value: value, report: bool = True):
        self.records: dict[str, dict] = {}
        self.tamper = tamper
        self.report = report
        self.did = DID

    def apply_writes(self, ops):
        results = []
        for op in ops:
            stored = self.tamper(op["rkey"], dict(op["value"]))
            self.records[op["rkey"]] = stored
            result = {"uri": f"at://{DID}/{MOOD_COLLECTION}/{op['rkey']}"}
            if self.report:
                result["cid"] = record_cid(stored)
            results.append(result)
        return results

    def list_records(self, did, collection):
        return [PdsRecord(k, v, record_cid(v)) for k, v in sorted(self.records.items())]


class Store:
    def __init__(self):
        self.pointers: dict[str, str] = {}

    def write_pointers(self, pairs):
        self.pointers.update(pairs)
        return len(pairs)


def add_field_at(target_rkey: str):
    def tamper(rkey, value):
        if rkey == target_rkey:
            value["via"] = "proxy"  # another record than the one sent: another CID
        return value
    return tamper


def test_a_record_stored_differently_fails_its_mood_naming_both_cids_the_rest_lands():
    plan = plan_user(moods(5), [])
    bad = plan.creates[2]
    repo, store = StandInRepo(tamper=add_field_at(bad.rkey)), Store()
    result = BatchWriter(repo, store, repo, FAST, sleep=lambda s: None).write_all(plan.creates)
    sent_cid = record_cid(bad.record)
    stored_cid = record_cid(repo.records[bad.rkey])
    assert sent_cid != stored_cid
    assert result.failed == [
        (bad.mood_id, f"the PDS stored a different record: expected {sent_cid}, got {stored_cid} (rkey {bad.rkey})")
    ]
    assert result.created == 4 and result.cids_checked == 4
    assert bad.mood_id not in store.pointers  # no pointer at a record that is not ours
    assert set(store.pointers) == {c.mood_id for c in plan.creates} - {bad.mood_id}


def test_a_pds_that_reports_no_cids_leaves_the_writes_unchecked_and_says_so(caplog):
    plan = plan_user(moods(3), [])
    repo, store = StandInRepo(report=False), Store()
    with caplog.at_level(logging.WARNING, logger="moods_pipeline.sync.writer"):
        result = BatchWriter(repo, store, repo, FAST, sleep=lambda s: None).write_all(plan.creates)
    assert result.failed == [] and result.created == 3
    assert (result.cids_checked, result.cids_unchecked) == (0, 3)
    assert "no usable CID for 3 of 3 writes" in caplog.text


def test_a_repair_create_or_update_stored_differently_fails_and_its_pointer_is_not_written():
    user = UserAccount(sub="auth0|c", did=DID, handle="c")
    plan = plan_user(moods(2), [])
    create, other = plan.creates
    writes = [
        Write("create_record", create.mood_id, create.rkey, CREATE_OP, create.record),
        Write("rewrite_content", other.mood_id, other.rkey, UPDATE_OP, other.record),
    ]
    repo, store, execution = StandInRepo(tamper=lambda rkey, value: dict(value, via="proxy")), Store(), Execution()
    writer = RepairWriter(repo, store, repo, user, writes, [], execution, FAST, sleep=lambda s: None)
    writer.run(writes)
    reasons = {(action, target): reason for action, target, reason in execution.failed}
    assert set(reasons) == {
        ("create_record", f"{create.mood_id}@{create.rkey}"),
        (WritePointer.action, create.mood_id),
        ("rewrite_content", other.rkey),
    }
    assert reasons[(WritePointer.action, create.mood_id)] == "its record differs from the one sent"
    for write in writes:
        assert reasons[(write.action, f"{write.mood_id}@{write.rkey}" if write.op == CREATE_OP else write.rkey)] == (
            f"the PDS stored a different record: expected {record_cid(write.value)}, "
            f"got {record_cid(repo.records[write.rkey])} (rkey {write.rkey})"
        )
    assert store.pointers == {} and sum(execution.applied.values()) == 0


class TamperingSession:
    """A real session, except that the record at ``rkey`` gains a field on its way to the PDS (a
    misbehaving proxy): the PDS stores that record and reports its CID."""

    def __init__(self, session, rkey: str):
        self.session = session
        self.did = session.did
        self.rkey = rkey

    def apply_writes(self, writes):
        changed = [dict(w, value=dict(w["value"], via="proxy")) if w["rkey"] == self.rkey else w for w in writes]
        return self.session.apply_writes(changed)


@pytest.mark.integration
def test_cid_checked_writes_on_the_reference_pds(make_account, pds):
    account = make_account("cidw")
    session = pds.login(account.did, account.password, expected_did=account.did)
    user = UserAccount(sub="auth0|c", did=account.did, handle=account.handle.split(".")[0])
    all_moods = moods(6)
    plan = plan_user(all_moods, [])
    honest, tampered = plan.creates[:3], plan.creates[3:]

    store = Store()
    result = BatchWriter(session, store, pds, FAST, sleep=lambda s: None).write_all(honest)
    assert result.failed == [] and result.created == 3 and (result.cids_checked, result.cids_unchecked) == (3, 0)

    bad = tampered[1]
    result = BatchWriter(TamperingSession(session, bad.rkey), store, pds, FAST, sleep=lambda s: None).write_all(tampered)
    listed = {r.rkey: r for r in pds.list_records(account.did, MOOD_COLLECTION)}
    stored_cid = listed[bad.rkey].cid  # the PDS's own CID of what it stored
    assert stored_cid == record_cid(listed[bad.rkey].value) != record_cid(bad.record)
    assert result.failed == [
        (bad.mood_id,
         f"the PDS stored a different record: expected {record_cid(bad.record)}, got {stored_cid} (rkey {bad.rkey})")
    ]
    assert result.created == 2 and result.cids_checked == 2
    assert bad.mood_id not in store.pointers and len(store.pointers) == 5

    # The audit of what is there: the five written as sent are synced by CID; the changed one
    # differs by CID, passes the field comparison, has no pointer, and its row says why.
    pointed = [Mood(m.id, m.user, m.text, m.when, rkey=store.pointers.get(m.id)) for m in all_moods]
    frame = reconcile(user, pointed, list(listed.values())).set_index("mood_id")
    assert (frame["cid"] == frame["expected_cid"]).sum() == 5
    row = frame.loc[bad.mood_id]
    assert row["status"] == POINTER_MISSING and row["cid"] == stored_cid
    assert "record CID differs from the expected: record has further field(s) via" in row["detail"]
    assert set(frame.drop(index=bad.mood_id)["status"]) == {SYNCED}
