"""SecantusDB (``secantusd-py``) as a child process: the MongoDB-wire server for tests and local use.

SecantusDB is GPL-2.0 and a dev/test dependency: it runs as a separate process and nothing in
the package imports it. The pipeline talks to it through pymongo only, exactly as to MongoDB.

    mongo = LocalMongo().start()                        # :memory:, data gone on stop
    mongo = LocalMongo(storage_path=dir).start()        # WiredTiger files in dir, kept on restart
    mongo.uri, mongo.kill(), mongo.restart()
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pymongo

from moods_pipeline.devstack import DevStackError, ManagedProcess, free_port, tail, wait_until
from moods_pipeline.devstack.pds import child_env

logger = logging.getLogger(__name__)

_EMPTY_CONFIG = (
    "# Empty on purpose: passing --config stops secantusd-py from auto-discovering\n"
    "# ./secantusd.toml or ~/.secantus/secantusd.toml, so the local server is the same everywhere.\n"
)


def secantusd_executable(name: str = "secantusd-py") -> str:
    """``secantusd-py`` from this interpreter's environment (the venv), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise DevStackError(
            f"{name} not found (next to {sys.executable} or on PATH): run `make setup`, which "
            "installs the dev dependencies (pip install -e '.[dev]', package secantusdb)"
        )
    return found


def _ping(uri: str) -> bool:
    client: pymongo.MongoClient = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=500, connectTimeoutMS=500, socketTimeoutMS=2000
    )
    try:
        client.admin.command("ping")
        return True
    finally:
        client.close()


class LocalMongo:
    """A SecantusDB server on 127.0.0.1.

    ``storage_path=None`` runs it with ``:memory:`` (an ephemeral dir removed on shutdown);
    a directory keeps the data across :meth:`stop`/:meth:`restart` (and :meth:`kill`, up to the
    last write SecantusDB flushed). ``enable_test_commands`` allows ``configureFailPoint``.
    The URI is ``mongodb://127.0.0.1:PORT/``: the server announces itself as the primary of a
    one-node replica set, so sessions, transactions and change streams work as on MongoDB.
    """

    def __init__(
        self,
        storage_path: Path | None = None,
        *,
        port: int = 0,
        enable_test_commands: bool = False,
        log_path: Path | None = None,
        executable: str | None = None,
        detached: bool = False,
        startup_timeout: float = 60.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self.storage_path = Path(storage_path).resolve() if storage_path else None
        self.port = port
        self.enable_test_commands = enable_test_commands
        self.executable = executable
        self.detached = detached
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        if log_path is None:
            base = self.storage_path.parent if self.storage_path else Path(tempfile.mkdtemp(prefix="moods-mongo-"))
            log_path = base / "mongo.log"
        self._log_path = Path(log_path).resolve()
        self._proc: ManagedProcess | None = None
        self.startup_seconds: float | None = None

    @property
    def uri(self) -> str:
        if not self.port:
            raise DevStackError("SecantusDB has not been started")
        return f"mongodb://127.0.0.1:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self._log_path

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.running else None

    def argv(self, port: int) -> list[str]:
        config = self._log_path.parent / "secantusd.toml"
        if not config.exists():
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(_EMPTY_CONFIG)
        args = [
            self.executable or secantusd_executable(),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            str(self.storage_path) if self.storage_path else ":memory:",
            "--log-level",
            "WARNING",
        ]
        if self.enable_test_commands:
            args.append("--enable-test-commands")
        return args + self.extra_args

    def start(self) -> "LocalMongo":
        if self.running:
            return self
        if self.storage_path:
            self.storage_path.mkdir(parents=True, exist_ok=True)
        fixed_port = bool(self.port)
        attempts = 1 if fixed_port else 3
        started = time.monotonic()
        for attempt in range(1, attempts + 1):
            port = self.port or free_port()
            proc = ManagedProcess(
                "SecantusDB",
                self.argv(port),
                self._log_path,
                cwd=self._log_path.parent,
                env=child_env(),
                detached=self.detached,
            )
            proc.spawn()
            self._proc = proc
            uri = f"mongodb://127.0.0.1:{port}/"
            try:
                wait_until(
                    lambda: _ping(uri),
                    proc=proc,
                    timeout=self.startup_timeout,
                    what=f"SecantusDB ({self._log_path})",
                    interval=0.1,
                )
            except DevStackError:
                # A port picked free can be taken before the server binds it: try another.
                if attempt < attempts and proc.exited() is not None and "in use" in tail(self._log_path).lower():
                    logger.warning("SecantusDB port %s was taken; retrying on another port", port)
                    continue
                raise
            self.port = port
            break
        self.startup_seconds = time.monotonic() - started
        logger.info("SecantusDB ready at %s in %.1fs (pid %s)", self.uri, self.startup_seconds, self.pid)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (SIGKILL after ``timeout``): SecantusDB closes WiredTiger cleanly."""
        if self._proc is not None:
            self._proc.stop(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would (for fault tests)."""
        if self._proc is not None:
            self._proc.kill()

    def restart(self) -> "LocalMongo":
        """Stop if running and start on the same port; data survives only with a storage dir."""
        self.stop()
        return self.start()

    def __enter__(self) -> "LocalMongo":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<LocalMongo port={self.port} storage={self.storage_path or ':memory:'} pid={self.pid}>"
