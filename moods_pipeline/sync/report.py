"""The checklist's figures ("Migration Stats", "Test Results", "Launch Stats", "Final Metrics"),
from measured data only: MongoDB's counts, every user's latest backfill result, the latest audit
summary (what ``audit_summary`` exported) and the firehose follower's latency samples.

Plain Python (no Dagster): ``migration_report`` (the asset) and ``moods-pipeline report`` both
call :func:`gather` then :func:`build_report`. A figure whose source has not run yet (no audit,
no latency sample) is None, never a guess.

Definitions (docs/interface.md's words):

- moods in MongoDB: live moods (``deleted != true``); moods in ATProto: live moods of audited
  users that have a record carrying their id (statuses ``stale_pointer``, ``content_mismatch``,
  ``pointer_missing``, ``legacy_field``, ``synced``);
- moods migrated: records the backfill created plus moods it found already synced, over every
  user's latest backfill result; moods failed / failed syncs: moods whose write failed there;
- sync success rate: the latest audit's ``sync_rate_pct`` (synced or legacy_field over valid live
  moods, unreadable users' moods counting as not verified);
- error rate: failed over attempted (created + already synced + failed) of the latest backfills,
  the rate the ``sync_failure_rate`` alert watches;
- average sync latency: the mean of the follower's kept samples (mood ``when`` to the firehose
  commit of its record; live moods only, backfilled history excluded), in milliseconds;
- manual fixes required: the latest audit's problems (what ``repair`` fixes) plus invalid moods
  and users whose repo could not be read (a person has to look at both).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moods_pipeline.alerts import failure_rate_pct
from moods_pipeline.storage.audits import AuditStore
from moods_pipeline.storage.results import ResultsStore
from moods_pipeline.sync.backfill import summarize
from moods_pipeline.sync.firehose_follower import FirehoseFollower, percentile
from moods_pipeline.sync.reconcile import (
    CONTENT_MISMATCH,
    INVALID,
    LEGACY_FIELD,
    MISSING_ON_PDS,
    POINTER_MISSING,
    STALE_POINTER,
    SYNCED,
)
from moods_pipeline.sync.refusal import refusal

WITH_RECORD = (STALE_POINTER, CONTENT_MISMATCH, POINTER_MISSING, LEGACY_FIELD, SYNCED)

# (block, figure key, the checklist's label, unit)
FIGURES: tuple[tuple[str, str, str, str], ...] = (
    ("Migration Stats", "total_users", "Total users", "users"),
    ("Migration Stats", "users_with_atproto", "Users with ATProto", "users"),
    ("Migration Stats", "total_moods", "Total moods", "moods"),
    ("Migration Stats", "moods_migrated", "Moods migrated", "moods"),
    ("Migration Stats", "moods_failed", "Moods failed", "moods"),
    ("Test Results", "sync_success_rate_pct", "Sync success rate", "%"),
    ("Test Results", "average_sync_latency_ms", "Average sync latency", "ms"),
    ("Test Results", "moods_with_atproto_uri", "Moods with ATProto URI", "moods"),
    ("Test Results", "moods_missing_atproto", "Moods missing ATProto", "moods"),
    ("Launch Stats", "total_moods", "Total moods", "moods"),
    ("Launch Stats", "sync_success_rate_pct", "Sync rate", "%"),
    ("Launch Stats", "error_rate_pct", "Error rate", "%"),
    ("Final Metrics", "users_with_atproto", "Total users with ATProto", "users"),
    ("Final Metrics", "total_moods", "Total moods in MongoDB", "moods"),
    ("Final Metrics", "moods_in_atproto", "Total moods in ATProto", "moods"),
    ("Final Metrics", "sync_success_rate_pct", "Sync success rate", "%"),
    ("Final Metrics", "average_sync_latency_ms", "Average sync latency", "ms"),
    ("Final Metrics", "failed_syncs", "Failed syncs", "moods"),
    ("Final Metrics", "manual_fixes_required", "Manual fixes required", "problems"),
)

# figure -> where it is measured (shown beside it)
SOURCES = {
    "total_users": "MongoDB users",
    "users_with_atproto": "MongoDB users with atproto.did and atproto.password",
    "total_moods": "MongoDB live moods",
    "moods_migrated": "latest backfill per user: created + already synced",
    "moods_failed": "latest backfill per user: failed",
    "sync_success_rate_pct": "latest audit: synced / valid live",
    "average_sync_latency_ms": "firehose follower: mean of kept samples",
    "moods_with_atproto_uri": "MongoDB live moods with atproto.rkey",
    "moods_missing_atproto": "latest audit: missing_on_pds",
    "error_rate_pct": "latest backfill per user: failed / attempted",
    "moods_in_atproto": "latest audit: live moods with a record",
    "failed_syncs": "latest backfill per user: failed",
    "manual_fixes_required": "latest audit: problems + invalid + unreadable users",
}


@dataclass
class ReportInputs:
    mongo: dict[str, int]
    backfill: dict[str, Any] | None  # sync.backfill.summarize over the current users' latest results
    audit: dict[str, Any] | None  # the latest audit summary's totals (audit_summary's export)
    latencies_s: list[float] = field(default_factory=list)


def gather(store, state_dir) -> ReportInputs:
    """Read the inputs: Mongo counts, latest backfill results of the users who are still
    syncable (as ``backfill_summary`` counts them), the latest audit summary, latency samples."""
    mongo = store.migration_counts()
    current = {u.did for u in store.users_with_moods() if u.has_account and not refusal(u)}
    latest = [o for o in ResultsStore(state_dir).latest_backfill() if o.did in current]
    backfill = summarize(latest) if latest else None
    audit = AuditStore(state_dir).load_summary()
    state = FirehoseFollower.load_state(state_dir)
    latencies = [float(s[1]) for s in state.latencies] if state is not None else []
    return ReportInputs(mongo=mongo, backfill=backfill, audit=audit, latencies_s=latencies)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def build_report(inputs: ReportInputs) -> dict:
    """``{"figures": {key: number or None}, "blocks": {block: {label: number or None}},
    "rows": [{block, figure, label, value, unit, source}], "latency_p95_ms", "inputs": {...}}``."""
    mongo, backfill, audit = inputs.mongo, inputs.backfill, inputs.audit
    by_status = (audit or {}).get("by_status") or {}
    latencies = inputs.latencies_s
    figures: dict[str, float | int | None] = {
        "total_users": mongo["users"],
        "users_with_atproto": mongo["users_with_atproto"],
        "total_moods": mongo["moods_live"],
        "moods_migrated": (backfill["created"] + backfill["already_synced"]) if backfill else None,
        "moods_failed": backfill["failed"] if backfill else None,
        "sync_success_rate_pct": _round(audit.get("sync_rate_pct")) if audit else None,
        "average_sync_latency_ms": _round(1000 * sum(latencies) / len(latencies), 1) if latencies else None,
        "moods_with_atproto_uri": mongo["moods_with_pointer"],
        "moods_missing_atproto": int(by_status.get(MISSING_ON_PDS, 0)) if audit else None,
        "error_rate_pct": failure_rate_pct(backfill) if backfill else None,
        "moods_in_atproto": sum(int(by_status.get(s, 0)) for s in WITH_RECORD) if audit else None,
        "failed_syncs": backfill["failed"] if backfill else None,
        "manual_fixes_required": (int(audit.get("problems", 0)) + int(by_status.get(INVALID, 0))
                                  + int(audit.get("users_unreadable", 0))) if audit else None,
    }
    if figures["error_rate_pct"] is None and backfill:
        figures["error_rate_pct"] = 0.0  # nothing attempted: no error
    rows = [{"block": block, "figure": key, "label": label, "value": figures[key], "unit": unit,
             "source": SOURCES[key]} for block, key, label, unit in FIGURES]
    blocks: dict[str, dict[str, Any]] = {}
    for row in rows:
        blocks.setdefault(row["block"], {})[row["label"]] = row["value"]
    return {
        "figures": figures,
        "blocks": blocks,
        "rows": rows,
        "latency_p95_ms": _round(1000 * percentile(latencies, 95), 1) if latencies else None,
        "latency_samples": len(latencies),
        "moods_nuked": mongo["moods_nuked"],
        "inputs": {"backfill_users": backfill["users"] if backfill else 0,
                   "audit_users": int(audit.get("users_audited", 0)) if audit else 0,
                   "latency_samples": len(latencies)},
    }


def report(store, state_dir) -> dict:
    return build_report(gather(store, state_dir))


def format_value(value: Any, unit: str) -> str:
    if value is None:
        return "n/a (not measured yet)"
    if unit in ("%", "ms"):
        return f"{value}{'%' if unit == '%' else ' ms'}"
    return str(value)
