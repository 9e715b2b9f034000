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
    assert create_engine(url_inside, poolclass=sa.pool.NullPool) is create_engine(url_inside, poolclass=sa.pool.NullPool)
    assert create_engine(url_outside, poolclass=sa.pool.NullPool) is not create_engine(url_outside, poolclass=sa.pool.NullPool)
    held = local_instance.held_databases()
    assert str((home / "storage" / "runs.db").resolve()) in held
    assert not any(path.startswith(str(tmp_path / "other.db")) for path in held)


def test_a_dagster_instance_under_a_quickened_home_keeps_its_runs_after_the_process_ends(tmp_path):
    """A run materializes a partition in a child process that quickens the home; a second,
    plain process (no quickening) then reads the run and the materialization back."""
    home = ensure_dagster_home(tmp_path / "dagster_home")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    write = textwrap.dedent(f"""
        import dagster as dg
        from moods_pipeline.defs.local_instance import quicken, held_databases, reused_engines
        quicken({str(home)!r})
        parts = dg.StaticPartitionsDefinition(["a", "b"])
        @dg.asset(partitions_def=parts)
        def thing(context):
            return 1
        instance = dg.DagsterInstance.from_config({str(home)!r})
        result = dg.materialize([thing], instance=instance, partition_key="b")
        assert result.success
        assert held_databases(), "no database was held open"
        assert reused_engines() >= 2, "the run and event-log storages' engines were not reused"
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
    # The held connections closed at exit checkpointed the WAL: every database opens cleanly.
    for db in home.rglob("*.db"):
        sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()
