"""Scale benchmark: what the pipeline costs per user and per partition at 5x and 50x the
platform's users, measured on this machine (figures and ratios, never assertions on time).

    .venv/bin/python -m bench.scale                        # both parts at full size (long: see below)
    .venv/bin/python -m bench.scale --part users --users 200
    .venv/bin/python -m bench.scale --part partitions --partitions 2000 --no-ui
    .venv/bin/python -m bench.scale --part users --seed-only   # create the accounts now, measure later

Part ``users`` (default 5,000 syncable users, the platform's shape: 2.7 moods per user on
average, one heavy user of 226): real PDS accounts on a persistent stack under
``.moods/bench-scale/`` (PLC + PDS + SecantusDB on disk, ports kept), seeded once and reused by
every later run. Seeding resumes: an interrupted seeding writes what is missing on the next run,
and an account whose creation landed but was never recorded (the few in flight at the
interruption) is found by its handle and given its password back through the admin API. Each
repetition then runs the CLI path in a child process against a fresh ``DAGSTER_HOME``:
``moods-pipeline backfill --all --json`` and ``moods-pipeline audit --all --full --json``,
measured from outside (wall time, the child's CPU from ``wait4``, the PDS process tree's CPU,
SecantusDB's CPU). Repetitions reuse the accounts: when every mood is synced already, a
repetition first adds one new generation of moods (one new mood per existing one: new id, same
text, ``when`` a second later per generation), so each backfill writes about as many records
as the first did, into repos that keep the earlier generations' records (the audit checks them
all: every earlier record is a synced mood). Figures: records/s, ms per user, CPU of the CLI
process (Dagster and the engines) per partition, PDS CPU per user, Dagster event-log rows per
partition.

Part ``partitions`` (default 50,000 dynamic partitions; Dagster-only costs, no PDS writes): a
fresh SQLite ``DAGSTER_HOME`` with the ``QueuedRunCoordinator`` (queued runs are never
launched: nothing here dequeues them):

1. the partition sensor (``users_partition_sensor``) ticked twice on ``--sensor-users``
   syncable users with made-up DIDs in Mongo (seeded once, offline): its Mongo read of every
   syncable user, which SecantusDB's Python query engine makes slow, so it is timed at a smaller
   size and given per user; then, at full size, the sensor's diff (``new_partition_keys``) and
   its request carried out as ``add_dynamic_partitions`` in chunks (``--chunk``), each timed;
2. the CLI's launch path: reading the partitions and cutting the runs (``partition_runs``);
3. a backfill over every partition created through the webserver's GraphQL API
   (``launchPartitionBackfill``, as the UI's "Materialize" dialog does), then the backfill
   daemon's first iteration in a child process (Dagster's ``execute_backfill_iteration``, a
   private function: the daemon's own loop body), watched from here: when its first run was
   queued, and how many runs it queued within ``--daemon-budget`` seconds;
4. per-partition bookkeeping: a do-nothing asset on the same partitions run the CLI's way
   (runs of 50 contiguous partitions, ``execute_in_process``) over ``--noop-partitions``
   partitions, once in this 50,000-partition instance and once in an instance holding only
   those partitions: ms per partition and event-log rows per partition in each;
5. the UI: the asset's partitions page (``/assets/mood_backfill?view=partitions``) in Chromium
   (Playwright, ``/usr/bin/chromium``), timed from navigation to the last GraphQL response of
   the page, with the slowest GraphQL operations; with ``--no-ui`` or without a browser, the
   page's main GraphQL query is timed over HTTP instead (said in the output).

The machine is shared: every figure comes with the load average and the machine's busy cores.
Nothing prints a password; the admin password goes to the children only in their environment.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_DIR = REPO_ROOT / ".moods" / "bench-scale"
_PRODUCTION_VARS = ("MONGODB_", "PDS_", "MOODS_", "DAGSTER_")
USERS_PAGE = "/assets/mood_backfill?view=partitions"


def say(text: str) -> None:
    print(text, flush=True)


def load() -> str:
    return f"load average {os.getloadavg()[0]:.2f}"


# -- the persistent stack and its seeding --------------------------------------------------------


def start_stack(root: Path):
    from bench._stack import BenchStack

    return BenchStack.start(root / "stack", persistent=True, pds_log_level="warn")


def users_data(users: int, seed: int):
    """The platform's shape at ``users`` users: 2.7 moods per user on average, one heavy user of 226."""
    from moods_pipeline.devstack import demo_data

    return demo_data.generate(users=users, scale="production", seed=seed, users_without_moods=0, odd_cases=False)


def seed_accounts(stack, data, db_name: str, label_suffix: str) -> dict:
    """Seed ``data`` into ``db_name`` with real accounts, resuming whatever an earlier run left."""
    from moods_pipeline.devstack.seed import pds_account_creator, seed

    db = stack.db(db_name)
    t0, pds0 = time.monotonic(), stack.pds_cpu_seconds()
    with_account = [u.sub for u in data.users if u.has_account]
    if db.users.count_documents({"_id": {"$in": with_account}, "atproto.did": {"$type": "string"}}) == len(with_account) \
            and db.moods.estimated_document_count() >= len(data.moods):
        # seeded completely by an earlier run (later generations of moods are not seed()'s data)
        return {"created": 0, "existing": len(with_account), "recovered": 0, "failed": 0,
                "seconds": time.monotonic() - t0, "pds_cpu_s": 0.0, "moods_written": 0}
    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "accounts" and (time.monotonic() - last[0] > 30 or done == total):
            last[0] = time.monotonic()
            say(f"  seeding: {done:,} of {total:,} accounts ({time.monotonic() - t0:.0f} s, {load()})")

    with pds_account_creator(stack.pds_url) as creator:
        report = seed(db, data, creator, concurrency=8, progress=progress, label_suffix=label_suffix,
                      if_exists="resume")
    recovered = recover_unrecorded(stack, db, data, label_suffix, report.accounts_failed)
    return {"created": report.accounts_created, "existing": report.users_existing, "recovered": recovered,
            "failed": len(report.accounts_failed) - recovered, "seconds": time.monotonic() - t0,
            "pds_cpu_s": stack.pds_cpu_seconds() - pds0, "moods_written": report.moods_written}


def recover_unrecorded(stack, db, data, label_suffix: str, failed: list[tuple[str, str]]) -> int:
    """Accounts whose creation landed but whose users document was never written (an interrupted
    seeding): find each by its handle, set its password again (admin API), write the document."""
    from moods_pipeline.atproto.client import PdsClient

    if not failed:
        return 0
    by_sub = {u.sub: u for u in data.users}
    recovered = 0
    with PdsClient(stack.pds_url) as client:
        admin = client.admin(stack.admin_password)
        for sub, reason in failed:
            user = by_sub[sub]
            handle = user.pds_handle(".test", label_suffix)
            did = client.resolve_handle(handle) if "taken" in reason.lower() else None
            if did is None:
                say(f"  account of {sub} failed and cannot be recovered: {reason}")
                continue
            admin.update_account_password(did, user.password)
            db.users.insert_one(user.users_doc(did, ".test", label_suffix))
            recovered += 1
    return recovered


def add_generation(db, data, generation: int) -> int:
    """One new mood per seeded mood (new id, same text, ``when`` + ``generation`` seconds)."""
    from bson import ObjectId

    docs = [{"_id": ObjectId(), "user": m["user"], "mood": m["mood"], "when": m["when"] + timedelta(seconds=generation)}
            for m in data.moods if m.get("deleted") is not True]
    for k in range(0, len(docs), 5000):
        db.moods.insert_many(docs[k:k + 5000], ordered=False)
    return len(docs)


# -- the CLI in a child process, measured from outside ---------------------------------------------


def run_cli(stack, db_name: str, workdir: Path, home: Path, argv: list[str]) -> dict:
    from bench.backfill import Probe

    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PRODUCTION_VARS)}
    env.update(stack.env(db_name, state_dir=workdir.parent / "state", dagster_home=home))
    name = argv[0]
    out, err = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    exe = str(Path(sys.executable).with_name("moods-pipeline"))
    probe = Probe(stack)
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        child = subprocess.Popen([exe, *argv], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                 stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
    measured = probe.stop(usage.ru_utime + usage.ru_stime)
    text = out.read_text().strip()
    if not text:
        raise RuntimeError(f"`moods-pipeline {' '.join(argv)}` exited {os.waitstatus_to_exitcode(status)} "
                           f"without JSON; see {err}:\n" + "\n".join(err.read_text().splitlines()[-20:]))
    return {**measured, "summary": json.loads(text.splitlines()[-1]), "rc": os.waitstatus_to_exitcode(status),
            "peak_rss_mb": usage.ru_maxrss / 1024}


def full_flag() -> list[str]:
    """``--full`` where the audit command has it (it checks every user even when nothing moved)."""
    exe = str(Path(sys.executable).with_name("moods-pipeline"))
    usage = subprocess.run([exe, "audit", "--help"], capture_output=True, text=True).stdout
    return ["--full"] if "--full" in usage else []


def open_instance(home: Path):
    """The Dagster instance at ``home`` (its dagster.yaml reads DAGSTER_HOME, so that is set too)."""
    from dagster import DagsterInstance

    os.environ["DAGSTER_HOME"] = str(home)
    return DagsterInstance.from_config(str(home))


def event_rows_per_partition(home: Path, partitions: int) -> tuple[float, dict[str, int]]:
    """Event-log rows the instance at ``home`` holds, per partition, and by event type."""
    counts: dict[str, int] = {}
    with open_instance(home) as instance:
        for run in instance.get_runs():
            for entry in instance.all_logs(run.run_id):
                kind = entry.dagster_event.event_type_value if entry.dagster_event else "log message"
                counts[kind] = counts.get(kind, 0) + 1
    return sum(counts.values()) / max(partitions, 1), counts


def part_users(args, root: Path) -> dict:
    data = users_data(args.users, args.seed)
    syncable = sum(1 for u in data.users if u.syncable)
    db_name, suffix = f"users{args.users}", f"-u{args.users}"[:8]
    say(f"== part users: {syncable:,} syncable users, {sum(u.mood_count for u in data.users):,} moods "
        f"(the heaviest user {max(u.mood_count for u in data.users)}), database {db_name}, {load()}")
    with start_stack(root) as stack:
        say(f"stack up in {stack.startup_seconds:.1f} s under {stack.root}")
        seeded = seed_accounts(stack, data, db_name, suffix)
        say(f"seeding: {seeded['created']:,} accounts created now ({seeded['existing']:,} from earlier runs, "
            f"{seeded['recovered']} recovered, {seeded['failed']} failed) in {seeded['seconds']:.0f} s"
            + (f"; PDS CPU {1000 * seeded['pds_cpu_s'] / seeded['created']:.0f} ms per account created"
               if seeded["created"] else ""))
        if args.seed_only:
            return {}
        db = stack.db(db_name)
        users = db.users.count_documents({"atproto.password": {"$type": "string"}})
        results = []
        for i in range(args.repeats):
            if db.moods.count_documents({"atproto.rkey": {"$exists": False}, "deleted": {"$ne": True}}) == 0:
                generation = int((root / f"{db_name}.generation").read_text()) + 1 \
                    if (root / f"{db_name}.generation").exists() else 1
                added = add_generation(db, data, generation)
                (root / f"{db_name}.generation").write_text(str(generation))
                say(f"repetition {i + 1}: every mood synced already; added generation {generation} ({added:,} moods)")
            work = root / "runs" / f"{db_name}-{time.strftime('%Y%m%dT%H%M%S')}-{i + 1}"
            from moods_pipeline.devstack.dagster_home import ensure_dagster_home

            home = ensure_dagster_home(work / "dagster_home")
            backfill = run_cli(stack, db_name, work / "backfill", home, ["backfill", "--all", "--json"])
            audit = run_cli(stack, db_name, work / "audit", home, ["audit", "--all", *full_flag(), "--json"])
            rows, by_type = event_rows_per_partition(home, users)
            result = {"users": users, "backfill": backfill, "audit": audit, "event_rows_per_partition": rows,
                      "event_rows_by_type": by_type, "workdir": str(work)}
            results.append(result)
            describe_users(result, f"repetition {i + 1}")
        if len(results) > 1:
            describe_users(median_users(results), f"medians of {len(results)}")
        return results[-1] if len(results) == 1 else median_users(results)


def median_users(results: list[dict]) -> dict:
    merged = {"users": results[0]["users"], "event_rows_per_partition": statistics.median(
        r["event_rows_per_partition"] for r in results), "event_rows_by_type": results[-1]["event_rows_by_type"]}
    for phase in ("backfill", "audit"):
        numbers = [k for k, v in results[0][phase].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        merged[phase] = {k: statistics.median(r[phase][k] for r in results) for k in numbers}
        merged[phase]["summary"] = results[-1][phase]["summary"]
        merged[phase]["rc"] = max(r[phase]["rc"] for r in results)
    return merged


def describe_users(r: dict, title: str) -> None:
    users, b, a = r["users"], r["backfill"], r["audit"]
    created = b["summary"]["created"]
    say(f"-- {title} ({load()}) --")
    say(f"backfill: {users:,} users, {created:,} records in {b['seconds']:.1f} s = {created / b['seconds']:.1f} records/s, "
        f"{1000 * b['seconds'] / users:.1f} ms per user | CLI process CPU {1000 * b['client_cpu_s'] / users:.1f} ms "
        f"per partition | PDS CPU {1000 * b['pds_cpu_s'] / users:.1f} ms per user | SecantusDB CPU "
        f"{1000 * b['mongo_cpu_s'] / users:.1f} ms per user | peak RSS {b['peak_rss_mb']:.0f} MB | exit {b['rc']} "
        f"(users_failed {b['summary']['users_failed']}, failed {b['summary']['failed']})")
    s = a["summary"]
    say(f"audit --full: {s['users_audited']:,} users, {s['moods_live']:,} moods in {a['seconds']:.1f} s, "
        f"{1000 * a['seconds'] / users:.1f} ms per user | CLI process CPU {1000 * a['client_cpu_s'] / users:.1f} ms "
        f"per partition | PDS CPU {1000 * a['pds_cpu_s'] / users:.1f} ms per user | problems {s['problems']}, "
        f"unreadable {s['users_unreadable']}, sync rate {s['sync_rate_pct']}% | exit {a['rc']}")
    say(f"Dagster event-log rows per partition (backfill + audit + summaries): {r['event_rows_per_partition']:.1f}; "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(r["event_rows_by_type"].items(), key=lambda kv: -kv[1])[:8]))
    say(f"ratio pds_cpu_per_user_ms={1000 * b['pds_cpu_s'] / users:.1f} "
        f"cli_cpu_per_partition_ms={1000 * b['client_cpu_s'] / users:.1f} "
        f"backfill_ms_per_user={1000 * b['seconds'] / users:.1f} "
        f"pds_busy_during_backfill={b['pds_cpu_s'] / b['seconds']:.2f}")


# -- part partitions ---------------------------------------------------------------------------------

QUEUED_DAGSTER_YAML = """\
# bench/scale.py: SQLite as the CLI's default; queued runs wait (nothing here dequeues them).
storage:
  sqlite:
    base_dir:
      env: DAGSTER_HOME
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
telemetry:
  enabled: false
nux:
  enabled: false
"""


class MongoOnly:
    """A SecantusDB of its own on disk (part partitions needs no PDS): never the persistent
    stack of part users, which another run of this script may have up at the same time."""

    def __init__(self, root: Path) -> None:
        import pymongo

        from moods_pipeline.devstack import LocalMongo

        self.server = LocalMongo(root / "mongo-data", log_path=root / "mongo.log").start()
        self.mongo_uri = self.server.uri
        self.client = pymongo.MongoClient(self.mongo_uri, tz_aware=True, datetime_conversion="DATETIME_AUTO")

    def db(self, name: str):
        return self.client[name]

    def env(self, db_name: str, state_dir: Path) -> dict[str, str]:
        # no PDS is started: loading the definitions and the UI never call it
        return {"MONGODB_CONNECTION_STRING": self.mongo_uri, "MONGODB_NAME": db_name,
                "PDS_URL": "http://localhost:9", "MOODS_STATE_DIR": str(state_dir)}

    def __enter__(self) -> "MongoOnly":
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.server.stop()


def fresh_home(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    (path / "dagster.yaml").write_text(QUEUED_DAGSTER_YAML)
    return path.resolve()


def seed_offline(stack, count: int, seed: int) -> str:
    """``count`` syncable users with made-up DIDs and one mood each (no PDS accounts): the
    partition sensor's Mongo read."""
    from moods_pipeline.devstack import demo_data
    from moods_pipeline.devstack.seed import seed as seed_db

    db_name = f"partitions{count}"
    data = demo_data.generate(users=count, moods_per_user=1, seed=seed, users_without_moods=0, odd_cases=False)
    t0 = time.monotonic()
    report = seed_db(stack.db(db_name), data, None, if_exists="resume")
    say(f"offline users: {report.users_written:,} written now, {report.users_existing:,} from earlier runs "
        f"in {time.monotonic() - t0:.0f} s")
    return db_name


class CpuClock:
    """Wall and this process's CPU between start and lap."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        now, cpu = time.perf_counter(), time.process_time()
        out = (now - self.wall, cpu - self.cpu)
        self.wall, self.cpu = now, cpu
        return out


def sensor_tick(stack, db_name: str, users: int, home: Path) -> dict:
    """The partition sensor evaluated on ``users`` syncable users, in an instance of its own."""
    import dagster as dg

    from moods_pipeline.defs.backfill.sensors import users_partition_sensor
    from moods_pipeline.defs.resources import MongoResource

    mongo = MongoResource(connection_string=stack.mongo_uri, database=db_name)
    with open_instance(fresh_home(home)) as instance:
        clock = CpuClock()
        with dg.build_sensor_context(instance=instance, resources={"mongo": mongo}) as context:
            result = users_partition_sensor(context)
        tick_s, tick_cpu = clock.lap()
        with dg.build_sensor_context(instance=instance, resources={"mongo": mongo}, cursor=result.cursor) as context:
            again = users_partition_sensor(context)
        second_s, _ = clock.lap()
    keys = [k for request in result.dynamic_partitions_requests for k in request.partition_keys]
    say(f"partition sensor tick on {users:,} syncable users: {tick_s:.1f} s ({1000 * tick_s / users:.1f} ms per user; "
        f"{tick_cpu:.1f} CPU s in this process, the rest is the Mongo read), {len(keys):,} partitions requested; "
        f"second tick (unchanged set): {second_s:.1f} s ({type(again).__name__}: it reads every user again)")
    return {"users": users, "tick_s": tick_s, "second_tick_s": second_s, "requested": len(keys)}


def synthetic_dids(count: int) -> list[str]:
    """``count`` well-formed did:plc keys (made up, as the offline seeding's)."""
    from moods_pipeline.devstack.seed import offline_did

    return [offline_did(f"bench-scale|{i}") for i in range(count)]


def partition_adds(instance, keys: list[str], chunk: int) -> dict:
    """The sensor's diff at this size, then its request carried out in chunks."""
    from moods_pipeline.defs.backfill.sensors import new_partition_keys
    from moods_pipeline.defs.partitions import USERS_PARTITION

    clock = CpuClock()
    keys = new_partition_keys(keys, instance.get_dynamic_partitions(USERS_PARTITION))
    diff_s, _ = clock.lap()
    chunks = []
    for k in range(0, len(keys), chunk):
        instance.add_dynamic_partitions(USERS_PARTITION, keys[k:k + chunk])
        chunks.append(clock.lap())
    existing = instance.get_dynamic_partitions(USERS_PARTITION)
    read_s, _ = clock.lap()
    say(f"the sensor's diff of {len(keys):,} DIDs against the instance: {diff_s * 1000:.0f} ms")
    say(f"add_dynamic_partitions in chunks of {chunk:,}: " + ", ".join(f"{s:.2f}" for s, _ in chunks)
        + f" s (sum {sum(s for s, _ in chunks):.1f} s, {1e6 * sum(s for s, _ in chunks) / max(len(keys), 1):.0f} us "
        f"per partition); get_dynamic_partitions of {len(existing):,}: {read_s * 1000:.0f} ms")
    return {"diff_s": diff_s, "add_chunks_s": [s for s, _ in chunks], "add_total_s": sum(s for s, _ in chunks),
            "get_partitions_s": read_s, "partitions": len(existing)}


def cli_launch_path(instance) -> dict:
    from moods_pipeline.defs.partitions import USERS_PARTITION, partition_runs

    clock = CpuClock()
    existing = instance.get_dynamic_partitions(USERS_PARTITION)
    runs = partition_runs(existing, set(existing))
    seconds, _ = clock.lap()
    say(f"CLI launch path (read the partitions, cut the runs): {len(runs):,} runs of up to 50 in {seconds * 1000:.0f} ms")
    return {"seconds": seconds, "runs": len(runs)}


class Webserver:
    """``dagster-webserver`` on the project's definitions and the given instance (a child process)."""

    def __init__(self, home: Path, env: dict[str, str], log: Path) -> None:
        from moods_pipeline.devstack import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = str(Path(sys.executable).with_name("dagster-webserver"))
        self._log = open(log, "wb")
        self.proc = subprocess.Popen([exe, "-m", "moods_pipeline.definitions", "-h", "127.0.0.1", "-p", str(self.port)],
                                     cwd=REPO_ROOT, env={**env, "DAGSTER_HOME": str(home)}, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 180) -> float:
        import httpx

        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dagster-webserver exited {self.proc.returncode}; see {self._log.name}")
            try:
                if httpx.get(self.url + "/server_info", timeout=2).status_code == 200:
                    # the code location loads after the server answers; wait for the asset to be known
                    if self.graphql(ASSET_QUERY, {"key": {"path": ["mood_backfill"]}}).get("assetNodeOrError", {}).get(
                            "__typename") == "AssetNode":
                        return time.monotonic() - t0
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(1)
        raise RuntimeError(f"dagster-webserver did not come up in {timeout:.0f} s; see {self._log.name}")

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 600) -> dict:
        import httpx

        response = httpx.post(self.url + "/graphql", json={"query": query, "variables": variables or {}}, timeout=timeout)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors'][:2]}")
        return body["data"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


ASSET_QUERY = "query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { __typename } }"
LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on RunConflict { message }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message }
    ... on ConflictingExecutionParamsError { message }
    ... on PresetNotFoundError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on NoModeProvidedError { message }
  }
}"""
# The partition health data the asset's partitions page asks for (its main query, trimmed to the
# partition fields): used when no browser can load the page.
PARTITION_HEALTH = """
query($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      id
      partitionKeysByDimension { name partitionKeys }
      assetPartitionStatuses {
        __typename
        ... on DefaultPartitionStatuses { materializedPartitions failedPartitions materializingPartitions }
      }
    }
  }
}"""


def launch_backfill(server: Webserver, keys: list[str]) -> tuple[str, float]:
    t0 = time.perf_counter()
    data = server.graphql(LAUNCH_BACKFILL, {"params": {
        "partitionNames": keys, "assetSelection": [{"path": ["mood_backfill"]}], "fromFailure": False,
        "tags": [{"key": "bench", "value": "scale"}]}})
    seconds = time.perf_counter() - t0
    launched = data["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"launchPartitionBackfill: {launched}")
    return launched["backfillId"], seconds


def daemon_child(home: Path, backfill_id: str) -> int:
    """The backfill daemon's loop body, once, in this (child) process: a private Dagster function."""
    import logging

    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import ModuleTarget
    from dagster._daemon.backfill import execute_backfill_iteration

    target = ModuleTarget(module_name="moods_pipeline.definitions", attribute=None,
                          working_directory=str(REPO_ROOT), location_name="moods_pipeline")
    with open_instance(home) as instance, WorkspaceProcessContext(instance, target) as context:
        context.create_request_context().get_code_location("moods_pipeline")
        print(json.dumps({"loaded": time.time()}), flush=True)
        errors = [e for e in execute_backfill_iteration(context, logging.getLogger("bench.scale.daemon")) if e is not None]
        print(json.dumps({"done": time.time(), "errors": [e.message.splitlines()[0] for e in errors[:3]]}), flush=True)
    return 0


def daemon_first_iteration(instance, home: Path, backfill_id: str, budget_s: float, log: Path) -> dict:
    """The daemon's first iteration over the backfill, in a child process, watched from here: the
    runs it queues over time; stopped after ``budget_s`` if it has not finished (then the rate so
    far gives the whole)."""
    from dagster._core.storage.dagster_run import RunsFilter

    runs_filter = RunsFilter(tags={"dagster/backfill": backfill_id})
    with open(log, "wb") as out:
        child = subprocess.Popen([sys.executable, "-m", "bench.scale", "--daemon-child", str(home), backfill_id],
                                 cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=out, start_new_session=True)
        loaded_line = child.stdout.readline()
        if not loaded_line:
            child.wait()
            raise RuntimeError(f"the daemon child exited {child.returncode} before loading the code; see {log}")
        t0 = time.time()
        first_run_s, samples = None, []
        while child.poll() is None and time.time() - t0 < budget_s:
            runs = instance.get_runs_count(runs_filter)
            if runs and first_run_s is None:
                first_run_s = time.time() - t0
            samples.append((time.time() - t0, runs))
            time.sleep(2)
        finished = child.poll() is not None
        if not finished:
            os.killpg(child.pid, 15)  # the child's own session: it and the code server it started
            child.wait()
        rest = child.stdout.read().decode().strip().splitlines()
    seconds = time.time() - t0
    runs = instance.get_runs_count(runs_filter)
    if runs and first_run_s is None:
        first_run_s = seconds
    errors = json.loads(rest[-1]).get("errors", []) if finished and rest else []
    return {"seconds": seconds, "finished": finished, "runs": runs, "first_run_s": first_run_s, "errors": errors}


def noop_runs(instance, count: int) -> dict:
    """A do-nothing asset on the users partitions, run the CLI's way over ``count`` partitions."""
    import dagster as dg

    from moods_pipeline.defs.dagster_private import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
    from moods_pipeline.defs.partitions import USERS_PARTITION, partition_runs, users_partitions

    @dg.asset(partitions_def=users_partitions, name="bench_noop")
    def bench_noop() -> None:
        return None

    defs = dg.Definitions(assets=[bench_noop], jobs=[dg.define_asset_job("bench_noop_job", [bench_noop],
                                                                          executor_def=dg.in_process_executor)])
    job = defs.resolve_job_def("bench_noop_job")
    existing = instance.get_dynamic_partitions(USERS_PARTITION)
    chosen = existing[:count]
    clock = CpuClock()
    rows = 0
    run_ids = []
    for chunk in partition_runs(existing, set(chosen)):
        tags = {ASSET_PARTITION_RANGE_START_TAG: chunk[0], ASSET_PARTITION_RANGE_END_TAG: chunk[-1]}
        # the CLI's quiet logging (WARNING): DEBUG console lines per event would be measured too
        result = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False, run_config={
            "loggers": {"console": {"config": {"log_level": "WARNING"}}}})
        run_ids.append(result.run_id)
    seconds, cpu = clock.lap()
    for run_id in run_ids:
        rows += len(instance.all_logs(run_id))
    return {"partitions": len(chosen), "runs": len(run_ids), "ms_per_partition": 1000 * seconds / len(chosen),
            "cpu_ms_per_partition": 1000 * cpu / len(chosen), "rows_per_partition": rows / len(chosen)}


def ui_page(server: Webserver, use_browser: bool) -> dict:
    """The partitions page in Chromium; or, without a browser, its main query over HTTP."""
    if use_browser and Path("/usr/bin/chromium").exists():
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            say("playwright is not installed: timing the page's GraphQL query instead")
        else:
            return ui_page_in_browser(server, sync_playwright)
    elif use_browser:
        say("no /usr/bin/chromium: timing the page's GraphQL query instead")
    t0 = time.perf_counter()
    data = server.graphql(PARTITION_HEALTH, {"key": {"path": ["mood_backfill"]}})
    seconds = time.perf_counter() - t0
    keys = data["assetNodeOrError"]["partitionKeysByDimension"][0]["partitionKeys"]
    say(f"UI (GraphQL only, no browser): the partitions page's health query with {len(keys):,} keys in {seconds:.2f} s")
    return {"seconds": seconds, "browser": False}


def ui_page_in_browser(server: Webserver, sync_playwright) -> dict:
    timings: dict[str, list[float]] = {}
    pending: dict[object, tuple[str, float]] = {}
    last_graphql = [0.0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page()

        def on_request(request) -> None:
            if "/graphql" in request.url:
                name = "?"
                try:
                    name = (request.post_data_json or {}).get("operationName") or "?"
                except Exception:  # noqa: BLE001 - a GET or a body that is not JSON
                    pass
                pending[request] = (name, time.perf_counter())

        def on_finished(request) -> None:
            if request in pending:
                name, started = pending.pop(request)
                timings.setdefault(name, []).append(time.perf_counter() - started)
                last_graphql[0] = time.perf_counter()

        page.on("request", on_request)
        page.on("requestfinished", on_finished)
        page.on("requestfailed", on_finished)
        # warm-up: the app's JavaScript into the browser cache, as for a user who has the UI open
        page.goto(server.url + "/assets", wait_until="networkidle", timeout=300_000)
        timings.clear()
        t0 = time.perf_counter()
        page.goto(server.url + USERS_PAGE, wait_until="networkidle", timeout=600_000)
        idle = time.perf_counter() - t0
        browser.close()
    seconds = (last_graphql[0] - t0) if last_graphql[0] > t0 else idle
    slowest = sorted(((max(v), k, len(v)) for k, v in timings.items()), reverse=True)[:4]
    say(f"UI in Chromium: {USERS_PAGE} loaded (last GraphQL response) in {seconds:.2f} s; network idle after "
        f"{idle:.2f} s; slowest GraphQL operations: " + ", ".join(f"{k} {s:.2f} s (x{n})" for s, k, n in slowest))
    return {"seconds": seconds, "idle_s": idle, "browser": True, "slowest": slowest}


def part_partitions(args, root: Path) -> dict:
    from moods_pipeline.defs.partitions import USERS_PARTITION

    count = args.partitions
    say(f"== part partitions: {count:,} dynamic partitions, {load()}")
    out: dict = {"partitions": count}
    with MongoOnly(root / "partitions") as stack:
        # The sensor's Mongo read on SecantusDB (a Python query engine) is timed at
        # --sensor-users; the partitions themselves are made-up DIDs, added as the sensor would.
        sensor_users = min(args.sensor_users, count)
        db_name = seed_offline(stack, sensor_users, args.seed)
        out["sensor"] = sensor_tick(stack, db_name, sensor_users, root / "partitions" / "home-sensor")
        home = fresh_home(root / "partitions" / f"home-{count}")
        with open_instance(home) as instance:
            out["adds"] = partition_adds(instance, synthetic_dids(count), args.chunk)
            out["launch"] = cli_launch_path(instance)
            keys = instance.get_dynamic_partitions(USERS_PARTITION)
            env = {k: v for k, v in os.environ.items() if not k.startswith(_PRODUCTION_VARS)}
            env.update(stack.env(db_name, root / "partitions" / "state"))
            server = Webserver(home, env, root / "partitions" / "webserver.log")
            try:
                up = server.wait()
                say(f"dagster-webserver up in {up:.1f} s")
                out["ui"] = ui_page(server, not args.no_ui)
                backfill_id, launch_s = launch_backfill(server, keys)
                say(f"backfill over {len(keys):,} partitions created through GraphQL (launchPartitionBackfill) "
                    f"in {launch_s:.1f} s")
                out["backfill_launch_s"] = launch_s
            finally:
                server.stop()
            daemon = daemon_first_iteration(instance, home, backfill_id, args.daemon_budget,
                                            root / "partitions" / "daemon.log")
            expected_runs = out["launch"]["runs"]
            after_first = daemon["seconds"] - (daemon["first_run_s"] or daemon["seconds"])
            per_run = after_first / max(daemon["runs"] - 1, 1)
            say(f"backfill daemon, first iteration: first run queued {daemon['first_run_s'] or float('nan'):.1f} s after "
                f"it began (planning {len(keys):,} partitions), then {daemon['runs']:,} of {expected_runs:,} runs queued in "
                f"{daemon['seconds']:.0f} s ({1000 * per_run:.0f} ms per run); "
                + ("finished" if daemon["finished"] else
                   f"stopped at the {args.daemon_budget:.0f} s budget: all {expected_runs:,} runs would take about "
                   f"{((daemon['first_run_s'] or 0) + per_run * expected_runs) / 60:.0f} min at this rate")
                + (f"; errors: {daemon['errors']}" if daemon["errors"] else ""))
            out["daemon"] = daemon
            noop = noop_runs(instance, args.noop_partitions)
        small_home = fresh_home(root / "partitions" / "home-small")
        with open_instance(small_home) as small:
            small.add_dynamic_partitions(USERS_PARTITION, keys[:args.noop_partitions])
            noop_small = noop_runs(small, args.noop_partitions)
        for label, n in ((f"{count:,} partitions", noop), (f"{noop_small['partitions']:,} partitions", noop_small)):
            say(f"do-nothing asset, {n['partitions']:,} partitions in {n['runs']} runs, instance holding {label}: "
                f"{n['ms_per_partition']:.1f} ms per partition ({n['cpu_ms_per_partition']:.1f} CPU ms), "
                f"{n['rows_per_partition']:.1f} event-log rows per partition")
        out["noop"], out["noop_small"] = noop, noop_small
        say(f"ratio noop_ms_per_partition_{count}={noop['ms_per_partition']:.1f} "
            f"noop_ms_per_partition_small={noop_small['ms_per_partition']:.1f} "
            f"add_partitions_us={1e6 * out['adds']['add_total_s'] / count:.0f} "
            f"sensor_ms_per_user={1000 * out['sensor']['tick_s'] / sensor_users:.1f} "
            f"ui_page_s={out['ui']['seconds']:.2f}")
    return out


# -- main --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/scale.py", description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["users", "partitions", "all"], default="all")
    parser.add_argument("--users", type=int, default=5000, help="syncable users with real PDS accounts (part users)")
    parser.add_argument("--partitions", type=int, default=50_000, help="dynamic partitions (part partitions)")
    parser.add_argument("--repeats", type=int, default=1, help="repetitions of part users (medians)")
    parser.add_argument("--sensor-users", type=int, default=2000,
                        help="syncable users in Mongo for the partition sensor's tick (part partitions)")
    parser.add_argument("--chunk", type=int, default=5000, help="partitions per add_dynamic_partitions call")
    parser.add_argument("--noop-partitions", type=int, default=500, help="partitions the do-nothing asset runs over")
    parser.add_argument("--no-ui", action="store_true", help="time the page's GraphQL query instead of the browser")
    parser.add_argument("--seed-only", action="store_true", help="part users: seed the accounts and stop")
    parser.add_argument("--daemon-budget", type=float, default=300,
                        help="seconds the backfill daemon's first iteration may run before it is stopped")
    parser.add_argument("--daemon-child", nargs=2, metavar=("HOME", "BACKFILL_ID"), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the persistent directory")
    args = parser.parse_args(argv)
    for name in ("users", "partitions", "repeats", "chunk", "noop_partitions", "sensor_users"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.filterwarnings("ignore")
    args = parse_args(argv)
    if args.daemon_child:
        return daemon_child(Path(args.daemon_child[0]), args.daemon_child[1])
    root = args.dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    wall0 = time.perf_counter()
    failed = False
    if args.part in ("users", "all"):
        result = part_users(args, root)
        failed |= bool(result) and (result["backfill"]["rc"] != 0 or result["audit"]["rc"] != 0)
    if args.part in ("partitions", "all") and not args.seed_only:
        part_partitions(args, root)
    say(f"wall time {time.perf_counter() - wall0:.0f} s; {load()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
