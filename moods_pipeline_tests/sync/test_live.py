"""Live sync, deletion sync and erasure (moods_pipeline.sync.live) on the real local PDS and a
real Mongo-wire server: idempotence, skips with reasons, a PDS that is down, duplicates.

Deletion sync mirrors moods deleted or nuked in Mongo, so the tests nuke a mood before deleting
its records; every delete goes through a deletion journal (``journal`` fixture)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from bson import ObjectId

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.client import PdsClient
from moods_pipeline.secret import Secret
from moods_pipeline.storage.journal import DeletionJournal, read_journal
from moods_pipeline.sync.backfill import sync_user
from moods_pipeline.sync.live import (
    delete_all_moods,
    delete_mood,
    erase_account,
    plan_erase,
    sync_mood,
    sync_moods,
)
from moods_pipeline.sync.mood_record import record_key_for
from moods_pipeline_tests.world import add_user, check_invariant, dead_url, repo_snapshot

pytestmark = pytest.mark.integration


@pytest.fixture
def dead_pds():
    client = PdsClient(dead_url(), max_retries=1, backoff_base_s=0.01, timeout=2)
    yield client
    client.close()


@pytest.fixture
def journal(tmp_path):
    return DeletionJournal(tmp_path / "state", command="test", run_id="test-run")


def nuke(db, *mood_ids: str) -> None:
    db.moods.update_many({"_id": {"$in": [ObjectId(m) for m in mood_ids]}}, {"$set": {"deleted": True}})


def account_exists(pds, admin_password, did: str) -> bool:
    """The admin API's word on whether the PDS still has the account."""
    return pds.admin(admin_password).get_account_info(did) is not None


def put_extra(account, pds, rkey: str, value: dict) -> None:
    pds.login(account.did, account.password, expected_did=account.did).put_record(MOOD_COLLECTION, rkey, value)


def test_sync_mood_writes_the_deterministic_record_then_is_idempotent(mongo_db, make_account, store, pds):
    user = add_user(mongo_db, make_account("live"), moods=3)
    mood_id = user.mood_ids[1]
    result = sync_mood(store, pds, mood_id)
    expected_rkey = record_key_for(store.mood(mood_id))
    assert (result.status, result.action, result.rkey, result.did) == ("synced", "created", expected_rkey, user.did)
    records = repo_snapshot(pds, user.did)
    assert list(records) == [expected_rkey] and records[expected_rkey]["ref"] == mood_id
    assert store.mood(mood_id).rkey == expected_rkey

    again = sync_mood(store, pds, mood_id)
    assert (again.status, again.action, again.rkey) == ("synced", "already_synced", expected_rkey)
    assert repo_snapshot(pds, user.did) == records

    # The others, together: one listing and one login for the user; the invariant holds.
    results = sync_moods(store, pds, user.mood_ids)
    assert [r.action for r in results] == ["created", "already_synced", "created"]
    assert check_invariant(store, pds, [user]) == 3


def test_record_already_on_pds_gets_only_its_pointer(mongo_db, make_account, store, pds):
    account = make_account("ptr")
    user = add_user(mongo_db, account, moods=1)
    mood_id = user.mood_ids[0]
    mood = store.mood(mood_id)
    # As the application writes live: a PDS-assigned-looking rkey, the pointer write lost.
    put_extra(account, pds, "3kaaaaaaaaa22", {"$type": MOOD_COLLECTION, "mood": mood.text,
                                              "when": "2024-03-01T12:00:00.123Z", "ref": mood_id})
    result = sync_mood(store, pds, mood_id)
    assert (result.status, result.action, result.rkey) == ("synced", "pointer_written", "3kaaaaaaaaa22")
    assert list(repo_snapshot(pds, user.did)) == ["3kaaaaaaaaa22"]
    assert check_invariant(store, pds, [user]) == 1


def test_skips_say_why(mongo_db, make_account, store, pds):
    user = add_user(mongo_db, make_account("skip"), texts=["fine", "   "])
    nuked = add_user(mongo_db, make_account("nuke"), moods=1, nuked=True)
    nobody = add_user(mongo_db, None, moods=1)
    results = sync_moods(store, pds, [user.mood_ids[1], nuked.mood_ids[0], nobody.mood_ids[0],
                                      str(ObjectId()), "not-an-id"])
    assert [r.status for r in results] == ["skipped"] * 5
    reasons = [r.reason for r in results]
    assert reasons[0].startswith("invalid: mood is empty")
    assert reasons[1].startswith("nuked")
    assert reasons[2].startswith("no PDS account")
    assert reasons[3] == "no such mood in MongoDB"
    assert reasons[4].startswith("not an ObjectId")
    assert repo_snapshot(pds, user.did) == {} and repo_snapshot(pds, nuked.did) == {}


def test_pds_down_fails_without_raising_then_syncs(mongo_db, make_account, store, pds, dead_pds, journal):
    user = add_user(mongo_db, make_account("down"), moods=2)
    results = sync_moods(store, dead_pds, user.mood_ids)
    assert [r.status for r in results] == ["failed", "failed"]
    assert "unreachable" in results[0].reason
    assert all(m.rkey is None for m in store.moods_of(user.sub))
    deleted = delete_mood(store, dead_pds, user.mood_ids[0], journal=journal)
    assert deleted.status == "failed" and "unreachable" in deleted.reason
    erased = delete_all_moods(store, dead_pds, user.sub, journal=journal)
    assert erased.status == "failed" and not erased.ok
    # The PDS is back (the live client): the same call syncs.
    assert [r.status for r in sync_moods(store, pds, user.mood_ids)] == ["synced", "synced"]
    assert check_invariant(store, pds, [user]) == 2


def test_wrong_password_fails_with_the_reason_and_no_secret(mongo_db, make_account, store, pds):
    user = add_user(mongo_db, make_account("badpw"), moods=1, password="definitely-not-it-123")
    result = sync_mood(store, pds, user.mood_ids[0])
    assert result.status == "failed" and result.reason.startswith("login failed")
    assert "definitely-not-it-123" not in str(result.to_dict())
    assert repo_snapshot(pds, user.did) == {}


def test_delete_mood_removes_duplicates_and_only_them(mongo_db, make_account, store, pds, journal):
    account = make_account("del")
    user = add_user(mongo_db, account, moods=3)
    sync_user(store.user_by_sub(user.sub), store, pds)
    target, other = user.mood_ids[0], user.mood_ids[1]
    pointed = store.mood(target).rkey
    # A duplicate of the target (the interrupted-migration kind) and a legacy-field copy.
    put_extra(account, pds, "3kaaaaaaaaa22", {"$type": MOOD_COLLECTION, "mood": "x", "when": "2024-03-01T12:00:00.123Z",
                                              "ref": target})
    put_extra(account, pds, "3kaaaaaaaaa23", {"$type": MOOD_COLLECTION, "mood": "x", "when": "2024-03-01T12:00:00.123Z",
                                              "mongoId": target})
    before = repo_snapshot(pds, user.did)
    assert len(before) == 5

    # A live mood's records are not deletion sync's to delete.
    live = delete_mood(store, pds, target, journal=journal)
    assert live.status == "skipped" and live.reason.startswith("kept") and live.removed == ()
    assert set(live.kept) == {pointed, "3kaaaaaaaaa22", "3kaaaaaaaaa23"}
    assert repo_snapshot(pds, user.did) == before and store.mood(target).rkey == pointed

    nuke(mongo_db, target)
    result = delete_mood(store, pds, target, journal=journal)
    assert (result.status, result.action, result.pointer_unset) == ("deleted", "removed", True)
    assert set(result.removed) == {pointed, "3kaaaaaaaaa22", "3kaaaaaaaaa23"}
    after = repo_snapshot(pds, user.did)
    assert set(after) == set(before) - set(result.removed)
    assert all((v.get("ref") or v.get("mongoId")) != target for v in after.values())
    assert store.mood(target).rkey is None and store.mood(other).rkey is not None

    again = delete_mood(store, pds, target, journal=journal)
    assert (again.status, again.action, again.removed) == ("deleted", "nothing_on_pds", ())
    assert repo_snapshot(pds, user.did) == after

    # One delete batch, journaled: intent (the three targets) then result; no mood text.
    lines = read_journal(journal.folder.parent)
    assert [(e["phase"], e["kind"] if e["phase"] == "intent" else e["outcome"]) for e in lines] == [
        ("intent", "records"), ("result", "deleted")]
    assert sorted(t["rkey"] for t in lines[0]["targets"]) == sorted(result.removed)
    assert {t["mood_id"] for t in lines[0]["targets"]} == {target}
    assert lines[1]["id"] == lines[0]["id"] and sorted(lines[1]["deleted"]) == sorted(result.removed)
    assert "mood number" not in journal_text(journal)


def test_delete_without_a_journal_is_refused(mongo_db, make_account, store, pds):
    user = add_user(mongo_db, make_account("nojr"), moods=1)
    sync_user(store.user_by_sub(user.sub), store, pds)
    before = repo_snapshot(pds, user.did)
    nuke(mongo_db, user.mood_ids[0])
    result = delete_mood(store, pds, user.mood_ids[0])
    assert result.status == "failed" and "no deletion journal" in result.reason
    erased = delete_all_moods(store, pds, user.sub)
    assert erased.status == "failed" and "no deletion journal" in erased.reason and erased.left == 1
    assert repo_snapshot(pds, user.did) == before and store.mood(user.mood_ids[0]).rkey


def journal_text(journal) -> str:
    return "".join(p.read_text() for p in sorted(journal.folder.glob("*.jsonl")))


def test_delete_mood_keeps_another_moods_record_the_pointer_names(mongo_db, make_account, store, pds, journal):
    user = add_user(mongo_db, make_account("stale"), moods=2)
    sync_user(store.user_by_sub(user.sub), store, pds)
    a, b = user.mood_ids
    # A's pointer wrongly names B's record: deleting A must not touch it.
    store.write_pointers([(a, store.mood(b).rkey)])
    nuke(mongo_db, a)
    result = delete_mood(store, pds, a, journal=journal)
    assert len(result.removed) == 1 and result.removed[0] != store.mood(b).rkey
    assert store.mood(b).rkey in repo_snapshot(pds, user.did)
    assert store.mood(a).rkey is None


def test_delete_all_moods_in_batches_leaves_none_and_keeps_the_account(mongo_db, make_account, store, pds,
                                                                       journal):
    account = make_account("all")
    user = add_user(mongo_db, account, moods=205)
    sync_user(store.user_by_sub(user.sub), store, pds)
    put_extra(account, pds, "3kaaaaaaaaa22", {"$type": MOOD_COLLECTION, "mood": "orphan",
                                              "when": "2024-03-01T12:00:00.123Z", "ref": "f" * 24})
    planned = plan_erase(store, pds, f"@{user.handle}", "records")
    assert planned.status == "planned" and len(planned.found_rkeys) == 206 and planned.left == 206
    assert len(repo_snapshot(pds, user.did)) == 206

    result = delete_all_moods(store, pds, f"@{user.handle}", journal=journal)
    assert result.status == "erased" and result.left == 0 and result.ok
    assert len(result.removed_rkeys) == 206 and result.pointers_unset == 205
    assert repo_snapshot(pds, user.did) == {}
    assert all(m.rkey is None for m in store.moods_of(user.sub))
    assert pds.describe_repo(user.did) is not None  # the account stays
    pds.login(account.did, account.password, expected_did=account.did)
    intents = [e for e in read_journal(journal.folder.parent) if e["phase"] == "intent"]
    assert len(intents) == 1 and len(intents[0]["targets"]) == 206 and intents[0]["reason"] == "erase records"

    again = delete_all_moods(store, pds, user.did, journal=journal)  # by DID this time
    assert again.status == "erased" and again.found_rkeys == [] and again.left == 0


def test_erase_account_removes_the_account_then_forgets_it(mongo_db, make_account, store, pds, local_pds, journal):
    account = make_account("erase")
    user = add_user(mongo_db, account, moods=4)
    sync_user(store.user_by_sub(user.sub), store, pds)
    bystander = add_user(mongo_db, make_account("stay"), moods=1)
    sync_user(store.user_by_sub(bystander.sub), store, pds)

    refused = erase_account(store, pds, Secret("not-the-admin-password"), user.sub, journal=journal)
    assert refused.status == "failed" and account_exists(pds, local_pds.admin_password, user.did)
    assert "not-the-admin-password" not in str(refused.to_dict())
    assert mongo_db.users.find_one({"_id": user.sub})["atproto"]["did"] == user.did

    result = erase_account(store, pds, local_pds.admin_password, user.did, journal=journal)
    assert result.status == "erased" and result.account_deleted and result.left == 0
    assert result.proved_by == "login"
    assert len(result.removed_rkeys) == 4 and result.pointers_unset == 4
    assert not account_exists(pds, local_pds.admin_password, user.did)
    assert "atproto" not in mongo_db.users.find_one({"_id": user.sub})
    assert all(m.rkey is None for m in store.moods_of(user.sub))
    assert check_invariant(store, pds, [bystander]) == 1  # nobody else touched

    again = erase_account(store, pds, local_pds.admin_password, user.sub, journal=journal)
    assert again.status == "skipped" and again.ok and again.reason.startswith("no PDS account")


def test_when_is_taken_from_mongo_not_the_clock(mongo_db, make_account, store, pds):
    user = add_user(mongo_db, make_account("when"), moods=0)
    mood_id = ObjectId()
    when = datetime(2025, 10, 9, 19, 0, 28, 821000, tzinfo=timezone.utc)
    mongo_db.moods.insert_one({"_id": mood_id, "user": user.sub, "mood": "feeling sunny", "when": when})
    result = sync_mood(store, pds, str(mood_id))
    record = repo_snapshot(pds, user.did)[result.rkey]
    assert record == {"$type": MOOD_COLLECTION, "mood": "feeling sunny", "when": "2025-10-09T19:00:28.821Z",
                      "ref": str(mood_id)}
