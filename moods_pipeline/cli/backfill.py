"""`moods-pipeline backfill SELECTOR [--dry-run] [--json]`: every valid live mood of the selected users
into its author's repo, through the `mood_backfill` job, then the summary."""

from __future__ import annotations

import json
import time

from moods_pipeline.cli.common import (
    EXIT_OK,
    EXIT_SOMETHING_LEFT,
    add_selector,
    dagster_instance,
    open_store,
    quiet_run_config,
    repair_command,
    run_job,
    run_job_over_partitions,
    say,
    select_for_run,
    users_without_result,
)
from moods_pipeline.settings import load_settings


def cmd_backfill(args) -> int:
    from moods_pipeline import progress
    from moods_pipeline.model import UserOutcome
    from moods_pipeline.storage.results import ResultsStore
    from moods_pipeline.sync.backfill import NO_ACCOUNT, summarize

    settings = load_settings()
    store = open_store(settings)
    syncable, without_account, refused = select_for_run(store, args)
    instance = dagster_instance()
    say(f"{'dry run: planning' if args.dry_run else 'backfilling'} {len(syncable)} users"
        f"{f', skipping {len(without_account)} without a PDS account' if without_account else ''}"
        f"{f', refusing {len(refused)} whose stored account cannot be used' if refused else ''}")
    started = time.monotonic()
    with progress.ProgressBar(len(syncable), "backfill") as bar:
        stop = progress.listen_users_done(bar.user_done)
        try:
            run_ids = run_job_over_partitions(
                instance,
                "mood_backfill_job",
                [u.did for u in syncable],
                quiet_run_config({"mood_backfill": {"config": {"dry_run": args.dry_run}}}, args.verbose),
            ) if syncable else []
        finally:
            stop()
    results = ResultsStore(settings.state_dir)
    outcomes = [o for run_id in run_ids for o in results.run_backfill(run_id)]
    # Refused users never became partitions: each fails here, alone, with its reason.
    outcomes += [UserOutcome(sub=u.sub, did=u.did, handle=u.handle, error=reason, dry_run=args.dry_run)
                 for u, reason in refused]
    outcomes += [
        UserOutcome(sub=u.sub, did=u.did, handle=u.handle, no_account=True, error=u.problem or NO_ACCOUNT,
                    dry_run=args.dry_run)
        for u in without_account
    ]
    summary = summarize(outcomes, seconds=time.monotonic() - started, dry_run=args.dry_run)
    summary["users_refused"] = len(refused)
    if args.all:
        summary["moods_without_user"] = store.moods_without_user()
    missing = users_without_result(syncable, (o.did for o in outcomes if not o.no_account), "backfill")
    if missing:
        summary["users_failed"] += len(missing)
        say(f"{len(missing)} users have no result: their run failed before reporting them (see the Dagster UI)")
    if not args.dry_run and syncable:
        run_job(instance, "backfill_summary_job", quiet_run_config({}, args.verbose))
    for outcome in outcomes:
        if outcome.no_account and outcome.error != NO_ACCOUNT:
            say(f"SKIPPED {outcome.label}: {outcome.error}")
        elif outcome.error and not outcome.no_account:
            say(f"FAILED {outcome.label} ({outcome.did or outcome.sub}): {outcome.error}")
        elif outcome.failed:
            say(f"FAILED {len(outcome.failed)} moods of {outcome.label}: first reason: {outcome.failed[0][1]}")
        if outcome.needs_repair:
            say(f"NEEDS REPAIR {outcome.label} ({outcome.did}): {outcome.needs_repair} "
                f"(first: {outcome.needs_repair_reasons[0][1] if outcome.needs_repair_reasons else '?'})")
    if args.json:
        print(json.dumps(summary))
    else:
        say("backfill " + ("(dry run) " if args.dry_run else "") + "summary:")
        for key, value in summary.items():
            say(f"  {key:>22}: {value}")
    if summary["needs_repair"]:
        # The backfill only creates records and writes pointers; a record that differs from its
        # mood, or a second one, is the repair's to fix.
        say(f"{summary['needs_repair']} moods need a repair: run `{repair_command(args)}` (records that differ"
            " from their mood, or duplicates: the backfill never rewrites or deletes a record)")
    something_left = summary["users_failed"] > 0 or summary["failed"] > 0 or summary["needs_repair"] > 0
    return EXIT_SOMETHING_LEFT if something_left else EXIT_OK


def register(subparsers) -> None:
    p = subparsers.add_parser("backfill", help="every valid live mood into its author's repo")
    add_selector(p)
    p.add_argument("--dry-run", action="store_true", help="plan and report, write nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_backfill)
