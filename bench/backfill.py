"""Backfill benchmark: the shipped approach, the smallest correct script, and this
project's Dagster pipeline, on one fresh local stack and the same generated data.

    .venv/bin/python -m bench.backfill                       # 200 users x 50 moods, 3 repetitions
    .venv/bin/python -m bench.backfill --users 50 --moods-per-user 20 --repeats 1
    .venv/bin/python -m bench.backfill --scale production    # demo_data's production scale
    .venv/bin/python -m bench.backfill --memory-check        # 100 x 1000: pipeline peak RSS < 500 MB

Phases (each on its own freshly seeded database and freshly created PDS accounts, so every
repetition starts from empty repos and no pointers; all data sets are seeded before the first
measured phase, so seeding never overlaps a measurement):

- ``shipped``: what the platform shipped: for each mood, log in, one ``createRecord`` (the PDS
  picks the rkey), write the rkey back to Mongo; sequential. On a sample of ``--shipped-sample``
  moods of its own small data set (the same per-mood cost whatever the data).
- ``minimal``: the smallest correct script, in this process, plain httpx + pymongo: users in
  order, one login per user (only if something is to be written), ``applyWrites`` batches of at
  most 200 creates (and 100 kB), deterministic rkeys (docs/interface.md), then one ``bulk_write`` of
  pointers per batch. Idempotent through the pointers; no repo read, no retries, no Dagster.
- ``pipeline``: this project end to end as the CLI runs it (``moods-pipeline backfill --all
  --json``: all partitions through Dagster via ``run_job_over_partitions`` plus the summary
  job) in a separate process with a temp ``DAGSTER_HOME`` and ``MOODS_STATE_DIR``, pointed at
  the bench stack by docs/interface.md's variables. The child registers a pymongo ``CommandListener``
  (bench instrumentation only) and times the job runs.

Minimal and pipeline repetitions run in ABBA order (m p p m m p ...) so that drift on a noisy
machine hits both alike; medians are reported. Figures per phase: records/s (wall clock; for the
pipeline the whole child process, Python and Dagster start-up included), the PDS's CPU seconds
per 1,000 records (utime+stime of the PDS's process tree over the phase), SecantusDB's CPU
seconds, time in Mongo (minimal: wall time inside pymongo calls; both: the sum of command
durations a CommandListener saw, which for concurrent users adds overlapping commands), the
client's CPU seconds, and the pipeline process's peak RSS (``wait4`` rusage of that child).

The PDS bound is the records/s the PDS would reach if it were never idle: the records divided by
the PDS CPU seconds the minimal script needed for them (logins included), per repetition, median.
``ratio pipeline/bound`` is the pipeline's rate over it; its target (0.85 at the default size,
0.75 at ``--scale production``) is checked like the pipeline/minimal target.

Every phase is checked afterwards: each syncable user's repo holds exactly its valid live moods'
count of records, every such mood has a pointer, and minimal and pipeline chose the same rkeys.
Nothing prints a password; the PDS admin password goes to the child only in its environment.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NoReturn

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import pymongo  # noqa: E402
from pymongo import UpdateOne, monitoring  # noqa: E402

MOOD_COLLECTION = "computer.aesthetic.mood"
CREATE = "com.atproto.repo.applyWrites#create"
MEMORY_LIMIT_MB = 500
TARGET_RATIO = 2.0
# pipeline rate / PDS bound (records / PDS CPU seconds of the minimal script): how close the
# pipeline comes to a PDS that is never idle. Few moods per user make logins and per-user
# bookkeeping weigh more, hence the lower target at production scale.
TARGET_BOUND = {"default": 0.85, "production": 0.75}
_PRODUCTION_VARS = ("MONGODB_", "PDS_", "MOODS_")


# -- Mongo command timing (a CommandListener; also used inside the pipeline child) ---------------


class MongoCommandTimer(monitoring.CommandListener):
    """Sums the durations of the Mongo commands it sees while ``active``."""

    def __init__(self, active: bool = False) -> None:
        self.active = active
        self._lock = threading.Lock()
        self.seconds = 0.0
        self.commands = 0
        self.by_name: dict[str, list] = {}

    def reset(self) -> None:
        with self._lock:
            self.seconds, self.commands, self.by_name = 0.0, 0, {}

    def _add(self, event) -> None:
        if not self.active:
            return
        seconds = event.duration_micros / 1e6
        with self._lock:
            self.seconds += seconds
            self.commands += 1
            entry = self.by_name.setdefault(event.command_name, [0, 0.0])
            entry[0] += 1
            entry[1] += seconds

    def started(self, event) -> None:
        pass

    def succeeded(self, event) -> None:
        self._add(event)

    def failed(self, event) -> None:
        self._add(event)

    def as_dict(self) -> dict:
        with self._lock:
            return {"seconds": round(self.seconds, 3), "commands": self.commands,
                    "by_name": {k: [v[0], round(v[1], 3)] for k, v in sorted(self.by_name.items())}}


# -- the smallest correct script (self-contained: httpx + pymongo only) ------------------------

_B32 = "234567abcdefghijklmnopqrstuvwxyz"
_MAX_MICROS = (1 << 53) - 1
_MAX_WHEN_MS = (_MAX_MICROS - 999) // 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _tid(micros: int, clock_id: int) -> str:
    n = (micros << 10) | clock_id
    return "".join(_B32[(n >> (5 * i)) & 31] for i in range(12, -1, -1))


def _rkeys(moods: list[tuple[str, int]]) -> dict[str, str]:
    """docs/interface.md record keys: (ObjectId hex, when ms) -> TID; collisions take the next microsecond."""
    taken: set[tuple[int, int]] = set()
    out = {}
    for hex_id, when_ms in sorted(moods):
        h = int.from_bytes(hashlib.sha256(hex_id.encode()).digest()[:8], "big")
        micros, clock_id = when_ms * 1000 + h % 1000, (h // 1000) % 1024
        while (micros, clock_id) in taken:
            micros += 1
        taken.add((micros, clock_id))
        out[hex_id] = _tid(micros, clock_id)
    return out


def _record(doc: dict) -> tuple[dict, int] | None:
    """(lexicon record, when ms) of a valid mood document, None for an invalid one (docs/interface.md)."""
    text, when = doc.get("mood"), doc.get("when")
    if not isinstance(text, str) or not isinstance(when, datetime):
        return None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None
    if size > 5000 or not text.replace("\ufeff", "").strip():
        return None
    when = when.astimezone(timezone.utc)
    ms = (when - _EPOCH) // timedelta(milliseconds=1)
    if not 0 <= ms <= _MAX_WHEN_MS:
        return None
    iso = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    return {"$type": MOOD_COLLECTION, "mood": text, "when": iso, "ref": str(doc["_id"])}, ms


def _batches(items: list, max_count: int = 200, max_bytes: int = 100_000) -> list[list]:
    batches, current, size = [], [], 0
    for item in items:
        this = len(json.dumps(item[2], ensure_ascii=False).encode("utf-8")) + 120
        if current and (len(current) >= max_count or size + this > max_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(item)
        size += this
    if current:
        batches.append(current)
    return batches


def _xrpc(http: httpx.Client, nsid: str, body: dict, token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = http.post(f"/xrpc/{nsid}", json=body, headers=headers)
    if response.status_code != 200:
        try:
            error = response.json().get("error")
        except ValueError:
            error = None
        raise RuntimeError(f"{nsid}: HTTP {response.status_code} {error or ''}".rstrip())
    return response.json()


def _login(http: httpx.Client, did: str, password: str) -> str:
    session = _xrpc(http, "com.atproto.server.createSession", {"identifier": did, "password": password})
    if session.get("did") != did:
        raise RuntimeError(f"login for {did} gave another account")
    return session["accessJwt"]


def _timed_into(stats: dict, key: str):
    """A call wrapper that adds each call's wall time to ``stats[key]`` (the baselines' pymongo time)."""

    def timed(call, *args, **kwargs):
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            stats[key] += time.perf_counter() - started

    return timed


def minimal_backfill(mongo_uri: str, db_name: str, pds_url: str) -> dict:
    """Every valid live mood of every user with an account into its repo; sequential."""
    stats = {"created": 0, "users": 0, "logins": 0, "batches": 0, "invalid": 0, "mongo_call_s": 0.0}
    mongo = _timed_into(stats, "mongo_call_s")
    client = pymongo.MongoClient(mongo_uri, tz_aware=True, datetime_conversion="DATETIME_AUTO")
    db = client[db_name]
    try:
        with httpx.Client(base_url=pds_url, timeout=60) as http:
            users = mongo(lambda: list(db.users.find(
                {"atproto.did": {"$type": "string"}, "atproto.password": {"$type": "string"}},
                {"atproto.did": 1, "atproto.password": 1}).sort("_id", 1)))
            for user in users:
                did, password = user["atproto"]["did"], user["atproto"]["password"]
                docs = mongo(lambda: list(db.moods.find(
                    {"user": user["_id"]}, {"mood": 1, "when": 1, "deleted": 1, "atproto.rkey": 1})))
                if not docs:
                    continue
                stats["users"] += 1
                valid = {}
                for doc in docs:
                    built = _record(doc)
                    if built is None:
                        stats["invalid"] += doc.get("deleted") is not True
                    else:
                        valid[str(doc["_id"])] = (doc, *built)
                # keys over all valid moods, nuked included, so nuking never shifts a key
                rkeys = _rkeys([(hex_id, ms) for hex_id, (_, _, ms) in valid.items()])
                todo = [(doc["_id"], rkeys[hex_id], record) for hex_id, (doc, record, _) in sorted(valid.items())
                        if doc.get("deleted") is not True and not (doc.get("atproto") or {}).get("rkey")]
                if not todo:
                    continue
                token = _login(http, did, password)
                stats["logins"] += 1
                for batch in _batches(todo):
                    _xrpc(http, "com.atproto.repo.applyWrites", {"repo": did, "writes": [
                        {"$type": CREATE, "collection": MOOD_COLLECTION, "rkey": rkey, "value": record}
                        for _, rkey, record in batch]}, token)
                    mongo(db.moods.bulk_write, [UpdateOne({"_id": oid}, {"$set": {"atproto.rkey": rkey}})
                                                for oid, rkey, _ in batch], ordered=False)
                    stats["created"] += len(batch)
                    stats["batches"] += 1
    finally:
        client.close()
    return stats


# -- the shipped approach ------------------------------------------------------------------------


def shipped_backfill(mongo_uri: str, db_name: str, pds_url: str, sample: int) -> dict:
    """As the app's JS did it: per mood, log in, createRecord (PDS-assigned rkey), write the rkey."""
    stats = {"created": 0, "logins": 0, "mongo_call_s": 0.0}
    mongo = _timed_into(stats, "mongo_call_s")
    client = pymongo.MongoClient(mongo_uri, tz_aware=True, datetime_conversion="DATETIME_AUTO")
    db = client[db_name]
    try:
        accounts = {u["_id"]: u["atproto"] for u in mongo(lambda: list(db.users.find(
            {"atproto.did": {"$type": "string"}, "atproto.password": {"$type": "string"}})))}
        moods = mongo(lambda: list(db.moods.find(
            {"deleted": {"$ne": True}, "user": {"$in": sorted(accounts)}}).sort("_id", 1).limit(sample)))
        with httpx.Client(base_url=pds_url, timeout=60) as http:
            for doc in moods:
                built = _record(doc)
                if built is None:
                    continue
                account = accounts[doc["user"]]
                token = _login(http, account["did"], account["password"])
                stats["logins"] += 1
                made = _xrpc(http, "com.atproto.repo.createRecord",
                             {"repo": account["did"], "collection": MOOD_COLLECTION, "record": built[0]}, token)
                rkey = made["uri"].rsplit("/", 1)[-1]
                mongo(db.moods.update_one, {"_id": doc["_id"]}, {"$set": {"atproto.rkey": rkey}})
                stats["created"] += 1
    finally:
        client.close()
    return stats


# -- measuring a phase from outside ------------------------------------------------------------------


class Probe:
    """What the stack and the machine did between construction and :meth:`stop`."""

    def __init__(self, stack) -> None:
        from bench._stack import machine_cpu_seconds

        self.stack, self._machine = stack, machine_cpu_seconds
        self.pds0, self.mongo0 = stack.pds_cpu_seconds(), stack.mongo_cpu_seconds()
        self.sched0, self.machine0 = stack.pds_sched_seconds(), machine_cpu_seconds()
        self.t0 = time.perf_counter()

    def stop(self, client_cpu_s: float) -> dict:
        seconds = time.perf_counter() - self.t0
        pds_cpu = self.stack.pds_cpu_seconds() - self.pds0
        mongo_cpu = self.stack.mongo_cpu_seconds() - self.mongo0
        sched, machine = self.stack.pds_sched_seconds(), self._machine()
        busy = machine[0] - self.machine0[0]
        return {
            "seconds": seconds, "pds_cpu_s": pds_cpu, "mongo_cpu_s": mongo_cpu, "client_cpu_s": client_cpu_s,
            "pds_on_cpu_pct": 100 * (sched[0] - self.sched0[0]) / seconds,
            "pds_wait_cpu_pct": 100 * (sched[1] - self.sched0[1]) / seconds,
            "others_cpu_s": max(0.0, busy - pds_cpu - mongo_cpu - client_cpu_s),
            "cores": (machine[1] - self.machine0[1]) / seconds,
        }


# -- the pipeline child (runs in its own process) --------------------------------------------------


def pipeline_child() -> NoReturn:
    """`moods-pipeline backfill --all --json`, with Mongo command timing and job timing."""
    started = time.perf_counter()
    timer = MongoCommandTimer(active=True)
    monitoring.register(timer)  # before any MongoClient exists
    from moods_pipeline import cli
    from moods_pipeline.cli import backfill as backfill_command  # where the command looks the runners up
    from moods_pipeline.cli.app import exit_process

    timings = {"backfill_job_s": 0.0, "summary_job_s": 0.0}
    real_over_partitions, real_run_job = backfill_command.run_job_over_partitions, backfill_command.run_job

    def timed_over_partitions(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real_over_partitions(*args, **kwargs)
        finally:
            timings["backfill_job_s"] += time.perf_counter() - t0

    def timed_run_job(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real_run_job(*args, **kwargs)
        finally:
            timings["summary_job_s"] += time.perf_counter() - t0

    backfill_command.run_job_over_partitions, backfill_command.run_job = timed_over_partitions, timed_run_job
    rc = cli.main(["backfill", "--all", "--json"])
    sys.stdout.flush()
    stats = {"rc": rc, "total_s": round(time.perf_counter() - started, 3),
             **{k: round(v, 3) for k, v in timings.items()}, "mongo": timer.as_dict()}
    Path(os.environ["BENCH_CHILD_STATS"]).write_text(json.dumps(stats))
    exit_process(rc)  # the console script's own exit, whose cost the wall time includes


def run_pipeline(stack, db_name: str, workdir: Path) -> dict:
    """The pipeline phase: the child process, measured from outside."""
    from moods_pipeline.devstack.dagster_home import ensure_dagster_home

    workdir.mkdir(parents=True, exist_ok=True)
    home = ensure_dagster_home(workdir / "dagster_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PRODUCTION_VARS) and k != "DAGSTER_HOME"}
    env.update(stack.env(db_name, state_dir=workdir / "state", dagster_home=home))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["BENCH_CHILD_STATS"] = str(workdir / "child.json")
    out, err = workdir / "stdout.txt", workdir / "stderr.txt"
    probe = Probe(stack)
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        child = subprocess.Popen([sys.executable, "-m", "bench.backfill", "--pipeline-child"], cwd=workdir,
                                 env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    measured = probe.stop(usage.ru_utime + usage.ru_stime)
    lines = out.read_text().strip().splitlines()
    if not lines or not (workdir / "child.json").exists():
        raise RuntimeError(f"pipeline child exited {child.returncode} without a summary; see {err}:\n"
                           + "\n".join(err.read_text().splitlines()[-20:]))
    summary = json.loads(lines[-1])
    inner = json.loads((workdir / "child.json").read_text())
    return {
        "records": summary["created"], **measured, "peak_rss_mb": usage.ru_maxrss / 1024,
        "mongo_cmd_s": inner["mongo"]["seconds"], "mongo_commands": inner["mongo"]["by_name"],
        "job_s": inner["backfill_job_s"], "summary_job_s": inner["summary_job_s"],
        "failed": summary["failed"], "users_failed": summary["users_failed"], "rc": child.returncode,
    }


# -- phases measured in this process ---------------------------------------------------------------


def run_in_process(stack, timer: MongoCommandTimer, work) -> dict:
    timer.reset()
    probe, cpu0 = Probe(stack), time.process_time()
    timer.active = True
    try:
        stats = work()
    finally:
        timer.active = False
    return {
        "records": stats["created"], **probe.stop(time.process_time() - cpu0), "mongo_call_s": stats["mongo_call_s"],
        "mongo_cmd_s": timer.seconds, "logins": stats.get("logins"), "batches": stats.get("batches"),
    }


# -- checks ----------------------------------------------------------------------------------------


def expected_records(data) -> dict[str, int]:
    """sub -> the number of records a backfill must leave (valid live moods of syncable users)."""
    from moods_pipeline.model import Mood
    from moods_pipeline.sync.mood_record import Invalid, build_record

    syncable = {u.sub for u in data.users if u.syncable}
    counts = {sub: 0 for sub in syncable}
    for doc in data.moods:
        if doc["user"] in syncable and doc.get("deleted") is not True:
            mood = Mood(id=str(doc["_id"]), user=doc["user"], text=doc["mood"], when=doc["when"])
            if not isinstance(build_record(mood), Invalid):
                counts[doc["user"]] += 1
    return counts


def check_phase(stack, db_name: str, expected: dict[str, int]) -> list[str]:
    """Problems found after a phase (empty: every repo and pointer as expected)."""
    db = stack.db(db_name)
    problems = []
    pointers = db.moods.count_documents({"atproto.rkey": {"$exists": True}})
    if pointers != sum(expected.values()):
        problems.append(f"{pointers} pointers in Mongo, expected {sum(expected.values())}")
    dids = {u["_id"]: u["atproto"]["did"] for u in db.users.find({"atproto.did": {"$exists": True}})}
    with httpx.Client(base_url=stack.pds_url, timeout=60) as http:
        for sub, want in expected.items():
            have, cursor = 0, None
            while True:
                params = {"repo": dids[sub], "collection": MOOD_COLLECTION, "limit": 100}
                if cursor:
                    params["cursor"] = cursor
                page = http.get("/xrpc/com.atproto.repo.listRecords", params=params).json()
                have += len(page.get("records") or [])
                cursor = page.get("cursor")
                if not page.get("records") or not cursor:
                    break
            if have != want:
                problems.append(f"{sub}: {have} records on the PDS, expected {want}")
    return problems[:10]


def pointer_map(stack, db_name: str) -> dict[str, str]:
    return {str(d["_id"]): d["atproto"]["rkey"]
            for d in stack.db(db_name).moods.find({"atproto.rkey": {"$exists": True}}, {"atproto.rkey": 1})}


# -- reporting -------------------------------------------------------------------------------------


def rate(r: dict) -> float:
    return r["records"] / r["seconds"] if r["seconds"] else 0.0


def per_1000(result: dict, key: str) -> float:
    return 1000 * result[key] / result["records"] if result["records"] else float("nan")


def describe(name: str, r: dict) -> str:
    """Two lines: the figures, then what the stack and the machine did meanwhile."""
    mongo = f"{r['mongo_call_s']:.1f} s in pymongo calls" if "mongo_call_s" in r else \
        f"{r['mongo_cmd_s']:.1f} s of commands (summed over threads)"
    text = (f"{name:<12} {r['records']:>7,} records in {r['seconds']:7.1f} s = {rate(r):7.1f} records/s | "
            f"PDS CPU {per_1000(r, 'pds_cpu_s'):5.2f} s/1000 records | Mongo {mongo}")
    if "peak_rss_mb" in r:
        text += f" | peak RSS {r['peak_rss_mb']:.0f} MB"
        if r["rc"] != 0:
            text += f" | exit {r['rc']} ({r['users_failed']} users, {r['failed']} moods failed)"
    text += (f"\n{'':12}   CPU s: PDS {r['pds_cpu_s']:.1f}, SecantusDB {r['mongo_cpu_s']:.1f}, client "
             f"{r['client_cpu_s']:.1f}, other processes {r['others_cpu_s']:.1f} ({r['others_cpu_s'] / r['seconds']:.2f} "
             f"of {r['cores']:.0f} cores) | PDS JS thread on CPU {r['pds_on_cpu_pct']:.0f}%, "
             f"waiting for a CPU {r['pds_wait_cpu_pct']:.0f}%")
    if "mongo_call_s" in r:
        text += f" | Mongo commands {r['mongo_cmd_s']:.1f} s"
    if "peak_rss_mb" in r:
        outside = r["seconds"] - r["job_s"] - r["summary_job_s"]
        text += (f" | backfill job runs {r['job_s']:.1f} s, summary job {r['summary_job_s']:.1f} s, "
                 f"start-up and the rest {outside:.1f} s")
    return text


def pds_bound(minimal: dict) -> float:
    """Records/s of a PDS never idle: records over the PDS CPU seconds the minimal script took."""
    return minimal["records"] / minimal["pds_cpu_s"] if minimal["pds_cpu_s"] > 0 else float("nan")


def median_of(results: list[dict]) -> dict:
    keys = [k for k, v in results[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    merged = {k: statistics.median(r[k] for r in results) for k in keys}
    merged["records"] = results[0]["records"]
    merged["seconds"] = statistics.median(r["seconds"] for r in results)
    for key in ("rc", "users_failed", "failed"):
        if key in results[0]:
            merged[key] = max(r[key] for r in results)
    return merged


def say(text: str) -> None:
    print(text, flush=True)


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/backfill.py", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, help="users with moods (default 200; 100 with --memory-check)")
    parser.add_argument("--moods-per-user", type=int, help="moods per user (default 50; 1000 with --memory-check)")
    parser.add_argument("--scale", choices=["production"], help="demo_data's production scale instead")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of minimal and pipeline (median)")
    parser.add_argument("--shipped-sample", type=int, default=300, help="moods for the shipped approach")
    parser.add_argument("--memory-check", action="store_true",
                        help=f"only the pipeline, once: its peak RSS must stay under {MEMORY_LIMIT_MB} MB")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep the stack's temp dir (path printed)")
    parser.add_argument("--pipeline-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_check:
        args.users = args.users or 100
        args.moods_per_user = args.moods_per_user or 1000
    else:
        args.users = args.users or 200
        args.moods_per_user = args.moods_per_user or 50
    return args


def generate(args):
    from moods_pipeline.devstack import demo_data

    if args.scale == "production":
        # users without moods are never partitions; leaving them out only saves account creation
        return demo_data.generate(scale="production", seed=args.seed, users_without_moods=0)
    return demo_data.generate(users=args.users, moods_per_user=args.moods_per_user, seed=args.seed,
                              users_without_moods=0, odd_cases=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pipeline_child:
        return pipeline_child()

    import warnings

    from moods_pipeline.devstack import demo_data

    warnings.filterwarnings("ignore")
    from bench._stack import BenchStack

    wall0 = time.perf_counter()
    data = generate(args)
    expected = expected_records(data)
    total = sum(expected.values())
    shape = "production scale" if args.scale else f"{args.users} users x {args.moods_per_user} moods"
    timer = MongoCommandTimer()
    monitoring.register(timer)
    with BenchStack.start(pds_log_level="warn", keep=args.keep) as stack:
        say(f"bench/backfill: {shape}: {len(expected)} syncable users, {total:,} records to write per repetition; "
            f"stack up in {stack.startup_seconds:.1f} s (PDS log level warn){f', dir {stack.root}' if args.keep else ''}; "
            f"load average {os.getloadavg()[0]:.2f}")
        work = Path(tempfile.mkdtemp(prefix="pipeline-", dir=stack.root))

        if args.memory_check:
            seeded = stack.seed(data, "mem", "-mem")
            say(f"seeded {seeded.accounts} accounts, {seeded.moods:,} moods in {seeded.seconds:.1f} s")
            result = run_pipeline(stack, "mem", work / "mem")
            problems = check_phase(stack, "mem", expected)
            say(describe("pipeline", result))
            say("  Mongo commands of the pipeline (count, summed seconds): " + ", ".join(
                f"{name} {n} ({s:.1f} s)" for name, (n, s) in result["mongo_commands"].items()))
            if problems:
                say("CHECK FAILED: " + "; ".join(problems))
            verdict = "PASS" if result["peak_rss_mb"] < MEMORY_LIMIT_MB and not problems and result["rc"] == 0 else "FAIL"
            say(f"memory-check: pipeline peak RSS {result['peak_rss_mb']:.0f} MB (limit {MEMORY_LIMIT_MB} MB) "
                f"over {result['records']:,} records: {verdict}")
            say(f"wall time {time.perf_counter() - wall0:.0f} s")
            return 0 if verdict == "PASS" else 1

        # Seed everything first: shipped's own small set, then one fresh set per repetition.
        order = []
        for i in range(args.repeats):
            order += [("minimal", i), ("pipeline", i)] if i % 2 == 0 else [("pipeline", i), ("minimal", i)]
        per_user = max(1, min(args.moods_per_user, 50))
        shipped_data = demo_data.generate(users=-(-args.shipped_sample // per_user), moods_per_user=per_user,
                                          seed=args.seed + 1, users_without_moods=0, odd_cases=False)
        t0 = time.perf_counter()
        stack.seed(shipped_data, "shipped", "-s")
        for kind, i in order:
            stack.seed(data, f"{kind}{i}", f"-{kind[0]}{i}")
        say(f"seeded {1 + len(order)} data sets (fresh database and fresh PDS accounts each) in "
            f"{time.perf_counter() - t0:.0f} s")

        results: dict[str, list[dict]] = {"minimal": [], "pipeline": []}
        checks_failed = 0
        shipped = run_in_process(stack, timer, lambda: shipped_backfill(
            stack.mongo_uri, "shipped", stack.pds_url, args.shipped_sample))
        say(describe("shipped", shipped))
        for kind, i in order:
            db_name = f"{kind}{i}"
            if kind == "minimal":
                result = run_in_process(stack, timer, lambda: minimal_backfill(stack.mongo_uri, db_name, stack.pds_url))
            else:
                result = run_pipeline(stack, db_name, work / db_name)
            problems = check_phase(stack, db_name, expected)
            results[kind].append(result)
            say(describe(f"{kind} #{i + 1}", result))
            if kind == "pipeline":
                say("  Mongo commands of the pipeline (count, summed seconds): " + ", ".join(
                    f"{name} {n} ({s:.1f} s)" for name, (n, s) in result["mongo_commands"].items()))
            if problems:
                checks_failed += 1
                say(f"  CHECK FAILED for {db_name}: " + "; ".join(problems))
        if pointer_map(stack, "minimal0") != pointer_map(stack, "pipeline0"):
            checks_failed += 1
            say("  CHECK FAILED: minimal and pipeline chose different rkeys")

        minimal, pipeline = median_of(results["minimal"]), median_of(results["pipeline"])
        say("-- medians of %d --" % args.repeats)
        say(describe("shipped", shipped))
        say(describe("minimal", minimal))
        say(describe("pipeline", pipeline))
        say(f"pipeline peak RSS {pipeline['peak_rss_mb']:.0f} MB (max {max(r['peak_rss_mb'] for r in results['pipeline']):.0f} MB)")
        x, y = rate(pipeline) / rate(minimal), rate(pipeline) / rate(shipped)
        bound = statistics.median(pds_bound(r) for r in results["minimal"])
        z = rate(pipeline) / bound
        target_bound = TARGET_BOUND["production" if args.scale == "production" else "default"]
        say(f"ratio pipeline/minimal={x:.2f} pipeline/shipped={y:.1f}")
        say(f"ratio pipeline/bound={z:.2f}")
        say(f"PDS bound {bound:.1f} records/s ({len(expected)} logins and {total:,} records took the PDS "
            f"{median_of(results['minimal'])['pds_cpu_s']:.1f} CPU s in the minimal script); the pipeline's "
            f"own PDS CPU {pipeline['pds_cpu_s']:.1f} s, the PDS busy {pipeline['pds_cpu_s'] / pipeline['seconds']:.0%} "
            f"of the pipeline's wall time")
        say(f"target pipeline/minimal >= {TARGET_RATIO:g}: {'met' if x >= TARGET_RATIO else 'NOT met'}; "
            f"target pipeline/bound >= {target_bound:g}: {'met' if z >= target_bound else 'NOT met'}; "
            f"wall time {time.perf_counter() - wall0:.0f} s; load average {os.getloadavg()[0]:.2f}")
    # A failed check or a missed target is a failed benchmark: scripts and CI must see it.
    return 1 if checks_failed or x < TARGET_RATIO or z < target_bound else 0


if __name__ == "__main__":
    sys.exit(main())
