"""``migration_report``: the checklist's "Migration Stats", "Test Results", "Launch Stats" and
"Final Metrics" as one table and as plottable numbers, computed by ``sync.report`` from
MongoDB, every user's latest backfill result, the latest audit summary and the latency samples.

Re-materialized by itself after ``backfill_summary``, ``audit_summary`` or ``sync_latency``
(``defs/automation.py``). Numbers only: no mood text, no ids.
"""
# No `from __future__ import annotations`: Dagster reads the annotations at definition time.

import dagster as dg

from moods_pipeline.defs.audit.assets import audit_summary
from moods_pipeline.defs.automation import SUMMARY_CONDITION
from moods_pipeline.defs.backfill.assets import backfill_summary
from moods_pipeline.defs.live.assets import sync_latency
from moods_pipeline.defs.resources import MongoResource, PipelineSettingsResource
from moods_pipeline.sync import report as engine

REPORT_COLUMNS = dg.TableSchema(columns=[
    dg.TableColumn("block", "string", description="the checklist's block"),
    dg.TableColumn("figure", "string", description="the checklist's label"),
    dg.TableColumn("value", "float", description="empty: its source has not run yet"),
    dg.TableColumn("unit", "string"),
    dg.TableColumn("source", "string", description="where it is measured"),
])


def report_metadata(result: dict) -> dict:
    """Each measured figure as an int or float (plottable across materializations), the blocks as
    one typed table."""
    metadata: dict = {}
    for key, value in result["figures"].items():
        if value is None:
            continue
        metadata[key] = dg.MetadataValue.float(float(value)) if isinstance(value, float) else dg.MetadataValue.int(int(value))
    if result["latency_p95_ms"] is not None:
        metadata["latency_p95_ms"] = dg.MetadataValue.float(result["latency_p95_ms"])
    metadata["latency_samples"] = dg.MetadataValue.int(result["latency_samples"])
    metadata["moods_nuked"] = dg.MetadataValue.int(result["moods_nuked"])
    records = []
    for row in result["rows"]:
        # None (an empty cell): its source has not run yet
        value = None if row["value"] is None else float(row["value"])
        record = {"block": row["block"], "figure": row["label"], "value": value, "unit": row["unit"],
                  "source": row["source"]}
        records.append(dg.TableRecord(record))
    metadata["report"] = dg.MetadataValue.table(records=records, schema=REPORT_COLUMNS)
    return metadata


@dg.asset(
    deps=[backfill_summary, audit_summary, sync_latency],
    group_name="report",
    kinds={"mongodb"},
    automation_condition=SUMMARY_CONDITION,
)
def migration_report(context: dg.AssetExecutionContext, mongo: MongoResource, pipeline: PipelineSettingsResource):
    """The checklist's figures (Migration Stats, Test Results, Launch Stats, Final Metrics) from
    measured data: the `report` table, and each figure as a number the UI plots. The same as
    `moods-pipeline report`."""
    result = engine.report(mongo.store(), pipeline.settings().state_dir)
    measured = sum(1 for v in result["figures"].values() if v is not None)
    context.log.info(f"migration report: {measured} of {len(result['figures'])} figures measured")
    return dg.MaterializeResult(metadata=report_metadata(result))


migration_report_job = dg.define_asset_job(
    "migration_report_job",
    selection=[migration_report],
    executor_def=dg.in_process_executor,
    description="Recompute the checklist's migration figures.",
)
