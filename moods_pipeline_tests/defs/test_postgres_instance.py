"""The production instance configuration (deploy/dagster.yaml) on a real PostgreSQL.

Each test gets its own database (unique name, dropped afterwards) on the machine's PostgreSQL at
127.0.0.1:5432 (trust auth, user ``postgres``; started with ``pg_ctlcluster`` if it is installed
but down), or else on a throwaway cluster this module makes (``initdb -A trust`` in a temp dir,
``pg_ctl`` on a free port, as the ``postgres`` user when run as root). Without any PostgreSQL
binaries the tests skip, saying why.

What is checked: a backfill and then an audit (each with its summary) run in-process against an
instance loaded from deploy/dagster.yaml, with its settings from DAGSTER_PG_* variables, land
their runs, events, materializations, check evaluations and dynamic partitions in PostgreSQL
(queried directly with psycopg2); and the ``moods_pds_writer`` pool of that file lets only one
PDS-writing step run at a time.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import dagster as dg
import pytest

from moods_pipeline.cli.common import run_job_over_partitions
from moods_pipeline_tests.world import add_user, check_invariant, definitions_for, store_for

# A real PostgreSQL server and Dagster's command line in child processes.
pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEPLOY_YAML = REPO / "deploy" / "dagster.yaml"
SYSTEM_PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


# --- a PostgreSQL server -----------------------------------------------------------------------


def _connect(server: dict, dbname: str = "postgres"):
    import psycopg2

    conn = psycopg2.connect(host=server["host"], port=server["port"], user=server["user"], dbname=dbname,
                            connect_timeout=5)
    conn.autocommit = True
    return conn


def _usable(server: dict) -> bool:
    try:
        _connect(server).close()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not this server"
        return False


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _start_system_cluster() -> None:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions or not shutil.which("pg_ctlcluster") or os.geteuid() != 0:
        return
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
                   capture_output=True, timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnCluster:
    """A throwaway cluster: initdb -A trust in a temp dir, pg_ctl on a free port."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        self.base = Path(tempfile.mkdtemp(prefix="moods-pg-"))
        self.data = self.base / "data"
        self.port = _free_port()
        self.as_user: list[str] = []
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            self.as_user = ["runuser", "-u", "postgres", "--"]
            self.user = "postgres"
            shutil.chown(self.base, "postgres")

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> dict:
        self._run(self.initdb, "-A", "trust", "-U", self.user, "-D", str(self.data))
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.base / "pg.log"), "-w", "-t", "60",
                  "-o", f"-p {self.port} -h 127.0.0.1 -k {self.base}", "start")
        return {"host": "127.0.0.1", "port": self.port, "user": self.user}

    def stop(self) -> None:
        subprocess.run([*self.as_user, self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_server():
    if _usable(SYSTEM_PG):
        yield SYSTEM_PG
        return
    _start_system_cluster()
    if _usable(SYSTEM_PG):
        yield SYSTEM_PG
        return
    cluster = OwnCluster()
    if not cluster.initdb or not cluster.pg_ctl:
        pytest.skip("no PostgreSQL: nothing answers on 127.0.0.1:5432 and initdb/pg_ctl are not installed")
    try:
        server = cluster.start()
    except subprocess.CalledProcessError as exc:
        cluster.stop()
        pytest.skip(f"no PostgreSQL: could not start a throwaway cluster: {exc.stderr.decode()[-300:]}")
    try:
        yield server
    finally:
        cluster.stop()


@pytest.fixture
def pg_database(pg_server):
    """A fresh database (unique name), dropped afterwards; yields (server, name)."""
    name = f"moods_dagster_test_{uuid.uuid4().hex[:12]}"
    conn = _connect(pg_server)
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield pg_server, name
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()


@pytest.fixture
def pg_instance(pg_database, tmp_path, monkeypatch):
    """A DagsterInstance loaded from deploy/dagster.yaml with DAGSTER_PG_* naming the test's database."""
    server, name = pg_database
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY_YAML, home / "dagster.yaml")
    for var, value in {"DAGSTER_PG_HOST": server["host"], "DAGSTER_PG_PORT": str(server["port"]),
                       "DAGSTER_PG_USER": server["user"], "DAGSTER_PG_PASSWORD": "unused-with-trust-auth",
                       "DAGSTER_PG_DB": name}.items():
        monkeypatch.setenv(var, value)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        yield instance, server, name
    finally:
        instance.dispose()


def query(server: dict, dbname: str, sql: str, *args):
    conn = _connect(server, dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


# --- tests -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_backfill_runs_and_events_land_in_postgres(pg_instance, mongo_db, make_account, test_settings):
    instance, server, db = pg_instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"

    users = [add_user(mongo_db, make_account(f"pg{i}"), moods=3 + i) for i in range(3)]
    defs = definitions_for(test_settings)
    run_config = {"ops": {"mood_backfill": {"config": {"dry_run": False}}}}
    run_ids = run_job_over_partitions(instance, "mood_backfill_job", [u.did for u in users], run_config, defs=defs)
    summary = defs.resolve_job_def("backfill_summary_job").execute_in_process(instance=instance)
    assert summary.success
    assert check_invariant(store_for(test_settings), _pds(test_settings), users) == 3 + 4 + 5

    # The rows, read straight from PostgreSQL.
    runs = dict(query(server, db, "SELECT run_id, status FROM runs"))
    assert runs == {**{r: "SUCCESS" for r in run_ids}, summary.run_id: "SUCCESS"}
    jobs = {row[0] for row in query(server, db, "SELECT pipeline_name FROM runs")}
    assert jobs == {"mood_backfill_job", "backfill_summary_job"}
    events = dict(query(server, db, "SELECT run_id, count(*) FROM event_logs GROUP BY run_id"))
    assert set(events) == set(runs) and all(n > 3 for n in events.values())
    materialized = query(
        server, db,
        "SELECT partition FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
        "AND asset_key = %s AND run_id = ANY(%s)", '["mood_backfill"]', run_ids,
    )
    assert sorted(p for (p,) in materialized) == sorted(u.did for u in users)
    keys = {k for (k,) in query(server, db, "SELECT asset_key FROM asset_keys")}
    assert {'["mood_backfill"]', '["backfill_summary"]'} <= keys
    partitions = {p for (p,) in query(server, db, "SELECT partition FROM dynamic_partitions "
                                                  "WHERE partitions_def_name = 'users'")}
    assert partitions == {u.did for u in users}

    # And Dagster reads them back: the summary's numbers are there for the UI to plot.
    metadata = instance.get_latest_materialization_event(
        dg.AssetKey("backfill_summary")).asset_materialization.metadata
    assert metadata["created"].value == 12 and metadata["users"].value == 3 and metadata["failed"].value == 0


@pytest.mark.integration
def test_audit_runs_and_check_evaluations_land_in_postgres(pg_instance, mongo_db, make_account, test_settings):
    instance, server, db = pg_instance
    users = [add_user(mongo_db, make_account(f"pa{i}"), moods=2 + i) for i in range(2)]
    dids = [u.did for u in users]
    backfill_ids = run_job_over_partitions(instance, "mood_backfill_job", dids,
                                           {"ops": {"mood_backfill": {"config": {"dry_run": False}}}},
                                           defs=definitions_for(test_settings))
    defs = definitions_for(test_settings)  # the real ones: a job missing from them fails here
    audit_ids = run_job_over_partitions(instance, "mood_audit_job", dids, {}, defs=defs)
    summary = defs.resolve_job_def("audit_summary_job").execute_in_process(instance=instance)
    assert summary.success

    runs = dict(query(server, db, "SELECT run_id, status FROM runs"))
    assert runs == {**{r: "SUCCESS" for r in backfill_ids + audit_ids}, summary.run_id: "SUCCESS"}
    audited = query(
        server, db,
        "SELECT partition FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
        "AND asset_key = %s", '["mood_audit"]',
    )
    assert sorted(p for (p,) in audited) == sorted(dids)
    checks = dict(query(server, db, "SELECT check_name, execution_status FROM asset_check_executions"))
    assert checks["audited_users_in_step"] == "SUCCEEDED"
    # everyone_in_step is evaluated too; it may WARN about repos other tests left on the shared PDS.
    assert checks["everyone_in_step"] in ("SUCCEEDED", "FAILED")
    metadata = instance.get_latest_materialization_event(dg.AssetKey("audit_summary")).asset_materialization.metadata
    assert metadata["problems"].value == 0 and metadata["by_status.synced"].value == 2 + 3
    assert metadata["sync_rate_pct"].value == 100.0


def _pds(settings):
    from moods_pipeline.atproto.client import PdsClient

    return PdsClient(settings.pds_url)


WRITER_SCRIPT = """
import json, sys, time
import dagster as dg


@dg.op(pool="moods_pds_writer")
def write_to_pds():
    started = time.time()
    time.sleep(1.5)
    print(json.dumps([started, time.time()]), flush=True)

@dg.job(executor_def=dg.in_process_executor)
def writer_job():
    write_to_pds()

with dg.DagsterInstance.from_config(sys.argv[1]) as instance:
    assert writer_job.execute_in_process(instance=instance).success
"""


def test_pds_writer_pool_runs_one_writer_step_at_a_time(pg_instance, tmp_path):
    """deploy/dagster.yaml's pools (granularity op) with the pool's limit set as deploy/README.md
    says: two runs in two processes (as two CLI invocations) whose step is in the
    moods_pds_writer pool never overlap."""
    instance, server, db = pg_instance
    # The deployment's one-time step (deploy/README.md): set the pool's limit explicitly. Left to
    # `default_limit`, two runs that claim the pool for the very first time at the same moment
    # race in Dagster's initialize_concurrency_limit_to_default and one of them fails on
    # PostgreSQL (dagster-io/dagster#33552).
    env = dict(os.environ, DAGSTER_HOME=instance.root_directory)
    setup = subprocess.run([str(Path(sys.executable).parent / "dagster"), "instance", "concurrency", "set",
                            "moods_pds_writer", "1"], env=env, capture_output=True, text=True, timeout=120)
    assert setup.returncode == 0, setup.stderr[-2000:]
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT)
    procs = [
        subprocess.Popen([sys.executable, str(script), instance.root_directory], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    spans = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        spans.append(json.loads(out.strip().splitlines()[-1]))
    (a_start, a_end), (b_start, b_end) = sorted(spans)
    assert b_start >= a_end, f"writer steps overlapped: {spans}"
    limits = query(server, db, 'SELECT concurrency_key, "limit" FROM concurrency_limits')
    assert ("moods_pds_writer", 1) in limits
