"""A throwaway local stack for benchmarks: PLC + PDS + SecantusDB in one temp dir.

Shared by the benches (``bench/backfill.py``, ``bench/audit.py``)::

    from bench._stack import BenchStack

    with BenchStack.start(pds_log_level="warn") as stack:
        data = demo_data.generate(users=200, moods_per_user=50, odd_cases=False)
        seeded = stack.seed(data, db_name="rep1", label_suffix="-r1")
        stack.mongo_uri, stack.pds_url, stack.admin_password   # Secret: never printed
        stack.pds_cpu_seconds()                                 # CPU s of the PDS process tree
        stack.env(db_name="rep1", state_dir=..., dagster_home=...)  # docs/interface.md variables

Everything lives under one temp dir (removed on stop unless ``keep=True``); every server listens
on 127.0.0.1 only, and the child processes die with the thread that started them. The PDS runs
with rate limits off and open sign-up, like the test stack. Passwords never go to stdout or logs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pymongo

from moods_pipeline.devstack import LocalMongo, LocalPds, LocalPlc
from moods_pipeline.secret import Secret

__all__ = ["BenchStack", "Seeded", "proc_cpu_seconds", "proc_tree_cpu_seconds", "proc_peak_rss_mb",
           "proc_sched_seconds", "machine_cpu_seconds"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (all its threads), in seconds, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    # after the ")" of comm: fields[0] is state (field 3), so utime (14) and stime (15) are 11, 12
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def proc_tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of the process tree rooted at ``pid``: utime + stime of ``pid`` and of every
    live descendant, plus cutime + cstime (children already exited and reaped) of each of them.

    Nothing outside the tree counts: the PLC, SecantusDB and the bench's own client are siblings,
    not descendants, of the PDS. A reaped child's time is in its parent's cutime only, so no
    second is counted twice. (Node's libuv pool, where password hashing runs, is threads of the
    process itself, so today the tree is one process; the walk keeps the figure right if the PDS
    ever forks a worker.)"""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        child = int(entry.name)
        # fields[1] is ppid (field 4); utime, stime, cutime, cstime are fields 14-17
        parents[child] = int(fields[1])
        times[child] = sum(int(v) for v in fields[11:15]) / _CLK_TCK
    if pid not in times:
        raise ProcessLookupError(f"no process {pid}")
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(times[p] for p in tree)


def proc_sched_seconds(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for a CPU) of a process's main thread,
    from /proc/<pid>/schedstat. For the PDS the main thread is Node's JavaScript thread, where
    every commit runs (password checks run in libuv's pool, so a login's CPU mostly shows only in
    :func:`proc_cpu_seconds`). On-CPU + waiting close to a phase's wall time means the PDS was the
    bottleneck; a large waiting share means the machine's CPUs were (other processes, or the
    client and Mongo beside it)."""
    with open(f"/proc/{pid}/schedstat") as fh:
        on_cpu, waiting = fh.read().split()[:2]
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all CPUs (from /proc/stat).
    Over a phase, busy minus the bench's own processes is what others took (a noisy machine)."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / _CLK_TCK, total / _CLK_TCK


def proc_peak_rss_mb(pid: int) -> float | None:
    """VmHWM (peak resident set) of a live process in MB, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Seeded:
    """One seeded data set: its database, the report, and what the backfill must produce."""

    db_name: str
    label_suffix: str
    seconds: float
    accounts: int
    moods: int
    report: Any  # devstack.seed.SeedReport


class BenchStack:
    """PLC + PDS + SecantusDB under one temp dir. Use :meth:`start` (or the context manager)."""

    def __init__(self, root: Path | None = None, *, pds_log_level: str = "warn", keep: bool = False,
                 mongo_storage: str = "memory", persistent: bool = False) -> None:
        """``persistent``: a stack to stop and start again on the same ``root`` with every account
        still usable (bench/scale.py): SecantusDB on disk, the PLC's operations in a state file,
        and the ports of the first start kept in ``root/ports.json``, because the PDS's URL
        (with its port) is in every DID document it created."""
        self._own_root = root is None
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="moods-bench-"))
        self.keep = keep
        ports = self._kept_ports() if persistent else {"plc": 0, "pds": 0, "mongo": 0}
        # A persistent PLC replays every DID's operations (signatures checked) before it listens:
        # minutes for thousands of accounts on a busy machine.
        self.plc = LocalPlc(self.root / "plc", port=ports["plc"], startup_timeout=900 if persistent else 60,
                            state_file=self.root / "plc" / "state.json" if persistent else None)
        self.pds = LocalPds(self.root / "pds", self.plc, port=ports["pds"], invite_required=False,
                            rate_limits=False, log_level=pds_log_level)
        storage = None if mongo_storage == "memory" and not persistent else self.root / "mongo-data"
        self.mongo = LocalMongo(storage, port=ports["mongo"], log_path=self.root / "mongo" / "mongo.log")
        self._client: pymongo.MongoClient | None = None
        self.startup_seconds = 0.0

    def _kept_ports(self) -> dict[str, int]:
        import json

        from moods_pipeline.devstack import free_port

        path = self.root / "ports.json"
        if path.exists():
            return json.loads(path.read_text())
        self.root.mkdir(parents=True, exist_ok=True)
        ports = {name: free_port() for name in ("plc", "pds", "mongo")}
        path.write_text(json.dumps(ports))
        return ports

    # -- lifecycle -----------------------------------------------------------------------------
    @classmethod
    def start(cls, root: Path | None = None, **options: Any) -> "BenchStack":
        stack = cls(root, **options)
        started = time.monotonic()
        try:
            stack.plc.start()
            stack.pds.start()
            stack.mongo.start()
        except BaseException:
            stack.stop()
            raise
        stack.startup_seconds = time.monotonic() - started
        return stack

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        for service in (self.mongo, self.pds, self.plc):
            try:
                service.stop()
            except Exception:  # noqa: BLE001 - stop the rest regardless
                pass
        if self._own_root and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "BenchStack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- facts -----------------------------------------------------------------------------------
    @property
    def pds_url(self) -> str:
        return self.pds.url

    @property
    def mongo_uri(self) -> str:
        return self.mongo.uri

    @property
    def admin_password(self) -> Secret:
        return self.pds.admin_password

    @property
    def pds_pid(self) -> int:
        pid = self.pds.pid
        if pid is None:
            raise RuntimeError("the bench PDS is not running")
        return pid

    @property
    def mongo_pid(self) -> int:
        pid = self.mongo.pid
        if pid is None:
            raise RuntimeError("the bench SecantusDB is not running")
        return pid

    def pds_cpu_seconds(self) -> float:
        """CPU seconds of the PDS's process tree (the node process and any children), nothing else."""
        return proc_tree_cpu_seconds(self.pds_pid)

    def pds_sched_seconds(self) -> tuple[float, float]:
        """(on CPU, waiting for a CPU) seconds of the PDS's main (JavaScript) thread."""
        return proc_sched_seconds(self.pds_pid)

    def mongo_cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.mongo_pid)

    @property
    def client(self) -> pymongo.MongoClient:
        """A pymongo client on the bench SecantusDB (tz-aware, DATETIME_AUTO, as the app reads)."""
        if self._client is None:
            self._client = pymongo.MongoClient(self.mongo_uri, tz_aware=True, datetime_conversion="DATETIME_AUTO",
                                               serverSelectionTimeoutMS=10_000)
        return self._client

    def db(self, name: str):
        return self.client[name]

    def env(self, db_name: str, *, state_dir: Path | None = None, dagster_home: Path | None = None) -> dict[str, str]:
        """docs/interface.md's variables pointing at this stack (for a child process's environment).

        Contains the admin password: pass it to a child's ``env=``, never print it.
        """
        env = {
            "MONGODB_CONNECTION_STRING": self.mongo_uri,
            "MONGODB_NAME": db_name,
            "PDS_URL": self.pds_url,
            "PDS_ADMIN_PASSWORD": self.admin_password.reveal(),
        }
        if state_dir is not None:
            env["MOODS_STATE_DIR"] = str(state_dir)
        if dagster_home is not None:
            env["DAGSTER_HOME"] = str(dagster_home)
        return env

    # -- data ------------------------------------------------------------------------------------
    def seed(self, data, db_name: str, label_suffix: str, *, concurrency: int = 8,
             progress: Callable[[str, int, int], None] | None = None) -> Seeded:
        """Seed ``data`` (a ``demo_data.DemoData``) into a fresh database with fresh PDS accounts.

        ``label_suffix`` (up to 8 of ``[a-z0-9-]``) keeps the handles of this seeding apart from
        earlier ones on the same PDS, so every seeding gets accounts with empty repos.
        """
        from moods_pipeline.devstack.seed import pds_account_creator, seed

        if db_name in self.client.list_database_names():
            raise RuntimeError(f"database {db_name!r} exists already: a bench seeds fresh databases only")
        started = time.monotonic()
        with pds_account_creator(self.pds_url) as creator:
            report = seed(self.client[db_name], data, creator, concurrency=concurrency,
                          progress=progress, label_suffix=label_suffix)
        if not report.ok:
            raise RuntimeError(f"seeding {db_name}: {len(report.accounts_failed)} accounts failed, first: "
                               f"{report.accounts_failed[0][1]}")
        return Seeded(db_name=db_name, label_suffix=label_suffix, seconds=time.monotonic() - started,
                      accounts=report.accounts_created, moods=report.moods_written, report=report)
