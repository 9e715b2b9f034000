"""Schedules: the nightly incremental audit, the weekly full audit, then the summary.

- ``nightly_audit_schedule`` (02:00 UTC): audits the users partitions whose user changed since
  its last receipt (``sync.incremental``: the repo's rev or commit CID moved, per listRepos, or
  the user's Mongo fingerprint moved, or there is no receipt). Unchanged users get no run at
  all; when nobody changed, the tick is skipped with the counts. If the selection cannot tell
  (PDS or Mongo unreadable), everyone is audited. Each RunRequest covers a range of at most
  ``PARTITIONS_PER_RUN`` (50) partitions that are contiguous in the partitions' order and all
  changed (a run names its partitions as a key range, so changed users far apart take separate
  runs). Run keys carry the scheduled date, so a tick evaluated twice launches nothing twice.
- ``weekly_full_audit_schedule`` (Sundays 03:00 UTC): every partition, receipts or not
  (``AuditConfig.full``), in the same runs of 50: what a receipt cannot see (a PDS that lost
  data without a new commit, a bug in the fingerprint) is found within a week.
- ``nightly_audit_summary_schedule`` (05:00 UTC): ``audit_summary`` and its check
  ``everyone_in_step`` over every user's latest audit, once the night's audit runs are done.

All are read-only and run by default once the Dagster daemon runs.
"""
# No `from __future__ import annotations`: Dagster reads the annotations at definition time.

from typing import Optional

import dagster as dg

from moods_pipeline.defs.audit.assets import audit_job, audit_summary_job
from moods_pipeline.defs.dagster_private import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from moods_pipeline.defs.partitions import PARTITIONS_PER_RUN, USERS_PARTITION, partition_runs
from moods_pipeline.defs.resources import MongoResource, PdsResource, PipelineSettingsResource
from moods_pipeline.storage.receipts import ReceiptStore
from moods_pipeline.sync import incremental

NIGHTLY_AUDIT_CRON = "0 2 * * *"
WEEKLY_FULL_AUDIT_CRON = "0 3 * * 0"
NIGHTLY_SUMMARY_CRON = "0 5 * * *"


def audit_run_requests(keys: list[str], scheduled: str, per_run: int = PARTITIONS_PER_RUN,
                       selected: Optional[list[str]] = None, full: bool = False,
                       kind: str = "nightly-audit") -> list[dg.RunRequest]:
    """One RunRequest per range of at most ``per_run`` partitions of ``selected`` (default:
    all ``keys``) contiguous in ``keys``; ``full`` sets ``AuditConfig.full``."""
    wanted = set(keys if selected is None else selected)
    requests = []
    for chunk in partition_runs(keys, wanted, per_run):
        requests.append(
            dg.RunRequest(
                run_key=f"{kind}:{scheduled}:{chunk[0]}..{chunk[-1]}",
                run_config={"ops": {"mood_audit": {"config": {"full": full}}}},
                tags={
                    ASSET_PARTITION_RANGE_START_TAG: chunk[0],
                    ASSET_PARTITION_RANGE_END_TAG: chunk[-1],
                    f"moods/{kind.replace('-', '_')}": scheduled,
                },
            )
        )
    return requests


@dg.schedule(
    cron_schedule=NIGHTLY_AUDIT_CRON,
    job=audit_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Audit the users whose repo rev or Mongo fingerprint moved since their last receipt, nightly, "
                "in runs of at most 50 users (partition ranges); unchanged users get no run.",
)
def nightly_audit_schedule(context: dg.ScheduleEvaluationContext, mongo: MongoResource, pds: PdsResource,
                           pipeline: PipelineSettingsResource):
    keys = list(context.instance.get_dynamic_partitions(USERS_PARTITION))
    scheduled = context.scheduled_execution_time.strftime("%Y-%m-%d") if context.scheduled_execution_time else "now"
    if not keys:
        return dg.SkipReason("no users partitions yet (the users_partition_sensor adds them)")
    settings = pipeline.settings()
    receipts = ReceiptStore(settings.state_dir)
    basis = incremental.audit_basis(nuke_policy=settings.nuke_policy, when_tolerance_ms=settings.when_tolerance_ms)
    try:
        changed, selection = incremental.changed_partitions(keys, mongo.store(), pds.client(), receipts, basis)
        receipts.save_pass(dict(selection.facts(), source=f"nightly_audit_schedule {scheduled}"))
    except Exception as exc:  # noqa: BLE001 - cannot tell who changed: audit everyone
        context.log.warning(f"incremental selection failed ({type(exc).__name__}: {exc}); auditing every user")
        changed, selection = keys, None
    if selection is not None:
        context.log.info(f"{len(changed)} of {len(keys)} users changed since their receipts; "
                         f"{len(selection.unchanged)} unchanged")
    if not changed:
        facts = selection.facts()
        return dg.SkipReason(f"all {len(keys)} users unchanged since their last audit (receipt revs "
                             f"{facts['rev_min']} .. {facts['rev_max']}); nothing to audit")
    return audit_run_requests(keys, scheduled, selected=changed)


@dg.schedule(
    cron_schedule=WEEKLY_FULL_AUDIT_CRON,
    job=audit_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Audit every user weekly whatever the receipts say (AuditConfig.full), in runs of at most 50.",
)
def weekly_full_audit_schedule(context: dg.ScheduleEvaluationContext):
    keys = list(context.instance.get_dynamic_partitions(USERS_PARTITION))
    scheduled = context.scheduled_execution_time.strftime("%Y-%m-%d") if context.scheduled_execution_time else "now"
    if not keys:
        return dg.SkipReason("no users partitions yet (the users_partition_sensor adds them)")
    return audit_run_requests(keys, scheduled, full=True, kind="weekly-full-audit")


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
