"""The summaries follow the runs that feed them (defs/automation.py), evaluated on a real instance
with the project's definitions, as the automation sensor evaluates them in the daemon."""

from __future__ import annotations

import dagster as dg

from moods_pipeline.defs.automation import SENSOR_NAME, SUMMARY_ASSETS
from moods_pipeline.definitions import defs

BACKFILL_SUMMARY = dg.AssetKey("backfill_summary")
AUDIT_SUMMARY = dg.AssetKey("audit_summary")


def materialize(instance, asset: str, partition: str | None = None) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=partition))


def requested(result) -> set[str]:
    return {key.to_user_string() for key in (r.key for r in result.results) if result.get_num_requested(key)}


def test_a_summary_follows_any_materialized_partition_once(dagster_instance):
    dagster_instance.add_dynamic_partitions("users", ["did:plc:a", "did:plc:b"])
    result = dg.evaluate_automation_conditions(defs=defs, instance=dagster_instance)
    assert requested(result) == set()

    # One user backfilled (the other never): the backfill summary is due, not the audit's.
    materialize(dagster_instance, "mood_backfill", "did:plc:a")
    result = dg.evaluate_automation_conditions(defs=defs, instance=dagster_instance, cursor=result.cursor)
    assert "backfill_summary" in requested(result) and "audit_summary" not in requested(result)
    # Requested once: the next tick does not ask again.
    result = dg.evaluate_automation_conditions(defs=defs, instance=dagster_instance, cursor=result.cursor)
    assert "backfill_summary" not in requested(result)

    materialize(dagster_instance, "mood_audit", "did:plc:b")
    result = dg.evaluate_automation_conditions(defs=defs, instance=dagster_instance, cursor=result.cursor)
    assert "audit_summary" in requested(result) and "backfill_summary" not in requested(result)


def test_the_command_lines_own_summary_run_is_not_doubled(dagster_instance):
    """The CLI materializes the summary right after its backfill: the sensor then requests nothing."""
    dagster_instance.add_dynamic_partitions("users", ["did:plc:a"])
    result = dg.evaluate_automation_conditions(defs=defs, instance=dagster_instance)
    materialize(dagster_instance, "mood_backfill", "did:plc:a")
    materialize(dagster_instance, "backfill_summary")
    result = dg.evaluate_automation_conditions(defs=defs, instance=dagster_instance, cursor=result.cursor)
    assert "backfill_summary" not in requested(result)


def test_the_automation_sensor_runs_by_default_and_targets_the_summaries():
    sensor = defs.get_repository_def().get_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    targeted = sensor.asset_selection.resolve(defs.get_repository_def().asset_graph)
    assert {k.to_user_string() for k in targeted} == set(SUMMARY_ASSETS)


def test_audit_summary_must_be_fresh_daily():
    node = defs.get_repository_def().asset_graph.get(AUDIT_SUMMARY)
    assert node.freshness_policy is not None and node.freshness_policy.deadline_cron == "0 7 * * *"
