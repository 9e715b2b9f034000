"""The firehose follower on the real local PDS: it sees our writes, survives restarts (a new
follower from the persisted state, also after a crash mid-drain) without losing or counting an
event twice, and measures latency from real commits; the sensor and the sync_latency asset."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
from bson import ObjectId

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.firehose import Commit, FirehoseError, iter_commits
from moods_pipeline.defs.live.assets import sync_latency, sync_latency_job
from moods_pipeline.defs.live.sensors import firehose_sensor
from moods_pipeline.storage.journal import DeletionJournal
from moods_pipeline.sync.backfill import sync_user
from moods_pipeline.sync.firehose_follower import FirehoseFollower, percentile
from moods_pipeline.sync.live import delete_mood, sync_mood
from moods_pipeline_tests.world import add_user, resources_for

MARKER = "app.moodspipeline.test.marker"


def prime(follower: FirehoseFollower, session) -> None:
    """Give a new follower its first cursor: drain live while writing markers (another
    collection) until the drain has read one event."""
    done = threading.Event()

    def drain() -> None:
        try:
            follower.drain(max_seconds=20, idle_s=None, max_events=1)
        finally:
            done.set()

    thread = threading.Thread(target=drain)
    thread.start()
    n = 0
    while not done.wait(0.3):
        n += 1
        session.put_record(MARKER, f"3kmarker{n:05d}"[:13].ljust(13, "2"), {"$type": MARKER, "n": n})
    thread.join()
    assert follower.state.cursor is not None


def new_mood(db, sub: str, text: str = "right now") -> str:
    mood_id = ObjectId()
    now = datetime.now(timezone.utc)
    db.moods.insert_one({"_id": mood_id, "user": sub, "mood": text,
                         "when": now.replace(microsecond=now.microsecond // 1000 * 1000)})
    return str(mood_id)


def put(session, rkey: str, ref: str) -> None:
    session.put_record(MOOD_COLLECTION, rkey, {"$type": MOOD_COLLECTION, "mood": "orphan",
                                               "when": "2024-01-01T00:00:00.000Z", "ref": ref})


@pytest.mark.integration
def test_follower_sees_our_writes_survives_restarts_and_measures_latency(
    mongo_db, make_account, test_settings, store, pds, local_pds
):
    account = make_account("fh")
    user = add_user(mongo_db, account, moods=3)  # history, from before the follower started
    session = pds.login(account.did, account.password, expected_did=account.did)
    state_dir = test_settings.state_dir
    first = FirehoseFollower(store, local_pds.url, state_dir)
    prime(first, session)

    # Batch 1: the backfill of history (no latency), a new mood synced live, an orphan record.
    sync_user(store.user_by_sub(user.sub), store, pds)
    fresh = new_mood(mongo_db, user.sub)
    synced = sync_mood(store, pds, fresh)
    assert synced.status == "synced"
    put(session, "3kaaaaaaaaa22", "f" * 24)
    report = first.drain(max_seconds=15, idle_s=1.5)
    assert (report.seen, report.confirmed, report.unmatched, len(report.latencies)) == (5, 4, 1, 1)
    assert 0 <= report.latencies[0] < 60
    stats = first.stats()
    assert stats["p50_s"] == stats["p95_s"] == pytest.approx(report.latencies[0], abs=0.001)
    unmatched = first.state.unmatched_records
    assert unmatched == [{"did": account.did, "rkey": "3kaaaaaaaaa22", "ref": "f" * 24,
                          "reason": "no Mongo mood has this id", "seq": unmatched[0]["seq"],
                          "time": unmatched[0]["time"]}]

    # Batch 2, read by a new follower from the persisted state (a restart).
    second_fresh = new_mood(mongo_db, user.sub, "again")
    sync_mood(store, pds, second_fresh)
    mongo_db.moods.update_one({"_id": ObjectId(user.mood_ids[0])}, {"$set": {"deleted": True}})  # a nuke, mirrored
    delete_mood(store, pds, user.mood_ids[0], journal=DeletionJournal(state_dir, command="test"))
    restarted = FirehoseFollower(store, local_pds.url, state_dir)
    assert restarted.state.cursor == first.state.cursor
    assert restarted.state.started_at == first.state.started_at
    report = restarted.drain(max_seconds=15, idle_s=1.5)
    assert (report.seen, report.confirmed, report.deletes, len(report.latencies)) == (1, 1, 1, 1)
    totals = restarted.state.counts()
    assert (totals["seen"], totals["confirmed"], totals["unmatched"], totals["deletes"], totals["latency_count"]) == (
        6, 5, 1, 1, 2)

    # Nothing new: another restart counts nothing twice.
    again = FirehoseFollower(store, local_pds.url, state_dir)
    assert again.drain(max_seconds=5, idle_s=1.0).ops == 0
    assert again.state.counts() == totals


class Killed(Exception):
    pass


class DiesAfter:
    """iter_commits that dies (as a killed process would) after yielding ``n`` commits."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.stream = None

    def __call__(self, *args, **kwargs):
        self.stream = iter_commits(*args, **kwargs)
        return self

    @property
    def last_seq(self):
        return self.stream.last_seq

    def close(self) -> None:
        self.stream.close()

    def __iter__(self):
        for i, commit in enumerate(self.stream):
            if i == self.n:
                raise Killed("killed mid-drain")
            yield commit


@pytest.mark.integration
@pytest.mark.parametrize("save_every", [1, 200])
def test_crash_mid_drain_loses_nothing_and_counts_nothing_twice(
    mongo_db, make_account, test_settings, store, pds, local_pds, save_every
):
    account = make_account("crash")
    user = add_user(mongo_db, account, moods=0)
    session = pds.login(account.did, account.password, expected_did=account.did)
    follower = FirehoseFollower(store, local_pds.url, test_settings.state_dir)
    prime(follower, session)
    ids = [new_mood(mongo_db, user.sub, f"mood {i}") for i in range(5)]
    for mood_id in ids:  # five commits, one each
        assert sync_mood(store, pds, mood_id).status == "synced"

    dying = FirehoseFollower(store, local_pds.url, test_settings.state_dir, commits=DiesAfter(3),
                             save_every=save_every)
    with pytest.raises(Killed):
        dying.drain(max_seconds=15, idle_s=1.5)
    saved = FirehoseFollower.load_state(test_settings.state_dir)
    assert saved.confirmed == (3 if save_every == 1 else 0)

    resumed = FirehoseFollower(store, local_pds.url, test_settings.state_dir)
    resumed.drain(max_seconds=15, idle_s=1.5)
    assert (resumed.state.seen, resumed.state.confirmed, resumed.state.latency_count) == (5, 5, 5)
    assert sorted(s[0] for s in resumed.state.latencies) == sorted(ids)


@pytest.mark.integration
def test_sensor_drains_and_the_asset_materializes_latency(
    mongo_db, make_account, test_settings, store, pds, local_pds, dagster_instance
):
    account = make_account("sens")
    user = add_user(mongo_db, account, moods=0)
    session = pds.login(account.did, account.password, expected_did=account.did)
    prime(FirehoseFollower(store, local_pds.url, test_settings.state_dir), session)
    for i in range(3):
        sync_mood(store, pds, new_mood(mongo_db, user.sub, f"m{i}"))

    resources = resources_for(test_settings)
    with dg.build_sensor_context(instance=dagster_instance, resources=resources) as context:
        result = firehose_sensor(context)
    assert len(result.run_requests) == 1
    with dg.build_sensor_context(instance=dagster_instance, resources=resources, cursor=result.cursor) as context:
        idle = firehose_sensor(context)
    assert not idle.run_requests and "no mood commits" in idle.skip_reason.skip_message

    defs = dg.Definitions(assets=[sync_latency], jobs=[sync_latency_job], resources=resources)
    run = defs.resolve_job_def("sync_latency_job").execute_in_process(instance=dagster_instance)
    assert run.success
    metadata = dagster_instance.get_latest_materialization_event(
        dg.AssetKey("sync_latency")).asset_materialization.metadata
    assert metadata["confirmed"].value == 3 and metadata["samples"].value == 3
    assert metadata["unmatched"].value == 0
    assert 0 <= metadata["p50_s"].value <= metadata["p95_s"].value < 60
    assert metadata["p95_over_threshold"].value is False


def test_percentile():
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(range(101), 95) == 95.0


class FakeStream:
    def __init__(self, commits, error=None):
        self.commits, self.error, self.last_seq, self.stopped_because = commits, error, None, "idle"

    def __iter__(self):
        for commit in self.commits:
            self.last_seq = commit.seq
            yield commit
        if self.error:
            raise self.error


def test_future_cursor_starts_over_live_and_another_pds_resets(mongo_db, tmp_path):
    from moods_pipeline.storage.mongo import MongoStore

    store = MongoStore(mongo_db.client, mongo_db.name)
    follower = FirehoseFollower(store, "http://pds.example", tmp_path,
                                commits=lambda *a, **k: FakeStream([], FirehoseError("ahead", "FutureCursor")))
    follower.state.cursor = 42
    report = follower.drain(max_seconds=1)
    assert report.error and follower.state.cursor is None
    assert FirehoseFollower.load_state(tmp_path).cursor is None

    follower.state.cursor = 7
    follower._save()
    other = FirehoseFollower(store, "http://other.example", tmp_path)
    assert other.state.cursor is None and other.state.pds_url == "http://other.example"


def test_latency_only_for_moods_after_the_start(mongo_db, tmp_path):
    from moods_pipeline.atproto.firehose import Op
    from moods_pipeline.storage.mongo import MongoStore

    store = MongoStore(mongo_db.client, mongo_db.name)
    mongo_db.users.insert_one({"_id": "auth0|a", "atproto": {"did": "did:plc:a", "password": "p"}})
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    old, new = ObjectId(), ObjectId()
    mongo_db.moods.insert_many([
        {"_id": old, "user": "auth0|a", "mood": "x", "when": start - timedelta(days=1)},
        {"_id": new, "user": "auth0|a", "mood": "y", "when": start + timedelta(seconds=10)},
    ])
    commit_time = start + timedelta(seconds=12.5)
    commits = [
        Commit(1, "did:plc:a", [Op("create", MOOD_COLLECTION, "r1", {"ref": str(old)})], commit_time),
        Commit(2, "did:plc:a", [Op("create", MOOD_COLLECTION, "r2", {"mongoId": str(new)})], commit_time),
        Commit(3, "did:plc:b", [Op("create", MOOD_COLLECTION, "r3", {"ref": str(new)})], commit_time),
        Commit(4, "did:plc:a", [Op("create", MOOD_COLLECTION, "r4", {"ref": str(new)})], commit_time),
        Commit(5, "did:plc:a", [Op("update", MOOD_COLLECTION, "r5", {"mood": "no id"})], commit_time),
    ]
    follower = FirehoseFollower(store, "http://pds.example", tmp_path, clock=lambda: start.timestamp(),
                                commits=lambda *a, **k: FakeStream(commits))
    report = follower.drain(max_seconds=1)
    assert (report.seen, report.confirmed, report.unmatched) == (5, 3, 2)
    assert report.latencies == [2.5]  # the old mood excluded; the re-create of `new` not measured twice
    assert [r["reason"] for r in follower.state.unmatched_records] == [
        "the mood belongs to another user", "record carries no mood id"]
    assert follower.state.cursor == 5
