"""Audit assets: Mongo against every user's repo (docs/interface.md's statuses), and the totals.

- ``mood_audit``: one partition per syncable user (the users partitions, keyed by DID), audited
  in batched runs like the backfill. Each user's materialization carries the counts per status
  (numeric metadata the UI plots) and the reconciliation as a table (problems first, at most
  ``MAX_TABLE_ROWS`` rows); the full reconciliation goes to
  ``MOODS_STATE_DIR/audit/latest/<did>.parquet``. A user whose repo cannot be read gets an
  observation with the reason, no materialization, and fails the run (after the check result).
  The asset check ``audited_users_in_step`` (``checks.py``) covers the users of each run.
- ``audit_summary``: docs/interface.md's audit numbers over the latest audit of every syncable user
  (not just the last run) as numeric metadata, the repos no Mongo user owns, and the full
  reconciliation exported as one Parquet file (``MOODS_STATE_DIR/audit/reconciliation.parquet``).
  Its check ``everyone_in_step`` lives in ``checks.py``. It re-materializes by itself after any
  ``mood_audit`` materialization (``defs/automation.py``) and must be fresh daily by 07:00 UTC.

Metadata carries ids, rkeys, statuses, counts, lengths and short hashes; never mood text.
"""
# No `from __future__ import annotations` here: Dagster reads the config and resource
# annotations at definition time.

import time
from typing import Optional

import dagster as dg

from moods_pipeline import progress
from moods_pipeline.defs.audit.checks import audit_run_check_spec, run_check_result
from moods_pipeline.defs.automation import AUDIT_FRESHNESS, SUMMARY_CONDITION
from moods_pipeline.defs.partitions import PARTITIONS_PER_RUN, users_partitions
from moods_pipeline.defs.resources import MongoResource, PdsResource, PipelineSettingsResource
from moods_pipeline.model import UserAccount
from moods_pipeline.storage.audits import AuditStore
from moods_pipeline.storage.receipts import ReceiptStore
from moods_pipeline.sync import audit as engine
from moods_pipeline.sync import incremental
from moods_pipeline.sync.reconcile import LEGACY_FIELD, PROBLEM_STATUSES, STATUSES, SYNCED

MAX_TABLE_ROWS = 100  # reconciliation rows in a materialization's metadata; the rest is in Parquet
TABLE_COLUMNS = ("status", "kind", "mood_id", "rkey", "pointer", "issues", "detail", "mood_len", "mood_hash",
                 "expected_cid", "cid")
MAX_LISTED = 100  # users listed in the summary's markdown


class AuditConfig(dg.Config):
    check_logins: bool = False
    """Also log in with each user's stored credentials (paced) and report the broken ones."""
    read: str = "auto"
    """How records are read: auto (listRecords pages, problems confirmed by a getRepo export),
    pages, list or car."""
    rewrite_legacy: bool = False
    """Count legacy_field (mongoId instead of ref) as a problem."""
    full: bool = False
    """Audit every selected user. Off: a user whose repo rev and commit CID and whose Mongo
    fingerprint equal its last receipt is not read again (its partition gets an observation
    saying so); check_logins always checks everyone. The CLI sets it for the users it has
    chosen itself (the changed ones, or everyone with --full)."""
    only: Optional[list[str]] = None
    """Audit only these partitions of the run's range and leave the others alone (no event): the
    CLI's incremental runs span the unchanged users between changed ones instead of starting a
    run per changed user."""


def reconciliation_table(audit: engine.UserAudit, limit: int = MAX_TABLE_ROWS) -> dg.TableMetadataValue:
    """The reconciliation as table metadata: problems first, then the rest, at most ``limit`` rows."""
    columns = audit.columns()
    problem = columns["problem"]
    order = [i for i in range(len(problem)) if problem[i]] + [i for i in range(len(problem)) if not problem[i]]
    records = []
    for i in order[:limit]:
        row = {}
        for name in TABLE_COLUMNS:
            value = columns[name][i]
            if name == "mood_len":
                if value is not None:
                    row[name] = int(value)
            else:
                row[name] = "" if value is None else str(value)
        records.append(dg.TableRecord(row))
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, "int" if name == "mood_len" else "string") for name in TABLE_COLUMNS]
    )
    return dg.MetadataValue.table(records=records, schema=schema)


def audit_metadata(audit: engine.UserAudit) -> dict:
    """Per-user numbers the UI plots (one per status), the table, and what stopped the audit."""
    counts = audit.counts
    valid_live = audit.moods_valid_live if not audit.unreadable else 0
    ok = counts.get(SYNCED, 0) + counts.get(LEGACY_FIELD, 0)
    metadata = {
        "did": dg.MetadataValue.text(audit.user.did or ""),
        "handle": dg.MetadataValue.text(f"@{audit.user.handle}" if audit.user.handle else "(no handle)"),
        "problems": dg.MetadataValue.int(audit.problems),
        "moods_live": dg.MetadataValue.int(audit.moods_live),
        "records": dg.MetadataValue.int(audit.records),
        "sync_rate_pct": dg.MetadataValue.float(engine.sync_rate_pct(ok, valid_live) if not audit.unreadable else 0.0),
        **{status: dg.MetadataValue.int(int(counts.get(status, 0))) for status in STATUSES},
        "read": dg.MetadataValue.text(audit.read),
        "seconds": dg.MetadataValue.float(round(audit.seconds, 4)),
    }
    if audit.unreadable:
        metadata["unreadable"] = dg.MetadataValue.text(audit.unreadable)
        metadata["moods_unverified"] = dg.MetadataValue.int(audit.moods_unverified)
    else:
        metadata["reconciliation"] = reconciliation_table(audit)
        if len(audit.rows) > MAX_TABLE_ROWS:
            metadata["reconciliation_rows"] = dg.MetadataValue.int(len(audit.rows))
    if audit.login is not None:
        metadata["login"] = dg.MetadataValue.text(audit.login)
    return metadata


def unchanged_metadata(summary: dict) -> dict:
    """An unchanged user's observation: its receipt's rev and counts (no rows: nothing was read)."""
    counts = summary.get("by_status") or {}
    return {
        "unchanged": dg.MetadataValue.bool(True),
        "receipt_rev": dg.MetadataValue.text(str(summary.get("receipt_rev") or "")),
        "receipt_audited_at": dg.MetadataValue.text(str(summary.get("receipt_audited_at") or "")),
        "problems": dg.MetadataValue.int(int(summary.get("problems", 0))),
        "moods_live": dg.MetadataValue.int(int(summary.get("moods_live", 0))),
        **{status: dg.MetadataValue.int(int(counts.get(status, 0))) for status in STATUSES},
    }


def incremental_metadata(facts: Optional[dict]) -> dict:
    """``audit_summary``'s lines on the latest incremental selection: how many users were
    verified unchanged by their receipts, and as of which revs."""
    if not facts:
        return {}
    metadata = {
        "users_verified_unchanged": dg.MetadataValue.int(int(facts.get("users_unchanged", 0))),
        "users_checked_last_selection": dg.MetadataValue.int(int(facts.get("users_checked", 0))),
        "unchanged_as_of": dg.MetadataValue.text(
            f"revs {facts.get('rev_min')} .. {facts.get('rev_max')}; receipts from {facts.get('receipts_oldest')}"
            f" to {facts.get('receipts_newest')}; selected at {facts.get('at')} ({facts.get('source', '')})"
            if facts.get("users_unchanged") else f"none unchanged (selected at {facts.get('at')})"),
    }
    sample = facts.get("unchanged_sample") or []
    if sample:
        lines = ["| user | rev | head | audited_at |", "|---|---|---|---|"]
        for item in sample:
            who = f"@{item['handle']}" if item.get("handle") else item.get("did")
            lines.append(f"| {who} | {item.get('rev')} | {str(item.get('head'))[:16]}... | {item.get('audited_at')} |")
        metadata["unchanged_receipts"] = dg.MetadataValue.md("\n".join(lines))
    return metadata


def audit_event(audit: engine.UserAudit, asset_key: dg.AssetKey, extra: Optional[dict] = None):
    """A materialization for a user audited, an observation for one that could not be."""
    metadata = audit_metadata(audit)
    if extra:
        metadata.update(extra)
    event = dg.AssetObservation if audit.unreadable else dg.AssetMaterialization
    return event(asset_key=asset_key, partition=audit.user.did, metadata=metadata)


@dg.asset(
    partitions_def=users_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=PARTITIONS_PER_RUN),
    output_required=False,
    group_name="audit",
    kinds={"mongodb", "atproto", "parquet"},
    check_specs=[audit_run_check_spec],
)
def mood_audit(
    context: dg.AssetExecutionContext,
    config: AuditConfig,
    mongo: MongoResource,
    pds: PdsResource,
    pipeline: PipelineSettingsResource,
):
    """Each partition is one user (keyed by DID): every mood of the user in Mongo (nuked ones
    included) against the `computer.aesthetic.mood` records in the user's repo, with
    docs/interface.md's statuses (synced, missing_on_pds, stale_pointer, content_mismatch,
    pointer_missing, legacy_field, duplicate, orphan, nuked_on_pds, nuked, invalid).

    Read-only (reading a repo needs no login). Users of a run are audited concurrently. The
    check `audited_users_in_step` fails on any problem or unreadable user of the run.
    """
    settings = pipeline.settings()
    store = mongo.store()
    audits = AuditStore(settings.state_dir)
    run_id = context.run.run_id
    dids = list(context.partition_keys)
    if config.only is not None:
        wanted = set(config.only)
        dids = [did for did in dids if did in wanted]
    found = store.users_by_dids(dids)
    gone = [did for did in dids if did not in found]
    users = [found[did] for did in dids if did in found]
    receipts = ReceiptStore(settings.state_dir)
    basis = incremental.audit_basis(nuke_policy=settings.nuke_policy, when_tolerance_ms=settings.when_tolerance_ms,
                                    rewrite_legacy=config.rewrite_legacy)
    selection = None
    if not config.full and not config.check_logins and users:
        selection = incremental.select_changed(users, store, pds.client(), receipts, basis)
        users = selection.changed
        if selection.unchanged:  # (a run of users the CLI or a schedule already chose skips none)
            receipts.save_pass(dict(selection.facts(), source=f"run {run_id}"))
    context.log.info(f"auditing {len(users)} users ({pds.user_concurrency} at once, read={config.read})"
                     + (f"; {len(selection.unchanged)} unchanged since their receipts" if selection else ""))

    def on_user_done(audit: engine.UserAudit) -> None:
        audits.save_latest(audit, run_id)
        incremental.keep_receipt(receipts, audit, basis, run_id)
        audits.record_run_user(run_id, audit.summary())
        progress.notify("user_done", label=audit.label, ok=audit.ok)

    # Each user's event is stored as soon as the user is done, so Dagster's event writes overlap
    # the audit of the users still running.
    def audit_all(emit) -> None:
        def user_done(audit: engine.UserAudit) -> None:
            on_user_done(audit)
            emit(audit)

        engine.audit_users(
            users,
            store,
            pds.client(),
            nuke_policy=settings.nuke_policy,
            when_tolerance_ms=settings.when_tolerance_ms,
            rewrite_legacy=config.rewrite_legacy,
            concurrency=pds.user_concurrency,
            check_logins=config.check_logins,
            read=config.read,
            on_user_done=user_done,
            track_heads=True,
        )

    results: list = []
    for item in progress.stream_results(audit_all, name="mood-audit"):
        results.append(item)
        yield audit_event(item, context.asset_key)
    for did in gone:
        # A partition whose user left Mongo (or lost its atproto): unreadable, with the reason.
        audit = engine.UserAudit(user=UserAccount(sub=f"(no user for {did})", did=did, handle=None),
                                 unreadable="no Mongo user holds this DID any more (see audit_summary's orphan repos)")
        audits.save_latest(audit, run_id)
        receipts.invalidate(did, audit.unreadable, run_id)
        audits.record_run_user(run_id, audit.summary())
        progress.notify("user_done", label=audit.label, ok=audit.ok)
        results.append(audit)
        yield audit_event(audit, context.asset_key)

    unchanged = selection.unchanged_summaries() if selection else []
    for summary in unchanged:
        # Not read again: its receipt still holds. An observation says so (no new
        # materialization: the partition's latest one is still the truth).
        audits.record_run_user(run_id, summary)
        progress.notify("user_done", label=f"@{summary['handle']}" if summary.get("handle") else summary["did"],
                        ok=not summary.get("problems"))
        yield dg.AssetObservation(asset_key=context.asset_key, partition=summary["did"],
                                  metadata=unchanged_metadata(summary))

    summaries = [a.summary() for a in results] + unchanged
    total = engine.totals(summaries)
    context.log.info(f"audit of {len(results)} users: {total}")
    yield run_check_result(summaries, PROBLEM_STATUSES(settings.nuke_policy, config.rewrite_legacy))

    unreadable = [a for a in results if a.unreadable]
    if unreadable:
        lines = [f"{a.label} ({a.user.did}): {a.unreadable}" for a in unreadable[:50]]
        raise dg.Failure(
            description=f"{len(unreadable)} of {len(results)} users could not be audited:\n" + "\n".join(lines),
            metadata={"users_unreadable": len(unreadable), "users": len(results)},
        )


def refused_summaries(store, index: engine.UserIndex) -> list[dict]:
    """Audit facts of the users refused for their DID: unreadable, with the reason."""
    if not index.refused:
        return []
    moods = store.moods_of_users(sorted(index.refused))
    summaries = []
    for sub, (did, reason) in sorted(index.refused.items()):
        user = UserAccount(sub=sub, did=did, handle=None)
        audit = engine.refused_user(user, reason, _Moods(moods))
        summaries.append(audit.summary())
    return summaries


class _Moods:
    """``moods_of`` over moods read in one query."""

    def __init__(self, by_sub: dict) -> None:
        self.by_sub = by_sub

    def moods_of(self, sub: str) -> list:
        return self.by_sub.get(sub, [])


@dg.asset(
    deps=[mood_audit],
    group_name="audit",
    kinds={"pandas", "parquet"},
    automation_condition=SUMMARY_CONDITION,
    # The nightly audit (02:00 UTC) and its summary (05:00) must land every day: a night that
    # missed shows as a failed freshness state in the UI once the 07:00 deadline passes.
    freshness_policy=AUDIT_FRESHNESS,
)
def audit_summary(context: dg.AssetExecutionContext, mongo: MongoResource, pds: PdsResource,
                  pipeline: PipelineSettingsResource):
    """docs/interface.md's audit numbers over the latest audit of every syncable user (not just the
    last run): users audited, unreadable, live moods, counts per status, problems, sync rate;
    the repos on the PDS holding mood records that no Mongo user owns any more; the full
    reconciliation exported as one Parquet file under MOODS_STATE_DIR."""
    started = time.monotonic()
    settings = pipeline.settings()
    store = mongo.store()
    audits = AuditStore(settings.state_dir)
    index = engine.mongo_user_index(store)
    # A refused DID (malformed, shared, not a partition key) is never audited: its users count
    # as unreadable with the reason, whatever an older audit of that DID said.
    syncable = index.syncable_dids - index.refused_dids
    stored = audits.load_latest()
    current = [s for s in stored if s.did in syncable]
    stale = len(stored) - len(current)
    audited = {s.did for s in current}
    not_audited = sorted(did for did in syncable if did not in audited)
    summaries = [s.summary for s in current] + refused_summaries(store, index)
    no_account = [{"no_account": True} for sub in index.no_account_subs if sub not in index.refused]
    total = engine.totals(summaries + no_account)
    rows = audits.latest_table(current)

    try:
        orphans, repo_facts = engine.find_orphan_repos(store, pds.client(), known_dids=index.dids_known)
        orphan_error = None
    except Exception as exc:  # noqa: BLE001 - the audit numbers stand without it
        orphans, repo_facts, orphan_error = [], {}, f"{type(exc).__name__}: {exc}"

    problem_statuses = sorted(PROBLEM_STATUSES(settings.nuke_policy))
    facts = dict(
        total,
        users_not_audited=len(not_audited),
        stale_results_ignored=stale,
        orphan_repos=len(orphans),
        reconciliation_rows=rows.num_rows,
    )
    export = audits.export(
        rows,
        facts,
        detail={
            "users": summaries,
            "not_audited": not_audited,
            "orphan_repos": [{"did": o.did, "records": o.records, "reason": o.reason} for o in orphans],
            "problem_statuses": problem_statuses,
        },
    )

    metadata = {
        "users_audited": dg.MetadataValue.int(total["users_audited"]),
        "users_unreadable": dg.MetadataValue.int(total["users_unreadable"]),
        "moods_live": dg.MetadataValue.int(total["moods_live"]),
        "problems": dg.MetadataValue.int(total["problems"]),
        "sync_rate_pct": dg.MetadataValue.float(float(total["sync_rate_pct"])),
        **{f"by_status.{status}": dg.MetadataValue.int(n) for status, n in total["by_status"].items()},
        "users_with_problems": dg.MetadataValue.int(total["users_with_problems"]),
        "users_no_account": dg.MetadataValue.int(total["users_no_account"]),
        "users_not_audited": dg.MetadataValue.int(len(not_audited)),
        "moods_unverified": dg.MetadataValue.int(total["moods_unverified"]),
        "orphan_repos": dg.MetadataValue.int(len(orphans)),
        "reconciliation_export": dg.MetadataValue.path(str(export)),
        "reconciliation_rows": dg.MetadataValue.int(rows.num_rows),
    }
    flagged = [s for s in summaries if s.get("unreadable") or int(s.get("problems", 0)) > 0]
    if flagged:
        lines = []
        for s in flagged[:MAX_LISTED]:
            who = f"@{s['handle']}" if s.get("handle") else s.get("sub")
            what = f"unreadable: {s['unreadable']}" if s.get("unreadable") else f"{s['problems']} problems"
            lines.append(f"- {who} `{s['did']}`: {what}")
        if len(flagged) > MAX_LISTED:
            lines.append(f"- ... and {len(flagged) - MAX_LISTED} more (see the export)")
        metadata["users_flagged"] = dg.MetadataValue.md("\n".join(lines))
    if orphans:
        metadata["orphan_repos_list"] = dg.MetadataValue.md(
            "\n".join(f"- `{o.did}`: {o.records} mood records; {o.reason}" for o in orphans[:MAX_LISTED])
        )
    if repo_facts:
        metadata["repos_on_pds"] = dg.MetadataValue.int(repo_facts.get("repos", 0))
    if orphan_error:
        metadata["orphan_repos_error"] = dg.MetadataValue.text(orphan_error)
    metadata.update(incremental_metadata(ReceiptStore(settings.state_dir).load_pass()))
    metadata["seconds"] = dg.MetadataValue.float(round(time.monotonic() - started, 3))
    context.log.info(f"audit summary over {len(current)} users: {total}; {len(orphans)} orphan repos")
    return dg.MaterializeResult(metadata=metadata)


audit_job = dg.define_asset_job(
    "mood_audit_job",
    selection=[mood_audit],
    executor_def=dg.in_process_executor,
    description="Audit the selected users (partitions): Mongo against their repos; read-only.",
)

audit_summary_job = dg.define_asset_job(
    "audit_summary_job",
    selection=[audit_summary],
    executor_def=dg.in_process_executor,
    description="Recompute the audit numbers over every user's latest audit; export the reconciliation.",
)
