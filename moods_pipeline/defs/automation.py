"""Declarative automation: the summaries follow the runs that feed them, by themselves.

``backfill_summary``, ``audit_summary``, ``users`` and ``migration_report`` carry
``SUMMARY_CONDITION``: requested once any upstream asset (partition) has been materialized since
the summary last ran or was requested, as soon as no upstream run and no run of the summary is
in progress. That covers every way a partition gets materialized: a backfill or audit launched
from the UI, the CLI, the nightly schedule, the catch-up sensor, or a repair (its post-repair
audits are ``mood_audit`` materializations).

It is ``AutomationCondition.eager()`` without its ``~any_deps_missing()`` clause: with users
partitions, a user whose backfill failed leaves its partition missing for good, and eager()
would then never update the summary again, hiding exactly the failures it should show.

``summaries_automation_sensor`` evaluates these conditions every 30 s and is RUNNING by
default, so a daemon (``moods-pipeline ui``, ``dagster dev``, or ``dagster-daemon run`` in a
deployment) keeps the summaries fresh within a minute of the run that changed them.

The command line still materializes the summaries itself right after its runs (it must print
fresh totals without a daemon). That does not double-run: a summary materialized after its
upstream resets the condition (``since_last_handled``), so the next tick requests nothing; only
a tick that falls in the instant between the CLI's two runs would request one extra,
idempotent, summary run.
"""

from datetime import timedelta

import dagster as dg

SUMMARY_CONDITION = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after any upstream materialization")

# audit_summary is due daily by 07:00 UTC (nightly audit at 02:00, its summary at 05:00), and
# must have been materialized within the 24 hours before.
AUDIT_FRESHNESS = dg.FreshnessPolicy.cron(deadline_cron="0 7 * * *", lower_bound_delta=timedelta(hours=24))

SENSOR_NAME = "summaries_automation_sensor"
SENSOR_INTERVAL_S = 30
SUMMARY_ASSETS = ("backfill_summary", "audit_summary", "users", "migration_report")

summaries_automation_sensor = dg.AutomationConditionSensorDefinition(
    SENSOR_NAME,
    target=dg.AssetSelection.assets(*SUMMARY_ASSETS),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    description="Re-materializes the summaries (backfill_summary, audit_summary, users, migration_report) "
    "after any run that materialized what they read.",
)
