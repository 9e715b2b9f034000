"""The backfill end to end on the real local PDS, a real Mongo-wire server and a real Dagster
instance: partitions, materializations, idempotence, failures that stay with their user."""

from __future__ import annotations

import dagster as dg
import pytest
from bson import ObjectId

from moods_pipeline.cli.common import run_job_over_partitions
from moods_pipeline.storage.results import ResultsStore
from moods_pipeline.sync.backfill import sync_user
from moods_pipeline_tests.world import (
    add_user,
    check_invariant,
    definitions_for,
    repo_snapshot,
    store_for,
)

pytestmark = pytest.mark.integration


def backfill(instance, settings, users, dry_run=False, **pds_options):
    defs = definitions_for(settings, **pds_options)
    run_config = {"ops": {"mood_backfill": {"config": {"dry_run": dry_run}}}}
    run_ids = run_job_over_partitions(instance, "mood_backfill_job", [u.did for u in users], run_config, defs=defs)
    results = ResultsStore(settings.state_dir)
    outcomes = {o.did: o for run_id in run_ids for o in results.run_backfill(run_id)}
    return run_ids, outcomes


def test_backfill_writes_every_valid_live_mood_once_and_materializes_each_user(
    mongo_db, make_account, test_settings, dagster_instance, pds
):
    alice = add_user(mongo_db, make_account("alice"), texts=["sunny", "cloudy\nwith a chance", "🌈" * 10, "   "])
    bob = add_user(mongo_db, make_account("bob"), moods=30)
    nuked = add_user(mongo_db, make_account("nuked"), moods=3, nuked=True)
    users = [alice, bob, nuked]

    run_ids, outcomes = backfill(dagster_instance, test_settings, users)

    assert outcomes[alice.did].created == 3 and len(outcomes[alice.did].skipped_invalid) == 1
    assert "empty" in outcomes[alice.did].skipped_invalid[0][1]
    assert outcomes[bob.did].created == 30
    assert outcomes[nuked.did].created == 0 and outcomes[nuked.did].live == 0
    assert repo_snapshot(pds, nuked.did) == {}
    store = store_for(test_settings)
    assert check_invariant(store, pds, users) == 33

    status = dagster_instance.get_status_by_partition(
        dg.AssetKey("mood_backfill"), [u.did for u in users], dg.DynamicPartitionsDefinition(name="users")
    )
    assert set(status.values()) == {dg.AssetPartitionStatus.MATERIALIZED}
    event = dagster_instance.get_latest_materialization_event(dg.AssetKey("mood_backfill"))
    assert event is not None
    materializations = dagster_instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("mood_backfill"), asset_partitions=[bob.did]), limit=1
    ).records
    metadata = materializations[0].asset_materialization.metadata
    assert metadata["created"].value == 30 and metadata["live_moods"].value == 30
    assert metadata["handle"].value == f"@{bob.handle}"


def test_second_run_writes_nothing(mongo_db, make_account, test_settings, dagster_instance, pds):
    users = [add_user(mongo_db, make_account("twice"), moods=12)]
    backfill(dagster_instance, test_settings, users)
    before = repo_snapshot(pds, users[0].did)
    _, outcomes = backfill(dagster_instance, test_settings, users)
    outcome = outcomes[users[0].did]
    assert (outcome.created, outcome.already_synced, outcome.pointers_written, outcome.batches) == (0, 12, 0, 0)
    assert repo_snapshot(pds, users[0].did) == before


def test_dry_run_plans_everything_and_writes_nothing(mongo_db, make_account, test_settings, dagster_instance, pds):
    user = add_user(mongo_db, make_account("dry"), moods=7)
    run_ids, outcomes = backfill(dagster_instance, test_settings, [user], dry_run=True)
    outcome = outcomes[user.did]
    assert outcome.dry_run and outcome.would_create == 7 and outcome.created == 0
    assert repo_snapshot(pds, user.did) == {}
    assert all(m.rkey is None for m in store_for(test_settings).moods_of(user.sub))
    # A dry run materializes nothing; it leaves an observation with the plan.
    assert dagster_instance.get_latest_materialization_event(dg.AssetKey("mood_backfill")) is None
    assert ResultsStore(test_settings.state_dir).latest_backfill() == []


def test_wrong_password_fails_that_user_only(mongo_db, make_account, test_settings, dagster_instance, pds):
    good = add_user(mongo_db, make_account("good"), moods=4)
    bad = add_user(mongo_db, make_account("badpw"), moods=4, password="not-the-password-at-all")
    run_ids, outcomes = backfill(dagster_instance, test_settings, [good, bad])
    assert outcomes[good.did].ok and outcomes[good.did].created == 4
    assert outcomes[bad.did].error.startswith("login failed")
    assert len(outcomes[bad.did].failed) == 4
    assert repo_snapshot(pds, bad.did) == {}
    status = dagster_instance.get_status_by_partition(
        dg.AssetKey("mood_backfill"), [good.did, bad.did], dg.DynamicPartitionsDefinition(name="users")
    )
    assert status == {good.did: dg.AssetPartitionStatus.MATERIALIZED, bad.did: dg.AssetPartitionStatus.FAILED}
    run = dagster_instance.get_run_by_id(run_ids[0])
    assert run.status == dg.DagsterRunStatus.FAILURE
    failure = [e for e in dagster_instance.all_logs(run_ids[0]) if e.dagster_event and e.dagster_event.is_step_failure]
    assert bad.did in failure[0].dagster_event.step_failure_data.error.message
    assert "not-the-password-at-all" not in str([e.message for e in dagster_instance.all_logs(run_ids[0])])


def test_stored_did_of_another_account_fails_login_and_changes_no_repo(
    mongo_db, make_account, test_settings, dagster_instance, pds
):
    victim = make_account("victim")
    mallory = make_account("mallory")
    # Mallory's users row names the victim's DID but holds Mallory's own password.
    user = add_user(mongo_db, victim, moods=3, password=mallory.password.reveal())
    victim_before, mallory_before = repo_snapshot(pds, victim.did), repo_snapshot(pds, mallory.did)
    _, outcomes = backfill(dagster_instance, test_settings, [user])
    assert outcomes[victim.did].error.startswith("login failed")
    assert repo_snapshot(pds, victim.did) == victim_before == {}
    assert repo_snapshot(pds, mallory.did) == mallory_before == {}


class CrashAfterPdsWrite:
    """A store whose first pointer write-back dies, as a run killed between the two writes."""

    def __init__(self, store):
        self.store = store
        self.crashed = False

    def __getattr__(self, name):
        return getattr(self.store, name)

    def write_pointers(self, pairs):
        if pairs and not self.crashed:
            self.crashed = True
            raise KeyboardInterrupt("killed between the PDS write and the Mongo write-back")
        return self.store.write_pointers(pairs)


def test_crash_between_pds_write_and_pointer_then_rerun_leaves_no_duplicate(
    mongo_db, make_account, test_settings, dagster_instance, pds
):
    user = add_user(mongo_db, make_account("crash"), moods=40)
    store = store_for(test_settings)
    account = store.user_by_did(user.did)
    crashing = CrashAfterPdsWrite(store)
    with pytest.raises(KeyboardInterrupt):
        sync_user(account, crashing, pds)
    assert crashing.crashed
    assert len(repo_snapshot(pds, user.did)) == 40  # the records landed...
    assert all(m.rkey is None for m in store.moods_of(user.sub))  # ...the pointers did not
    _, outcomes = backfill(dagster_instance, test_settings, [user])
    assert outcomes[user.did].created == 0 and outcomes[user.did].pointers_written == 40
    assert check_invariant(store, pds, [user]) == 40
    assert len(repo_snapshot(pds, user.did)) == 40


def test_summary_counts_users_without_account(mongo_db, make_account, test_settings, dagster_instance):
    add_user(mongo_db, None, moods=2)
    synced = add_user(mongo_db, make_account("sum"), moods=2)
    backfill(dagster_instance, test_settings, [synced])
    defs = definitions_for(test_settings)
    result = defs.resolve_job_def("backfill_summary_job").execute_in_process(instance=dagster_instance)
    assert result.success
    metadata = dagster_instance.get_latest_materialization_event(
        dg.AssetKey("backfill_summary")).asset_materialization.metadata
    assert metadata["skipped_no_account"].value == 1
    assert metadata["created"].value == 2 and metadata["users"].value == 1
    assert metadata["sync_rate_pct"].value == 100.0


def tamper(pds, store, user, when_within_ms: int = 500) -> dict[str, str]:
    """Backfill ``user`` (six moods or more), then make its repo disagree with Mongo the ways a
    backfill cannot fix. Returns role -> mood id."""
    from datetime import timedelta

    from moods_pipeline import MOOD_COLLECTION
    from moods_pipeline.model import iso_when
    from moods_pipeline.secret import Secret

    sync_user(store.user_by_sub(user.sub), store, pds)
    moods = {m.id: m for m in store.moods_of(user.sub)}
    ids = dict(zip(["text", "when", "duplicate", "field", "within", "no_pointer"], user.mood_ids))
    records = {value["ref"]: (rkey, value) for rkey, value in repo_snapshot(pds, user.did).items()}
    session = pds.login(user.did, Secret(user.password), expected_did=user.did)

    def put(role, **changes):
        rkey, value = records[ids[role]]
        value = {k: v for k, v in {**value, **changes}.items() if v is not None}
        session.put_record(MOOD_COLLECTION, rkey, value)

    put("text", mood="written by someone else")
    put("when", when=iso_when(moods[ids["when"]].when + timedelta(seconds=5)))
    session.create_record(MOOD_COLLECTION, dict(records[ids["duplicate"]][1]))
    put("field", mood=None, text=records[ids["field"]][1]["mood"])
    put("within", when=iso_when(moods[ids["within"]].when + timedelta(milliseconds=when_within_ms)))
    put("no_pointer", mood="also changed")
    store.db.moods.update_one({"_id": ObjectId(ids["no_pointer"])}, {"$unset": {"atproto": ""}})
    return ids


NEEDS_REPAIR_ROLES = {"text", "when", "duplicate", "field", "no_pointer"}


def test_records_that_differ_or_repeat_are_counted_in_needs_repair_without_more_reads(
    mongo_db, make_account, test_settings, dagster_instance, pds
):
    from datetime import datetime, timezone

    from moods_pipeline import MOOD_COLLECTION
    from moods_pipeline.atproto.client import PdsClient

    user = add_user(mongo_db, make_account("repair"), texts=[f"mood {i}" for i in range(6)])
    store = store_for(test_settings)
    ids = tamper(pds, store, user)
    new_id = ObjectId()
    mongo_db.moods.insert_one({"_id": new_id, "user": user.sub, "mood": "new one",
                               "when": datetime(2024, 6, 1, tzinfo=timezone.utc)})
    wanted = {ids[role] for role in NEEDS_REPAIR_ROLES}

    # A dry run counts them, with no request beyond the listing the backfill makes anyway.
    with PdsClient(test_settings.pds_url) as counted:
        counted.list_records(user.did, MOOD_COLLECTION)
        listing = counted.counters.requests
        counted.reset_counters()
        outcome = sync_user(store.user_by_sub(user.sub), store, counted, dry_run=True)
        assert counted.counters.requests == listing
    assert outcome.needs_repair == 5 and {m for m, _ in outcome.needs_repair_reasons} == wanted
    assert outcome.would_create == 1

    _, outcomes = backfill(dagster_instance, test_settings, [user])
    outcome = outcomes[user.did]
    assert outcome.ok and outcome.created == 1 and outcome.pointers_written == 2  # the new one, no_pointer
    assert outcome.needs_repair == 5
    reasons = dict(outcome.needs_repair_reasons)
    assert set(reasons) == wanted
    assert reasons[ids["text"]].startswith("content_mismatch: record rkey ") and "mood differs" in reasons[ids["text"]]
    assert "when differs by 5,000 ms" in reasons[ids["when"]]
    assert "record lacks mood (has text)" in reasons[ids["field"]]
    assert reasons[ids["duplicate"]].startswith("duplicate: record rkey ")
    assert not any("someone else" in r or "mood 0" in r for r in reasons.values())  # never the text

    records = dagster_instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("mood_backfill"), asset_partitions=[user.did]), limit=1).records
    metadata = records[0].asset_materialization.metadata
    assert metadata["needs_repair"].value == 5
    assert {row.data["mood_id"] for row in metadata["needs_repair_reasons"].value.records} == wanted

    defs = definitions_for(test_settings)
    assert defs.resolve_job_def("backfill_summary_job").execute_in_process(instance=dagster_instance).success
    summary = dagster_instance.get_latest_materialization_event(
        dg.AssetKey("backfill_summary")).asset_materialization.metadata
    assert summary["needs_repair"].value == 5
    assert user.did in summary["users_needing_repair"].value and "--apply" in summary["users_needing_repair"].value
