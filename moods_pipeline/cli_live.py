"""`moods-pipeline erase`: a user's mood records, or the whole PDS account, removed and verified.

    moods-pipeline erase SELECTOR --mode records|account [--apply] [--json]

A dry run unless ``--apply``: it lists what would be removed. With ``--apply`` the erase job
runs in-process against the configured Dagster instance (so the run shows in the UI) and
verifies on the PDS that no record (mode records) or no account (mode account: describeRepo
fails) is left. What was removed (counts and rkeys, never text) is in the run's metadata and
``MOODS_STATE_DIR/erase/<run id>.json``.

Selection: ``--user SEL`` names any user (@handle, DID or sub), with or without moods in
Mongo (the application may have removed them already); ``--all`` and ``--first N`` select as
the other commands do. Exit codes: 0 done and nothing left (a dry run that could read every
repo), 1 anything left after erasing or a user that failed, 2 bad usage or configuration
(e.g. ``--mode account --apply`` without ``PDS_ADMIN_PASSWORD``).

`cli.py` wires it with ``cli_live.register(sub)``.
"""

from __future__ import annotations

import argparse
import json
import time

from moods_pipeline.cli import (
    EXIT_OK,
    EXIT_SOMETHING_LEFT,
    UsageError,
    add_selector,
    dagster_instance,
    quiet_run_config,
    run_job,
    say,
    select_users,
)
from moods_pipeline.settings import load_settings

__all__ = ["register", "cmd_erase"]


def _store(settings):
    from moods_pipeline.mongo_store import MongoStore, connect

    return MongoStore(connect(settings.mongodb_connection_string), settings.mongodb_name)


def _selected(store, args) -> list:
    """Users to erase: --user names anyone (moods or not); --all/--first as elsewhere."""
    from moods_pipeline.mongo_store import SelectorError

    if args.user:
        try:
            return store.resolve(args.user)
        except SelectorError as exc:
            raise UsageError(str(exc)) from None
    syncable, without_account = select_users(store, args)
    return list(syncable) + list(without_account)


def _definitions():
    """The project's Definitions; until erase_job is wired there, a small one with it."""
    import dagster as dg

    from moods_pipeline.assets.erase import erase_job
    from moods_pipeline.definitions import default_resources, defs

    if any(getattr(job, "name", None) == "erase_job" for job in defs.jobs or []):
        return defs
    return dg.Definitions(jobs=[erase_job], resources=default_resources())


def cmd_erase(args) -> int:
    from moods_pipeline import progress
    from moods_pipeline.assets.erase import load_report, summarize_erase
    from moods_pipeline.sync.live import FAILED, EraseResult

    settings = load_settings()
    if args.mode == "account" and args.apply and not settings.pds_admin_password:
        raise UsageError("PDS_ADMIN_PASSWORD is not set: --mode account needs the PDS admin API")
    store = _store(settings)
    users = _selected(store, args)
    verbose = getattr(args, "verbose", False)
    what = "mood records" if args.mode == "records" else "PDS accounts"
    say(f"{'erasing' if args.apply else 'dry run: listing'} {what} of {len(users)} users"
        + ("" if args.apply else " (nothing is written; --apply erases)"))
    started = time.monotonic()
    results: list[EraseResult] = []
    run_id = None
    if users:
        instance = dagster_instance()
        bar = progress.ProgressBar(len(users), "erase")
        stop = progress.listen(lambda event, data: bar.advance(failed=not data["ok"]) if event == "user_done" else None)
        try:
            config = {"users": [u.sub for u in users], "mode": args.mode, "apply": bool(args.apply)}
            result = run_job(instance, "erase_job", quiet_run_config({"erase_users": {"config": config}}, verbose),
                             defs=_definitions())
            run_id = result.run_id
        finally:
            stop()
        report = load_report(settings.state_dir, run_id)
        if report is None:
            say(f"the erase run {run_id} failed before reporting (see the Dagster UI)")
            summary = summarize_erase([], args.mode, not args.apply, time.monotonic() - started)
            summary["users"] = len(users)
            summary["users_failed"] = len(users)
        else:
            results = [EraseResult(**r) for r in report["users"]]
            summary = summarize_erase(results, args.mode, not args.apply, time.monotonic() - started)
    else:
        summary = summarize_erase([], args.mode, not args.apply, time.monotonic() - started)
    summary["run_id"] = run_id
    for r in results:
        if r.status == FAILED:
            say(f"FAILED {r.label} ({r.did}): {r.reason}")
        elif r.dry_run:
            say(f"{r.label} ({r.did or 'no DID'}): would remove {len(r.found_rkeys)} records"
                + (" and the account" if args.mode == "account" and r.did and r.left else "")
                + (f" ({r.reason})" if r.reason else ""))
        else:
            say(f"{r.label} ({r.did or 'no DID'}): {r.status}, removed {len(r.removed_rkeys)} records"
                + (", account deleted" if r.account_deleted else "") + (f", {r.left} left" if r.left else "")
                + (f" ({r.reason})" if r.reason else ""))
    if args.json:
        print(json.dumps(summary))
    else:
        say("erase " + ("(dry run) " if not args.apply else "") + "summary:")
        for key, value in summary.items():
            say(f"  {key:>20}: {value}")
    something_left = summary["users_failed"] > 0 or (args.apply and summary["left"] > 0)
    return EXIT_SOMETHING_LEFT if something_left else EXIT_OK


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `erase` command to the `moods-pipeline` parser's subparsers."""
    p = subparsers.add_parser(
        "erase", help="remove a user's mood records (--mode records) or PDS account (--mode account)",
        description=__doc__.split("\n\n")[0],
    )
    add_selector(p)
    p.add_argument("--mode", required=True, choices=["records", "account"],
                   help="records: every mood record, the account stays; account: the whole PDS account")
    p.add_argument("--apply", action="store_true", help="erase (without it: a dry run that writes nothing)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_erase)
    return p
