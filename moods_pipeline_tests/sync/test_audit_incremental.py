"""Incremental audits on the real PDS, the real Mongo-wire server and a real Dagster instance:
receipts made by complete audits only, unchanged users skipped and counted from their receipts,
every kind of change re-checked (Mongo edits, repo writes by this project or by another
client), and a property: whatever happens between audits, the incremental audit reports what a
full audit reports."""

from __future__ import annotations

import secrets
from datetime import timedelta

import dagster as dg
import pytest
from bson import ObjectId
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.cli.audit import run_audit
from moods_pipeline.storage.receipts import ReceiptStore
from moods_pipeline.sync import audit as engine
from moods_pipeline.sync import fingerprint as fp
from moods_pipeline.sync import incremental
from moods_pipeline.sync.backfill import sync_user
from moods_pipeline.sync.mood_record import build_record
from moods_pipeline_tests.defs.test_audit import audit_definitions, free_tid, odd_record, session_for
from moods_pipeline_tests.world import BASE_WHEN, add_user, store_for

pytestmark = pytest.mark.integration

OTHER_COLLECTION = "com.example.other.note"  # another client's records: the rev moves, moods do not


def partition_materializations(instance, did: str) -> int:
    return len(instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("mood_audit"), asset_partitions=[did]), limit=100).records)


def fingerprint_of(store, user) -> str:
    account = store.user_by_sub(user.sub)
    return fp.fingerprints(store, [account])[user.sub]


def test_every_mongo_change_flips_the_fingerprint_read_in_one_query(mongo_db, make_account, test_settings):
    store = store_for(test_settings)
    me = add_user(mongo_db, make_account("fpme"), moods=3)
    them = add_user(mongo_db, make_account("fpthem"), moods=2)
    first = ObjectId(me.mood_ids[0])
    changes = [
        ("insert", lambda: mongo_db.moods.insert_one({"_id": ObjectId(), "user": me.sub, "mood": "new",
                                                       "when": BASE_WHEN})),
        ("edit text", lambda: mongo_db.moods.update_one({"_id": first}, {"$set": {"mood": "edited"}})),
        ("edit when", lambda: mongo_db.moods.update_one({"_id": first}, {"$set": {"when": BASE_WHEN - timedelta(days=1)}})),
        ("nuke", lambda: mongo_db.moods.update_many({"user": me.sub}, {"$set": {"deleted": True}})),
        ("un-nuke", lambda: mongo_db.moods.update_many({"user": me.sub}, {"$set": {"deleted": False}})),
        ("pointer written", lambda: mongo_db.moods.update_one({"_id": first}, {"$set": {"atproto": {"rkey": "3kabc"}}})),
        ("pointer changed", lambda: mongo_db.moods.update_one({"_id": first}, {"$set": {"atproto.rkey": "3kdef"}})),
        ("pointer removed", lambda: mongo_db.moods.update_one({"_id": first}, {"$unset": {"atproto": ""}})),
        ("remove", lambda: mongo_db.moods.delete_one({"_id": first})),
        ("new DID", lambda: mongo_db.users.update_one({"_id": me.sub}, {"$set": {"atproto.did": "did:plc:" + "b" * 24}})),
    ]
    theirs = fingerprint_of(store, them)
    for name, change in changes:
        before = fingerprint_of(store, me)
        change()
        assert fingerprint_of(store, me) != before, name
        assert fingerprint_of(store, them) == theirs, name
    # A write that changes nothing the audit reads (deleted: false -> false) leaves it alone.
    before = fingerprint_of(store, me)
    mongo_db.moods.update_many({"user": me.sub}, {"$set": {"deleted": False}})
    assert fingerprint_of(store, me) == before
    # The bulk read is one query for many users (a CommandListener would show the same).
    many = fp.fingerprints(store, [store.user_by_sub(me.sub), store.user_by_sub(them.sub)])
    assert many == {me.sub: before, them.sub: theirs}
    # A large selection reads by one pass over the collection: the same moods as by `$in`.
    by_in = sorted((m.id, m.user) for m in store.iter_moods_of_users([me.sub, them.sub]))
    by_pass = sorted((m.id, m.user) for m in store.iter_moods_of_users([me.sub, them.sub], scan_above=0))
    assert by_in == by_pass and len(by_in) == 3 + 2


def test_listrepos_and_getlatestcommit_agree_and_move_with_every_commit(make_account, pds):
    account = make_account("heads")
    listed = {h.did: h for h in pds.iter_repo_heads(page_size=3)}  # several pages
    assert account.did in listed and listed[account.did].active
    latest = pds.latest_commit(account.did)
    assert (latest.rev, latest.head) == (listed[account.did].rev, listed[account.did].head)
    session = session_for(pds, account)
    session.put_record(OTHER_COLLECTION, "self", {"$type": OTHER_COLLECTION, "text": "x"})
    moved = pds.latest_commit(account.did)
    assert moved.rev > latest.rev and moved.head != latest.head
    session.delete_record(MOOD_COLLECTION, free_tid(1))  # nothing to delete: no commit
    assert pds.latest_commit(account.did) == moved


# --- the pipeline, incremental ------------------------------------------------------------------


def audit_now(instance, settings, store, users, *, full=False, defs=None, summary=False):
    syncable = [store.user_by_sub(u.sub) for u in users]
    return run_audit(instance, settings, [u for u in syncable if u.has_account], [], defs=defs, full=full,
                     summary=summary, store=store)


def full_reference(settings, store, pds, users) -> tuple[dict, dict]:
    """What a full audit reports, from the engine alone (no receipt read or written)."""
    audits = engine.audit_users([store.user_by_sub(u.sub) for u in users], store, pds,
                                nuke_policy=settings.nuke_policy, when_tolerance_ms=settings.when_tolerance_ms)
    return engine.totals([a.summary() for a in audits]), {a.did: a.counts for a in audits}


def assert_same_as_full(total, summaries, reference) -> None:
    ref_total, ref_by_user = reference
    for key in ("users_audited", "users_unreadable", "moods_live", "by_status", "problems", "sync_rate_pct",
                "users_with_problems", "moods_unverified"):
        assert total[key] == ref_total[key], key
    by_user = {s["did"]: {k: v for k, v in s["by_status"].items() if v} for s in summaries if not s.get("no_account")}
    assert by_user == {did: {k: v for k, v in counts.items() if v} for did, counts in ref_by_user.items()}


def test_incremental_audit_skips_unchanged_users_and_rechecks_every_change(
    mongo_db, make_account, test_settings, dagster_instance, pds
):
    store = store_for(test_settings)
    accounts = [make_account(f"inc{i}") for i in range(4)]
    users = [add_user(mongo_db, a, moods=3) for a in accounts]
    for user in users[:3]:
        sync_user(store.user_by_sub(user.sub), store, pds)
    ghost = add_user(mongo_db, make_account("incgh"), moods=1)  # its DID will name no repo
    mongo_db.users.update_one({"_id": ghost.sub}, {"$set": {"atproto.did": "did:plc:" + "c" * 24}})
    ghost.did = "did:plc:" + "c" * 24
    everyone = users + [ghost]
    defs = audit_definitions(test_settings)
    receipts = ReceiptStore(test_settings.state_dir)

    total, summaries = audit_now(dagster_instance, test_settings, store, everyone, defs=defs)
    assert (total["users_checked"], total["users_unchanged"]) == (5, 0)
    assert total["users_unreadable"] == 1 and total["by_status"]["missing_on_pds"] == 3  # users[3] never synced
    assert set(receipts.load_many([u.did for u in everyone])) == {u.did for u in users}  # unreadable: none
    assert_same_as_full(total, summaries, full_reference(test_settings, store, pds, everyone))

    # Nothing changed: no run for anyone but the unreadable user; the same figures.
    total, summaries = audit_now(dagster_instance, test_settings, store, everyone, defs=defs)
    assert (total["users_checked"], total["users_unchanged"], total["runs"]) == (1, 4, 1)
    assert_same_as_full(total, summaries, full_reference(test_settings, store, pds, everyone))
    facts = receipts.load_pass()
    assert facts["users_unchanged"] == 4 and facts["rev_min"] <= facts["rev_max"]

    # Mongo changes for users[0] (an edit), a write by another client to users[1]'s repo with
    # Mongo untouched (a record of another collection: only the rev moves), and an orphan mood
    # record written to users[2]'s repo by another client.
    mongo_db.moods.update_one({"_id": ObjectId(users[0].mood_ids[0])}, {"$set": {"mood": "edited elsewhere"}})
    session_for(pds, accounts[1]).put_record(OTHER_COLLECTION, "self", {"$type": OTHER_COLLECTION, "text": "hi"})
    session_for(pds, accounts[2]).put_record(MOOD_COLLECTION, free_tid(7),
                                             odd_record("stray", "2024-01-01T00:00:00.000Z", str(ObjectId())))
    total, summaries = audit_now(dagster_instance, test_settings, store, everyone, defs=defs)
    assert (total["users_checked"], total["users_unchanged"]) == (4, 1)
    checked = {s["did"] for s in summaries if not s.get("unchanged")}
    assert checked == {users[0].did, users[1].did, users[2].did, ghost.did}
    assert total["by_status"]["content_mismatch"] == 1 and total["by_status"]["orphan"] == 1
    assert_same_as_full(total, summaries, full_reference(test_settings, store, pds, everyone))
    assert receipts.load(users[1].did)["rev"] == pds.latest_commit(users[1].did).rev

    # --full checks everyone, receipts or not.
    total, summaries = audit_now(dagster_instance, test_settings, store, everyone, defs=defs, full=True)
    assert (total["users_checked"], total["users_unchanged"]) == (5, 0)
    assert_same_as_full(total, summaries, full_reference(test_settings, store, pds, everyone))

    # Changed users apart share one run, which leaves the unchanged user between them alone (no
    # materialization, and its partition stays materialized); the ghost (no receipt) runs alone.
    for user in (users[0], users[2]):
        mongo_db.moods.update_one({"_id": ObjectId(user.mood_ids[1])}, {"$set": {"mood": "edited again"}})
    before = partition_materializations(dagster_instance, users[1].did)
    total, summaries = audit_now(dagster_instance, test_settings, store, everyone, defs=defs)
    assert (total["users_checked"], total["users_unchanged"], total["runs"]) == (3, 2, 2)
    assert partition_materializations(dagster_instance, users[1].did) == before
    status = dagster_instance.get_status_by_partition(
        dg.AssetKey("mood_audit"), [u.did for u in users], dg.DynamicPartitionsDefinition(name="users"))
    assert set(status.values()) == {dg.AssetPartitionStatus.MATERIALIZED}
    assert_same_as_full(total, summaries, full_reference(test_settings, store, pds, everyone))

    # A user that becomes unreadable loses its receipt, so it is checked until it is readable.
    mongo_db.users.update_one({"_id": users[3].sub}, {"$set": {"atproto.did": "did:plc:" + "d" * 24}})
    total, _ = audit_now(dagster_instance, test_settings, store, everyone, defs=defs)
    assert total["users_unreadable"] == 2 and total["users_unchanged"] == 3
    assert receipts.load("did:plc:" + "d" * 24) is None


# --- the property -------------------------------------------------------------------------------

OPS = ["insert", "edit", "edit_when", "nuke", "unnuke", "delete_mood",
       "pds_create", "pds_update", "pds_delete", "other_client", "backfill"]


class World:
    def __init__(self, mongo_db, make_account, settings, pds, instance) -> None:
        self.db, self.settings, self.pds, self.instance = mongo_db, settings, pds, instance
        self.store = store_for(settings)
        self.accounts = [make_account(f"prop{i}") for i in range(3)]
        self.users = [add_user(mongo_db, a, moods=2) for a in self.accounts]
        self.sessions = [session_for(pds, a) for a in self.accounts]  # one login each, reused
        for user in self.users[:2]:
            sync_user(self.store.user_by_sub(user.sub), self.store, pds)
        self.defs = audit_definitions(settings)

    def moods(self, i: int) -> list[dict]:
        return list(self.db.moods.find({"user": self.users[i].sub}).sort("_id", 1))

    def apply(self, op: str, i: int, n: int) -> None:
        user, session, docs = self.users[i], self.sessions[i], self.moods(i)
        doc = docs[n % len(docs)] if docs else None
        records = self.pds.list_records(user.did, MOOD_COLLECTION)
        record = records[n % len(records)] if records else None
        if op == "insert":
            self.db.moods.insert_one({"_id": ObjectId(), "user": user.sub, "mood": f"new {n}",
                                      "when": BASE_WHEN + timedelta(seconds=n % 10_000)})
        elif op == "edit" and doc:
            self.db.moods.update_one({"_id": doc["_id"]}, {"$set": {"mood": f"edited {n}"}})
        elif op == "edit_when" and doc:
            self.db.moods.update_one({"_id": doc["_id"]}, {"$set": {"when": doc["when"] + timedelta(seconds=5)}})
        elif op == "nuke":
            self.db.moods.update_many({"user": user.sub}, {"$set": {"deleted": True}})
        elif op == "unnuke":
            self.db.moods.update_many({"user": user.sub}, {"$set": {"deleted": False}})
        elif op == "delete_mood" and doc and len(docs) > 1:  # keep the user syncable
            self.db.moods.delete_one({"_id": doc["_id"]})
        elif op == "pds_create" and doc:
            mood = self.store.mood(str(doc["_id"]))
            built = build_record(mood)
            if isinstance(built, dict):
                session.put_record(MOOD_COLLECTION, free_tid(n % 997), built)  # maybe a duplicate
        elif op == "pds_update" and record:
            session.put_record(MOOD_COLLECTION, record.rkey, dict(record.value, mood=f"changed on the PDS {n}"))
        elif op == "pds_delete" and record:
            session.delete_record(MOOD_COLLECTION, record.rkey)
        elif op == "other_client":
            session.put_record(OTHER_COLLECTION, "self", {"$type": OTHER_COLLECTION, "n": n})
        elif op == "backfill":
            sync_user(self.store.user_by_sub(user.sub), self.store, self.pds)

    def compare(self) -> dict:
        total, summaries = audit_now(self.instance, self.settings, self.store, self.users, defs=self.defs)
        assert_same_as_full(total, summaries, full_reference(self.settings, self.store, self.pds, self.users))
        return total


@pytest.fixture
def world(mongo_db, make_account, test_settings, pds, dagster_instance):
    built = World(mongo_db, make_account, test_settings, pds, dagster_instance)
    built.compare()  # the first audit: receipts for everyone
    return built


changes = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 2), st.integers(0, 10**6)), min_size=0, max_size=4)


@settings(max_examples=3, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=changes)
@example(steps=[("pds_update", 0, 1), ("other_client", 1, 2)])  # repo-only changes: Mongo untouched
@example(steps=[("edit", 2, 3), ("nuke", 0, 0), ("unnuke", 0, 0)])  # Mongo-only changes
def test_incremental_audit_reports_what_a_full_audit_reports(world, steps):
    for op, i, n in steps:
        world.apply(op, i, n)
    total = world.compare()
    # The property cannot pass by checking everyone: without changes nobody is checked again.
    touched = {i for op, i, _ in steps}
    assert total["users_checked"] <= len(touched)
    if not steps:
        assert total["users_unchanged"] == len(world.users)
