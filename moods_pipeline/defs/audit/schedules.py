"""Schedules: the nightly audit of every user, then its summary.

- ``nightly_audit_schedule`` (02:00 UTC): audits every users partition in batched runs; each
  RunRequest covers a range of at most ``PARTITIONS_PER_RUN`` (50) contiguous partitions, never
  one run per user. Run keys carry the scheduled date, so a tick evaluated twice launches
  nothing twice.
- ``nightly_audit_summary_schedule`` (05:00 UTC): ``audit_summary`` and its check
  ``everyone_in_step`` over every user's latest audit, once the night's audit runs are done.

Both are read-only and run by default once the Dagster daemon runs.
"""
# No `from __future__ import annotations`: Dagster reads the annotations at definition time.

import dagster as dg

from moods_pipeline.defs.audit.assets import audit_job, audit_summary_job
from moods_pipeline.defs.dagster_private import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from moods_pipeline.defs.partitions import PARTITIONS_PER_RUN, USERS_PARTITION, partition_runs

NIGHTLY_AUDIT_CRON = "0 2 * * *"
NIGHTLY_SUMMARY_CRON = "0 5 * * *"


def audit_run_requests(keys: list[str], scheduled: str, per_run: int = PARTITIONS_PER_RUN) -> list[dg.RunRequest]:
    """One RunRequest per range of at most ``per_run`` partitions."""
    requests = []
    for chunk in partition_runs(keys, set(keys), per_run):
        requests.append(
            dg.RunRequest(
                run_key=f"nightly-audit:{scheduled}:{chunk[0]}..{chunk[-1]}",
                tags={
                    ASSET_PARTITION_RANGE_START_TAG: chunk[0],
                    ASSET_PARTITION_RANGE_END_TAG: chunk[-1],
                    "moods/nightly_audit": scheduled,
                },
            )
        )
    return requests


@dg.schedule(
    cron_schedule=NIGHTLY_AUDIT_CRON,
    job=audit_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Audit every user nightly, in runs of at most 50 users (partition ranges).",
)
def nightly_audit_schedule(context: dg.ScheduleEvaluationContext):
    keys = context.instance.get_dynamic_partitions(USERS_PARTITION)
    scheduled = context.scheduled_execution_time.strftime("%Y-%m-%d") if context.scheduled_execution_time else "now"
    if not keys:
        return dg.SkipReason("no users partitions yet (the users_partition_sensor adds them)")
    return audit_run_requests(list(keys), scheduled)


@dg.schedule(
    cron_schedule=NIGHTLY_SUMMARY_CRON,
    job=audit_summary_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Recompute audit_summary (and its check) after the nightly audit.",
)
def nightly_audit_summary_schedule(context: dg.ScheduleEvaluationContext):
    scheduled = context.scheduled_execution_time.strftime("%Y-%m-%d") if context.scheduled_execution_time else "now"
    return dg.RunRequest(run_key=f"nightly-audit-summary:{scheduled}")
