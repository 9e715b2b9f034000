"""The Dagster side of incremental audits on the real stack: the nightly schedule requests runs
only for changed users (and skips the tick when nobody changed), the weekly schedule audits
everyone with ``full``, a run launched from the UI skips unchanged partitions with an
observation, and ``audit_summary`` says how many users were verified unchanged and as of which revs."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg
import pytest
from bson import ObjectId

from moods_pipeline.defs.dagster_private import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from moods_pipeline.defs.partitions import USERS_PARTITION
from moods_pipeline.storage.receipts import ReceiptStore
from moods_pipeline.sync.backfill import sync_user
from moods_pipeline_tests.defs.test_audit import audit_definitions, run_audit_job
from moods_pipeline_tests.world import add_user, resources_for, store_for

pytestmark = pytest.mark.integration

WHEN = datetime(2026, 1, 4, 2, 0, tzinfo=timezone.utc)  # a Sunday


def synced_users(mongo_db, make_account, store, pds, n: int, prefix: str):
    users = []
    for i in range(n):
        user = add_user(mongo_db, make_account(f"{prefix}{i}"), moods=2)
        sync_user(store.user_by_sub(user.sub), store, pds)
        users.append(user)
    return users


def partition_materializations(instance, did: str) -> int:
    return len(instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("mood_audit"), asset_partitions=[did]), limit=100).records)


def test_nightly_schedule_runs_only_changed_users_and_weekly_runs_everyone(
    mongo_db, make_account, test_settings, dagster_instance, pds
):
    from moods_pipeline.defs.audit.schedules import nightly_audit_schedule, weekly_full_audit_schedule

    store = store_for(test_settings)
    users = synced_users(mongo_db, make_account, store, pds, 3, "sched")
    keys = [u.did for u in users]
    with dg.build_schedule_context(instance=dagster_instance, scheduled_execution_time=WHEN,
                                   resources=resources_for(test_settings)) as context:
        check_schedules(context, dagster_instance, test_settings, mongo_db, users, keys)


def check_schedules(context, dagster_instance, test_settings, mongo_db, users, keys):
    from moods_pipeline.defs.audit.schedules import nightly_audit_schedule, weekly_full_audit_schedule

    dagster_instance.add_dynamic_partitions(USERS_PARTITION, keys)
    # No receipts yet: everyone, in one run.
    [request] = nightly_audit_schedule(context)
    assert (request.tags[ASSET_PARTITION_RANGE_START_TAG], request.tags[ASSET_PARTITION_RANGE_END_TAG]) == (
        keys[0], keys[-1])
    result = audit_definitions(test_settings).resolve_job_def("mood_audit_job").execute_in_process(
        instance=dagster_instance, tags=request.tags, run_config=request.run_config, raise_on_error=False)
    assert result.success

    # Nothing moved: the tick is skipped, with the counts.
    skipped = nightly_audit_schedule(context)
    assert isinstance(skipped, dg.SkipReason) and "all 3 users unchanged" in skipped.skip_message
    assert ReceiptStore(test_settings.state_dir).load_pass()["users_unchanged"] == 3

    # The middle user's mood edited in Mongo: one run, for that partition alone.
    mongo_db.moods.update_one({"_id": ObjectId(users[1].mood_ids[0])}, {"$set": {"mood": "edited"}})
    [request] = nightly_audit_schedule(context)
    assert request.tags[ASSET_PARTITION_RANGE_START_TAG] == request.tags[ASSET_PARTITION_RANGE_END_TAG] == keys[1]
    assert request.run_config["ops"]["mood_audit"]["config"]["full"] is False

    # The weekly schedule: every partition, full.
    [weekly] = weekly_full_audit_schedule(context)
    assert (weekly.tags[ASSET_PARTITION_RANGE_START_TAG], weekly.tags[ASSET_PARTITION_RANGE_END_TAG]) == (
        keys[0], keys[-1])
    assert weekly.run_config["ops"]["mood_audit"]["config"]["full"] is True
    assert weekly.run_key.startswith("weekly-full-audit:2026-01-04:")


def test_a_ui_run_skips_unchanged_partitions_and_the_summary_says_so(
    mongo_db, make_account, test_settings, dagster_instance, pds
):
    store = store_for(test_settings)
    users = synced_users(mongo_db, make_account, store, pds, 3, "uirun")
    run_audit_job(dagster_instance, test_settings, users)  # receipts for all three
    before = {u.did: partition_materializations(dagster_instance, u.did) for u in users}
    receipts = ReceiptStore(test_settings.state_dir).load_many([u.did for u in users])
    assert set(receipts) == {u.did for u in users}

    mongo_db.moods.insert_one({"_id": ObjectId(), "user": users[2].sub, "mood": "a new one",
                               "when": datetime(2025, 1, 1, tzinfo=timezone.utc)})
    run_ids, summaries = run_audit_job(dagster_instance, test_settings, users)  # config full: false
    assert [summaries[u.did].get("unchanged", False) for u in users] == [True, True, False]
    assert summaries[users[2].did]["by_status"]["missing_on_pds"] == 1
    after = {u.did: partition_materializations(dagster_instance, u.did) for u in users}
    assert after == {users[0].did: before[users[0].did], users[1].did: before[users[1].did],
                     users[2].did: before[users[2].did] + 1}
    observations = [
        e.asset_observation for e in (r.event_log_entry.dagster_event.event_specific_data
                                      for r in dagster_instance.get_records_for_run(run_ids[0]).records
                                      if r.event_log_entry.dagster_event
                                      and r.event_log_entry.dagster_event.event_type_value == "ASSET_OBSERVATION")
    ]
    assert {o.partition for o in observations} == {users[0].did, users[1].did}
    assert all(o.metadata["unchanged"].value is True and o.metadata["receipt_rev"].value == receipts[o.partition]["rev"]
               for o in observations)

    # full: true audits all three again.
    _, summaries = run_audit_job(dagster_instance, test_settings, users, config={"full": True})
    assert not any(s.get("unchanged") for s in summaries.values()) and len(summaries) == 3

    # the summary's metadata: how many were verified unchanged, as of which revs
    run_audit_job(dagster_instance, test_settings, users)
    result = audit_definitions(test_settings).resolve_job_def("audit_summary_job").execute_in_process(
        instance=dagster_instance)
    assert result.success
    meta = dagster_instance.get_latest_materialization_event(dg.AssetKey("audit_summary")).asset_materialization.metadata
    assert meta["users_verified_unchanged"].value == 3
    revs = sorted(r["rev"] for r in ReceiptStore(test_settings.state_dir).load_many([u.did for u in users]).values())
    assert f"revs {revs[0]} .. {revs[-1]}" in meta["unchanged_as_of"].value
    assert users[0].did in meta["unchanged_receipts"].value or f"@{users[0].handle}" in meta["unchanged_receipts"].value
