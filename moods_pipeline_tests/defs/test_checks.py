"""The audit's asset checks fail and pass as they should (real PDS, Mongo-wire server, Dagster
instance), and the nightly schedule audits everyone in batched runs."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from moods_pipeline.defs.partitions import USERS_PARTITION, users_partitions
from moods_pipeline.sync import audit as audit_engine
from moods_pipeline.sync.backfill import sync_user
from moods_pipeline_tests.defs.test_audit import (  # noqa: F401 - fixtures
    assert_no_text,
    audit_definitions,
    make_messy_user,
    run_audit_job,
    session_for,
)
from moods_pipeline_tests.world import add_user, store_for

pytestmark = pytest.mark.integration

RUN_CHECK = dg.AssetCheckKey(dg.AssetKey("mood_audit"), "audited_users_in_step")
SUMMARY_CHECK = dg.AssetCheckKey(dg.AssetKey("audit_summary"), "everyone_in_step")


def latest_check(instance, key):
    execution = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    return execution.event.dagster_event.event_specific_data  # AssetCheckEvaluation


def summarize(instance, settings):
    defs = audit_definitions(settings)
    result = defs.resolve_job_def("audit_summary_job").execute_in_process(instance=instance, raise_on_error=False)
    assert result.success
    return latest_check(instance, SUMMARY_CHECK)


def synced_user(mongo_db, make_account, store, pds, prefix, moods=2):
    user = add_user(mongo_db, make_account(prefix), moods=moods)
    sync_user(store.user_by_did(user.did), store, pds)
    return user


@pytest.fixture
def no_orphan_repos(monkeypatch):
    """The test PDS is shared by the whole session: other tests' accounts would be orphan repos
    of this test's Mongo database. Checks that must pass look at this test's users only."""
    monkeypatch.setattr(audit_engine, "find_orphan_repos", lambda store, pds, **kw: ([], {"repos": 0}))


def test_run_check_passes_for_users_in_step(mongo_db, make_account, test_settings, dagster_instance, pds):
    store = store_for(test_settings)
    users = [synced_user(mongo_db, make_account, store, pds, f"ck{i}") for i in range(3)]
    run_audit_job(dagster_instance, test_settings, users)
    evaluation = latest_check(dagster_instance, RUN_CHECK)
    assert evaluation.passed
    assert evaluation.description == "all 3 users in this run are readable and in step"
    assert evaluation.metadata["users"].value == 3 and evaluation.metadata["problems"].value == 0


def test_run_check_fails_naming_the_users_and_counts(mongo_db, make_account, test_settings, dagster_instance, pds):
    store = store_for(test_settings)
    messy = make_messy_user(mongo_db, make_account, pds, store)
    fine = synced_user(mongo_db, make_account, store, pds, "ckfine")
    dup = synced_user(mongo_db, make_account, store, pds, "ckdup", moods=1)
    store.unset_pointers(dup.mood_ids)  # one pointer_missing
    run_audit_job(dagster_instance, test_settings, [messy.user, fine, dup])
    evaluation = latest_check(dagster_instance, RUN_CHECK)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    text = evaluation.description
    assert text.startswith("2 of 3 users in this run have 10 problems")
    assert f"@{messy.user.handle} ({messy.user.did}): 9 problems (1 missing_on_pds, 2 stale_pointer" in text
    assert f"@{dup.handle} ({dup.did}): 1 problems (1 pointer_missing)" in text
    assert fine.did not in text
    assert evaluation.metadata["problems.orphan"].value == 2
    assert evaluation.metadata["users_with_problems"].value == 2
    assert_no_text(text + str(evaluation.metadata), messy.texts)


def test_run_check_fails_on_an_unreadable_user_even_without_problems(
    mongo_db, make_account, test_settings, dagster_instance, pds
):
    store = store_for(test_settings)
    fine = synced_user(mongo_db, make_account, store, pds, "ckok")
    gone_account = make_account("ckdeact")
    gone = synced_user(mongo_db, lambda prefix: gone_account, store, pds, "ckdeact")
    session = session_for(pds, gone_account)
    pds._request("POST", "com.atproto.server.deactivateAccount", body={}, kind="write", session=session)
    run_ids, _ = run_audit_job(dagster_instance, test_settings, [fine, gone])
    evaluation = latest_check(dagster_instance, RUN_CHECK)
    assert not evaluation.passed
    assert "1 of 2 users in this run could not be audited (unreadable)" in evaluation.description
    assert gone.did in evaluation.description and "deactivated" in evaluation.description
    assert evaluation.metadata["users_unreadable"].value == 1
    assert dagster_instance.get_run_by_id(run_ids[0]).status == dg.DagsterRunStatus.FAILURE


def test_summary_check_covers_everyone_not_just_the_last_run(
    mongo_db, make_account, test_settings, dagster_instance, pds, no_orphan_repos
):
    store = store_for(test_settings)
    first = synced_user(mongo_db, make_account, store, pds, "cka")
    second = synced_user(mongo_db, make_account, store, pds, "ckb")
    run_audit_job(dagster_instance, test_settings, [first, second])
    assert summarize(dagster_instance, test_settings).passed

    # first drifts and is audited on its own: its run check fails...
    store.unset_pointers(first.mood_ids[:1])
    run_audit_job(dagster_instance, test_settings, [first])
    # ...then second alone, in step: that run's check passes, the summary still fails on first
    run_audit_job(dagster_instance, test_settings, [second])
    assert latest_check(dagster_instance, RUN_CHECK).passed
    evaluation = summarize(dagster_instance, test_settings)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert first.did in evaluation.description and second.did not in evaluation.description
    assert evaluation.metadata["users"].value == 2 and evaluation.metadata["problems"].value == 1


def test_summary_check_fails_on_unreadable_and_warns_on_never_audited_users(
    mongo_db, make_account, test_settings, dagster_instance, pds, no_orphan_repos
):
    store = store_for(test_settings)
    audited = synced_user(mongo_db, make_account, store, pds, "ckaud")
    run_audit_job(dagster_instance, test_settings, [audited])
    never = synced_user(mongo_db, make_account, store, pds, "cknev")
    evaluation = summarize(dagster_instance, test_settings)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "1 syncable users have never been audited" in evaluation.description and never.did in evaluation.description

    ghost = add_user(mongo_db, make_account("ckgh"), moods=1)
    fake = "did:plc:" + "z" * 24
    mongo_db.users.update_one({"_id": ghost.sub}, {"$set": {"atproto.did": fake}})
    ghost.did = fake
    run_audit_job(dagster_instance, test_settings, [never, ghost])
    evaluation = summarize(dagster_instance, test_settings)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "could not be audited (unreadable)" in evaluation.description and fake in evaluation.description


def test_summary_check_warns_on_orphan_repos(mongo_db, make_account, test_settings, dagster_instance, pds):
    store = store_for(test_settings)
    kept = synced_user(mongo_db, make_account, store, pds, "ckkept")
    left = synced_user(mongo_db, make_account, store, pds, "ckleft")
    mongo_db.users.delete_one({"_id": left.sub})
    mongo_db.moods.delete_many({"user": left.sub})
    run_audit_job(dagster_instance, test_settings, [kept])
    evaluation = summarize(dagster_instance, test_settings)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "hold mood records but no Mongo user holds their DID" in evaluation.description
    meta = dagster_instance.get_latest_materialization_event(
        dg.AssetKey("audit_summary")).asset_materialization.metadata
    assert meta["orphan_repos"].value >= 1 and left.did in meta["orphan_repos_list"].value


# --- the nightly schedule -------------------------------------------------------------------


def test_nightly_schedule_audits_everyone_in_runs_of_at_most_50(dagster_instance, test_settings):
    from datetime import datetime, timezone

    from moods_pipeline.defs.audit.schedules import nightly_audit_schedule, nightly_audit_summary_schedule
    from moods_pipeline_tests.world import resources_for

    when = datetime(2026, 1, 2, 2, 0, tzinfo=timezone.utc)
    # No user has a receipt (these DIDs are in no users document): everyone is changed.
    with dg.build_schedule_context(instance=dagster_instance, scheduled_execution_time=when,
                                   resources=resources_for(test_settings)) as context:
        check_nightly_schedule(dagster_instance, context, nightly_audit_schedule, nightly_audit_summary_schedule)


def check_nightly_schedule(dagster_instance, context, nightly_audit_schedule, nightly_audit_summary_schedule):
    assert isinstance(nightly_audit_schedule(context), dg.SkipReason)

    keys = [f"did:plc:{i:024d}" for i in range(120)]
    dagster_instance.add_dynamic_partitions(USERS_PARTITION, keys)
    requests = list(nightly_audit_schedule(context))
    assert len(requests) == 3
    covered = []
    for request in requests:
        start, end = request.tags[ASSET_PARTITION_RANGE_START_TAG], request.tags[ASSET_PARTITION_RANGE_END_TAG]
        with dg.partition_loading_context(dynamic_partitions_store=dagster_instance):
            in_range = users_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(start, end))
        assert len(in_range) <= 50
        covered += in_range
    assert covered == keys  # everyone, once, never one run per user
    assert len({r.run_key for r in requests}) == 3 and all("2026-01-02" in r.run_key for r in requests)
    summary_request = nightly_audit_summary_schedule(context)
    assert summary_request.run_key == "nightly-audit-summary:2026-01-02"


def test_schedule_run_request_runs_its_partition_range(mongo_db, make_account, test_settings, dagster_instance, pds):
    """A schedule's RunRequest tags, executed as the daemon would launch them, audit that range."""
    from moods_pipeline.defs.audit.schedules import audit_run_requests

    store = store_for(test_settings)
    users = [synced_user(mongo_db, make_account, store, pds, f"cks{i}", moods=1) for i in range(3)]
    dagster_instance.add_dynamic_partitions(USERS_PARTITION, [u.did for u in users])
    [request] = audit_run_requests([u.did for u in users], "2026-01-02", per_run=50)
    defs = audit_definitions(test_settings)
    result = defs.resolve_job_def("mood_audit_job").execute_in_process(
        instance=dagster_instance, tags=request.tags, raise_on_error=False)
    assert result.success
    status = dagster_instance.get_status_by_partition(
        dg.AssetKey("mood_audit"), [u.did for u in users], users_partitions)
    assert set(status.values()) == {dg.AssetPartitionStatus.MATERIALIZED}
