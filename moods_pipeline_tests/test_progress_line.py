"""The run log's progress line: due every few seconds and at the last user, never per user."""

from __future__ import annotations

from types import SimpleNamespace

from moods_pipeline.progress import ProgressLine


def outcome(ok: bool = True, created: int = 2):
    return SimpleNamespace(ok=ok, created=created)


def test_a_line_every_interval_and_at_the_last_user_counting_failures():
    now = [100.0]
    line = ProgressLine(total=4, every_s=10.0, clock=lambda: now[0])
    now[0] = 101.0
    assert line.user_done(outcome()) is None
    now[0] = 111.5
    first = line.user_done(outcome(ok=False, created=0))
    assert first == "2/4 users done (1 not fully synced), 2 records created, 0 records/s"
    now[0] = 112.0
    assert line.user_done(outcome(created=3)) is None
    now[0] = 120.0
    assert line.user_done(outcome(created=5)) == "4/4 users done (1 not fully synced), 10 records created, 0 records/s"


def test_rate_over_the_time_since_the_start():
    now = [0.0]
    line = ProgressLine(total=1, clock=lambda: now[0])
    now[0] = 4.0
    assert line.user_done(outcome(created=100)).endswith("100 records created, 25 records/s")
