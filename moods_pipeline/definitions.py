"""The Definitions object that workspace.yaml (and `dagster dev`) loads."""

from __future__ import annotations

import dagster as dg

from moods_pipeline.defs.alerts.sensors import ops_sensors
from moods_pipeline.defs.audit.assets import audit_job, audit_summary, audit_summary_job, mood_audit
from moods_pipeline.defs.audit.checks import everyone_in_step
from moods_pipeline.defs.audit.schedules import (
    nightly_audit_schedule,
    nightly_audit_summary_schedule,
    weekly_full_audit_schedule,
)
from moods_pipeline.defs.automation import summaries_automation_sensor
from moods_pipeline.defs.backfill.assets import backfill_summary, mood_backfill
from moods_pipeline.defs.backfill.jobs import backfill_job, backfill_summary_job
from moods_pipeline.defs.backfill.sensors import users_partition_sensor
from moods_pipeline.defs.erase.jobs import erase_job
from moods_pipeline.defs.lexicons.jobs import publish_lexicons_job
from moods_pipeline.defs.live.assets import sync_latency, sync_latency_job
from moods_pipeline.defs.live.sensors import catchup_sensor, catchup_sync_job, firehose_sensor
from moods_pipeline.defs.repair.jobs import mood_repair_job
from moods_pipeline.defs.report.assets import migration_report, migration_report_job
from moods_pipeline.defs.resources import (
    MONGO_VARIABLES,
    PDS_VARIABLES,
    PIPELINE_VARIABLES,
    MongoResource,
    PdsResource,
    PipelineSettingsResource,
)
from moods_pipeline.defs.users.assets import users, users_job
from moods_pipeline.settings import is_set


def _env(name: str):
    """EnvVar when the variable is set (the UI then shows its name, never its value); else
    None, which the resources read as "the default, or the local stack". Dagster resolves an
    EnvVar only when the resource is used, so loading reads no value and connects nowhere."""
    return dg.EnvVar(name) if is_set(name) else None


def _bound(variables: dict[str, str]) -> dict:
    return {field: _env(variable) for field, variable in variables.items()}


def default_resources() -> dict:
    """Every setting the Dagster code uses, as resource config bound to its variable."""
    return {
        "mongo": MongoResource(**_bound(MONGO_VARIABLES)),
        "pds": PdsResource(**_bound(PDS_VARIABLES)),
        "pipeline": PipelineSettingsResource(**_bound(PIPELINE_VARIABLES)),
    }


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=[mood_backfill, backfill_summary, mood_audit, audit_summary, sync_latency, users, migration_report],
        asset_checks=[everyone_in_step],
        jobs=[
            backfill_job, backfill_summary_job, audit_job, audit_summary_job, mood_repair_job,
            publish_lexicons_job, catchup_sync_job, sync_latency_job, erase_job, users_job, migration_report_job,
        ],
        schedules=[nightly_audit_schedule, nightly_audit_summary_schedule, weekly_full_audit_schedule],
        sensors=[users_partition_sensor, catchup_sensor, firehose_sensor, *ops_sensors, summaries_automation_sensor],
        resources=resources or default_resources(),
    )


defs = build_definitions()
