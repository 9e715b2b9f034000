"""The catch-up sensor end to end: real PDS, real Mongo-wire server, a real Dagster instance.
The sensor is evaluated with build_sensor_context and the runs it requests are executed."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
from bson import ObjectId

from moods_pipeline.defs.live.sensors import catchup_sensor, catchup_sync_job
from moods_pipeline.defs.resources import PdsResource, PipelineSettingsResource
from moods_pipeline.sync.backfill import sync_user
from moods_pipeline.sync.catchup import CatchupPolicy, CatchupState, backoff_s, find_candidates
from moods_pipeline.sync.rollout import bucket
from moods_pipeline_tests.world import add_user, check_invariant, dead_url, repo_snapshot, resources_for

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def quick_policy(monkeypatch):
    monkeypatch.setenv("MOODS_CATCHUP_BACKOFF_S", "0")


class Harness:
    """Evaluate the sensor and execute what it requests, on the test stack."""

    def __init__(self, instance, settings, nuke_policy: str | None = None, pds_url: str | None = None,
                 **pipeline_fields: str) -> None:
        self.instance = instance
        self.settings = settings
        self.resources = resources_for(settings)
        # Fields left None read the environment (monkeypatched by some tests), as in a deployment
        # where the variable is not bound.
        self.resources["pipeline"] = PipelineSettingsResource(
            state_dir=str(settings.state_dir), nuke_policy=nuke_policy, **pipeline_fields)
        if pds_url:
            self.resources["pds"] = PdsResource(url=pds_url, max_retries=0, timeout_s=2.0)
        self.cursor: str | None = None

    def tick(self):
        with dg.build_sensor_context(instance=self.instance, cursor=self.cursor, resources=self.resources) as context:
            result = catchup_sensor(context)
        if isinstance(result, dg.SensorResult) and result.cursor:
            self.cursor = result.cursor
        return result

    def requests(self) -> list[dg.RunRequest]:
        result = self.tick()
        if isinstance(result, dg.SkipReason):
            return []
        return list(result.run_requests or [])

    def run(self, request: dg.RunRequest):
        defs = dg.Definitions(jobs=[catchup_sync_job], resources=self.resources)
        return defs.resolve_job_def("catchup_sync_job").execute_in_process(
            run_config=request.run_config, instance=self.instance, tags=request.tags, raise_on_error=False
        )

    def tick_and_run(self) -> list:
        return [self.run(r) for r in self.requests()]


def ids_of(request: dg.RunRequest, kind: str = "sync_mood_ids") -> list[str]:
    return request.run_config["ops"]["catchup_sync"]["config"][kind]


def op_metadata(instance, result) -> dict:
    for event in instance.all_logs(result.run_id):
        dagster_event = event.dagster_event
        if dagster_event is None:
            continue
        if dagster_event.is_successful_output:
            return {k: v.value for k, v in dagster_event.step_output_data.metadata.items()}
        if dagster_event.is_step_failure:
            return {k: v.value for k, v in dagster_event.step_failure_data.user_failure_data.metadata.items()}
    raise AssertionError("no output or failure event")


def new_mood(db, user, seconds_ago: float, text: str = "just now") -> str:
    mood_id = ObjectId()
    when = datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)
    when = when.replace(microsecond=when.microsecond // 1000 * 1000)  # Mongo keeps milliseconds
    db.moods.insert_one({"_id": mood_id, "user": user.sub, "mood": text, "when": when})
    return str(mood_id)


def test_new_mood_reaches_the_pds_through_the_sensor_after_the_grace(
    mongo_db, make_account, test_settings, dagster_instance, store, pds, monkeypatch
):
    monkeypatch.setenv("MOODS_CATCHUP_GRACE_S", "1.5")
    user = add_user(mongo_db, make_account("catch"), moods=2)
    sync_user(store.user_by_sub(user.sub), store, pds)  # history already backfilled
    harness = Harness(dagster_instance, test_settings)
    assert isinstance(harness.tick(), dg.SkipReason)

    fresh = new_mood(mongo_db, user, seconds_ago=0)
    assert harness.requests() == []  # younger than the grace: the app's own write may still land
    time.sleep(1.6)
    requests = harness.requests()
    assert len(requests) == 1 and ids_of(requests[0]) == [fresh]
    result = harness.run(requests[0])
    assert result.success
    metadata = op_metadata(dagster_instance, result)
    assert metadata["synced"] == 1 and metadata["created"] == 1 and metadata["sync_failed"] == 0
    user.mood_ids.append(fresh)
    assert check_invariant(store, pds, [user]) == 3
    assert CatchupState(test_settings.state_dir).all() == {}  # done: no attempt file
    assert harness.requests() == []  # nothing left


def test_pds_down_fails_the_run_then_a_later_tick_syncs(
    mongo_db, make_account, test_settings, dagster_instance, store, pds, monkeypatch
):
    monkeypatch.setenv("MOODS_CATCHUP_BACKOFF_S", "3600")
    user = add_user(mongo_db, make_account("down"), moods=2)
    down = Harness(dagster_instance, test_settings, pds_url=dead_url())
    results = down.tick_and_run()
    assert len(results) == 1 and not results[0].success
    metadata = op_metadata(dagster_instance, results[0])
    assert metadata["sync_failed"] == 2
    state = CatchupState(test_settings.state_dir)
    attempts = state.all()
    assert set(attempts) == set(user.mood_ids)
    assert all(a.attempts == 1 and a.last_status == "failed" and "unreachable" in a.last_reason
               for a in attempts.values())
    # In backoff: the next tick leaves them alone.
    skip = down.tick()
    assert isinstance(skip, dg.SkipReason) and "2 in backoff" in skip.skip_message

    monkeypatch.setenv("MOODS_CATCHUP_BACKOFF_S", "0")  # the backoff is over
    up = Harness(dagster_instance, test_settings)
    results = up.tick_and_run()
    assert len(results) == 1 and results[0].success
    assert check_invariant(store, pds, [user]) == 2
    assert state.all() == {}


def test_gives_up_after_max_attempts_and_reports(mongo_db, make_account, test_settings, dagster_instance):
    user = add_user(mongo_db, make_account("give"), moods=1)
    # The tuning as resource config (what definitions.py binds to MOODS_CATCHUP_MAX_ATTEMPTS).
    down = Harness(dagster_instance, test_settings, pds_url=dead_url(), catchup_max_attempts="2")
    for _ in range(2):
        results = down.tick_and_run()
        assert len(results) == 1 and not results[0].success
    # The third tick requests no sync: it reports the mood, once, in a run's metadata.
    requests = down.requests()
    assert len(requests) == 1 and ids_of(requests[0]) == []
    assert ids_of(requests[0], "reported_mood_ids") == user.mood_ids
    result = down.run(requests[0])
    assert result.success
    metadata = op_metadata(dagster_instance, result)
    assert metadata["reported"] == 1
    assert metadata["reported_moods"].records[0].data["mood_id"] == user.mood_ids[0]
    skip = down.tick()
    assert isinstance(skip, dg.SkipReason) and "1 given up" in skip.skip_message
    state = CatchupState(test_settings.state_dir)
    assert [a.mood_id for a in state.reported(CatchupPolicy(max_attempts=2))] == user.mood_ids
    # An operator clears it: tried again.
    state.forget(user.mood_ids[0])
    assert ids_of(Harness(dagster_instance, test_settings, catchup_max_attempts="2").requests()[0]) == user.mood_ids


def test_rollout_limits_the_sensor(mongo_db, make_account, test_settings, dagster_instance, store, monkeypatch):
    alice = add_user(mongo_db, make_account("alice"), moods=1)
    bob = add_user(mongo_db, make_account("bob"), moods=1)
    harness = Harness(dagster_instance, test_settings)

    skip = Harness(dagster_instance, test_settings, rollout="off").tick()  # bound as resource config
    assert isinstance(skip, dg.SkipReason) and "off" in skip.skip_message
    monkeypatch.setenv("MOODS_ROLLOUT", "off")  # or read from the environment when not bound
    skip = harness.tick()
    assert isinstance(skip, dg.SkipReason) and "off" in skip.skip_message
    with pytest.raises(Exception, match="MOODS_ROLLOUT"):
        Harness(dagster_instance, test_settings, rollout="half").tick()

    monkeypatch.setenv("MOODS_ROLLOUT", f"@{alice.handle}")
    requests = harness.requests()
    assert len(requests) == 1 and ids_of(requests[0]) == alice.mood_ids

    expected = [m for u in (alice, bob) if bucket(u.sub) < 50 for m in u.mood_ids]
    monkeypatch.setenv("MOODS_ROLLOUT", "50%")
    state = CatchupState(test_settings.state_dir)
    for mood_id in alice.mood_ids:
        state.forget(mood_id)
    found = find_candidates(store, state, CatchupPolicy(rollout="50%", grace_s=0))
    assert sorted(found.sync) == sorted(expected)
    assert found.out_of_rollout == 2 - len(expected)


def test_invalid_moods_and_users_without_account_are_not_candidates(
    mongo_db, make_account, test_settings, dagster_instance, store
):
    user = add_user(mongo_db, make_account("inv"), texts=["good", "   ", "x" * 5001])
    add_user(mongo_db, None, moods=2)
    found = find_candidates(store, CatchupState(test_settings.state_dir), CatchupPolicy(grace_s=0))
    assert found.sync == [user.mood_ids[0]]
    assert (found.invalid, found.no_account) == (2, 2)


def test_nuke_policy_keep_leaves_records_delete_removes_them_and_unnuke_syncs_again(
    mongo_db, make_account, test_settings, dagster_instance, store, pds
):
    user = add_user(mongo_db, make_account("nuke"), moods=3)
    sync_user(store.user_by_sub(user.sub), store, pds)
    before = repo_snapshot(pds, user.did)
    assert len(before) == 3
    mongo_db.moods.update_many({"user": user.sub}, {"$set": {"deleted": True}})

    keep = Harness(dagster_instance, test_settings, nuke_policy="keep")
    assert keep.requests() == []
    assert repo_snapshot(pds, user.did) == before

    delete = Harness(dagster_instance, test_settings, nuke_policy="delete")
    requests = delete.requests()
    assert len(requests) == 1 and sorted(ids_of(requests[0], "delete_mood_ids")) == sorted(user.mood_ids)
    result = delete.run(requests[0])
    assert result.success
    metadata = op_metadata(dagster_instance, result)
    assert metadata["deleted"] == 3 and metadata["records_removed"] == 3
    assert repo_snapshot(pds, user.did) == {}
    assert all(m.rkey is None for m in store.moods_of(user.sub))
    assert delete.requests() == []  # nothing left to delete

    # Un-nuke: the moods are live again without pointers, so the sensor syncs them.
    mongo_db.moods.update_many({"user": user.sub}, {"$set": {"deleted": False}})
    requests = delete.requests()
    assert len(requests) == 1 and sorted(ids_of(requests[0])) == sorted(user.mood_ids)
    assert delete.run(requests[0]).success
    assert check_invariant(store, pds, [user]) == 3
    assert set(repo_snapshot(pds, user.did)) == set(before)  # deterministic rkeys: the same keys


def test_a_mood_unnuked_before_its_deletion_runs_is_left_alone(
    mongo_db, make_account, test_settings, dagster_instance, store, pds
):
    user = add_user(mongo_db, make_account("race"), moods=1)
    sync_user(store.user_by_sub(user.sub), store, pds)
    mongo_db.moods.update_many({"user": user.sub}, {"$set": {"deleted": True}})
    harness = Harness(dagster_instance, test_settings, nuke_policy="delete")
    requests = harness.requests()
    mongo_db.moods.update_many({"user": user.sub}, {"$set": {"deleted": False}})
    result = harness.run(requests[0])
    assert result.success and op_metadata(dagster_instance, result)["delete_skipped"] == 1
    assert check_invariant(store, pds, [user]) == 1


def test_attempt_files_of_moods_synced_elsewhere_are_pruned(
    mongo_db, make_account, test_settings, dagster_instance, store, pds
):
    user = add_user(mongo_db, make_account("prune"), moods=2)
    Harness(dagster_instance, test_settings, pds_url=dead_url()).tick_and_run()
    state = CatchupState(test_settings.state_dir)
    assert len(state.all()) == 2
    sync_user(store.user_by_sub(user.sub), store, pds)  # a backfill got there first
    found = find_candidates(store, state, CatchupPolicy(grace_s=0))
    assert found.sync == [] and found.pruned == 2 and state.all() == {}


def test_backoff_doubles_up_to_the_cap():
    policy = CatchupPolicy(backoff_base_s=60, backoff_max_s=600)
    assert [backoff_s(n, policy) for n in range(0, 6)] == [0, 60, 120, 240, 480, 600]


def test_max_age_leaves_history_to_backfill(mongo_db, make_account, test_settings, store):
    user = add_user(mongo_db, make_account("age"), moods=2)  # history from 2024
    recent = new_mood(mongo_db, user, seconds_ago=300)
    state = CatchupState(test_settings.state_dir)
    assert find_candidates(store, state, CatchupPolicy(grace_s=120, max_age_s=3600)).sync == [recent]
    assert sorted(find_candidates(store, state, CatchupPolicy(grace_s=120)).sync) == sorted([recent, *user.mood_ids])
    assert CatchupPolicy.from_settings(replace(test_settings, catchup_max_age_s=3600.0)).max_age_s == 3600.0


def test_a_null_empty_or_odd_pointer_is_unsynced_and_the_sensor_syncs_it(
    mongo_db, make_account, test_settings, dagster_instance, store, pds
):
    user = add_user(mongo_db, make_account("nullrk"), moods=6)
    synced = add_user(mongo_db, make_account("fullrk"), moods=1)
    sync_user(store.user_by_sub(synced.sub), store, pds)  # a real pointer: never a candidate
    odd = [{"rkey": None}, {"rkey": ""}, {"rkey": None, "other": "kept"}, None, "not a document", {"rkey": 7}]
    for mood_id, atproto in zip(user.mood_ids, odd):
        mongo_db.moods.update_one({"_id": ObjectId(mood_id)}, {"$set": {"atproto": atproto}})
    moods = {m.id: m for m in store.moods_of(user.sub)}
    assert all(moods[m].rkey is None for m in user.mood_ids)  # "" reads as no pointer too

    unsynced = store.unsynced_live_moods(datetime.now(timezone.utc), 100)
    assert sorted(m.id for m in unsynced) == sorted(user.mood_ids)
    harness = Harness(dagster_instance, test_settings)
    requests = harness.requests()
    assert len(requests) == 1 and sorted(ids_of(requests[0])) == sorted(user.mood_ids)
    result = harness.run(requests[0])
    assert result.success
    metadata = op_metadata(dagster_instance, result)
    assert metadata["synced"] == 6 and metadata["created"] == 6 and metadata["sync_failed"] == 0
    assert check_invariant(store, pds, [user]) == 6
    # The pointer went into the mood's own atproto document, other fields kept.
    kept = mongo_db.moods.find_one({"_id": ObjectId(user.mood_ids[2])})["atproto"]
    assert kept["other"] == "kept" and kept["rkey"]
    assert harness.requests() == [] and store.unsynced_live_moods(datetime.now(timezone.utc), 100) == []


def test_nuked_moods_with_an_empty_pointer_are_not_deletion_candidates(mongo_db, make_account, store):
    user = add_user(mongo_db, make_account("nukerk"), moods=3, nuked=True)
    for mood_id, atproto in zip(user.mood_ids, [{"rkey": ""}, {"rkey": None}, {"rkey": "3kabcdefghij2"}]):
        mongo_db.moods.update_one({"_id": ObjectId(mood_id)}, {"$set": {"atproto": atproto}})
    assert [m.id for m in store.nuked_moods_with_pointer(10)] == [user.mood_ids[2]]
