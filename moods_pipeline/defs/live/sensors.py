"""Live sensors: the catch-up sensor (and the job it launches) and the firehose sensor.

Thin Dagster layer over ``moods_pipeline.sync.catchup``, ``moods_pipeline.sync.live`` and
``moods_pipeline.sync.firehose_follower``:

- ``catchup_sensor`` (every 30 s) finds moods to sync (valid, live, no pointer, older than
  ``MOODS_CATCHUP_GRACE_S``, user with an account within ``MOODS_ROLLOUT``, not in backoff)
  and, with ``MOODS_NUKE_POLICY=delete``, nuked moods whose records to remove; it requests
  ``catchup_sync_job`` runs of at most ``MOODS_CATCHUP_BATCH`` moods, the ids in the run config.
  Moods given up on (``MOODS_CATCHUP_MAX_ATTEMPTS``) are logged by the sensor and listed in
  the next run's metadata.
- ``catchup_sync_job`` (op ``catchup_sync``) syncs and deletes the listed moods, records the
  outcomes for the backoff bookkeeping and under ``MOODS_STATE_DIR/catchup/runs/``, and fails
  (after recording) if any mood failed, so an outage shows red.
- ``firehose_sensor`` (every 30 s) drains the firehose for a bounded time and, when mood
  records arrived, requests ``sync_latency_job``. Where it reads from is its Dagster cursor,
  ``{"pds_url": ..., "seq": n}`` (the UI shows it; clearing it there resumes from the seq the
  follower's statistics under ``MOODS_STATE_DIR/firehose/`` were counted through, which is also
  how a deployment from before this cursor carries on). A cursor for another PDS is ignored.

The settings named here come from the ``pipeline`` resource (``PipelineSettingsResource``: the
variables bound in definitions.py, parsed by ``moods_pipeline.settings``), evaluated each tick.
"""

# No `from __future__ import annotations` here: Dagster reads the config and resource
# annotations at definition time.

import hashlib
import json
import time

import dagster as dg

from moods_pipeline.defs.live.assets import sync_latency_job
from moods_pipeline.defs.resources import MongoResource, PdsResource, PipelineSettingsResource
from moods_pipeline.storage.journal import DeletionJournal
from moods_pipeline.sync.catchup import (
    DELETE,
    SYNC,
    CatchupPolicy,
    CatchupState,
    find_candidates,
    mark_reported,
    plan_runs,
    run_catchup,
)
from moods_pipeline.sync.firehose_follower import FirehoseFollower
from moods_pipeline.sync.live import LiveSync

MAX_ROWS = 50
CATCHUP_TAG = "moods/catchup"


# --- the catch-up job ----------------------------------------------------------------------------


class CatchupRunConfig(dg.Config):
    sync_mood_ids: list[str] = []
    """Moods to sync (record with the deterministic rkey, then the pointer)."""
    delete_mood_ids: list[str] = []
    """Nuked moods whose records to remove (nuke policy delete); skipped if no longer nuked."""
    reported_mood_ids: list[str] = []
    """Moods the sensor gave up on: listed in this run's metadata and log."""


def _table(rows: list[dict], columns: list[str]) -> dg.TableMetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: str(row.get(c) if row.get(c) is not None else "") for c in columns})
                 for row in rows[:MAX_ROWS]],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns]),
    )


@dg.op(name="catchup_sync", tags={"kind": "atproto"})
def catchup_sync(
    context: dg.OpExecutionContext,
    config: CatchupRunConfig,
    mongo: MongoResource,
    pds: PdsResource,
    pipeline: PipelineSettingsResource,
):
    """Sync (and, under the delete nuke policy, delete) the moods the catch-up sensor listed."""
    settings = pipeline.settings()
    state = CatchupState(settings.state_dir)
    # Deletes of nuked moods are journaled under the state dir, with this run's id.
    journal = DeletionJournal(settings.state_dir, command="catchup", run_id=context.run_id)
    live = LiveSync(mongo.store(), pds.client(), pds.write_options(), concurrency=pds.write_concurrency,
                    journal=journal)
    report = run_catchup(live, state, list(config.sync_mood_ids), list(config.delete_mood_ids),
                         config.reported_mood_ids)
    path = state.save_run(context.run_id, report)
    counts = report.counts
    metadata: dict = {k: dg.MetadataValue.int(v) for k, v in counts.items()}
    metadata["seconds"] = dg.MetadataValue.float(round(report.seconds, 3))
    metadata["report_file"] = dg.MetadataValue.path(str(path))
    failures = report.failures
    if failures:
        metadata["failures"] = _table(failures, ["mood_id", "kind", "did", "reason"])
        for row in failures[:MAX_ROWS]:
            context.log.warning(f"{row['kind']} of mood {row['mood_id']} ({row['did'] or '?'}) failed: {row['reason']}")
    skipped = [r for r in report.results if r["status"] == "skipped"]
    if skipped:
        metadata["skipped"] = _table(skipped, ["mood_id", "kind", "reason"])
    if report.reported:
        metadata["reported_moods"] = _table(report.reported, ["mood_id", "action", "attempts", "last_reason"])
        for row in report.reported[:MAX_ROWS]:
            context.log.warning(
                f"gave up on {row['action']} of mood {row['mood_id']} after {row['attempts']} attempts: "
                f"{row['last_reason']}"
            )
    context.log.info(f"catch-up: {counts}")
    if failures:
        raise dg.Failure(
            description=f"{len(failures)} of {len(report.results)} moods failed; they are retried with backoff",
            metadata=metadata,
        )
    return dg.Output(None, metadata=metadata)


@dg.job(name="catchup_sync_job", executor_def=dg.in_process_executor, tags={CATCHUP_TAG: "true"})
def catchup_sync_job():
    """Live catch-up: sync the listed moods (and delete nuked ones under the delete policy)."""
    catchup_sync()


def _run_config(sync_ids: list[str], delete_ids: list[str], reported_ids: list[str]) -> dict:
    return {"ops": {"catchup_sync": {"config": {
        "sync_mood_ids": sync_ids, "delete_mood_ids": delete_ids, "reported_mood_ids": reported_ids}}}}


def _run_key(parts: list[str]) -> str:
    return "catchup-" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


@dg.sensor(
    name="catchup_sensor",
    job=catchup_sync_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def catchup_sensor(context: dg.SensorEvaluationContext, mongo: MongoResource, pipeline: PipelineSettingsResource):
    """Requests catch-up runs for moods the live write missed (see moods_pipeline.sync.catchup)."""
    settings = pipeline.settings()
    policy = CatchupPolicy.from_settings(settings)
    state = CatchupState(settings.state_dir)
    now = time.time()
    candidates = find_candidates(mongo.store(), state, policy, now)
    # The tick's summary is the sensor's cursor (the UI shows it); the attempts stay in the state
    # dir, where the runs record their outcomes too.
    summary = {"at": now, "rollout": policy.rollout, "nuke_policy": policy.nuke_policy, **candidates.summary()}
    context.update_cursor(json.dumps(summary, sort_keys=True))
    context.log.info(f"catch-up candidates: {json.dumps(candidates.summary())}")
    newly = candidates.newly_reported
    for attempt in newly[:MAX_ROWS]:
        context.log.warning(
            f"giving up on {attempt.action} of mood {attempt.mood_id} after {attempt.attempts} attempts: "
            f"{attempt.last_reason}"
        )
    runs = plan_runs(candidates, policy)
    if not runs and not newly:
        if policy.parsed_rollout().is_off:
            return dg.SkipReason("MOODS_ROLLOUT is off: the live writers write nothing")
        return dg.SkipReason(
            f"nothing to catch up ({candidates.waiting} in backoff, {len(candidates.reported)} given up, "
            f"{candidates.out_of_rollout} outside the rollout)"
        )
    reported_ids = [a.mood_id for a in newly]
    requests = []
    for index, run in enumerate(runs or [{SYNC: [], DELETE: []}]):
        parts = []
        for action in (SYNC, DELETE):
            for mood_id in run[action]:
                attempt = state.started(mood_id, action, now, policy)
                parts.append(f"{action}:{mood_id}:{attempt.attempts}")
        extra = reported_ids if index == 0 else []
        parts.extend(f"reported:{m}" for m in extra)
        requests.append(dg.RunRequest(
            run_key=_run_key(parts),
            run_config=_run_config(run[SYNC], run[DELETE], extra),
            tags={CATCHUP_TAG: "true", "moods/sync_count": str(len(run[SYNC])),
                  "moods/delete_count": str(len(run[DELETE]))},
        ))
    mark_reported(state, newly, now)
    return dg.SensorResult(run_requests=requests)


# --- the firehose --------------------------------------------------------------------------------


@dg.sensor(
    name="firehose_sensor",
    job=sync_latency_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def firehose_sensor(
    context: dg.SensorEvaluationContext, mongo: MongoResource, pds: PdsResource, pipeline: PipelineSettingsResource
):
    """Drains the firehose since the sensor's cursor for at most 20 s; when mood records
    arrived, requests a sync_latency materialization."""
    settings = pipeline.settings()
    pds_url = pds.base_url().rstrip("/")
    seq, note = firehose_position(context.cursor, pds_url)
    if note:
        context.log.warning(f"firehose: {note}")
    follower = FirehoseFollower(mongo.store(), pds_url, settings.state_dir, cursor=seq)
    if follower.resumed_from == "file":
        context.log.info(f"firehose: the sensor has no cursor yet; starting from seq {follower.position}, "
                         f"kept in {follower.path}")
    report = follower.drain(max_seconds=20.0, idle_s=2.0)
    text = (f"{report.commits} commits, {report.seen} records seen, {report.confirmed} confirmed, "
            f"{report.unmatched} unmatched, {len(report.latencies)} latencies; cursor {report.cursor}")
    if report.error:
        context.log.warning(f"firehose: {report.error}")
    context.log.info(f"firehose: {text}")
    cursor = json.dumps({"pds_url": pds_url, "seq": report.cursor}, sort_keys=True)
    if not report.changed:
        return dg.SensorResult(skip_reason=f"no mood commits ({text})", cursor=cursor)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"sync_latency-{report.cursor}")], cursor=cursor)


def firehose_position(cursor: str | None, pds_url: str) -> tuple[int | None, str | None]:
    """The seq to read from in the sensor's cursor (None: none), and a note when the cursor is
    not usable. A bare number is the cursor this sensor kept before it named its PDS."""
    if not cursor:
        return None, None
    text = cursor.strip()
    if text.isdigit():
        return int(text), None
    try:
        data = json.loads(text)
    except ValueError:
        return None, f"cursor {text[:80]!r} is not one this sensor writes: ignored"
    if not isinstance(data, dict):
        return None, f"cursor {text[:80]!r} is not one this sensor writes: ignored"
    if str(data.get("pds_url") or "").rstrip("/") != pds_url:
        return None, f"cursor is for {data.get('pds_url')!r}, not {pds_url}: ignored, following from scratch"
    seq = data.get("seq")
    return (seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else None), None


live_jobs = [catchup_sync_job, sync_latency_job]
live_sensors = [catchup_sensor, firehose_sensor]
