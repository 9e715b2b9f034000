"""The commands' progress on stderr (``moods_pipeline.progress``) and the users a run never reported.

On a terminal a redrawn bar (tqdm); anywhere else plain lines a log can keep. Either way
nothing reaches stdout, which is the JSON object's alone.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import termios
import threading
from types import SimpleNamespace

from moods_pipeline import progress
from moods_pipeline.cli.common import users_without_result


def test_listeners_hear_events_until_stopped():
    heard: list[tuple[str, dict]] = []
    stop = progress.listen(lambda event, data: heard.append((event, data)))
    progress.notify("user_done", label="@a", ok=True)
    stop()
    stop()  # twice is harmless
    progress.notify("user_done", label="@b", ok=False)
    assert heard == [("user_done", {"label": "@a", "ok": True})]


def test_a_bar_counts_the_user_done_events_alone():
    bar = progress.ProgressBar(2, "erase", stream=io.StringIO())
    stop = progress.listen_users_done(bar.user_done)
    progress.notify("batch_written", records=200)
    progress.notify("user_done", label="@a", ok=True)
    progress.notify("user_done", label="@b", ok=False)
    stop()
    progress.notify("user_done", label="@c", ok=True)
    assert (bar.done, bar.failed) == (2, 1)
    progress.listen_users_done(None)()  # listens to nothing, stops without harm


def test_off_a_terminal_plain_lines_every_5_percent_and_each_failure():
    stream = io.StringIO()
    with progress.ProgressBar(40, "audit", stream=stream) as bar:
        for i in range(40):
            bar.advance(failed=i == 4)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0] == "audit: 2/40 users" and "audit: 5/40 users" in lines and lines[-1] == "audit: 40/40 users"
    assert len(lines) == 21  # 20 steps of 2 users, and the failed fifth one
    assert (bar.done, bar.failed) == (40, 1)


def drawn_on_a_terminal(total: int, label: str, failures: list[bool], rows_columns: tuple[int, int] | None):
    """What a ProgressBar draws on a pseudo-terminal of that size (None: one that reports none)."""
    master, slave = pty.openpty()
    if rows_columns:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *rows_columns, 0, 0))
    chunks: list[bytes] = []

    def drain() -> None:  # read while it draws: the terminal's buffer is small
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other end is closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    with os.fdopen(slave, "w") as stream:
        assert stream.isatty()
        with progress.ProgressBar(total, label, stream=stream) as bar:
            for failed in failures:
                bar.advance(failed=failed)
    reader.join(10)
    os.close(master)
    return b"".join(chunks).decode()


def test_on_a_terminal_a_bar_that_counts_failures_and_ends_its_line():
    drawn = drawn_on_a_terminal(3, "repair", [False, True, False], (24, 80))
    assert "repair" in drawn and "3/3" in drawn and "1 failed" in drawn
    assert drawn.rstrip(" ").endswith("\n")  # the next message starts on a line of its own


def test_a_bar_left_short_ends_its_line_and_a_sizeless_terminal_still_sees_it():
    drawn = drawn_on_a_terminal(5, "backfill", [False], None)  # the run died after one user
    assert "backfill" in drawn and "1/5" in drawn and drawn.rstrip(" ").endswith("\n")


def test_users_without_result_fail_with_the_reason_keyed_as_results_name_them():
    users = [SimpleNamespace(did=f"did:plc:{c}", sub=f"sub-{c}") for c in "abc"]
    missing = users_without_result(users, ["did:plc:b"], "audit")
    assert [u.did for u, _ in missing] == ["did:plc:a", "did:plc:c"]
    assert {reason for _, reason in missing} == {
        "no result: its audit run failed before reporting it (see the Dagster UI)"
    }
    by_sub = users_without_result(users, iter(["sub-a", "sub-c"]), "repair", key=lambda u: u.sub)
    assert [u.sub for u, _ in by_sub] == ["sub-b"] and "repair run" in by_sub[0][1]
    assert users_without_result(users, (), "erase", key=lambda u: u.sub) == [(u, missing[0][1].replace(
        "audit", "erase")) for u in users]
