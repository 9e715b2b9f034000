"""What users see of the pipeline, pinned: every asset, partitions definition, check, job,
schedule, sensor, resource, tag and pool of the project's real Definitions, against a
committed snapshot (``snapshots/definitions.json``).

A change to the pipeline's shape fails this test until the snapshot is regenerated on purpose:

    .venv/bin/python -m moods_pipeline_tests.defs.test_definitions_snapshot   # rewrites the snapshot

so every such change shows as a diff of that file in its own commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def _partitions(partitions_def) -> dict | None:
    if partitions_def is None:
        return None
    shape = {"type": type(partitions_def).__name__}
    name = getattr(partitions_def, "name", None)
    if name:
        shape["name"] = name
    return shape


def _tags(tags) -> dict:
    # Dagster adds tags of its own (kinds, ...): only the project's tags are part of the shape.
    return {k: v for k, v in sorted((tags or {}).items()) if not k.startswith("dagster/")}


def definitions_snapshot(defs: dg.Definitions) -> dict:
    """A JSON-able, order-independent picture of ``defs``."""
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "partitions": _partitions(node.partitions_def),
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "tags": _tags(node.tags),
            "deps": sorted(d.to_user_string() for d in node.parent_keys),
            "backfill_policy": str(node.backfill_policy) if node.backfill_policy else None,
            "automation_condition": node.automation_condition is not None,
            "pool": next(iter(node.pools), None) if getattr(node, "pools", None) else None,
        }
    checks = sorted(f"{c.asset_key.to_user_string()}:{c.name}" for c in graph.asset_check_keys)
    jobs = {}
    for job in sorted(defs.resolve_all_job_defs(), key=lambda j: j.name):
        if job.name.startswith("__ASSET_JOB"):
            continue
        jobs[job.name] = {
            "tags": _tags(job.tags),
            "ops": sorted(node.name for node in job.graph.node_defs),
            "pools": sorted({n.pool for n in job.graph.node_defs if getattr(n, "pool", None)}),
            "partitions": _partitions(job.partitions_def),
        }
    schedules = {
        s.name: {"cron": s.cron_schedule, "job": s.job_name, "default_status": s.default_status.value,
                 "timezone": s.execution_timezone}
        for s in sorted(defs.schedules or [], key=lambda s: s.name)
    }
    sensors = {}
    for sensor in sorted(defs.sensors or [], key=lambda s: s.name):
        sensors[sensor.name] = {
            "type": sensor.sensor_type.value,
            "jobs": sorted(t.job_name for t in sensor.targets) if sensor.targets else [],
            "default_status": sensor.default_status.value,
            "minimum_interval_seconds": sensor.minimum_interval_seconds,
        }
    resources = {
        key: {"class": type(resource).__name__,
              "fields": sorted(type(resource).model_fields) if hasattr(type(resource), "model_fields") else []}
        for key, resource in sorted((defs.resources or {}).items())
    }
    return {"assets": assets, "asset_checks": checks, "jobs": jobs, "schedules": schedules,
            "sensors": sensors, "resources": resources}


def _current() -> dict:
    from moods_pipeline.definitions import defs

    return json.loads(json.dumps(definitions_snapshot(defs), sort_keys=True))


def test_definitions_match_the_committed_snapshot():
    expected = json.loads(SNAPSHOT.read_text())
    current = _current()
    for section in expected:
        assert current.get(section) == expected[section], (
            f"{section} differ from {SNAPSHOT.name}: regenerate it on purpose with "
            "`python -m moods_pipeline_tests.defs.test_definitions_snapshot` and commit the diff")
    assert set(current) == set(expected)


def test_snapshot_names_every_job_the_cli_runs():
    """The CLI resolves these jobs by name on the project's real definitions."""
    jobs = set(json.loads(SNAPSHOT.read_text())["jobs"])
    assert {"mood_backfill_job", "mood_audit_job", "mood_repair_job", "erase_job", "catchup_sync_job",
            "sync_latency_job", "publish_lexicons_job"} <= jobs, sorted(jobs)


if __name__ == "__main__":
    SNAPSHOT.parent.mkdir(exist_ok=True)
    SNAPSHOT.write_text(json.dumps(_current(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")
