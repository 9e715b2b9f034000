"""Audit benchmark: a bare script, the audit engine, and the audit as the CLI runs
it, on one fresh local stack with production-shaped data, backfilled, with planted problems.

    .venv/bin/python -m bench.audit                  # demo_data's production scale, 3 repetitions
    .venv/bin/python -m bench.audit --quick          # 100 users, 1 repetition (about 2 minutes)
    .venv/bin/python -m bench.audit --read-modes     # also: engine by read mode and concurrency
    .venv/bin/python -m bench.audit --dagster-storage sqlite-tmpfs|postgres

Set-up (not measured): PLC + PDS (log level warn) + SecantusDB (in memory) in a temp dir;
``demo_data.generate(scale="production")`` seeded with real PDS accounts; every user backfilled
with ``sync.backfill.backfill_users``; then problems planted directly on the PDS and in Mongo
(records deleted, pointers unset or stale, duplicates, orphans, records with ``text`` instead
of ``mood``). An untimed audit before planting gives the baseline (demo data has its own odd
cases), so each phase's findings are checked: engine and pipeline must find exactly baseline +
planted problems, bare at least the planted missing, duplicate and orphan refs.

Phases, each ``--repeats`` times in rotation, medians:

- ``bare``: no Dagster, no project code, sequential: for each syncable user one Mongo query for
  its moods and listRecords pages (plain httpx, until a page comes back without a cursor or
  empty), then the set of refs against the live mood ids (missing, duplicated, unknown refs).
- ``engine``: ``sync.audit.audit_users`` for all syncable users (concurrency 8, read ``auto``).
- ``pipeline``: ``cli_audit.run_audit``, what ``moods-pipeline audit --all`` runs: the audit job
  in-process over all partitions (runs of at most 50 users) plus ``audit_summary_job``, on a
  fresh ``DAGSTER_HOME`` for each repetition: by default the CLI's own SQLite configuration in
  the temp dir (on disk, with the CLI's quicker commits of defs/local_instance.py);
  ``--dagster-storage sqlite-tmpfs`` puts it on /dev/shm,
  ``postgres`` uses deploy/dagster.yaml on a throwaway PostgreSQL cluster.
- ``floor`` (extra): Dagster alone on the same kind of instance, same partitions, same runs of
  50: a partitioned asset that only yields one bare materialization per partition. Dagster
  stores two events per partition (the planned materialization, on SQLite one per partition,
  and the materialization) plus about a dozen per run; this is the part of ``pipeline -
  engine`` that no asset code can remove.

- ``incremental`` (after those, on one DAGSTER_HOME and state dir kept across its steps), each
  repetition: ``full`` (``run_audit(full=True)``, what ``audit --all --full`` runs: every user,
  receipts written), then ``unchanged`` (``run_audit()``, what ``audit --all`` runs, with nothing
  changed since), then 1% of the users changed (half of them a mood's text edited in Mongo, half
  a record rewritten in their repo by another client, Mongo untouched) and ``changed1pct``
  (``run_audit()`` again). Each incremental result is checked against a full audit of the same
  data (the engine's totals and per-user counts): any difference exits 1.

The ratio line: ``ratio engine/bare=X dagster_ms_per_user=Y`` with Y = (pipeline - engine) /
users in ms. Targets: X <= 1.0, Y <= 40. The last line: ``ratio incremental/full=X
changed1pct/full=Y`` (medians; targets X <= 0.10, Y <= 0.15). ``--incremental-only`` skips the
bare, engine, pipeline and floor phases. Nothing prints a password or a mood's text.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import pymongo  # noqa: E402
from bson import ObjectId  # noqa: E402

from moods_pipeline import MOOD_COLLECTION  # noqa: E402

CREATE = "com.atproto.repo.applyWrites#create"
TARGET_RATIO = 1.0
TARGET_DAGSTER_MS = 40.0
TARGET_INCREMENTAL = 0.10
TARGET_CHANGED_1PCT = 0.15


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the stack ----------------------------------------------------------------------------------


class Stack:
    def __init__(self, root: Path) -> None:
        from moods_pipeline.devstack import LocalMongo, LocalPds, LocalPlc

        self.root = root
        self.plc = LocalPlc(root / "plc")
        self.pds = LocalPds(root / "pds", self.plc, invite_required=False, rate_limits=False, log_level="warn")
        self.mongo = LocalMongo(None, log_path=root / "mongo" / "mongo.log")

    def start(self) -> "Stack":
        self.plc.start()
        self.pds.start()
        self.mongo.start()
        return self

    def stop(self) -> None:
        for service in (self.mongo, self.pds, self.plc):
            try:
                service.stop()
            except Exception:  # noqa: BLE001
                pass


class Postgres:
    """A throwaway PostgreSQL cluster for the production instance config (deploy/dagster.yaml):
    initdb -A trust in a temp dir, pg_ctl on a free port (as the postgres user when run as root)."""

    def __init__(self, base: Path) -> None:
        import glob
        import pwd
        import socket

        def binary(name: str) -> str | None:
            found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
            return found[-1] if found else shutil.which(name)

        self.initdb, self.pg_ctl = binary("initdb"), binary("pg_ctl")
        if not self.initdb or not self.pg_ctl:
            raise SystemExit("--dagster-storage postgres needs initdb and pg_ctl")
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.as_user: list[str] = []
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            self.as_user, self.user = ["runuser", "-u", "postgres", "--"], "postgres"
            shutil.chown(base, "postgres")

    def _run(self, *args: str) -> None:
        import subprocess

        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> "Postgres":
        self._run(self.initdb, "-A", "trust", "-U", self.user, "-D", str(self.base / "data"))
        self._run(self.pg_ctl, "-D", str(self.base / "data"), "-l", str(self.base / "pg.log"), "-w", "-t", "60",
                  "-o", f"-p {self.port} -h 127.0.0.1 -k {self.base}", "start")
        return self

    def create_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()

    def stop(self) -> None:
        import subprocess

        subprocess.run([*self.as_user, self.pg_ctl, "-D", str(self.base / "data"), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=60)


# --- planting problems --------------------------------------------------------------------------


def plant_problems(store, pds, users, seed: int = 11) -> Counter:
    """Break some users on purpose; returns the problem rows planted, by status."""
    import random

    from moods_pipeline.atproto.tid import tid_from_parts

    rng = random.Random(seed)
    planted: Counter = Counter()
    candidates = []
    for user in users:
        moods = [m for m in store.moods_of(user.sub) if m.live and m.rkey]
        if len(moods) >= 2:
            candidates.append((user, moods))
    rng.shuffle(candidates)
    plan = ["missing"] * 10 + ["pointer_missing"] * 5 + ["duplicate"] * 5 + ["orphan"] * 3 + ["text"] * 3 + ["stale"] * 2
    for kind, (user, moods) in zip(plan, candidates):
        session = pds.login(user.did, user.password, expected_did=user.did)
        mood = moods[0]
        record = pds.get_record(user.did, MOOD_COLLECTION, mood.rkey)
        if record is None:
            continue
        extra_rkey = tid_from_parts(1_000_000_000_000_000 + rng.randrange(10**9), rng.randrange(1024))
        if kind == "missing":
            session.delete_record(MOOD_COLLECTION, mood.rkey)
            planted["missing_on_pds"] += 1
        elif kind == "pointer_missing":
            store.unset_pointers([mood.id])
            planted["pointer_missing"] += 1
        elif kind == "duplicate":
            session.put_record(MOOD_COLLECTION, extra_rkey, dict(record.value))
            planted["duplicate"] += 1
        elif kind == "orphan":
            value = dict(record.value, ref=str(ObjectId()))
            session.put_record(MOOD_COLLECTION, extra_rkey, value)
            planted["orphan"] += 1
        elif kind == "text":
            value = {k: v for k, v in record.value.items() if k != "mood"}
            value["text"] = record.value.get("mood")
            session.put_record(MOOD_COLLECTION, mood.rkey, value)
            planted["content_mismatch"] += 1
        elif kind == "stale":
            store.write_pointers([(mood.id, extra_rkey)])
            planted["stale_pointer"] += 1
    return planted


# --- the phases ---------------------------------------------------------------------------------


def bare(mongo_uri: str, db_name: str, pds_url: str) -> tuple[float, Counter]:
    """The smallest correct comparison: sequential, plain pymongo + httpx, refs against ids."""
    started = time.perf_counter()
    found: Counter = Counter()
    client = pymongo.MongoClient(mongo_uri)
    db = client[db_name]
    try:
        with httpx.Client(base_url=pds_url, timeout=30) as http:
            subs = {s for s in db.moods.distinct("user") if isinstance(s, str)}
            users = db.users.find({"_id": {"$in": sorted(subs)}, "atproto.did": {"$exists": True},
                                   "atproto.password": {"$exists": True}}, {"atproto.did": 1})
            for user in sorted(users, key=lambda u: u["_id"]):
                did = user["atproto"]["did"]
                live = {str(m["_id"]) for m in db.moods.find({"user": user["_id"], "deleted": {"$ne": True}}, {"_id": 1})}
                every = {str(m["_id"]) for m in db.moods.find({"user": user["_id"]}, {"_id": 1})}
                refs: list[str] = []
                cursor = None
                while True:
                    params = {"repo": did, "collection": MOOD_COLLECTION, "limit": 100}
                    if cursor:
                        params["cursor"] = cursor
                    response = http.get("/xrpc/com.atproto.repo.listRecords", params=params)
                    if response.status_code != 200:
                        found["unreadable"] += 1
                        break
                    page = response.json()
                    for item in page.get("records", []):
                        value = item.get("value") or {}
                        refs.append(value.get("ref") or value.get("mongoId") or "")
                    cursor = page.get("cursor")
                    if not page.get("records") or not cursor:
                        break
                counted = Counter(refs)
                found["missing"] += len(live - set(counted))
                found["duplicate"] += sum(n - 1 for n in counted.values() if n > 1)
                found["orphan"] += sum(n for ref, n in counted.items() if ref not in every)
    finally:
        client.close()
    return time.perf_counter() - started, found


def engine(store, pds, users, settings, read: str = "auto", concurrency: int = 8) -> tuple[float, dict]:
    from moods_pipeline.sync import audit as audit_engine

    started = time.perf_counter()
    results = audit_engine.audit_users(users, store, pds, nuke_policy=settings.nuke_policy,
                                       when_tolerance_ms=settings.when_tolerance_ms, concurrency=concurrency,
                                       read=read)
    seconds = time.perf_counter() - started
    return seconds, audit_engine.totals([r.summary() for r in results])


def definitions(settings):
    """The project's definitions with resources pointed at the benchmark's stack."""
    from moods_pipeline.definitions import build_definitions
    from moods_pipeline.defs.resources import MongoResource, PdsResource, PipelineSettingsResource

    resources = {
        "mongo": MongoResource(connection_string=settings.mongodb_connection_string.reveal(),
                               database=settings.mongodb_name),
        "pds": PdsResource(url=settings.pds_url),
        "pipeline": PipelineSettingsResource(state_dir=str(settings.state_dir)),
    }
    return build_definitions(resources)


def dagster_home(work: Path, rep: int, storage: str, postgres: "Postgres | None") -> Path:
    """A fresh DAGSTER_HOME: the CLI's default (SQLite under it, as `ensure_dagster_home` writes
    it), on disk or on tmpfs, or the production config (deploy/dagster.yaml) on PostgreSQL."""
    from moods_pipeline.defs.local_instance import quicken
    from moods_pipeline.devstack.dagster_home import ensure_dagster_home

    if storage == "sqlite-tmpfs":
        home = ensure_dagster_home(Path(tempfile.mkdtemp(prefix="moods-bench-dagster-", dir="/dev/shm")))
        quicken(home)  # as the CLI's dagster_instance() does
        return home
    home = work / f"dagster_home_{rep}"
    if storage == "postgres":
        home.mkdir(parents=True)
        shutil.copy(REPO_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
        name = f"dagster_bench_{rep}"
        postgres.create_database(name)
        os.environ.update(DAGSTER_PG_HOST="127.0.0.1", DAGSTER_PG_PORT=str(postgres.port),
                          DAGSTER_PG_USER=postgres.user, DAGSTER_PG_PASSWORD="unused-with-trust-auth",
                          DAGSTER_PG_DB=name)
        return home
    home = ensure_dagster_home(home)
    quicken(home)  # as the CLI's dagster_instance() does
    return home


def pipeline(settings, syncable, without_account, work: Path, rep: int, storage: str = "sqlite",
             postgres: "Postgres | None" = None) -> tuple[float, dict, dict]:
    """The audit as `moods-pipeline audit --all` runs it, on a fresh DAGSTER_HOME; also the time
    of the audit runs alone and of the summary run."""
    from dataclasses import replace

    from dagster import DagsterInstance

    from moods_pipeline.cli.audit import run_audit

    home = dagster_home(work, rep, storage, postgres)
    state = work / f"state_{rep}"
    os.environ["DAGSTER_HOME"] = str(home)
    settings = replace(settings, state_dir=state)
    defs = definitions(settings)
    started = time.perf_counter()
    with DagsterInstance.from_config(str(home)) as instance:
        total, _ = run_audit(instance, settings, syncable, without_account, defs=defs)
    seconds = time.perf_counter() - started
    if storage == "sqlite-tmpfs":
        shutil.rmtree(home, ignore_errors=True)
    return seconds, total, {"summary": total["seconds_summary"]}


def dagster_floor(dids: list[str], work: Path, rep: int, storage: str, postgres: "Postgres | None") -> float:
    """What Dagster alone costs for the same runs: a partitioned asset that does nothing but
    yield one bare materialization per partition, over the same partitions in runs of 50."""
    import dagster as dg
    from dagster import DagsterInstance

    from moods_pipeline.cli.common import run_job_over_partitions
    from moods_pipeline.defs.partitions import PARTITIONS_PER_RUN, users_partitions

    @dg.asset(name="mood_audit", partitions_def=users_partitions,
              backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=PARTITIONS_PER_RUN),
              output_required=False)
    def trivial(context):
        for key in context.partition_keys:
            yield dg.AssetMaterialization(asset_key=context.asset_key, partition=key)

    job = dg.define_asset_job("floor_job", selection=[trivial], executor_def=dg.in_process_executor)
    defs = dg.Definitions(assets=[trivial], jobs=[job])
    home = dagster_home(work, 1000 + rep, storage, postgres)
    os.environ["DAGSTER_HOME"] = str(home)
    started = time.perf_counter()
    with DagsterInstance.from_config(str(home)) as instance:
        run_job_over_partitions(instance, "floor_job", dids, {"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                                defs=defs)
    seconds = time.perf_counter() - started
    if storage == "sqlite-tmpfs":
        shutil.rmtree(home, ignore_errors=True)
    return seconds


# --- incremental ----------------------------------------------------------------------------------


def change_one_percent(store, pds, users, rng) -> list[str]:
    """1% of the users (at least one) changed: half a mood's text edited in Mongo, half a record
    rewritten in the repo by another client (Mongo untouched). Returns their DIDs."""
    candidates = [u for u in users if any(m.live and m.rkey for m in store.moods_of(u.sub))]
    chosen = rng.sample(candidates, max(1, round(len(users) / 100)))
    for k, user in enumerate(chosen):
        mood = next(m for m in store.moods_of(user.sub) if m.live and m.rkey)
        if k % 2 == 0:
            store.db.moods.update_one({"_id": ObjectId(mood.id)}, {"$set": {"mood": f"edited in the app {rng.random()}"}})
        else:
            record = pds.get_record(user.did, MOOD_COLLECTION, mood.rkey)
            session = pds.login(user.did, user.password, expected_did=user.did)
            value = dict(record.value if record else {"$type": MOOD_COLLECTION, "when": "2024-01-01T00:00:00.000Z",
                                                       "ref": mood.id})
            value["mood"] = f"rewritten by another client {rng.random()}"
            session.put_record(MOOD_COLLECTION, mood.rkey, value)
    return [u.did for u in chosen]


def same_as_full(total: dict, summaries: list[dict], store, pds, users, settings) -> list[str]:
    """Where an incremental audit differs from a full audit of the same data (empty: none)."""
    from moods_pipeline.sync import audit as audit_engine

    audits = audit_engine.audit_users(users, store, pds, nuke_policy=settings.nuke_policy,
                                      when_tolerance_ms=settings.when_tolerance_ms, concurrency=8)
    reference = audit_engine.totals([a.summary() for a in audits])
    differences = [f"{key}: {total.get(key)} != {reference[key]}" for key in
                   ("users_audited", "users_unreadable", "moods_live", "by_status", "problems", "sync_rate_pct")
                   if total.get(key) != reference[key]]
    mine = {s["did"]: {k: v for k, v in (s.get("by_status") or {}).items() if v} for s in summaries
            if not s.get("no_account")}
    theirs = {a.did: {k: v for k, v in a.counts.items() if v} for a in audits}
    differences += [f"user {did}: {mine.get(did)} != {theirs.get(did)}" for did in sorted(set(mine) | set(theirs))
                    if mine.get(did) != theirs.get(did)]
    return differences


def incremental_phases(settings, store, pds, syncable, without_account, work: Path, repeats: int,
                       storage: str, postgres: "Postgres | None") -> tuple[dict[str, list[float]], list[str]]:
    """full, unchanged, changed1pct per repetition, as the CLI runs them, on one instance and state
    dir; (seconds per phase, differences from a full audit)."""
    import random
    from dataclasses import replace

    from dagster import DagsterInstance

    from moods_pipeline.cli.audit import run_audit

    rng = random.Random(23)
    home = dagster_home(work, 2000, storage, postgres)
    os.environ["DAGSTER_HOME"] = str(home)
    settings = replace(settings, state_dir=work / "state_incremental")
    defs = definitions(settings)
    times: dict[str, list[float]] = {"full": [], "unchanged": [], "changed1pct": []}
    differences: list[str] = []
    with DagsterInstance.from_config(str(home)) as instance:
        for rep in range(repeats):
            started = time.perf_counter()
            total, summaries = run_audit(instance, settings, syncable, without_account, defs=defs, full=True)
            times["full"].append(time.perf_counter() - started)
            say(f"  rep {rep + 1}: full        {times['full'][-1]:7.2f}s  checked {total['users_checked']}, "
                f"problems {total['problems']}, runs {total['runs']}")
            started = time.perf_counter()
            total, summaries = run_audit(instance, settings, syncable, without_account, defs=defs)
            times["unchanged"].append(time.perf_counter() - started)
            found = same_as_full(total, summaries, store, pds, syncable, settings)
            differences += [f"rep {rep + 1} unchanged: {d}" for d in found]
            say(f"  rep {rep + 1}: unchanged   {times['unchanged'][-1]:7.2f}s  checked {total['users_checked']}, "
                f"unchanged {total['users_unchanged']}, runs {total['runs']}, selection {total['seconds_selection']}s, "
                f"summary {total['seconds_summary']}s; equal to a full audit: {not found}")
            changed = change_one_percent(store, pds, syncable, rng)
            started = time.perf_counter()
            total, summaries = run_audit(instance, settings, syncable, without_account, defs=defs)
            times["changed1pct"].append(time.perf_counter() - started)
            found = same_as_full(total, summaries, store, pds, syncable, settings)
            differences += [f"rep {rep + 1} changed1pct: {d}" for d in found]
            checked = {s["did"] for s in summaries if not s.get("unchanged") and not s.get("no_account")}
            if not set(changed) <= checked:
                differences.append(f"rep {rep + 1}: changed users not checked: {sorted(set(changed) - checked)}")
            say(f"  rep {rep + 1}: changed1pct {times['changed1pct'][-1]:7.2f}s  changed {len(changed)}, checked "
                f"{total['users_checked']}, unchanged {total['users_unchanged']}, runs {total['runs']}, problems "
                f"{total['problems']}; equal to a full audit: {not found}")
    return times, differences


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 users, 1 repetition")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--read-modes", action="store_true", help="also time the engine per read mode and concurrency")
    parser.add_argument("--incremental-only", action="store_true",
                        help="only the incremental phases (full, unchanged, 1%% changed), not bare/engine/pipeline/floor")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (stack data, Dagster homes)")
    parser.add_argument("--dagster-storage", choices=["sqlite", "sqlite-tmpfs", "postgres"], default="sqlite",
                        help="pipeline's instance: the CLI's default SQLite DAGSTER_HOME in the temp dir (default), "
                             "the same on tmpfs (/dev/shm), or deploy/dagster.yaml on a throwaway PostgreSQL")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("moods_pipeline").setLevel(logging.ERROR)  # expected per-user noise (odd cases)

    from moods_pipeline.atproto.client import PdsClient
    from moods_pipeline.devstack import demo_data
    from moods_pipeline.devstack.seed import pds_account_creator, seed
    from moods_pipeline.secret import Secret
    from moods_pipeline.settings import Settings
    from moods_pipeline.storage.mongo import open_store
    from moods_pipeline.sync.backfill import backfill_users

    work = Path(tempfile.mkdtemp(prefix="moods-bench-audit-"))
    stack = Stack(work / "stack")
    postgres = Postgres(Path(tempfile.mkdtemp(prefix="moods-bench-pg-"))) if args.dagster_storage == "postgres" else None
    try:
        if postgres:
            postgres.start()
        t0 = time.monotonic()
        stack.start()
        say(f"stack up in {time.monotonic() - t0:.1f}s")
        data = demo_data.generate(users=100, scale="quick") if args.quick else demo_data.generate(scale="production")
        db_name = "bench_audit"
        t0 = time.monotonic()
        client = pymongo.MongoClient(stack.mongo.uri, tz_aware=True, datetime_conversion="DATETIME_AUTO")
        with pds_account_creator(stack.pds.url) as creator:
            report = seed(client[db_name], data, creator, concurrency=8)
        say(f"seeded {report.accounts_created} accounts, {report.moods_written} moods in {time.monotonic() - t0:.1f}s")
        settings = Settings(mongodb_connection_string=Secret(stack.mongo.uri), mongodb_name=db_name,
                            pds_url=stack.pds.url, pds_admin_password=stack.pds.admin_password,
                            state_dir=work / "state")
        store = open_store(settings)
        pds = PdsClient(stack.pds.url)
        everyone = store.users_with_moods()
        syncable = [u for u in everyone if u.has_account]
        without_account = [u for u in everyone if not u.has_account]
        t0 = time.monotonic()
        outcomes = backfill_users(syncable, store, pds, concurrency=8)
        created = sum(o.created for o in outcomes)
        say(f"backfilled {created} records for {len(syncable)} users in {time.monotonic() - t0:.1f}s "
            f"({sum(1 for o in outcomes if o.error)} users failed)")

        _, baseline = engine(store, pds, syncable, settings)
        planted = plant_problems(store, pds, syncable)
        expected = baseline["problems"] + sum(planted.values())
        say(f"baseline problems {baseline['problems']}, planted {dict(planted)}: expect {expected}")

        times: dict[str, list[float]] = {"bare": [], "engine": [], "pipeline": [], "floor": []}
        for rep in range(0 if args.incremental_only else repeats):
            seconds, found = bare(stack.mongo.uri, db_name, stack.pds.url)
            times["bare"].append(seconds)
            assert found["missing"] >= planted["missing_on_pds"] and found["duplicate"] >= planted["duplicate"], found
            assert found["orphan"] >= planted["orphan"], found
            say(f"  rep {rep + 1}: bare     {seconds:7.2f}s  found {dict(found)}")
            seconds, total = engine(store, pds, syncable, settings)
            times["engine"].append(seconds)
            assert total["problems"] == expected, (total["problems"], expected)
            say(f"  rep {rep + 1}: engine   {seconds:7.2f}s  problems {total['problems']}")
            seconds, total, parts = pipeline(settings, syncable, without_account, work, rep, args.dagster_storage,
                                             postgres)
            times["pipeline"].append(seconds)
            assert total["problems"] == expected, (total["problems"], expected)
            say(f"  rep {rep + 1}: pipeline {seconds:7.2f}s  problems {total['problems']}, runs {total['runs']} "
                f"(of which the summary run {parts['summary']:.2f}s)")
            times["summary"] = times.get("summary", []) + [parts["summary"]]
            seconds = dagster_floor([u.did for u in syncable], work, rep, args.dagster_storage, postgres)
            times["floor"].append(seconds)
            say(f"  rep {rep + 1}: floor    {seconds:7.2f}s  (Dagster alone: a do-nothing asset, same partitions and runs)")

        if args.read_modes:
            say("engine by read mode and concurrency (one run each):")
            for read in ("pages", "list", "car", "auto"):
                for concurrency in (1, 4, 8, 16):
                    seconds, total = engine(store, pds, syncable, settings, read=read, concurrency=concurrency)
                    print(f"read={read:<5} concurrency={concurrency:<2} {seconds:6.2f}s "
                          f"{seconds * 1000 / len(syncable):6.2f} ms/user problems={total['problems']}")

        say("incremental: full, then nothing changed, then 1% of the users changed (as the CLI runs them)")
        incremental_times, differences = incremental_phases(settings, store, pds, syncable, without_account, work,
                                                            repeats, args.dagster_storage, postgres)

        n = len(syncable)
        print(f"users={n} moods={report.moods_written} records={created} planted={sum(planted.values())} "
              f"problems={expected} repeats={repeats} dagster_storage={args.dagster_storage}")
        ok = True
        if not args.incremental_only:
            medians = {phase: statistics.median(values) for phase, values in times.items()}
            for phase in ("bare", "engine", "pipeline", "summary", "floor"):
                runs = " ".join(f"{v:.2f}" for v in times[phase])
                print(f"{phase:<8} median {medians[phase]:7.2f}s  {medians[phase] * 1000 / n:6.2f} ms/user  (runs: {runs})")
            ratio = medians["engine"] / medians["bare"]
            dagster_ms = (medians["pipeline"] - medians["engine"]) * 1000 / n
            print(f"dagster floor (do-nothing asset, same runs) {medians['floor'] * 1000 / n:.1f} ms/user; "
                  f"pipeline above engine + floor {(medians['pipeline'] - medians['engine'] - medians['floor']) * 1000 / n:.1f} ms/user")
            print(f"ratio engine/bare={ratio:.2f} dagster_ms_per_user={dagster_ms:.1f}")
            ok = ratio <= TARGET_RATIO and dagster_ms <= TARGET_DAGSTER_MS
            say(f"targets: ratio <= {TARGET_RATIO}, dagster_ms_per_user <= {TARGET_DAGSTER_MS}: {'met' if ok else 'NOT met'}")
        inc = {phase: statistics.median(values) for phase, values in incremental_times.items()}
        for phase in ("full", "unchanged", "changed1pct"):
            runs = " ".join(f"{v:.2f}" for v in incremental_times[phase])
            print(f"{phase:<11} median {inc[phase]:7.2f}s  {inc[phase] * 1000 / n:6.2f} ms/user  (runs: {runs})")
        for difference in differences:
            print(f"DIFFERENT FROM A FULL AUDIT: {difference}")
        x, y = inc["unchanged"] / inc["full"], inc["changed1pct"] / inc["full"]
        inc_ok = x <= TARGET_INCREMENTAL and y <= TARGET_CHANGED_1PCT and not differences
        say(f"targets: incremental/full <= {TARGET_INCREMENTAL}, changed1pct/full <= {TARGET_CHANGED_1PCT}, results "
            f"equal to a full audit's ({len(differences)} differences): {'met' if inc_ok else 'NOT met'}")
        print(f"ratio incremental/full={x:.3f} changed1pct/full={y:.3f}")
        ok = ok and inc_ok
        pds.close()
        store.client.close()
        client.close()
        return 0 if ok else 1
    finally:
        stack.stop()
        if postgres:
            postgres.stop()
            shutil.rmtree(postgres.base, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"kept {work}")


if __name__ == "__main__":
    sys.exit(main())
