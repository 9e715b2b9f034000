"""The `moods-pipeline` command line (CONTRACT.md).

Each command that works on users runs the Dagster jobs in-process against the configured
instance (DAGSTER_HOME), so its runs appear in the UI. Human progress goes to stderr; with
--json, stdout carries exactly one JSON object. Exit codes: 0 done and nothing wrong, 1 done
with something left, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from moods_pipeline.settings import DEFAULT_DAGSTER_HOME, ConfigError, load_settings

EXIT_OK, EXIT_SOMETHING_LEFT, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("moods_pipeline.cli")


class UsageError(Exception):
    """Bad usage or configuration: exit 2 with this message."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- selection -----------------------------------------------------------------------------


def add_selector(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--all", action="store_true", help="every user with moods")
    group.add_argument("--user", action="append", metavar="SEL", help="@handle, DID or sub (repeatable)")
    group.add_argument("--first", type=int, metavar="N", help="the first N syncable users ordered by sub")


def select_users(store, args) -> tuple[list, list]:
    """(syncable users, users without an account) named by the selector.

    A selector that names nobody, or several users, is a usage error (exit 2) before anything
    runs: ``MongoStore.resolve`` never picks one of several."""
    from moods_pipeline.mongo_store import SelectorError

    if args.all:
        users = store.users_with_moods()
    elif args.first is not None:
        if args.first < 1:
            raise UsageError("--first takes a number of users of at least 1")
        return store.syncable_users()[: args.first], []
    else:
        try:
            users = store.resolve(args.user)
        except SelectorError as exc:
            raise UsageError(str(exc)) from None
    with_moods = store.subs_with_moods()
    syncable = [u for u in users if u.has_account and u.sub in with_moods]
    without_account = [u for u in users if not u.has_account]
    for user in users:
        if user.has_account and user.sub not in with_moods:
            say(f"{user.label}: no moods, nothing to do")
    return syncable, without_account


def select_for_run(store, args) -> tuple[list, list, list[tuple]]:
    """(users to run as partitions, users without an account, refused users with the reason).

    Refused (``refusal.py``): users with a stored password whose DID is malformed, not a
    string, held by several users or not usable as a partition key. They fail alone, with
    their reason, and never become partitions; the other users run."""
    from moods_pipeline.refusal import refusal, split_refused

    syncable, without_account = select_users(store, args)
    runnable, refused = split_refused(syncable)
    broken = [u for u in without_account if refusal(u)]
    if broken:
        # A DID that is not a string leaves the user without a usable DID, though it has one
        # stored with a password: refused with the reason rather than skipped as accountless.
        with_moods = store.subs_with_moods()
        broken = [u for u in broken if u.sub in with_moods]
        refused += [(u, refusal(u)) for u in broken]
        broken_subs = {u.sub for u in broken}
        without_account = [u for u in without_account if u.sub not in broken_subs]
    return runnable, without_account, refused


def repair_command(args) -> str:
    """The `repair --apply` command line for the selection of ``args`` (for hints)."""
    import shlex

    if getattr(args, "all", False):
        selector = "--all"
    elif getattr(args, "first", None) is not None:
        selector = f"--first {args.first}"
    else:
        selector = " ".join(f"--user {shlex.quote(s)}" for s in args.user or [])
    return f"moods-pipeline repair {selector} --apply"


# -- Dagster plumbing ----------------------------------------------------------------------


def dagster_instance():
    from dagster import DagsterInstance

    from moods_pipeline.devstack.dagster_home import ensure_dagster_home

    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(ensure_dagster_home(DEFAULT_DAGSTER_HOME))
    return DagsterInstance.get()


def run_job_over_partitions(instance, job_name: str, keys: list[str], run_config: dict, defs=None):
    """Run a partitioned job in-process over the given users, in batched runs; returns run ids."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from moods_pipeline.partitions import PARTITIONS_PER_RUN, USERS_PARTITION, partition_runs

    defs = defs or _definitions()
    existing = instance.get_dynamic_partitions(USERS_PARTITION)
    missing = [k for k in keys if k not in set(existing)]
    if missing:
        instance.add_dynamic_partitions(USERS_PARTITION, missing)
        existing = instance.get_dynamic_partitions(USERS_PARTITION)
    job = defs.resolve_job_def(job_name)
    run_ids = []
    for chunk in partition_runs(existing, set(keys), PARTITIONS_PER_RUN):
        tags = {ASSET_PARTITION_RANGE_START_TAG: chunk[0], ASSET_PARTITION_RANGE_END_TAG: chunk[-1]}
        with contextlib.redirect_stdout(sys.stderr):  # stdout is for the JSON object alone
            result = job.execute_in_process(
                instance=instance, tags=tags, run_config=run_config, raise_on_error=False
            )
        run_ids.append(result.run_id)
    return run_ids


def run_job(instance, job_name: str, run_config: dict | None = None, defs=None):
    defs = defs or _definitions()
    with contextlib.redirect_stdout(sys.stderr):
        return defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, run_config=run_config or {}, raise_on_error=False
        )


def _definitions():
    from moods_pipeline.definitions import defs

    return defs


def quiet_run_config(ops: dict, verbose: bool) -> dict:
    return {"ops": ops, "loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "WARNING"}}}}


# -- commands ------------------------------------------------------------------------------


def cmd_stack(args) -> int:
    from moods_pipeline.devstack import stack

    if args.action == "up":
        up = stack.stack_up(Path("."))
        for line in up.lines():
            say(line)
        print("\n".join(up.export_lines))
        return EXIT_OK
    if args.action == "down":
        for line in stack.stack_down(Path(".")):
            say(line)
        return EXIT_OK
    status = stack.stack_status(Path("."))
    for line in status.lines():
        say(line)
    return EXIT_OK if status.running else EXIT_SOMETHING_LEFT


def _store(settings):
    from moods_pipeline.mongo_store import MongoStore, connect

    return MongoStore(connect(settings.mongodb_connection_string), settings.mongodb_name)


def cmd_seed_demo(args) -> int:
    from moods_pipeline import demo_data

    settings = load_settings()
    store = _store(settings)
    data = demo_data.generate(users=args.users, moods_per_user=args.moods_per_user, scale=args.scale, seed=args.seed)
    say(f"seeding {len(data.users)} users and {len(data.moods)} moods into {settings.mongodb_name}, "
        f"accounts on {settings.pds_url}")
    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] > 2 or done == total:
            last[0] = now
            say(f"  {stage}: {done}/{total}")

    with demo_data.http_account_creator(settings.pds_url) as creator:
        try:
            report = demo_data.seed(store.db, data, creator, progress=progress)
        except demo_data.DemoDataExists as exc:
            say(str(exc))
            return EXIT_SOMETHING_LEFT
    summary = report.as_dict()
    if args.json:
        print(json.dumps(summary))
    else:
        say(f"seeded: {summary}")
    return EXIT_OK if report.ok else EXIT_SOMETHING_LEFT


def cmd_backfill(args) -> int:
    from moods_pipeline import progress
    from moods_pipeline.results_store import ResultsStore
    from moods_pipeline.sync.backfill import NO_ACCOUNT, UserOutcome, summarize

    settings = load_settings()
    store = _store(settings)
    syncable, without_account, refused = select_for_run(store, args)
    instance = dagster_instance()
    say(f"{'dry run: planning' if args.dry_run else 'backfilling'} {len(syncable)} users"
        f"{f', skipping {len(without_account)} without a PDS account' if without_account else ''}"
        f"{f', refusing {len(refused)} whose stored account cannot be used' if refused else ''}")
    started = time.monotonic()
    bar = progress.ProgressBar(len(syncable), "backfill")
    stop = progress.listen(lambda event, data: bar.advance(failed=not data["ok"]) if event == "user_done" else None)
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
    reported = {o.did for o in outcomes if not o.no_account}
    missing = [u for u in syncable if u.did not in reported]
    if missing:
        # A run that died before reporting some users: they count as failed, never as done.
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


def cmd_publish_lexicons(args) -> int:
    load_settings()  # a configuration problem is exit 2 before any run starts
    instance = dagster_instance()
    result = run_job(
        instance, "publish_lexicons_job",
        quiet_run_config({"publish_lexicons": {"config": {"apply": args.apply}}}, args.verbose),
    )
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                say(f"publish-lexicons failed: {event.step_failure_data.error.message.strip()}")
        return EXIT_SOMETHING_LEFT
    report = result.output_for_node("publish_lexicons")
    for nsid, action in report["actions"].items():
        say(f"{nsid}: {action}{' (dry run: nothing written)' if report['dry_run'] and action != 'up-to-date' else ''}")
    for name, value in report["dns_records"].items():
        say(f"DNS (outside this project): {name} TXT {value}")
    if args.json:
        print(json.dumps(report))
    return EXIT_SOMETHING_LEFT if report["pending"] or report["failed"] else EXIT_OK


def cmd_demo(args) -> int:
    """The README's main command: local stack, demo data, backfill, audit, then the Dagster UI."""
    from moods_pipeline.devstack import stack

    up = stack.stack_up(Path("."))
    for line in up.lines():
        say(line)
    _export_stack_env(up.export_lines)
    settings = load_settings()
    store = _store(settings)
    if store.db.moods.estimated_document_count() == 0:
        rc = cmd_seed_demo(argparse.Namespace(users=None, moods_per_user=None, scale="quick", seed=7, json=False))
        if rc != EXIT_OK:
            return rc
    else:
        say("demo data already seeded")
    rc = cmd_backfill(argparse.Namespace(all=True, user=None, first=None, dry_run=False, json=False, verbose=False))
    say(f"backfill finished with exit code {rc}")
    from moods_pipeline.cli_audit import cmd_audit

    audit_rc = cmd_audit(argparse.Namespace(all=True, user=None, first=None, check_logins=False, json=False,
                                            verbose=False))
    say(f"audit finished with exit code {audit_rc}")
    rc = max(rc, audit_rc)
    if args.no_ui:
        return rc
    say("serving the Dagster UI on http://127.0.0.1:3000 (Ctrl+C to stop; the stack keeps running:"
        " `moods-pipeline stack down` stops it)")
    os.execvp(
        str(Path(sys.executable).parent / "dagster"),
        ["dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(args.port)],
    )
    return EXIT_OK  # not reached


def _export_stack_env(lines: list[str]) -> None:
    """Apply `stack up`'s export lines to this process (and so to `dagster dev`)."""
    import subprocess

    script = "\n".join(lines) + "\nenv -0"
    output = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    wanted = {line.split("=", 1)[0].removeprefix("export ") for line in lines}
    for item in output.split(b"\0"):
        if b"=" in item:
            key, value = item.decode().split("=", 1)
            if key in wanted:
                os.environ[key] = value


# -- entry point ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moods-pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="Dagster's run log on stderr too")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stack", help="the local stack: PDS, SecantusDB, Dagster home")
    p.add_argument("action", choices=["up", "down", "status"])
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("seed-demo", help="production-shaped demo data with PDS accounts")
    p.add_argument("--users", type=int)
    p.add_argument("--moods-per-user", type=int)
    p.add_argument("--scale", choices=["quick", "production"], default="quick")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_seed_demo)

    p = sub.add_parser("backfill", help="every valid live mood into its author's repo")
    add_selector(p)
    p.add_argument("--dry-run", action="store_true", help="plan and report, write nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser("publish-lexicons", help="publish lexicons/ as com.atproto.lexicon.schema records")
    p.add_argument("--apply", action="store_true", help="write what differs (default: dry run)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_publish_lexicons)

    # These import this module's helpers: registered here, not at the top.
    from moods_pipeline import cli_audit, cli_live

    cli_audit.register(sub)
    cli_live.register(sub)

    p = sub.add_parser("demo", help="local stack + demo data + backfill + audit, then the Dagster UI")
    p.add_argument("--no-ui", action="store_true")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from dagster import BetaWarning
    from pymongo.errors import PyMongoError

    parser = build_parser()
    args = parser.parse_args(argv)
    # Dagster marks backfill policies as beta; that warning means nothing to the CLI's user.
    warnings.filterwarnings("ignore", category=BetaWarning)
    # Only our own loggers go to DEBUG with -v: pymongo's and httpx's DEBUG logs carry whole
    # documents and requests (passwords included).
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose:
        logging.getLogger("moods_pipeline").setLevel(logging.DEBUG)
    try:
        return args.func(args)
    except (ConfigError, UsageError) as exc:
        say(f"moods-pipeline: {exc}")
        return EXIT_USAGE
    except PyMongoError as exc:
        say(f"moods-pipeline: MongoDB unreachable or refused the request ({type(exc).__name__}: {str(exc)[:200]});"
            " check MONGODB_CONNECTION_STRING and MONGODB_NAME")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
