"""Where the firehose follower reads from: the firehose sensor's Dagster cursor, the follower's
saved statistics when the sensor has none (the upgrade from when that file was the only
cursor), and never counting an event twice when the sensor's cursor lags behind them."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import dagster as dg
import pytest

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.firehose import Commit, Op
from moods_pipeline.defs.live.sensors import firehose_position, firehose_sensor
from moods_pipeline.defs.resources import MongoResource, PdsResource, PipelineSettingsResource
from moods_pipeline.sync.firehose_follower import FirehoseFollower
from moods_pipeline_tests.world import dead_url

PDS = "http://pds.example"
WHEN = datetime(2025, 5, 1, tzinfo=timezone.utc)


class NoMongo:
    """The follower's store for delete-only commits: nothing to look up."""

    def moods_by_id(self, ids):
        assert not ids
        return {}

    def user_by_did(self, did):
        return None


class Recorder:
    """iter_commits stand-in: records where it was asked to start and yields deletes from there."""

    def __init__(self, last: int) -> None:
        self.last = last
        self.asked: list[int | None] = []

    def __call__(self, url, cursor=None, **kwargs):
        self.asked.append(cursor)
        outer = self

        class Stream:
            last_seq = None
            stopped_because = "idle"

            def __iter__(self):
                for seq in range((cursor or 0) + 1, outer.last + 1):
                    self.last_seq = seq
                    yield Commit(seq, "did:plc:x", [Op("delete", MOOD_COLLECTION, f"r{seq}", None)], WHEN)

        return Stream()


def test_position_in_the_sensor_cursor():
    assert firehose_position(None, PDS) == (None, None)
    assert firehose_position("", PDS) == (None, None)
    assert firehose_position("41", PDS) == (41, None)  # the cursor this sensor kept before
    assert firehose_position(json.dumps({"pds_url": PDS + "/", "seq": 7}), PDS) == (7, None)
    assert firehose_position(json.dumps({"pds_url": PDS, "seq": None}), PDS) == (None, None)
    seq, note = firehose_position(json.dumps({"pds_url": "http://other", "seq": 7}), PDS)
    assert seq is None and "http://other" in note
    for bad in ("{not json", "[1, 2]", json.dumps({"pds_url": PDS, "seq": -3}), json.dumps({"pds_url": PDS, "seq": True})):
        seq, _ = firehose_position(bad, PDS)
        assert seq is None


def test_the_callers_cursor_decides_where_to_read(tmp_path):
    stream = Recorder(last=4)
    follower = FirehoseFollower(NoMongo(), PDS, tmp_path, cursor=2, commits=stream)
    assert follower.resumed_from == "cursor"
    report = follower.drain(max_seconds=1)
    assert stream.asked == [2] and (report.events_from, report.cursor, report.deletes) == (2, 4, 2)


def test_without_a_cursor_the_saved_statistics_say_where(tmp_path):
    FirehoseFollower(NoMongo(), PDS, tmp_path, commits=Recorder(last=5)).drain(max_seconds=1)
    stream = Recorder(last=6)
    resumed = FirehoseFollower(NoMongo(), PDS, tmp_path, commits=stream)
    assert (resumed.resumed_from, resumed.position) == ("file", 5)
    assert resumed.drain(max_seconds=1).deletes == 1 and stream.asked == [5]
    # Statistics of another PDS say nothing: follow live.
    other = FirehoseFollower(NoMongo(), "http://other.example", tmp_path, commits=Recorder(last=0))
    assert (other.resumed_from, other.position) == ("live", None)


def test_a_lagging_cursor_reads_again_but_counts_once(tmp_path):
    """A tick that died after saving its statistics, before Dagster stored its cursor: the next
    one reads from the older cursor; what was counted is not counted again."""
    FirehoseFollower(NoMongo(), PDS, tmp_path, cursor=0, commits=Recorder(last=5)).drain(max_seconds=1)
    stream = Recorder(last=7)
    again = FirehoseFollower(NoMongo(), PDS, tmp_path, cursor=3, commits=stream)
    report = again.drain(max_seconds=1)
    assert stream.asked == [3] and report.cursor == 7
    assert (report.deletes, again.state.deletes) == (2, 7)


@pytest.fixture
def sensor_resources(tmp_path):
    # Nothing listens on the PDS URL: the drain fails at once and the cursor must survive it.
    url = dead_url()
    return url, {
        "mongo": MongoResource(connection_string="mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=100", database="x"),
        "pds": PdsResource(url=url, max_retries=0, timeout_s=1.0),
        "pipeline": PipelineSettingsResource(state_dir=str(tmp_path / "state")),
    }


def tick(resources, cursor: str | None):
    with dg.build_sensor_context(cursor=cursor, resources=resources) as context:
        result = firehose_sensor(context)
    return result, json.loads(result.cursor)


def test_sensor_keeps_its_position_in_its_cursor(sensor_resources, tmp_path):
    url, resources = sensor_resources
    result, cursor = tick(resources, json.dumps({"pds_url": url, "seq": 12}))
    assert cursor == {"pds_url": url, "seq": 12} and not result.run_requests
    result, cursor = tick(resources, "12")  # the bare number it kept before
    assert cursor == {"pds_url": url, "seq": 12}
    result, cursor = tick(resources, json.dumps({"pds_url": "http://elsewhere", "seq": 12}))
    assert cursor == {"pds_url": url, "seq": None}


def test_sensor_without_a_cursor_starts_from_the_old_file(sensor_resources, tmp_path):
    url, resources = sensor_resources
    # What a deployment from before the sensor kept its cursor left behind.
    old = FirehoseFollower(NoMongo(), url, tmp_path / "state", commits=Recorder(last=30))
    old.drain(max_seconds=1)
    assert FirehoseFollower.load_state(tmp_path / "state").cursor == 30
    _, cursor = tick(resources, None)
    assert cursor == {"pds_url": url, "seq": 30}
