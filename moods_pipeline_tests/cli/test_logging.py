"""Logging discipline (the migration checklist's "Add logging for ATProto operations"; docs/interface.md "Privacy").

The Dagster run log gets a handful of lines per run (start, one per write batch of users that
need several, a line for each user that needs attention, a progress line now and then, the run
summary), never one per mood, and not one per user that synced fine (its outcome is in its
materialization); per-batch and per-request detail goes to Python
logging at DEBUG only. Neither the run's event log nor Python logging carries mood text or the
user's password.
"""

from __future__ import annotations

import logging

import pytest
from dagster._serdes import serialize_value

from moods_pipeline.cli.common import run_job_over_partitions
from moods_pipeline.storage.results import ResultsStore
from moods_pipeline_tests.world import add_user, definitions_for

pytestmark = pytest.mark.integration

MOODS = 450
MARKER = "zq-private-mood"


def mood_texts(n: int) -> list[str]:
    return [f"{MARKER} {i:03d}: feeling like a walk in the rain 🌧" for i in range(n)]


def test_run_log_has_a_line_per_batch_not_per_mood_and_no_mood_text(
    mongo_db, make_account, test_settings, dagster_instance, caplog
):
    user = add_user(mongo_db, make_account("logs"), texts=mood_texts(MOODS))
    defs = definitions_for(test_settings)
    run_config = {"ops": {"mood_backfill": {"config": {"dry_run": False}}}}

    with caplog.at_level(logging.DEBUG, logger="moods_pipeline"):
        run_ids = run_job_over_partitions(dagster_instance, "mood_backfill_job", [user.did], run_config, defs=defs)
        summary = defs.resolve_job_def("backfill_summary_job").execute_in_process(instance=dagster_instance)
    assert summary.success
    [outcome] = ResultsStore(test_settings.state_dir).run_backfill(run_ids[0])
    assert outcome.created == MOODS and outcome.batches == 3  # 200 + 200 + 50

    entries = dagster_instance.all_logs(run_ids[0])
    log_lines = [e for e in entries if e.dagster_event is None]  # context.log messages
    messages = [e.user_message for e in log_lines]
    # start + one per batch + the progress line + the run summary
    assert len(log_lines) <= 8, messages
    assert sum("records written" in m for m in messages) == outcome.batches
    assert sum(m.startswith("1/1 users done (0 not fully synced), 450 records created") for m in messages) == 1
    assert not any(m.startswith(f"@{user.handle}: ok") for m in messages), messages
    # Dagster's own events (step start/success, materialization, ...) stay a handful too.
    assert len(entries) < 50, [e.dagster_event.event_type_value if e.dagster_event else "log" for e in entries]

    # No mood text and no password anywhere in either run's event log (messages and metadata).
    password = user.password
    for run_id in [*run_ids, summary.run_id]:
        for entry in dagster_instance.all_logs(run_id):
            stored = serialize_value(entry)
            assert MARKER not in stored and "walk in the rain" not in stored, entry.user_message[:200]
            assert password not in stored

    # Python logging: per-batch detail at DEBUG only; nothing per mood at INFO or above;
    # no mood text or password at any level.
    ours = [r for r in caplog.records if r.name.startswith("moods_pipeline")]
    debug_batches = [r for r in ours if r.levelno == logging.DEBUG and r.getMessage().startswith("batch of")]
    assert len(debug_batches) == outcome.batches
    assert len([r for r in ours if r.levelno >= logging.INFO]) < 10
    text = "\n".join(r.getMessage() for r in ours)
    assert MARKER not in text and "walk in the rain" not in text and password not in text
