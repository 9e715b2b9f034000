"""The local SQLite instance's quicker commits: only databases under DAGSTER_HOME change, and a
Dagster instance there still stores and reads runs and asset events."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap

import sqlalchemy as sa

from moods_pipeline.defs import local_instance
from moods_pipeline.devstack.dagster_home import ensure_dagster_home

NORMAL, FULL = 1, 2


def _synchronous(engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql("PRAGMA synchronous").scalar()


def test_only_databases_under_the_home_are_quickened(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    local_instance.quicken(home)
    inside = sa.create_engine(f"sqlite:///{home / 'storage' / 'runs.db'}", poolclass=sa.pool.NullPool)
    (home / "storage").mkdir()
    outside = sa.create_engine(f"sqlite:///{tmp_path / 'other.db'}", poolclass=sa.pool.NullPool)

    assert _synchronous(inside) == NORMAL
    assert _synchronous(outside) == FULL
    create_engine = local_instance.sqlite_event_log_module.create_engine
    url_inside, url_outside = f"sqlite:///{home / 'storage' / 'index.db'}", f"sqlite:///{tmp_path / 'other.db'}"
    reused = create_engine(url_inside, poolclass=sa.pool.NullPool)
    assert reused is create_engine(url_inside, poolclass=sa.pool.NullPool)
    assert create_engine(url_outside, poolclass=sa.pool.NullPool) is not create_engine(url_outside, poolclass=sa.pool.NullPool)
    assert url_inside in local_instance.open_databases()
    assert url_outside not in local_instance.open_databases()

    # Dagster disposes the engine after each use; the reused one keeps its idle connection.
    assert _synchronous(reused) == NORMAL
    reused.dispose()
    assert reused.pool.checkedin() == 1


def test_an_idle_pooled_connection_lets_another_process_write_and_sees_its_writes(tmp_path):
    home = tmp_path / "home"
    (home / "storage").mkdir(parents=True)
    local_instance.quicken(home)
    path = home / "storage" / "shared.db"
    plain = sqlite3.connect(path)
    plain.execute("PRAGMA journal_mode=WAL")
    plain.execute("CREATE TABLE t (x INTEGER)")
    plain.commit()
    engine = local_instance.sqlite_event_log_module.create_engine(f"sqlite:///{path}", poolclass=sa.pool.NullPool)
    with engine.connect() as conn, conn.begin():
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    assert engine.pool.checkedin() == 1  # idle, not closed

    plain.execute("INSERT INTO t VALUES (2)")  # would wait out the busy timeout if the idle one held a lock
    plain.commit()
    with engine.connect() as conn:
        assert sorted(row[0] for row in conn.exec_driver_sql("SELECT x FROM t")) == [1, 2]
    plain.close()


def test_only_the_most_recently_used_databases_stay_open(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "storage").mkdir(parents=True)
    local_instance.quicken(home)
    monkeypatch.setattr(local_instance, "MAX_OPEN_DATABASES", 3)
    create_engine = local_instance.sqlite_run_storage_module.create_engine
    engines = []
    for n in range(5):
        engine = create_engine(f"sqlite:///{home / 'storage' / f'run{n}.db'}", poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engines.append(engine)

    still_open = [url for url in local_instance.open_databases() if str(home) in url]
    assert still_open == [f"sqlite:///{home / 'storage' / f'run{n}.db'}" for n in (2, 3, 4)]
    assert [engine.pool.checkedin() for engine in engines] == [0, 0, 1, 1, 1]  # the evicted ones closed


def test_a_dagster_instance_under_a_quickened_home_keeps_its_runs_after_the_process_ends(tmp_path):
    """A run materializes a partition in a child process that quickens the home; a second,
    plain process (no quickening) then reads the run and the materialization back."""
    home = ensure_dagster_home(tmp_path / "dagster_home")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    write = textwrap.dedent(f"""
        import dagster as dg
        from moods_pipeline.defs.local_instance import quicken, open_databases
        quicken({str(home)!r})
        parts = dg.StaticPartitionsDefinition(["a", "b"])
        @dg.asset(partitions_def=parts)
        def thing(context):
            return 1
        instance = dg.DagsterInstance.from_config({str(home)!r})
        result = dg.materialize([thing], instance=instance, partition_key="b")
        assert result.success
        assert len(open_databases()) >= 2, "the run and event-log storages' engines were not reused"
        print(result.run_id)
    """)
    done = subprocess.run([sys.executable, "-c", write], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    run_id = done.stdout.strip().splitlines()[-1]

    read = textwrap.dedent(f"""
        import dagster as dg
        instance = dg.DagsterInstance.from_config({str(home)!r})
        run = instance.get_run_by_id({run_id!r})
        assert run is not None and run.is_success, run
        event = instance.get_latest_materialization_event(dg.AssetKey("thing"))
        assert event is not None and event.dagster_event.partition == "b"
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", read], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")
    # The pooled connections closed at exit checkpointed the WAL: every database opens cleanly.
    for db in home.rglob("*.db"):
        sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()
