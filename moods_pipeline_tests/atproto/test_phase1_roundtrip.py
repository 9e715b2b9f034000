"""Checklist Phase 1 on the real (local) PDS: one valid mood record written, read back with
listRecords and the repo export, seen on the firehose; an invalid record refused by our
validator before any request is sent."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.client import PdsClient, PdsSession
from moods_pipeline.atproto.firehose import Commit, iter_commits
from moods_pipeline.atproto.lexicon import validate_record
from moods_pipeline.model import Mood
from moods_pipeline.sync.mood_record import Invalid, build_record, record_key_for

pytestmark = pytest.mark.integration

CREATE = "com.atproto.repo.applyWrites#create"
EXPECTED = {
    "$type": "computer.aesthetic.mood",
    "mood": "feeling sunny",
    "when": "2025-10-09T19:00:28.821Z",
    "ref": "68e8064c11885fb93a529c8d",
}
SUNNY = Mood(
    id="68e8064c11885fb93a529c8d",
    user="auth0|66db000000000000000000aa",
    text="feeling sunny",
    when=datetime(2025, 10, 9, 19, 0, 28, 821000, tzinfo=timezone.utc),
)


def write_mood(session: PdsSession, mood: Mood) -> str | Invalid:
    """What the pipeline does for one mood: validate, then one create under its deterministic rkey."""
    record = build_record(mood)
    if isinstance(record, Invalid):
        return record
    rkey = record_key_for(mood)
    session.apply_writes([{"$type": CREATE, "collection": MOOD_COLLECTION, "rkey": rkey, "value": record}])
    return rkey


def test_phase1_roundtrip(local_pds, make_account):
    account = make_account("phase1")
    client = PdsClient(local_pds.url)
    try:
        session = client.login(account.did, account.password, expected_did=account.did)

        record = build_record(SUNNY)
        assert record == EXPECTED
        assert validate_record(MOOD_COLLECTION, record) == []

        # Follow the firehose from now on, in the background, until our commit shows up.
        stream = iter_commits(local_pds.url, collection=MOOD_COLLECTION, stop_after_s=15, idle_s=None)
        seen: list[tuple[float, Commit]] = []

        def follow() -> None:
            for commit in stream:
                if commit.did == account.did:
                    seen.append((time.monotonic(), commit))
                    return

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        assert stream.connected.wait(10), "firehose did not connect"

        written_at = time.monotonic()
        rkey = write_mood(session, SUNNY)
        assert rkey == record_key_for(SUNNY)

        listed = client.list_records(account.did, MOOD_COLLECTION)
        assert [(r.rkey, r.value) for r in listed] == [(rkey, EXPECTED)]
        assert listed[0].mood_ref == SUNNY.id and not listed[0].is_legacy
        assert client.export_records(account.did, MOOD_COLLECTION) == listed

        follower.join(15)
        assert seen, "the commit did not arrive on the firehose within 15 s"
        arrived_at, commit = seen[0]
        print(f"\nfirehose: commit seq {commit.seq} arrived {1000 * (arrived_at - written_at):.0f} ms after the write")
        assert commit.ops == [("create", MOOD_COLLECTION, rkey, EXPECTED)]
        assert commit.time is not None and abs(commit.time.timestamp() - time.time()) < 60

        # The same commit on a replay from the start (what a sensor resuming at cursor 0 sees).
        replay = iter_commits(local_pds.url, cursor=0, collection=MOOD_COLLECTION, stop_after_s=15, idle_s=2)
        replayed = [c for c in replay if c.did == account.did]
        assert [(c.seq, c.ops) for c in replayed] == [(commit.seq, commit.ops)]
        assert replay.last_seq >= commit.seq

        # Invalid moods never reach the PDS: refused by our validator, with no request sent.
        requests_before = client.counters.requests
        invalid = [
            Mood(id="68e8064c11885fb93a529c8e", user=SUNNY.user, text="   ", when=SUNNY.when),
            Mood(id="68e8064c11885fb93a529c8f", user=SUNNY.user, text="x" * 5001, when=SUNNY.when),
            Mood(id="not-an-object-id", user=SUNNY.user, text="ok", when=SUNNY.when),
            Mood(id="68e8064c11885fb93a529c90", user=SUNNY.user, text="ok", when=datetime(1969, 1, 1, tzinfo=timezone.utc)),
            Mood(id="68e8064c11885fb93a529c91", user=SUNNY.user, text=None, when=SUNNY.when),
        ]
        for mood in invalid:
            outcome = write_mood(session, mood)
            assert isinstance(outcome, Invalid), mood.id
            assert "x" * 20 not in outcome.reason
        assert client.counters.requests == requests_before
        # The production bug: `text` instead of `mood`. The lexicon check names what is wrong.
        errors = validate_record(MOOD_COLLECTION, {"$type": MOOD_COLLECTION, "text": "hi", "when": EXPECTED["when"], "ref": EXPECTED["ref"]})
        assert errors and any("mood" in str(e) for e in errors)
        assert [r.rkey for r in client.list_records(account.did, MOOD_COLLECTION)] == [rkey]
    finally:
        client.close()


def test_firehose_is_bounded_in_time_and_reports_errors(local_pds):
    from moods_pipeline.atproto.firehose import FirehoseError

    started = time.monotonic()
    stream = iter_commits(local_pds.url, stop_after_s=1.0, idle_s=None)
    list(stream)  # nothing new happens: ends at the deadline
    # It ends because its deadline passed, never before it (how long after depends on the machine).
    assert stream.stopped_because == "time" and time.monotonic() - started >= 1.0

    drained = iter_commits(local_pds.url, cursor=0, stop_after_s=10, idle_s=0.5)
    list(drained)  # replays the backlog, then stops when idle
    assert drained.stopped_because == "idle" and drained.last_seq is not None and drained.last_seq >= 1

    with pytest.raises(FirehoseError) as info:
        list(iter_commits(local_pds.url, cursor=drained.last_seq + 1_000_000, stop_after_s=5))
    assert info.value.error == "FutureCursor"

    with pytest.raises(FirehoseError, match="unreachable"):
        list(iter_commits("http://127.0.0.1:9", stop_after_s=2))
