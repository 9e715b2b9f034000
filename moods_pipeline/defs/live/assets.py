"""The `sync_latency` asset: live-sync latency and firehose confirmation counts.

It reads the firehose follower's state (``MOODS_STATE_DIR/firehose/follower.json``, written by
the ``firehose_sensor``); it makes no PDS or Mongo request. Latency (docs/interface.md "Latency")
is from a mood's Mongo ``when`` to the commit that created its record, only for moods created
after the follower started. Numbers are metadata, so the UI plots them across
materializations; ids, DIDs and rkeys only, never mood text.
"""

# No `from __future__ import annotations` here: Dagster reads the config and resource
# annotations at definition time.

from datetime import datetime, timedelta, timezone

import dagster as dg

from moods_pipeline.defs.resources import PipelineSettingsResource
from moods_pipeline.sync.firehose_follower import FirehoseFollower, latency_stats

MAX_ROWS = 50


class SyncLatencyConfig(dg.Config):
    window_hours: float = 24.0
    """p50/p95 over samples committed within this many hours (0: every kept sample)."""


@dg.asset(group_name="live", kinds={"atproto"})
def sync_latency(context: dg.AssetExecutionContext, config: SyncLatencyConfig, pipeline: PipelineSettingsResource):
    """p50/p95 live-sync latency (seconds, mood `when` to firehose commit) over the window, and
    the follower's counts since it started: records seen, confirmed (their `ref` names a Mongo
    mood of the repo's user), unmatched (reported with DID, rkey and reason), deletes."""
    settings = pipeline.settings()
    state = FirehoseFollower.load_state(settings.state_dir)
    if state is None:
        context.log.info("the firehose follower has not run yet (no state under MOODS_STATE_DIR/firehose)")
        return dg.MaterializeResult(metadata={"seen": 0, "confirmed": 0, "unmatched": 0, "samples": 0,
                                              "follower_started": False})
    since = None
    if config.window_hours > 0:
        since = datetime.now(timezone.utc) - timedelta(hours=config.window_hours)
    stats = latency_stats(state, since)
    metadata: dict = {
        "seen": dg.MetadataValue.int(stats["seen"]),
        "confirmed": dg.MetadataValue.int(stats["confirmed"]),
        "unmatched": dg.MetadataValue.int(stats["unmatched"]),
        "deletes": dg.MetadataValue.int(stats["deletes"]),
        "unreadable": dg.MetadataValue.int(stats["unreadable"]),
        "samples": dg.MetadataValue.int(stats["samples"]),
        "latency_samples_total": dg.MetadataValue.int(stats["latency_count"]),
        "window_hours": dg.MetadataValue.float(config.window_hours),
        "follower_started_at": dg.MetadataValue.text(state.started_at),
        "cursor": dg.MetadataValue.int(state.cursor if state.cursor is not None else -1),
        "follower_started": True,
    }
    for key in ("p50_s", "p95_s", "max_s"):
        if stats[key] is not None:
            metadata[key] = dg.MetadataValue.float(round(stats[key], 3))
    threshold = settings.alert_latency_p95_s
    metadata["p95_threshold_s"] = dg.MetadataValue.float(threshold)
    metadata["p95_over_threshold"] = dg.MetadataValue.bool(stats["p95_s"] is not None and stats["p95_s"] > threshold)
    if state.unmatched_records:
        rows = state.unmatched_records[-MAX_ROWS:]
        metadata["unmatched_records"] = dg.MetadataValue.table(
            records=[dg.TableRecord({k: str(r.get(k) or "") for k in ("did", "rkey", "ref", "reason", "time")})
                     for r in rows],
            schema=dg.TableSchema(
                columns=[dg.TableColumn(c, "string") for c in ("did", "rkey", "ref", "reason", "time")]),
        )
    context.log.info(
        f"sync latency over {stats['samples']} samples: p50 {stats['p50_s']} s, p95 {stats['p95_s']} s; "
        f"seen {stats['seen']}, confirmed {stats['confirmed']}, unmatched {stats['unmatched']}"
    )
    return dg.MaterializeResult(metadata=metadata)


sync_latency_job = dg.define_asset_job(
    "sync_latency_job",
    selection=[sync_latency],
    executor_def=dg.in_process_executor,
    description="Materialize sync_latency from the firehose follower's state.",
)
