"""The local stack that tests and the demo start by themselves.

- :class:`~moods_pipeline.devstack.pds.LocalPlc` / :class:`~moods_pipeline.devstack.pds.LocalPds`:
  a PLC directory and the reference ``@atproto/pds`` (Node, ``pds/launcher.mjs``), on 127.0.0.1.
- :class:`~moods_pipeline.devstack.mongo.LocalMongo`: SecantusDB (``secantusd-py``), a
  MongoDB-wire-protocol server for tests and local use only (GPL-2.0: run as a separate process,
  never imported).
- :func:`~moods_pipeline.devstack.dagster_home.ensure_dagster_home`: a ``dagster.yaml``.
- :func:`~moods_pipeline.devstack.stack.stack_up` / ``stack_down`` / ``stack_status``: the
  detached stack behind ``moods-pipeline stack up|down|status``, under ``.moods/stack/``.

This module holds the process plumbing the classes share; the classes are re-exported lazily
so that importing one part does not import the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PDS_DIR = REPO_ROOT / "pds"
"""Where ``package.json``, ``node_modules`` and ``launcher.mjs`` live."""

__all__ = [
    "DEFAULT_PDS_DIR",
    "DevStackError",
    "LocalMongo",
    "LocalPds",
    "LocalPlc",
    "ensure_dagster_home",
    "free_port",
    "stack_down",
    "stack_status",
    "stack_up",
]

if TYPE_CHECKING:  # pragma: no cover
    from moods_pipeline.devstack.dagster_home import ensure_dagster_home
    from moods_pipeline.devstack.mongo import LocalMongo
    from moods_pipeline.devstack.pds import LocalPds, LocalPlc
    from moods_pipeline.devstack.stack import stack_down, stack_status, stack_up

_LAZY = {
    "LocalPds": "moods_pipeline.devstack.pds",
    "LocalPlc": "moods_pipeline.devstack.pds",
    "LocalMongo": "moods_pipeline.devstack.mongo",
    "ensure_dagster_home": "moods_pipeline.devstack.dagster_home",
    "stack_up": "moods_pipeline.devstack.stack",
    "stack_down": "moods_pipeline.devstack.stack",
    "stack_status": "moods_pipeline.devstack.stack",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


class DevStackError(RuntimeError):
    """A local-stack process could not be started or reached; the message says why and what to do."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def tail(path: Path, lines: int = 30, max_chars: int = 6000) -> str:
    """The last lines of a log file (the stack's logs never contain secrets)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    out = "\n".join(text.splitlines()[-lines:])
    return out[-max_chars:] if out else "(log is empty)"


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.replace(tmp, path)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:  # not Linux: the finalizers still stop the process
        pass


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone; our own zombies are reaped)."""
    if pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        if state in (b"Z", b"X"):
            return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def signal_and_wait(pid: int, timeout: float, what: str) -> bool:
    """SIGTERM, wait up to ``timeout``, then SIGKILL. True if it stopped on SIGTERM."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    logger.warning("%s (pid %s) did not stop within %.0fs; killing it", what, pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)
    return False


class ManagedProcess:
    """One child process with its output appended to a log file (an undrained pipe blocks Node).

    ``detached=True`` puts it in a new session so it outlives the caller (``stack up``);
    otherwise it gets SIGTERM when the thread that started it exits (Linux ``PDEATHSIG``), so
    a crashed test run leaves no servers behind. Start and restart from a long-lived thread.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        detached: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.cwd = cwd
        self.env = env
        self.detached = detached
        self.popen: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def spawn(self) -> subprocess.Popen:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {self.name} ===\n".encode())
            log.flush()
            kwargs: dict[str, Any] = {}
            if self.detached:
                kwargs["start_new_session"] = True
            elif sys.platform.startswith("linux"):
                kwargs["preexec_fn"] = _die_with_parent
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                close_fds=True,
                **kwargs,
            )
        return self.popen

    def exited(self) -> int | None:
        """The exit code if the process has ended, else None."""
        return None if self.popen is None else self.popen.poll()

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if not self.running:
            self._reap()
            return
        assert self.popen is not None
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s (pid %s) did not stop within %.0fs; killing it", self.name, self.pid, timeout)
            self.popen.kill()
            self.popen.wait(10)

    def kill(self) -> None:
        if self.running:
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait(10)
        self._reap()

    def _reap(self) -> None:
        if self.popen is not None:
            with contextlib.suppress(Exception):
                self.popen.wait(0)


def wait_until(
    ready: Callable[[], Any],
    *,
    proc: ManagedProcess,
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> Any:
    """Poll ``ready()`` until it returns a truthy value; fail fast if the process exits."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        code = proc.exited()
        if code is not None:
            raise DevStackError(
                f"{what} exited early with code {code}; last lines of {proc.log_path}:\n{tail(proc.log_path)}"
            )
        try:
            value = ready()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling; report the last one on timeout
            last_error = exc
        if time.monotonic() >= deadline:
            proc.kill()
            cause = f" (last check: {type(last_error).__name__}: {last_error})" if last_error else ""
            raise DevStackError(
                f"{what} did not become ready within {timeout:.0f}s{cause}; "
                f"last lines of {proc.log_path}:\n{tail(proc.log_path)}"
            )
        time.sleep(interval)
