"""The reference PDS and a local PLC directory as child processes (``pds/launcher.mjs``).

Both listen on 127.0.0.1 only. The PDS runs in dev mode (plain http), with hostname
``localhost`` (handles end in ``.test``), its data in ``data_dir`` and its secrets (PLC
rotation key, recovery key, JWT secret, admin password) in a 0600 JSON file, so a restart on
the same data dir, secrets file and port keeps every account. The PLC directory keeps DIDs in
memory; with a ``state_file`` it also writes them to disk and replays them on start.

    plc = LocalPlc(tmp / "plc").start()
    pds = LocalPds(tmp / "pds", plc).start()
    pds.url, pds.admin_password.reveal(), pds.kill(), pds.restart()
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import httpx

from moods_pipeline.devstack import (
    DEFAULT_PDS_DIR,
    DevStackError,
    ManagedProcess,
    wait_until,
)
from moods_pipeline.secret import Secret

logger = logging.getLogger(__name__)

# Variables the launcher never needs: keep production settings out of the child's environment.
_DROP_ENV_PREFIXES = ("PDS_", "MONGODB_", "MOODS_", "PLC_")


def node_executable(node: str | None = None) -> str:
    """The ``node`` to run, or a DevStackError that says how to get one."""
    found = shutil.which(node or "node")
    if not found:
        raise DevStackError(
            f"node not found on PATH ({node or 'node'}): install Node.js 20 "
            "(the reference PDS 0.4 runs on it), then run `make setup`"
        )
    return found


def check_npm_packages(pds_dir: Path, packages: tuple[str, ...]) -> Path:
    """The launcher path, after checking that ``make setup`` installed the npm packages."""
    pds_dir = Path(pds_dir)
    launcher = pds_dir / "launcher.mjs"
    if not launcher.is_file():
        raise DevStackError(f"{launcher} is missing: the checkout is incomplete")
    modules = pds_dir / "node_modules"
    # `make setup` touches node_modules/.installed; the packages themselves are what count.
    missing = [p for p in packages if not (modules / p / "package.json").is_file()]
    if missing:
        raise DevStackError(
            f"npm packages not installed: run `make setup` "
            f"(missing in {modules}: {', '.join(missing) or 'node_modules'})"
        )
    return launcher


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_DROP_ENV_PREFIXES)}


def _read_ready(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _healthy(url: str) -> bool:
    response = httpx.get(url, timeout=2.0)
    return response.status_code == 200


class _NodeService:
    kind = "service"
    packages: tuple[str, ...] = ()
    health_path = "/"

    def __init__(
        self,
        run_dir: Path,
        *,
        port: int,
        log_path: Path | None,
        pds_dir: Path,
        node: str | None,
        detached: bool,
        startup_timeout: float,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.port = port
        self.pds_dir = Path(pds_dir)
        self.node = node
        self.detached = detached
        self.startup_timeout = startup_timeout
        self._log_path = Path(log_path) if log_path else self.run_dir / f"{self.kind.lower()}.log"
        self.ready_file = self.run_dir / f"{self.kind.lower()}.ready.json"
        self._proc: ManagedProcess | None = None
        self._ready: dict | None = None
        self.startup_seconds: float | None = None
        """Wall time of the last start, from spawn to a healthy answer."""

    # -- subclass hooks ----------------------------------------------------------------------
    def _args(self, port: int) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _base_url(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return child_env()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "_NodeService":
        if self.running:
            return self
        node = node_executable(self.node)
        launcher = check_npm_packages(self.pds_dir, self.packages)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ready_file.unlink(missing_ok=True)
        self._ready = None
        started = time.monotonic()
        proc = ManagedProcess(
            self.kind,
            [node, str(launcher), *self._args(self.port)],
            self._log_path,
            cwd=self.run_dir,
            env=self._env(),
            detached=self.detached,
        )
        proc.spawn()
        self._proc = proc
        self._ready = wait_until(
            lambda: _read_ready(self.ready_file),
            proc=proc,
            timeout=self.startup_timeout,
            what=f"{self.kind} ({self._log_path})",
        )
        base = self._base_url()
        remaining = max(5.0, self.startup_timeout - (time.monotonic() - started))
        wait_until(
            lambda: _healthy(base + self.health_path),
            proc=proc,
            timeout=remaining,
            what=f"{self.kind} health check {base}{self.health_path}",
        )
        # A restart must come back on the same port: DID documents name the PDS by its URL.
        self.port = int(base.rsplit(":", 1)[1])
        self.startup_seconds = time.monotonic() - started
        logger.info("%s ready at %s in %.1fs (pid %s)", self.kind, base, self.startup_seconds, proc.pid)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop with SIGTERM (SIGKILL after ``timeout``). Data and port are kept for a restart."""
        if self._proc is not None:
            self._proc.stop(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would (for fault tests)."""
        if self._proc is not None:
            self._proc.kill()

    def restart(self) -> "_NodeService":
        """Stop if running, then start again on the same port, data and secrets."""
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.running else None

    @property
    def log_path(self) -> Path:
        return self._log_path

    def _ready_value(self, key: str) -> str:
        if not self._ready:
            raise DevStackError(f"{self.kind} has not been started")
        return self._ready[key]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        url = self._ready and self._base_url()
        return f"<{type(self).__name__} url={url} pid={self.pid}>"


class LocalPlc(_NodeService):
    """A PLC directory (``@did-plc/server`` with its in-memory database) on 127.0.0.1.

    With ``state_file``, every accepted operation is also written there (0600 JSON) and replayed
    on the next start, so DIDs survive a stop/start.
    """

    kind = "PLC"
    packages = ("@did-plc/server",)
    health_path = "/_health"

    def __init__(
        self,
        run_dir: Path,
        *,
        port: int = 0,
        state_file: Path | None = None,
        log_path: Path | None = None,
        pds_dir: Path = DEFAULT_PDS_DIR,
        node: str | None = None,
        detached: bool = False,
        startup_timeout: float = 60.0,
    ) -> None:
        super().__init__(
            run_dir,
            port=port,
            log_path=log_path,
            pds_dir=pds_dir,
            node=node,
            detached=detached,
            startup_timeout=startup_timeout,
        )
        self.state_file = Path(state_file).resolve() if state_file else None

    def _args(self, port: int) -> list[str]:
        args = ["plc", "--ready-file", str(self.ready_file.resolve()), "--port", str(port)]
        if self.state_file:
            args += ["--state-file", str(self.state_file)]
        return args

    def _base_url(self) -> str:
        return self._ready_value("plc_url").rstrip("/")

    @property
    def url(self) -> str:
        """``http://localhost:PORT`` (the PDS needs ``localhost``, not an IP)."""
        return self._base_url()

    def start(self) -> "LocalPlc":
        super().start()
        return self

    def restart(self) -> "LocalPlc":
        super().restart()
        return self


class LocalPds(_NodeService):
    """The reference ``@atproto/pds`` on 127.0.0.1 in dev mode, against a PLC directory.

    ``plc`` is a :class:`LocalPlc` (kept as ``.plc``) or its URL. Invites are not required and
    rate limits are off unless asked for. The admin password is generated on first start and
    kept in ``secrets_file`` (default ``data_dir/secrets.json``, mode 0600). The log (default
    ``data_dir/pds.log``) never contains it. ``log_level="warn"`` keeps the log small in
    benchmarks.
    """

    kind = "PDS"
    packages = ("@atproto/pds",)
    health_path = "/xrpc/_health"

    def __init__(
        self,
        data_dir: Path,
        plc: LocalPlc | str,
        *,
        port: int = 0,
        invite_required: bool = False,
        rate_limits: bool = False,
        secrets_file: Path | None = None,
        log_path: Path | None = None,
        pds_dir: Path = DEFAULT_PDS_DIR,
        node: str | None = None,
        detached: bool = False,
        startup_timeout: float = 120.0,
        log_level: str = "info",
    ) -> None:
        super().__init__(
            data_dir,
            port=port,
            log_path=log_path,
            pds_dir=pds_dir,
            node=node,
            detached=detached,
            startup_timeout=startup_timeout,
        )
        self.plc = plc if isinstance(plc, LocalPlc) else None
        self._plc_url = None if isinstance(plc, LocalPlc) else str(plc).rstrip("/")
        self.log_level = log_level
        self.invite_required = invite_required
        self.rate_limits = rate_limits
        self.secrets_file = Path(secrets_file).resolve() if secrets_file else self.run_dir.resolve() / "secrets.json"

    @property
    def data_dir(self) -> Path:
        return self.run_dir

    @property
    def plc_url(self) -> str:
        return self.plc.url if self.plc is not None else self._plc_url  # type: ignore[return-value]

    def _args(self, port: int) -> list[str]:
        args = [
            "pds",
            "--ready-file",
            str(self.ready_file.resolve()),
            "--data-dir",
            str(self.run_dir.resolve()),
            "--plc-url",
            self.plc_url,
            "--port",
            str(port),
            "--secrets-file",
            str(self.secrets_file),
        ]
        if self.invite_required:
            args.append("--invite-required")
        if self.rate_limits:
            args.append("--rate-limits")
        return args

    def _base_url(self) -> str:
        return self._ready_value("pds_url").rstrip("/")

    def _env(self) -> dict[str, str]:
        # Pino levels: "info" logs every request (one JSON line each); "warn" keeps only
        # problems, including the cause of every 500, which is logged at "error".
        return {**child_env(), "LOG_LEVEL": self.log_level}

    @property
    def url(self) -> str:
        """``http://localhost:PORT``, the PDS's own public URL (as in its DID documents)."""
        return self._base_url()

    @property
    def admin_password(self) -> Secret:
        return Secret(self._ready_value("admin_password"))

    def start(self) -> "LocalPds":
        if self.plc is not None and not self.plc.running:
            raise DevStackError("the PDS's PLC directory is not running: start it first")
        super().start()
        return self

    def restart(self) -> "LocalPds":
        super().restart()
        return self
