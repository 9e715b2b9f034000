"""What every command of the command line shares: exit codes, usage errors, stderr, selectors,
the Dagster instance and running the project's jobs in-process, opening the Mongo store.

Each command that works on users runs the Dagster jobs in-process against the configured
instance (DAGSTER_HOME), so its runs appear in the UI. Human progress goes to stderr; with
--json, stdout carries exactly one JSON object. Exit codes: 0 done and nothing wrong, 1 done
with something left, 2 bad usage or configuration (docs/interface.md).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Callable, Iterable, TypeVar

from moods_pipeline.settings import DEFAULT_DAGSTER_HOME

EXIT_OK, EXIT_SOMETHING_LEFT, EXIT_USAGE = 0, 1, 2

T = TypeVar("T")


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


def resolve_users(store, selectors: list[str]) -> list:
    """The users ``--user`` names, each selector exactly one user; else a usage error (exit 2)
    naming the selector and, for several matches, the candidates."""
    from moods_pipeline.storage.mongo import SelectorError

    try:
        return store.resolve(selectors)
    except SelectorError as exc:
        raise UsageError(str(exc)) from None


def select_users(store, args) -> tuple[list, list]:
    """(syncable users, users without an account) named by the selector.

    A selector that names nobody, or several users, is a usage error (exit 2) before anything
    runs: ``MongoStore.resolve`` never picks one of several."""
    if args.all:
        users = store.users_with_moods()
    elif args.first is not None:
        if args.first < 1:
            raise UsageError("--first takes a number of users of at least 1")
        return store.syncable_users()[: args.first], []
    else:
        users = resolve_users(store, args.user)
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
    from moods_pipeline.sync.refusal import refusal, split_refused

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


def users_without_result(selected: Iterable[T], reported: Iterable, command: str,
                         key: Callable[[T], object] = lambda user: user.did) -> list[tuple[T, str]]:
    """The selected users that no result names, each with the reason it fails with.

    A run that died before reporting a user (killed, out of memory, a crashed step) leaves it
    without a result: every command counts it as failed, never as done or in step, so the exit
    code is 1 (docs/interface.md). ``key`` is what the results name users by (DID or sub)."""
    seen = set(reported)
    reason = f"no result: its {command} run failed before reporting it (see the Dagster UI)"
    return [(user, reason) for user in selected if key(user) not in seen]


# -- Dagster plumbing ----------------------------------------------------------------------

# One command-line invocation is one unit in the UI: every run it launches carries the tag
# ``moods/batch=<id>`` (Dagster cannot run a real backfill in-process), and ``main`` prints the
# Runs page filtered on it. ``start_batch`` (``main``) names the invocation.
_batch: dict = {"id": None, "runs": 0}


def start_batch(command: str) -> str:
    import secrets
    import time

    _batch.update(id=f"{command}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}", runs=0)
    return _batch["id"]


def batch_tags() -> dict:
    """The tag every run of this invocation carries (none outside ``main``)."""
    from moods_pipeline.ui_links import BATCH_TAG

    return {BATCH_TAG: _batch["id"]} if _batch["id"] else {}


def batch_runs() -> tuple[str | None, int]:
    """(this invocation's batch id, runs launched under it)."""
    return _batch["id"], _batch["runs"]


def _launched() -> None:
    _batch["runs"] += 1


def say_batch_url() -> None:
    """The Runs page of this invocation's runs (all tagged moods/batch=<id>), on stderr, once."""
    from moods_pipeline.settings import ConfigError, load_settings
    from moods_pipeline.ui_links import BATCH_TAG, runs_with_tag_url

    batch, runs = batch_runs()
    if not batch or not runs:
        return
    _batch["runs"] = 0
    try:
        ui_url = load_settings(connections=False).ui_url
    except ConfigError:
        return  # the command already said what is wrong with the settings
    say(f"{runs} Dagster runs, tagged {BATCH_TAG}={batch}: {runs_with_tag_url(ui_url, BATCH_TAG, batch)}")



def dagster_instance():
    from dagster import DagsterInstance

    from moods_pipeline.devstack.dagster_home import ensure_dagster_home
    from moods_pipeline.defs.local_instance import quicken as quicken_local_sqlite

    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(ensure_dagster_home(DEFAULT_DAGSTER_HOME))
    # Only SQLite files under DAGSTER_HOME are affected (a PostgreSQL instance has none).
    quicken_local_sqlite(os.environ["DAGSTER_HOME"])
    return DagsterInstance.get()


def run_job_over_partitions(instance, job_name: str, keys: list[str], run_config: dict, defs=None,
                            runs: Callable[[list[str]], list[list[str]]] | None = None):
    """Run a partitioned job in-process over the given users, in batched runs; returns run ids.

    ``runs``: how to cut the partitions (in their order) into runs, each a contiguous range
    (default: ``partition_runs`` of ``keys``, at most 50 a run)."""
    from moods_pipeline.defs.dagster_private import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
    from moods_pipeline.defs.partitions import PARTITIONS_PER_RUN, USERS_PARTITION, partition_runs

    defs = defs or project_definitions()
    existing = instance.get_dynamic_partitions(USERS_PARTITION)
    known = set(existing)  # built once: a set per key made this quadratic (8.9 s at 5,000 users)
    missing = [k for k in keys if k not in known]
    if missing:
        instance.add_dynamic_partitions(USERS_PARTITION, missing)
        existing = instance.get_dynamic_partitions(USERS_PARTITION)
    job = defs.resolve_job_def(job_name)
    run_ids = []
    chunks = runs(list(existing)) if runs is not None else partition_runs(existing, set(keys), PARTITIONS_PER_RUN)
    for chunk in chunks:
        tags = {ASSET_PARTITION_RANGE_START_TAG: chunk[0], ASSET_PARTITION_RANGE_END_TAG: chunk[-1], **batch_tags()}
        _launched()
        with contextlib.redirect_stdout(sys.stderr):  # stdout is for the JSON object alone
            result = job.execute_in_process(
                instance=instance, tags=tags, run_config=run_config, raise_on_error=False
            )
        run_ids.append(result.run_id)
    return run_ids


def run_job(instance, job_name: str, run_config: dict | None = None, defs=None):
    defs = defs or project_definitions()
    _launched()
    with contextlib.redirect_stdout(sys.stderr):
        return defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, run_config=run_config or {}, raise_on_error=False, tags=batch_tags()
        )


def project_definitions():
    """The project's real Definitions (the jobs the commands run)."""
    from moods_pipeline.definitions import defs

    return defs


def quiet_run_config(ops: dict, verbose: bool) -> dict:
    return {"ops": ops, "loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "WARNING"}}}}


def open_store(settings):
    """The application's MongoDB as the settings name it (``storage.mongo.open_store``)."""
    from moods_pipeline.storage.mongo import open_store as open_mongo_store

    return open_mongo_store(settings)
