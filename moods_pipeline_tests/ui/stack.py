"""The README's walk-through stack for a real browser: demo users seeded into a fresh database on
a PDS and a MongoDB-wire server, a Dagster home, the CLI's backfill and audit of most of them,
and `moods-pipeline ui` (the Dagster webserver + daemon) serving the UI on a free port of 127.0.0.1.

Used by the browser tests (``conftest.py`` beside this file, on the session's servers) and by
``scripts/ui_screenshots.py`` (on servers of its own). Nothing here imports Playwright.

One seeded user (``UiStack.fresh``) is left out of the CLI's backfill and audit, so the browser
can backfill it by clicking and see records created; the ``users_partition_sensor`` gives it its
partition as it would for a new user. ``MOODS_ROLLOUT=off`` keeps the catch-up sensor from
syncing that user's moods behind the browser's back.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# A handful of users keeps the stack's start-up short on a 2-core machine; the heavy user keeps
# its place (first by sub) with a dozen moods instead of 226.
DEMO_USERS = 6
HEAVY_USER_MOODS = 12
STARTUP_TIMEOUT_S = 150
CLI_TIMEOUT_S = 300

BIN = Path(sys.executable).parent
# The variables of docs/interface.md and Dagster's: never inherited from the caller's shell.
_SCRUBBED_PREFIXES = ("MONGODB_", "PDS_", "MOODS_", "DAGSTER_")


@dataclass(frozen=True)
class DemoUser:
    sub: str
    handle: str  # bare, as in `@handles`
    did: str
    moods: int


@dataclass
class UiStack:
    url: str
    env: dict[str, str] = field(repr=False)
    workdir: Path
    db_name: str
    users: list[DemoUser]
    fresh: DemoUser  # seeded, never backfilled nor audited before the browser gets it
    cli_results: dict[str, dict] = field(default_factory=dict)
    process: subprocess.Popen | None = field(default=None, repr=False)
    log_path: Path | None = None

    @property
    def backfilled(self) -> list[DemoUser]:
        return [u for u in self.users if u.did != self.fresh.did]

    def tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AssertionError(body["errors"])
        return body["data"]

    def cli(self, *argv: str) -> subprocess.CompletedProcess:
        """``moods-pipeline ARGV`` in a child process with the stack's variables."""
        return subprocess.run(
            [str(BIN / "moods-pipeline"), *argv], cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed_demo_users(mongo_uri: str, db_name: str, pds_url: str) -> list[DemoUser]:
    """Production-shaped demo users with real PDS accounts (handles made unique on a shared PDS)."""
    import pymongo

    from moods_pipeline.devstack import demo_data, seed

    data = demo_data.generate(users=DEMO_USERS, odd_cases=False, users_without_moods=0,
                              heavy_user_moods=HEAVY_USER_MOODS)
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=10_000)
    try:
        with seed.pds_account_creator(pds_url) as creator:
            report = seed.seed(client[db_name], data, creator, concurrency=3,
                               label_suffix="-" + secrets.token_hex(2))
        if not report.ok:
            raise RuntimeError(f"seeding failed for {len(report.accounts_failed)} accounts: {report.accounts_failed}")
        users = []
        for doc in client[db_name].users.find({}, {"atproto.did": 1}).sort("_id", 1):
            handle = client[db_name]["@handles"].find_one({"_id": doc["_id"]})["handle"]
            users.append(DemoUser(doc["_id"], handle, doc["atproto"]["did"], len(data.moods_of(doc["_id"]))))
        return users
    finally:
        client.close()


def stack_env(*, mongo_uri: str, db_name: str, pds_url: str, pds_admin_password: str | None,
              state_dir: Path, dagster_home: Path, ui_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env.update(
        MONGODB_CONNECTION_STRING=mongo_uri,
        MONGODB_NAME=db_name,
        PDS_URL=pds_url,
        MOODS_STATE_DIR=str(state_dir),
        MOODS_ROLLOUT="off",
        MOODS_UI_URL=ui_url,
        DAGSTER_HOME=str(dagster_home),
    )
    if pds_admin_password:
        env["PDS_ADMIN_PASSWORD"] = pds_admin_password
    return env


REPO_ROOT = Path(__file__).resolve().parents[2]  # `moods-pipeline ui` (dg dev) reads its pyproject.toml


def ui_command(port: int) -> list[str]:
    """The webserver and the daemon, as the README serves them."""
    return [str(BIN / "moods-pipeline"), "ui", "--port", str(port)]


def start(workdir: Path, *, mongo_uri: str, pds_url: str, pds_admin_password: str | None) -> UiStack:
    """Seed, start the UI (webserver + daemon), run the CLI's backfill and audit meanwhile, and
    wait until the UI answers with the code location loaded and every user has its partition.
    Call ``stop`` afterwards (also when this raises: it stops what it started)."""
    from moods_pipeline.devstack import ensure_dagster_home

    workdir.mkdir(parents=True, exist_ok=True)
    db_name = f"ui_{secrets.token_hex(6)}"
    users = seed_demo_users(mongo_uri, db_name, pds_url)
    fresh = users[-1]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    state_dir = workdir / "state"
    state_dir.mkdir(exist_ok=True)
    home = ensure_dagster_home(workdir / "dagster_home")
    create_storage(home)
    env = stack_env(mongo_uri=mongo_uri, db_name=db_name, pds_url=pds_url, pds_admin_password=pds_admin_password,
                    state_dir=state_dir, dagster_home=home, ui_url=url)
    stack = UiStack(url=url, env=env, workdir=workdir, db_name=db_name, users=users, fresh=fresh,
                    log_path=workdir / "ui.log")
    with open(stack.log_path, "w") as log:
        stack.process = subprocess.Popen(
            ui_command(port), cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,  # its own group: stop() ends all of it
        )
    try:
        # The CLI's runs while the webserver loads (the machine has time to spare while it
        # imports): the walk-through's `demo` backfills and audits before it serves the UI.
        selectors = [arg for u in stack.backfilled for arg in ("--user", f"@{u.handle}")]
        for command in ("backfill", "audit"):
            done = stack.cli(command, *selectors, "--json")
            if done.returncode != 0:
                raise RuntimeError(f"moods-pipeline {command} exited {done.returncode}:\n{done.stderr[-3000:]}")
            stack.cli_results[command] = json.loads(done.stdout)
        wait_ready(stack)
        wait_partitions(stack, {u.did for u in users})
    except BaseException:
        stop(stack)
        raise
    return stack


def create_storage(home: Path) -> None:
    """Create the instance's SQLite tables once, before the UI and the CLI open them at the same
    time (two processes creating them at once: "table alembic_version already exists")."""
    from dagster import AssetKey, DagsterInstance

    # dagster.yaml names its directory by $DAGSTER_HOME; set only for this call.
    before = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with DagsterInstance.from_config(str(home)) as instance:
            instance.get_runs(limit=1)
            instance.get_latest_materialization_event(AssetKey("mood_backfill"))
            instance.all_instigator_state()
    finally:
        if before is None:
            del os.environ["DAGSTER_HOME"]
        else:
            os.environ["DAGSTER_HOME"] = before


WORKSPACE = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } } }"""

PARTITIONS = """query($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) {
    __typename ... on AssetNode { partitionKeys } } }"""


def _poll(stack: UiStack, check, what: str, timeout: float = STARTUP_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        if stack.process is not None and stack.process.poll() is not None:
            raise RuntimeError(f"the UI exited with {stack.process.returncode} while waiting for {what}:\n{stack.tail()}")
        try:
            value = check()
            if value:
                return value
        except (httpx.HTTPError, AssertionError, KeyError, TypeError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not within {timeout:.0f}s (last: {last!r}):\n{stack.tail()}")
        time.sleep(1)


def wait_ready(stack: UiStack) -> None:
    def loaded() -> bool:
        entries = stack.graphql(WORKSPACE)["workspaceOrError"]["locationEntries"]
        for entry in entries:
            if entry["loadStatus"] == "LOADED":
                location = entry["locationOrLoadError"]
                if location["__typename"] == "PythonError":
                    raise RuntimeError(f"the code location failed to load: {location['message']}")
                return True
        return False

    _poll(stack, loaded, "the UI with the code location loaded")


def wait_partitions(stack: UiStack, dids: set[str]) -> None:
    """Until the users partitions hold every seeded user (the CLI adds the ones it runs; the
    ``users_partition_sensor`` the fresh one, on the daemon's first tick)."""
    def present() -> bool:
        node = stack.graphql(PARTITIONS, {"path": ["mood_backfill"]})["assetNodeOrError"]
        return dids <= set(node["partitionKeys"])

    _poll(stack, present, f"the {len(dids)} users' partitions")


def stop(stack: UiStack) -> None:
    proc = stack.process
    if proc is None:
        return
    if proc.poll() is None:
        # Ctrl-C, as a person stops it: dg dev shuts its webserver, daemon and code server down.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of its group is left (its children)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=10)
