"""Quicker writes for a local SQLite Dagster instance (the command line's default
``DAGSTER_HOME``). A PostgreSQL instance (deploy/dagster.yaml) is not touched, nor any SQLite
file outside the home.

A run stores at least two events per user (the planned and the actual materialization), each
written to the run's database and to the asset index. Dagster's SQLite storages, for every one
of those writes, build a new SQLAlchemy engine (so every statement is compiled afresh), open a
connection, commit with a full fsync (WAL journal, ``synchronous=FULL``) and close it, and the
close of the last connection to a WAL database checkpoints it: more fsyncs. On this machine's
disk a 940-user backfill took 126 s, 103 s with the same instance on tmpfs; a do-nothing
partitioned asset cost 30 ms of CPU per partition, 18 ms with engines reused.

For databases under ``DAGSTER_HOME`` this process therefore
- reuses one engine per database (its compiled-statement cache with it; still one connection
  per write, as Dagster asks, since the pool stays a ``NullPool``);
- sets ``synchronous=NORMAL`` on every connection: in WAL mode a commit is then safe when the
  process ends or crashes, and only a power loss or kernel crash can take back the last few
  transactions (never corrupting the database);
- keeps one idle connection open to each of them until the process exits, so that Dagster's
  closes are not the last one and do not checkpoint each time (SQLite still checkpoints every
  1,000 pages, and once at exit).
"""

from __future__ import annotations

import atexit
import os
import sqlite3
import threading
from pathlib import Path

from moods_pipeline.defs.dagster_private import sqlite_event_log_module, sqlite_run_storage_module

_lock = threading.Lock()
_home: str | None = None  # the DAGSTER_HOME being quickened; None until quicken() is called
_held: dict[str, sqlite3.Connection] = {}
_engines: dict[tuple, object] = {}
_STORAGE_MODULES = (sqlite_event_log_module, sqlite_run_storage_module)


def _under_home(path: str) -> bool:
    home = _home
    return bool(home and path) and (path == home or path.startswith(home + os.sep))


def _on_connect(dbapi_connection, _record) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    rows = dbapi_connection.execute("PRAGMA database_list").fetchall()
    path = next((row[2] for row in rows if row[1] == "main"), "")
    if not _under_home(path):
        return
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")
    with _lock:
        if path not in _held:
            _held[path] = sqlite3.connect(path, check_same_thread=False)


def _reusing(create_engine):
    """``create_engine`` that returns the same engine for the same database under the home."""

    def create_or_reuse(url, **options):
        database = getattr(url, "database", None) if not isinstance(url, str) else url.split("///", 1)[-1]
        if not database or not _under_home(str(Path(database).resolve())):
            return create_engine(url, **options)
        key = (str(url), options.get("poolclass"), tuple(sorted((options.get("connect_args") or {}).items())))
        with _lock:
            engine = _engines.get(key)
            if engine is None:
                engine = _engines[key] = create_engine(url, **options)
        return engine

    create_or_reuse.original = create_engine
    return create_or_reuse


def _close_held() -> None:
    with _lock:
        for connection in _held.values():
            try:
                connection.close()
            except sqlite3.Error:
                pass
        _held.clear()


def quicken(dagster_home: str | os.PathLike) -> None:
    """Apply the above to SQLite databases under ``dagster_home`` in this process (idempotent;
    a later call with another home moves it there)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    global _home
    with _lock:
        first = _home is None
        _home = str(Path(dagster_home).resolve())
    if first:
        event.listen(Engine, "connect", _on_connect)
        for module in _STORAGE_MODULES:
            if not hasattr(module.create_engine, "original"):
                module.create_engine = _reusing(module.create_engine)
        atexit.register(_close_held)


def held_databases() -> list[str]:
    """Paths of the databases this process keeps a connection to (for tests and diagnostics)."""
    with _lock:
        return sorted(_held)


def reused_engines() -> int:
    """How many engines this process keeps for reuse."""
    with _lock:
        return len(_engines)
