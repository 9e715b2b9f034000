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
- reuses one engine per database (its compiled-statement cache with it), with a small pool of
  connections instead of Dagster's ``NullPool``: opening a connection, setting it up and closing
  it took more of a backfill run's main thread than the writes themselves. Dagster disposes the
  engine after every use; for these engines that is a no-op, and the pool's idle connection also
  keeps Dagster's closes from being the last one, which would checkpoint the WAL each time
  (SQLite still checkpoints every 1,000 pages). A pooled connection holds no transaction or lock
  between uses, so other processes (the daemon, the webserver) read and write as before;
- keeps at most ``MAX_OPEN_DATABASES`` such engines (each run has its own database): the least
  recently used one is really disposed, which closes its connections, so a command over
  thousands of users does not run out of file descriptors; all are closed at exit;
- sets ``synchronous=NORMAL`` on every connection: in WAL mode a commit is then safe when the
  process ends or crashes, and only a power loss or kernel crash can take back the last few
  transactions (never corrupting the database).
"""

from __future__ import annotations

import atexit
import os
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path

from moods_pipeline.defs.dagster_private import sqlite_event_log_module, sqlite_run_storage_module

MAX_OPEN_DATABASES = 8  # index, runs, schedules and the shards of the last few runs

_lock = threading.Lock()
_home: str | None = None  # the DAGSTER_HOME being quickened; None until quicken() is called
_engines: OrderedDict[tuple, object] = OrderedDict()  # least recently used first
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


def _reusing(create_engine):
    """``create_engine`` that returns the same pooled engine for the same database under the home."""

    def create_or_reuse(url, **options):
        database = getattr(url, "database", None) if not isinstance(url, str) else url.split("///", 1)[-1]
        if not database or not _under_home(str(Path(database).resolve())):
            return create_engine(url, **options)
        key = (str(url), tuple(sorted((options.get("connect_args") or {}).items())))
        evicted = []
        with _lock:
            engine = _engines.pop(key, None)
            if engine is None:
                pooled = {name: value for name, value in options.items() if name != "poolclass"}
                # A file database's default pool is a QueuePool; SQLAlchemy then opens its
                # connections with check_same_thread=False, since any thread may check one out.
                engine = create_engine(url, pool_size=1, max_overflow=16, **pooled)
                engine.dispose = _keep_pool  # Dagster disposes after every use
            _engines[key] = engine
            while len(_engines) > MAX_OPEN_DATABASES:
                evicted.append(_engines.popitem(last=False)[1])
        for old in evicted:
            _really_dispose(old)
        return engine

    create_or_reuse.original = create_engine
    return create_or_reuse


def _keep_pool(close: bool = True) -> None:
    """Stands in for ``Engine.dispose`` on a reused engine: its pool outlives each use."""


def _really_dispose(engine) -> None:
    """Closes the engine's idle connections (one still checked out is closed when returned)."""
    from sqlalchemy.engine import Engine

    Engine.dispose(engine)


def _close_all() -> None:
    with _lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        _really_dispose(engine)


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
        atexit.register(_close_all)


def open_databases() -> list[str]:
    """The database URLs this process keeps a pooled engine for (for tests and diagnostics)."""
    with _lock:
        return [url for url, _ in _engines]
