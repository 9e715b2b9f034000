"""Repair and erase as the UI launches them: users picked as partitions (no YAML naming them),
typed options (``apply`` a bool defaulting to a dry run, erase ``mode`` an enum), the dry-run plan
as a typed table in the run's metadata before anyone applies."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._config import ConfigTypeKind

from moods_pipeline.defs.erase.jobs import erase_job
from moods_pipeline.defs.repair.jobs import mood_repair_job
from moods_pipeline_tests.world import add_user, definitions_for, repo_snapshot

pytestmark = pytest.mark.integration


def output_metadata(result, op: str) -> dict:
    event = next(e for e in result.events_for_node(op) if e.event_type == dg.DagsterEventType.STEP_OUTPUT)
    return event.step_output_data.metadata


def test_the_launchpad_renders_typed_options():
    fields = erase_job.graph.node_named("erase_users").definition.config_schema.as_field().config_type.fields
    mode = fields["mode"].config_type
    mode = getattr(mode, "inner_type", mode)  # optional (it has a default): an enum inside
    assert mode.kind == ConfigTypeKind.ENUM and fields["mode"].default_value == "records"
    assert {v.config_value for v in mode.enum_values} == {"records", "account"}
    assert fields["apply"].default_value is False and not fields["users"].is_required
    fields = mood_repair_job.graph.node_named("repair_moods").definition.config_schema.as_field().config_type.fields
    for name in ("apply", "delete_orphans", "rewrite_legacy"):
        inner = getattr(fields[name].config_type, "inner_type", fields[name].config_type)
        assert inner.key in ("Bool", "BoolSourceType") and fields[name].default_value is False, inner.key
    # Both jobs are partitioned over the users: the Launchpad shows the partition picker.
    assert mood_repair_job.partitions_def.name == "users" and erase_job.partitions_def.name == "users"


def test_repair_and_erase_picked_as_partitions(test_settings, mongo_db, make_account, dagster_instance, pds):
    user = add_user(mongo_db, make_account("lpad"), moods=3)
    dagster_instance.add_dynamic_partitions("users", [user.did])
    defs = definitions_for(test_settings)
    repair = defs.resolve_job_def("mood_repair_job")

    # The default: a dry run. Its plan is a typed table in the run's metadata; nothing is written.
    dry = repair.execute_in_process(instance=dagster_instance, partition_key=user.did)
    assert dry.success
    meta = output_metadata(dry, "repair_moods")
    plan = meta["plan"].value
    assert [c.name for c in plan.schema.columns] == ["user", "action", "mood_id", "rkey"]
    assert sorted((r.data["action"], r.data["mood_id"]) for r in plan.records) == sorted(
        (action, mood_id) for mood_id in user.mood_ids for action in ("create_record", "write_pointer"))
    assert meta["dry_run"].value is True and repo_snapshot(pds, user.did) == {}

    applied = repair.execute_in_process(instance=dagster_instance, partition_key=user.did,
                                        run_config={"ops": {"repair_moods": {"config": {"apply": True}}}})
    assert applied.success and len(repo_snapshot(pds, user.did)) == 3

    # Erase, picked the same way, mode chosen from the enum: a dry run lists, removes nothing.
    erase = defs.resolve_job_def("erase_job")
    dry = erase.execute_in_process(instance=dagster_instance, partition_key=user.did,
                                   run_config={"ops": {"erase_users": {"config": {"mode": "records"}}}})
    assert dry.success
    table = output_metadata(dry, "erase_users")["users_table"].value
    assert {c.name: c.type for c in table.schema.columns}["found"] == "int"
    assert [(r.data["did"], r.data["found"], r.data["removed"]) for r in table.records] == [(user.did, 3, 0)]
    assert len(repo_snapshot(pds, user.did)) == 3

    # No partition and no users: refused with the reason, nothing touched.
    nothing = erase.execute_in_process(instance=dagster_instance, raise_on_error=False)
    assert not nothing.success and len(repo_snapshot(pds, user.did)) == 3
    failure = next(e for e in nothing.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "pick users (partitions)" in failure.step_failure_data.error.message
