"""The erase job: a user's mood records, or the whole PDS account, removed and verified.

``erase_job`` (op ``erase_users``), partitioned over the users partitions (by DID): the UI's
Launchpad offers a partition picker for the users, or run config ``users`` (subs, as the CLI
passes them) names them and wins over the partitions; ``mode`` is an enum (``records`` |
``account``), ``apply`` a boolean (False: a dry run):

- ``apply: false`` (the default) is a dry run: it lists what would be removed (the rkeys of
  the collection in each repo) and which users would be refused, and writes nothing;
- mode ``records``: ``delete_all_moods`` (every ``computer.aesthetic.mood`` record, in
  applyWrites delete batches of at most 200; the account stays), then the repo is listed
  again: nothing may be left; only the pointers whose record is gone are unset;
- mode ``account``: ``erase_account`` (admin ``com.atproto.admin.deleteAccount`` of an account
  proved the user's, verified gone by ``com.atproto.admin.getAccountInfo``; then the user's
  pointers and ``users.atproto`` unset).

A user is refused, with the reason, when the deletion cannot be proved right: a malformed DID
or one several users hold, no stored password or one that does not log in to exactly the
stored DID (a taken-down account: its admin-API handle must equal the stored handle). One user
refused or failing never stops the others. Every deletion is journaled under
``MOODS_STATE_DIR/journal/`` (command ``erase``, this run's id) before it is sent and after.

What was removed (counts and rkeys, never text) goes to the run's metadata and, in full, to
``MOODS_STATE_DIR/erase/<run id>.json``. The run fails if anything is left or a user failed.

The application's moods in Mongo are not touched: erasing records of a user whose live moods
are still in Mongo lets the catch-up sensor (or a backfill) write them again. Remove or nuke
the moods first (the application's account deletion removes them).
"""
# No `from __future__ import annotations` here: Dagster reads the config and resource
# annotations at definition time.

import time
from enum import Enum
from pathlib import Path

import dagster as dg
from upath import UPath

from moods_pipeline import progress
from moods_pipeline.defs.partitions import PDS_WRITER_POOL, PDS_WRITER_TAGS, users_partitions
from moods_pipeline.defs.resources import (
    MongoResource,
    PdsResource,
    PipelineSettingsResource,
)
from moods_pipeline.storage.files import read_json, state_path, write_json_atomic
from moods_pipeline.storage.journal import DeletionJournal
from moods_pipeline.sync.live import FAILED, SKIPPED, EraseResult, LiveSync

MODES = ("records", "account")
MAX_ROWS = 50
MAX_RKEYS_SHOWN = 20


class EraseMode(str, Enum):
    records = "records"
    account = "account"


class EraseConfig(dg.Config):
    users: list[str] = []
    """Users to erase: subs (or @handles or DIDs). Empty: the run's partitions (picked in the Launchpad)."""
    mode: EraseMode = EraseMode.records
    """records: every mood record, the account stays; account: the whole PDS account."""
    apply: bool = False
    """False: dry run, list what would be removed and write nothing."""


def summarize_erase(results: list[EraseResult], mode: str, dry_run: bool, seconds: float = 0.0) -> dict:
    """The erase command's JSON object."""
    return {
        "users": len(results),
        "mode": mode,
        "dry_run": dry_run,
        "records_found": sum(len(r.found_rkeys) for r in results),
        "records_deleted": 0 if dry_run else sum(len(r.removed_rkeys) for r in results),
        "accounts_deleted": sum(1 for r in results if r.account_deleted),
        "left": 0 if dry_run else sum(r.left or 0 for r in results),
        "users_failed": sum(1 for r in results if r.status == FAILED),
        "skipped_no_account": sum(1 for r in results if r.status == SKIPPED),
        "pointers_unset": sum(r.pointers_unset for r in results),
        "seconds": round(seconds, 3),
    }


def report_path(state_dir: Path | str, run_id: str) -> UPath:
    # state_path, not Path: the state dir may be an object-store URL.
    return state_path(state_dir) / "erase" / f"{run_id}.json"


def load_report(state_dir: Path | str, run_id: str) -> dict | None:
    return read_json(report_path(state_dir, run_id))


def _rkeys_text(rkeys: list[str]) -> str:
    shown = ", ".join(rkeys[:MAX_RKEYS_SHOWN])
    return shown + (f", ... ({len(rkeys) - MAX_RKEYS_SHOWN} more)" if len(rkeys) > MAX_RKEYS_SHOWN else "")


def erase_metadata(summary: dict, results: list[EraseResult], path: Path) -> dict:
    metadata: dict = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    metadata["mode"] = dg.MetadataValue.text(summary["mode"])
    metadata["dry_run"] = dg.MetadataValue.bool(summary["dry_run"])
    metadata["report_file"] = dg.MetadataValue.path(str(path))
    columns = ["user", "did", "status", "found", "removed", "left", "removed_rkeys", "reason"]
    rows = []
    for r in results[:MAX_ROWS]:
        rows.append(dg.TableRecord({
            "user": r.label, "did": r.did or "", "status": r.status, "found": len(r.found_rkeys),
            "removed": len(r.removed_rkeys), "left": r.left,
            "removed_rkeys": _rkeys_text(r.found_rkeys if r.dry_run else r.removed_rkeys), "reason": r.reason or "",
        }))
    types = {"found": "int", "removed": "int", "left": "int"}
    metadata["users_table"] = dg.MetadataValue.table(
        records=rows, schema=dg.TableSchema(columns=[dg.TableColumn(c, types.get(c, "string")) for c in columns]))
    return metadata


@dg.op(name="erase_users", tags={"kind": "atproto"}, pool=PDS_WRITER_POOL)
def erase_users(
    context: dg.OpExecutionContext,
    config: EraseConfig,
    mongo: MongoResource,
    pds: PdsResource,
    pipeline: PipelineSettingsResource,
):
    """Erase the listed users' mood records (mode records) or PDS accounts (mode account);
    a dry run unless ``apply``."""
    mode = config.mode.value if isinstance(config.mode, EraseMode) else str(config.mode)
    if mode not in MODES:
        raise dg.Failure(description=f"mode must be records or account, not {mode!r}")
    if config.users:
        selected = list(config.users)
    elif context.has_partition_key or context.has_partition_key_range:
        selected = list(context.partition_keys)  # DIDs: LiveSync finds the user holding each
    else:
        raise dg.Failure(description="erase: pick users (partitions) in the Launchpad or name them in `users`")
    started = time.monotonic()
    dry_run = not config.apply
    settings = pipeline.settings()
    journal = DeletionJournal(settings.state_dir, command="erase", run_id=context.run_id)
    live = LiveSync(mongo.store(), pds.client(), pds.write_options(), journal=journal)
    # The dry run uses the admin API too when it can: to tell a gone or taken-down account apart.
    admin = pds.admin_secret() if mode == "account" else None
    if mode == "account" and not dry_run and not admin:
        raise dg.Failure(description="PDS_ADMIN_PASSWORD is not set: deleting an account needs the admin API")
    results: list[EraseResult] = []
    for user in selected:
        try:
            if dry_run:
                result = live.plan_erase(user, mode, admin)
            elif mode == "records":
                result = live.delete_all_moods(user)
            else:
                result = live.erase_account(admin, user)
        except Exception as exc:  # Mongo trouble reading this user: it fails, the others go on
            context.log.error(f"erase of {user}: {type(exc).__name__}: {exc}")
            result = EraseResult(mode, str(user), None, None, status=FAILED, dry_run=dry_run,
                                 reason=f"{type(exc).__name__}: {exc}")
        results.append(result)
        progress.notify("user_done", label=result.label, ok=result.ok)
        verb = "would remove" if dry_run else "removed"
        count = len(result.found_rkeys) if dry_run else len(result.removed_rkeys)
        what = "records" if mode == "records" else "records with the account"
        context.log.info(
            f"{result.label} ({result.did or 'no DID'}): {result.status}; {verb} {count} {what}"
            + (f"; left {result.left}" if result.left and not dry_run else "")
            + (f"; {result.reason}" if result.reason else "")
        )
    summary = summarize_erase(results, mode, dry_run, time.monotonic() - started)
    path = report_path(settings.state_dir, context.run_id)
    write_json_atomic(path, {"summary": summary, "users": [r.to_dict() for r in results]})
    metadata = erase_metadata(summary, results, path)
    context.log.info(f"erase summary: {summary}")
    broken = [r for r in results if r.status == FAILED or (r.left and not dry_run)]
    if broken:
        raise dg.Failure(
            description=f"{len(broken)} of {len(results)} users not fully erased: "
            + "; ".join(f"{r.label}: {r.reason or f'{r.left} left'}" for r in broken[:MAX_ROWS]),
            metadata=metadata,
        )
    return dg.Output(None, metadata=metadata)


@dg.job(name="erase_job", executor_def=dg.in_process_executor, tags=PDS_WRITER_TAGS, partitions_def=users_partitions)
def erase_job():
    """Erase users' mood records or whole PDS accounts (dry run unless apply), then verify."""
    erase_users()


__all__ = ["erase_job", "erase_users", "EraseConfig", "EraseMode", "summarize_erase", "load_report", "report_path", "MODES"]
