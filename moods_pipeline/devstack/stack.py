"""``moods-pipeline stack up|down|status``: the local stack as detached processes.

Everything lives under ``<root>/.moods/``:

    .moods/stack/stack.json          connection facts (settings.py reads it); present while up
    .moods/stack/config.json         ports (kept so DID documents stay right) and the lexicon account
    .moods/stack/{plc,pds,mongo}.pid pid files of the detached processes
    .moods/stack/admin_password      PDS admin password            (0600)
    .moods/stack/lexicon_password    lexicon account's password    (0600)
    .moods/stack/plc/                PLC directory log and state.json (its DIDs, replayed on start)
    .moods/stack/pds/                PDS data (SQLite: accounts, repos), secrets.json (0600), pds.log
    .moods/stack/mongo/              SecantusDB files (data/) and mongo.log
    .moods/dagster_home/             DAGSTER_HOME (dagster.yaml written once)
    .moods/state/                    MOODS_STATE_DIR

The processes run in their own sessions, so they outlive the command that started them;
``stack down`` stops them and keeps the data. ``stack up`` is idempotent: services already
running are reported, not started twice; stale pid files are removed.

The functions return data; the CLI prints. ``StackUp.export_lines`` are the shell ``export``
lines of docs/interface.md's settings, secrets as ``"$(cat FILE)"``, never their values.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import secrets
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import pymongo

from moods_pipeline.atproto.client import PdsClient, PdsError
from moods_pipeline.devstack import (
    DEFAULT_PDS_DIR,
    DevStackError,
    free_port,
    pid_alive,
    pid_cmdline,
    port_in_use,
    signal_and_wait,
    write_private,
)
from moods_pipeline.devstack.dagster_home import ensure_dagster_home
from moods_pipeline.devstack.mongo import LocalMongo, secantusd_executable
from moods_pipeline.devstack.pds import LocalPds, LocalPlc, check_npm_packages, node_executable
from moods_pipeline.secret import Secret

logger = logging.getLogger(__name__)

MONGODB_NAME = "aesthetic"
LEXICON_HANDLE = "lexicons.test"
LEXICON_EMAIL = "lexicons@example.com"
DEFAULT_PORTS = {"plc": 2582, "pds": 2583, "mongo": 27018}
"""Used on the first ``stack up`` when free (else any free port); then kept in config.json."""

SERVICES = ("plc", "mongo", "pds")
_TITLES = {"plc": "PLC directory", "pds": "PDS", "mongo": "SecantusDB"}
_MARKERS = {"plc": ("launcher.mjs", " plc "), "pds": ("launcher.mjs", " pds "), "mongo": ("secantusd",)}
STACK_JSON_KEYS = (
    "mongodb_uri",
    "mongodb_name",
    "pds_url",
    "plc_url",
    "admin_password_file",
    "lexicon_account",
    "lexicon_password_file",
)


@dataclass(frozen=True)
class StackPaths:
    root: Path

    @classmethod
    def of(cls, root: Path | str) -> "StackPaths":
        return cls(Path(root).expanduser().resolve())

    @property
    def moods(self) -> Path:
        return self.root / ".moods"

    @property
    def stack(self) -> Path:
        return self.moods / "stack"

    @property
    def stack_json(self) -> Path:
        return self.stack / "stack.json"

    @property
    def config(self) -> Path:
        return self.stack / "config.json"

    @property
    def admin_password(self) -> Path:
        return self.stack / "admin_password"

    @property
    def lexicon_password(self) -> Path:
        return self.stack / "lexicon_password"

    @property
    def dagster_home(self) -> Path:
        return self.moods / "dagster_home"

    @property
    def state_dir(self) -> Path:
        return self.moods / "state"

    @property
    def plc_dir(self) -> Path:
        return self.stack / "plc"

    @property
    def pds_dir(self) -> Path:
        return self.stack / "pds"

    @property
    def mongo_dir(self) -> Path:
        return self.stack / "mongo"

    def pid_file(self, service: str) -> Path:
        return self.stack / f"{service}.pid"

    def log(self, service: str) -> Path:
        return {"plc": self.plc_dir / "plc.log", "pds": self.pds_dir / "pds.log", "mongo": self.mongo_dir / "mongo.log"}[
            service
        ]


@dataclass
class ServiceStatus:
    name: str  # "plc" | "pds" | "mongo"
    running: bool
    pid: int | None
    url: str | None
    log_path: Path
    healthy: bool | None = None
    note: str = ""  # "started in 2.4s", "already running", ...
    startup_seconds: float | None = None

    @property
    def title(self) -> str:
        return _TITLES[self.name]

    def line(self) -> str:
        state = "running" if self.running else "stopped"
        if self.running and self.healthy is False:
            state = "running but not answering"
        parts = [f"{self.title:<13} {state}"]
        if self.pid and self.running:
            parts.append(f"pid {self.pid}")
        if self.url:
            parts.append(self.url)
        if self.note:
            parts.append(f"({self.note})")
        return "  ".join(parts)


@dataclass
class StackUp:
    root: Path
    already_running: bool  # every service was running before this call
    services: list[ServiceStatus]
    export_lines: list[str]
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """Human-readable report (for stderr); the export lines are separate (for stdout)."""
        head = "local stack already running" if self.already_running else f"local stack up in {self.seconds:.1f}s"
        return [head, *(s.line() for s in self.services), *self.messages]


@dataclass
class StackStatus:
    root: Path
    services: list[ServiceStatus]
    stack_json: dict | None

    @property
    def running(self) -> bool:
        return all(s.running and s.healthy is not False for s in self.services)

    @property
    def partly_running(self) -> bool:
        return any(s.running for s in self.services)

    def lines(self) -> list[str]:
        if self.running:
            head = f"local stack running ({self.root / '.moods' / 'stack'})"
        elif self.partly_running:
            head = "local stack partly running: run `moods-pipeline stack up` (or `stack down`)"
        else:
            head = "local stack not running (start it with `moods-pipeline stack up`)"
        out = [head, *(s.line() for s in self.services)]
        if self.stack_json and not self.partly_running:
            out.append("stale stack.json left by a crashed stack: `moods-pipeline stack down` removes it")
        return out


# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(paths: StackPaths) -> Iterator[None]:
    paths.stack.mkdir(parents=True, exist_ok=True)
    paths.stack.chmod(0o700)
    with open(paths.stack / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _running_pid(paths: StackPaths, service: str) -> tuple[int | None, str]:
    """(pid, note): the service's pid if its pid file names a live process of this stack."""
    pid_file = paths.pid_file(service)
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None, ""
    cmdline = f" {pid_cmdline(pid)} "
    if pid_alive(pid) and all(m in cmdline for m in _MARKERS[service]) and str(paths.stack) in cmdline:
        return pid, ""
    pid_file.unlink(missing_ok=True)
    return None, f"stale pid file {pid_file.name} (pid {pid}) removed"


def _urls(ports: dict[str, int]) -> dict[str, str]:
    return {
        "plc": f"http://localhost:{ports['plc']}",
        "pds": f"http://localhost:{ports['pds']}",
        "mongo": f"mongodb://127.0.0.1:{ports['mongo']}/",
    }


def _health(service: str, url: str, timeout: float = 2.0) -> bool:
    try:
        if service == "mongo":
            client: pymongo.MongoClient = pymongo.MongoClient(
                url, serverSelectionTimeoutMS=int(timeout * 1000), connectTimeoutMS=int(timeout * 1000)
            )
            try:
                client.admin.command("ping")
                return True
            finally:
                client.close()
        path = "/_health" if service == "plc" else "/xrpc/_health"
        return httpx.get(url + path, timeout=timeout).status_code == 200
    except Exception:  # noqa: BLE001 - any failure means "not answering"
        return False


def _wait_healthy(service: str, url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if _health(service, url):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _pds_dir(paths: StackPaths) -> Path:
    """``<root>/pds`` when the stack runs from a checkout, else the package's own checkout."""
    candidate = paths.root / "pds"
    return candidate if (candidate / "launcher.mjs").is_file() else DEFAULT_PDS_DIR


def _choose_ports(paths: StackPaths, config: dict, requested: dict[str, int] | None) -> dict[str, int]:
    ports = dict(config.get("ports") or {})
    for service in SERVICES:
        if ports.get(service):
            continue
        wanted = (requested or DEFAULT_PORTS).get(service, 0)
        ports[service] = wanted if wanted and not port_in_use(wanted) else free_port()
    return ports


def _start_service(
    service: str, paths: StackPaths, ports: dict[str, int], urls: dict[str, str], *, invite_required: bool,
    startup_timeout: float,
) -> ServiceStatus:
    port = ports[service]
    if port_in_use(port):
        raise DevStackError(
            f"cannot start the {_TITLES[service]}: port {port} (kept in {paths.config}) is in use by "
            f"another process. Stop that process, or remove the \"ports\" entry from {paths.config} "
            "to pick new ports (accounts created before keep the old port in their DID documents)"
        )
    proc: LocalPlc | LocalPds | LocalMongo
    if service == "plc":
        proc = LocalPlc(
            paths.plc_dir,
            port=port,
            state_file=paths.plc_dir / "state.json",
            log_path=paths.log("plc"),
            pds_dir=_pds_dir(paths),
            detached=True,
            startup_timeout=startup_timeout,
        )
    elif service == "pds":
        proc = LocalPds(
            paths.pds_dir,
            urls["plc"],
            port=port,
            invite_required=invite_required,
            secrets_file=paths.pds_dir / "secrets.json",
            log_path=paths.log("pds"),
            pds_dir=_pds_dir(paths),
            detached=True,
            startup_timeout=startup_timeout,
        )
    else:
        proc = LocalMongo(
            paths.mongo_dir / "data",
            port=port,
            log_path=paths.log("mongo"),
            detached=True,
            startup_timeout=startup_timeout,
        )
    proc.start()
    assert proc.pid is not None
    paths.pid_file(service).write_text(f"{proc.pid}\n")
    return ServiceStatus(
        service,
        running=True,
        pid=proc.pid,
        url=urls[service],
        log_path=paths.log(service),
        healthy=True,
        note=f"started in {proc.startup_seconds:.1f}s",
        startup_seconds=proc.startup_seconds,
    )


def _admin_password(paths: StackPaths) -> Secret:
    for candidate, key in (
        (paths.pds_dir / "pds.ready.json", "admin_password"),
        (paths.pds_dir / "secrets.json", "adminPassword"),
    ):
        data = _read_json(candidate)
        if data and data.get(key):
            return Secret(data[key])
    raise DevStackError(f"the PDS admin password is missing from {paths.pds_dir}/secrets.json")


def _ensure_lexicon_account(paths: StackPaths, config: dict, pds_url: str, admin: Secret, invite_required: bool) -> str:
    """The lexicon authority account's DID; created once (handle lexicons.test), with the
    project's PDS client like every other account (an invite code from the admin API when the
    PDS requires one)."""
    with PdsClient(pds_url, timeout=60) as client:
        known = config.get("lexicon") or {}
        if known.get("did") and paths.lexicon_password.exists():
            try:
                found = client.describe_repo(known["did"])
            except PdsError as exc:  # deactivated, taken down: make it usable again below
                logger.warning("lexicon account %s is not usable (%s)", known["did"], exc)
                found = None
            if found is not None:
                return known["did"]
            logger.warning("lexicon account %s is not on the PDS: creating it again", known["did"])

        password = Secret(secrets.token_urlsafe(24))
        pds_admin = client.admin(admin)
        try:
            invite_code = pds_admin.create_invite_code(1) if invite_required else None
            did, _ = client.create_account(LEXICON_HANDLE, LEXICON_EMAIL, password, invite_code=invite_code)
        except PdsError as exc:
            if "Handle already taken" not in (exc.message or ""):
                raise DevStackError(f"creating the lexicon account {LEXICON_HANDLE} failed: {exc}") from None
            # The account exists but its password was lost: reset it with the admin API.
            try:
                did = client.resolve_handle(LEXICON_HANDLE)
                if did is None:
                    raise DevStackError(f"{LEXICON_HANDLE} is taken but resolves to no DID") from None
                pds_admin.update_account_password(did, password)
            except PdsError as reset_exc:
                raise DevStackError(f"resetting the lexicon account's password failed: {reset_exc}") from None
    write_private(paths.lexicon_password, password.reveal() + "\n")
    config["lexicon"] = {"did": did, "handle": LEXICON_HANDLE}
    return did


def export_lines(paths: StackPaths, stack: dict) -> list[str]:
    """docs/interface.md's settings as shell ``export`` lines; secrets as ``"$(cat FILE)"``."""
    q = shlex.quote
    lines = [
        f"export MONGODB_CONNECTION_STRING={q(stack['mongodb_uri'])}",
        f"export MONGODB_NAME={q(stack['mongodb_name'])}",
        f"export PDS_URL={q(stack['pds_url'])}",
        f'export PDS_ADMIN_PASSWORD="$(cat {q(stack["admin_password_file"])})"',
    ]
    if stack.get("lexicon_account"):
        lines.append(f"export MOODS_LEXICON_ACCOUNT={q(stack['lexicon_account'])}")
    if stack.get("lexicon_password_file"):
        lines.append(f'export MOODS_LEXICON_PASSWORD="$(cat {q(stack["lexicon_password_file"])})"')
    lines += [
        f"export DAGSTER_HOME={q(str(paths.dagster_home))}",
        f"export MOODS_STATE_DIR={q(str(paths.state_dir))}",
    ]
    return lines


def stack_up(
    root: Path = Path("."),
    *,
    ports: dict[str, int] | None = None,
    invite_required: bool = False,
    startup_timeout: float = 120.0,
) -> StackUp:
    """Start whatever part of the local stack is not running; write stack.json; return the exports.

    ``ports`` (``{"plc", "pds", "mongo"}``; 0 = any free port) applies only to the first start
    under ``root``: afterwards the ports in config.json are reused, because the PDS's URL is
    written into its accounts' DID documents. ``invite_required`` mirrors production (the
    admin API then issues invite codes); the default leaves sign-up open.
    """
    paths = StackPaths.of(root)
    started_at = time.monotonic()
    # Fail before starting anything if a piece is missing.
    node_executable()
    check_npm_packages(_pds_dir(paths), ("@atproto/pds", "@did-plc/server"))
    secantusd_executable()

    with _locked(paths):
        config = _read_json(paths.config) or {}
        chosen = _choose_ports(paths, config, ports)
        config["ports"] = chosen
        write_private(paths.config, json.dumps(config, indent=2) + "\n")
        urls = _urls(chosen)
        messages: list[str] = []
        statuses: dict[str, ServiceStatus] = {}
        to_start: list[str] = []
        for service in SERVICES:
            pid, note = _running_pid(paths, service)
            if note:
                messages.append(note)
            if pid is None:
                to_start.append(service)
                continue
            healthy = _wait_healthy(service, urls[service], timeout=min(startup_timeout, 30.0))
            if not healthy:
                raise DevStackError(
                    f"the {_TITLES[service]} (pid {pid}) is running but does not answer at {urls[service]}; "
                    f"see {paths.log(service)}, then `moods-pipeline stack down` and `stack up`"
                )
            statuses[service] = ServiceStatus(
                service, True, pid, urls[service], paths.log(service), healthy=True, note="already running"
            )

        def start(service: str) -> ServiceStatus:
            return _start_service(
                service, paths, chosen, urls, invite_required=invite_required, startup_timeout=startup_timeout
            )

        # The PDS needs the PLC directory; SecantusDB starts beside the PDS.
        if "plc" in to_start:
            statuses["plc"] = start("plc")
        rest = [s for s in to_start if s != "plc"]
        if rest:
            with ThreadPoolExecutor(max_workers=len(rest)) as pool:
                for service, status in zip(rest, pool.map(start, rest)):
                    statuses[service] = status

        admin = _admin_password(paths)
        write_private(paths.admin_password, admin.reveal() + "\n")
        lexicon_did = _ensure_lexicon_account(paths, config, urls["pds"], admin, invite_required)
        write_private(paths.config, json.dumps(config, indent=2) + "\n")

        home = ensure_dagster_home(paths.dagster_home)
        paths.state_dir.mkdir(parents=True, exist_ok=True)
        stack = {
            "mongodb_uri": urls["mongo"],
            "mongodb_name": MONGODB_NAME,
            "pds_url": urls["pds"],
            "plc_url": urls["plc"],
            "admin_password_file": str(paths.admin_password),
            "lexicon_account": lexicon_did,
            "lexicon_password_file": str(paths.lexicon_password),
        }
        assert tuple(stack) == STACK_JSON_KEYS
        write_private(paths.stack_json, json.dumps(stack, indent=2) + "\n")
        messages.append(f"Dagster home {home}; state dir {paths.state_dir}")
        messages.append(f"lexicon account {LEXICON_HANDLE} ({lexicon_did})")
        return StackUp(
            root=paths.root,
            already_running=not to_start,
            services=[statuses[s] for s in ("pds", "mongo", "plc")],
            export_lines=export_lines(paths, stack),
            messages=messages,
            seconds=time.monotonic() - started_at,
        )


def stack_status(root: Path = Path(".")) -> StackStatus:
    """Which services of the stack under ``root`` run and answer."""
    paths = StackPaths.of(root)
    config = _read_json(paths.config) or {}
    ports = config.get("ports") or {}
    services = []
    for service in ("pds", "mongo", "plc"):
        pid, _ = _running_pid(paths, service) if paths.stack.exists() else (None, "")
        url = _urls(ports)[service] if ports else None
        healthy = _health(service, url) if (pid and url) else None
        services.append(ServiceStatus(service, pid is not None, pid, url, paths.log(service), healthy=healthy))
    return StackStatus(root=paths.root, services=services, stack_json=_read_json(paths.stack_json))


def stack_down(root: Path = Path(".")) -> list[str]:
    """Stop the stack's processes (data, ports and secrets stay); remove stack.json. Returns report lines."""
    paths = StackPaths.of(root)
    if not paths.stack.exists():
        return ["local stack not running (nothing under .moods/stack)"]
    lines: list[str] = []
    with _locked(paths):
        paths.stack_json.unlink(missing_ok=True)
        for service in ("pds", "mongo", "plc"):
            pid, note = _running_pid(paths, service)
            if note:
                lines.append(note)
            if pid is None:
                lines.append(f"{_TITLES[service]}: not running")
                continue
            started = time.monotonic()
            clean = signal_and_wait(pid, timeout=20.0 if service == "mongo" else 10.0, what=_TITLES[service])
            paths.pid_file(service).unlink(missing_ok=True)
            how = "stopped" if clean else "killed (did not stop on SIGTERM)"
            lines.append(f"{_TITLES[service]}: {how} (pid {pid}, {time.monotonic() - started:.1f}s)")
        for ready in (paths.pds_dir / "pds.ready.json", paths.plc_dir / "plc.ready.json"):
            ready.unlink(missing_ok=True)
    lines.append(f"data kept under {paths.stack}")
    return lines
