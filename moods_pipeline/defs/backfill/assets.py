"""Backfill assets: every historical mood into its author's ATProto repo (checklist phase 4)."""
# No `from __future__ import annotations` here: Dagster reads the config and resource
# annotations at definition time.


import shlex
import time

import dagster as dg
import pandas as pd

from moods_pipeline import progress
from moods_pipeline.progress import ProgressLine
from moods_pipeline.defs.automation import SUMMARY_CONDITION
from moods_pipeline.defs.partitions import PARTITIONS_PER_RUN, PDS_WRITER_POOL, users_partitions
from moods_pipeline.defs.resources import MongoResource, PdsResource, PipelineSettingsResource
from moods_pipeline.model import UserAccount, UserOutcome
from moods_pipeline.sync.backfill import backfill_users, summarize
from moods_pipeline.sync.refusal import refusal

MAX_REASON_ROWS = 50  # bounded tables in metadata: the full lists live in the state dir


class BackfillConfig(dg.Config):
    dry_run: bool = False
    """Plan and report everything, write nothing (no PDS write, no Mongo pointer)."""


def _reason_table(rows: list) -> dg.TableMetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord({"mood_id": mood_id, "reason": reason}) for mood_id, reason in rows[:MAX_REASON_ROWS]],
        schema=dg.TableSchema(columns=[dg.TableColumn("mood_id", "string"), dg.TableColumn("reason", "string")]),
    )


def outcome_metadata(outcome: UserOutcome) -> dict:
    """Per-user numbers the UI plots, plus reason tables (ids and reasons, never mood text)."""
    metadata = {
        "did": dg.MetadataValue.text(outcome.did or ""),
        "handle": dg.MetadataValue.text(f"@{outcome.handle}" if outcome.handle else "(no handle)"),
        "live_moods": dg.MetadataValue.int(outcome.live),
        "created": dg.MetadataValue.int(outcome.created),
        "already_synced": dg.MetadataValue.int(outcome.already_synced),
        "pointers_written": dg.MetadataValue.int(outcome.pointers_written),
        "skipped_invalid": dg.MetadataValue.int(len(outcome.skipped_invalid)),
        "failed": dg.MetadataValue.int(len(outcome.failed)),
        "duplicates_seen": dg.MetadataValue.int(outcome.duplicates),
        "orphans_seen": dg.MetadataValue.int(outcome.orphans),
        # Records that differ from their mood, and duplicates: left for `moods-pipeline repair`.
        "needs_repair": dg.MetadataValue.int(outcome.needs_repair),
        "batches": dg.MetadataValue.int(outcome.batches),
        "seconds": dg.MetadataValue.float(round(outcome.seconds, 3)),
        "records_per_second": dg.MetadataValue.float(round(outcome.records_per_second, 2)),
        "dry_run": dg.MetadataValue.bool(outcome.dry_run),
    }
    if outcome.dry_run:
        metadata["would_create"] = dg.MetadataValue.int(outcome.would_create)
        metadata["would_write_pointers"] = dg.MetadataValue.int(outcome.would_write_pointers)
    if outcome.skipped_invalid:
        metadata["invalid_reasons"] = _reason_table(outcome.skipped_invalid)
    if outcome.failed:
        metadata["failure_reasons"] = _reason_table(outcome.failed)
    if outcome.needs_repair_reasons:
        metadata["needs_repair_reasons"] = _reason_table(outcome.needs_repair_reasons)
    if outcome.error:
        metadata["error"] = dg.MetadataValue.text(outcome.error)
    return metadata


def users_for_partitions(store, dids: list[str]) -> list[UserAccount]:
    # One query for the whole run: a lookup per partition scanned `users` twice each.
    known = store.users_by_dids(dids)
    # A partition whose user left Mongo still gets an outcome (a failure with the reason).
    return [known.get(did) or UserAccount(sub=f"(unknown for {did})", did=did, handle=None) for did in dids]


@dg.asset(
    partitions_def=users_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=PARTITIONS_PER_RUN),
    output_required=False,
    group_name="backfill",
    pool=PDS_WRITER_POOL,
    kinds={"mongodb", "atproto"},
)
def mood_backfill(
    context: dg.AssetExecutionContext,
    config: BackfillConfig,
    mongo: MongoResource,
    pds: PdsResource,
    pipeline: PipelineSettingsResource,
):
    """Each partition is one user (keyed by DID): every valid live mood of that user as a
    `computer.aesthetic.mood` record in the user's own repo, with Mongo's `atproto.rkey`
    pointing at it.

    Idempotent: records carry their mood's id (`ref`) and a deterministic record key, so a
    re-run (or a run after a crash) matches what is there instead of writing it again. Users of
    one run are synced concurrently; a user that fails becomes a failed partition while the
    others materialize, and the run's failure message names them.
    """
    store = mongo.store()
    results = pipeline.results()
    settings = pipeline.settings()
    users = users_for_partitions(store, list(context.partition_keys))
    started = time.monotonic()
    context.log.info(
        f"{'dry run: planning' if config.dry_run else 'backfilling'} {len(users)} users "
        f"({pds.user_concurrency} at once, {pds.write_concurrency} of them writing)"
    )

    progress_line = ProgressLine(len(users))

    several_batches: set[str] = set()

    def on_batch(outcome: UserOutcome, done: int, total: int) -> None:
        # A stored log event per batch only for users that need several batches: for the usual
        # user (a few moods, one batch) its event's metadata already says it all.
        if done < total:
            several_batches.add(outcome.did)
        if outcome.did in several_batches:
            rate = outcome.created / outcome.seconds if outcome.seconds else 0.0
            context.log.info(f"{outcome.label}: {done}/{total} records written, {rate:.0f} records/s")

    def on_user_done(outcome: UserOutcome) -> None:
        results.save_backfill(outcome, context.run.run_id)
        progress.notify("user_done", label=outcome.label, ok=outcome.ok)

    def describe(outcome: UserOutcome) -> str:
        state = "failed: " + outcome.error if outcome.error else (
            f"{len(outcome.failed)} moods failed" if outcome.failed else "ok")
        return (
            f"{outcome.label}: {state}; live {outcome.live}, created {outcome.created}, "
            f"already synced {outcome.already_synced}, invalid {len(outcome.skipped_invalid)}"
            + (f", would create {outcome.would_create}" if outcome.dry_run else "")
            + (f", {outcome.needs_repair} need a repair (moods-pipeline repair)" if outcome.needs_repair else "")
        )

    # Each user's event is stored as soon as the user is done, so Dagster's event writes overlap
    # the PDS work of the users still running instead of leaving the PDS idle at every run's end.
    def sync(emit) -> None:
        def user_done(outcome: UserOutcome) -> None:
            on_user_done(outcome)
            emit(outcome)

        backfill_users(
            users,
            store,
            pds.client(),
            dry_run=config.dry_run,
            concurrency=pds.user_concurrency,
            write_concurrency=pds.write_concurrency,
            options=pds.write_options(),
            on_batch=on_batch,
            on_user_done=user_done,
            when_tolerance_ms=settings.when_tolerance_ms,
        )

    outcomes: list = []
    for outcome in progress.stream_results(sync, name="mood-backfill"):
        outcomes.append(outcome)
        # Every user's outcome is in its event's metadata; the run log gets a line for each user
        # that needs attention and a progress line now and then, not one stored event per user.
        if not outcome.ok or outcome.needs_repair or config.dry_run:
            context.log.info(describe(outcome))
        line = progress_line.user_done(outcome)
        if line:
            context.log.info(line)
        # A user that did not fully sync gets an observation (its reasons stay visible) and no
        # materialization, so its partition shows as failed; a dry run materializes nothing.
        event = dg.AssetMaterialization if outcome.ok and not config.dry_run else dg.AssetObservation
        yield event(asset_key=context.asset_key, partition=outcome.did, metadata=outcome_metadata(outcome))

    summary = summarize(outcomes, seconds=time.monotonic() - started, dry_run=config.dry_run)
    context.log.info(f"run summary: {summary}")
    broken = [o for o in outcomes if not o.ok]
    if broken:
        lines = [f"{o.label} ({o.did}): {o.error or f'{len(o.failed)} moods failed'}" for o in broken]
        raise dg.Failure(
            description=f"{len(broken)} of {len(outcomes)} users did not fully sync:\n" + "\n".join(lines),
            metadata={"users_failed": len([o for o in broken if o.error]), "moods_failed": summary["failed"]},
        )


def summary_frame(outcomes: list[UserOutcome]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "did": o.did,
                "handle": o.handle,
                "live": o.live,
                "created": o.created,
                "already_synced": o.already_synced,
                "skipped_invalid": len(o.skipped_invalid),
                "failed": len(o.failed),
                "needs_repair": o.needs_repair,
                "error": o.error or "",
            }
            for o in outcomes
        ]
    )


@dg.asset(deps=[mood_backfill], group_name="backfill", kinds={"pandas"}, automation_condition=SUMMARY_CONDITION)
def backfill_summary(context: dg.AssetExecutionContext, mongo: MongoResource, pipeline: PipelineSettingsResource):
    """The migration stats of the checklist over the latest backfill result of every user
    (not just the last run): users, moods live, created, already synced, skipped, failed,
    needs_repair (records that differ from their mood, and duplicates: for the repair).
    Users whose stored account is refused (a malformed, shared or unpartitionable DID) count
    as failed with their reason; results of DIDs no user holds any more are left out.
    Numbers are metadata, so the UI plots them across materializations; `seconds` is this run's
    wall time. Re-materialized by itself after any backfill run (defs/automation.py)."""
    started = time.monotonic()
    store = mongo.store()
    users_with_moods = store.users_with_moods()
    without_account = [u for u in users_with_moods if not u.has_account and not refusal(u)]
    refused = [(u, refusal(u)) for u in users_with_moods if refusal(u)]
    current = {u.did for u in users_with_moods if u.has_account and not refusal(u)}
    latest = pipeline.results().latest_backfill()
    outcomes = [o for o in latest if o.did in current]
    stale = len(latest) - len(outcomes)
    outcomes += [UserOutcome(sub=u.sub, did=u.did, handle=u.handle, error=reason) for u, reason in refused]
    summary = summarize(outcomes)
    summary["skipped_no_account"] = len(without_account)
    summary["users_refused"] = len(refused)
    summary["users_with_moods"] = len(users_with_moods)
    summary["users_never_backfilled"] = len(current - {o.did for o in outcomes})
    summary["stale_results_ignored"] = stale
    summary["moods_without_user"] = store.moods_without_user()
    synced = summary["already_synced"] + summary["created"]
    valid_live = summary["moods_live"] - summary["skipped_invalid"]
    summary["sync_rate_pct"] = round(100.0 * synced / valid_live, 2) if valid_live else 100.0
    # Latest results are real runs: the dry-run planning counts mean nothing here, and summing the
    # users' own seconds (synced concurrently) would not be a duration of anything.
    for key in ("would_create", "would_write_pointers", "seconds", "dry_run"):
        summary.pop(key, None)
    metadata = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    failing = [o for o in outcomes if not o.ok]
    if failing:
        metadata["failing_users"] = dg.MetadataValue.md(
            "\n".join(f"- {o.label} `{o.did or o.sub}`: {o.error or f'{len(o.failed)} moods failed'}"
                      for o in failing[:100])
        )
    to_repair = [o for o in outcomes if o.needs_repair]
    if to_repair:
        metadata["users_needing_repair"] = dg.MetadataValue.md(
            "\n".join(f"- {o.label} `{o.did}`: {o.needs_repair} (`moods-pipeline repair --user {shlex.quote(o.sub)}"
                      " --apply`)"
                      for o in to_repair[:100])
        )
    metadata["seconds"] = dg.MetadataValue.float(round(time.monotonic() - started, 3))
    context.log.info(f"backfill summary over {len(outcomes)} users: {summary}")
    return dg.MaterializeResult(metadata=metadata)
