"""`moods-pipeline ui`: the Dagster UI (webserver + daemon) on the existing data, started through
the installed entry point as an operator does, asked over GraphQL what it serves, stopped with
Ctrl-C (SIGINT to its process group, as a terminal sends it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest

from moods_pipeline_tests.cli.test_entry_point import entry_point

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]  # `dg dev` reads the project's pyproject.toml
STARTUP_TIMEOUT_S = 180  # dg dev starts a code server, the webserver and the daemon: slow on 2 busy cores
STOP_TIMEOUT_S = 60

QUERY = """{ repositoriesOrError { ... on RepositoryConnection { nodes {
  assetNodes { assetKey { path } }
  sensors { name sensorState { status } } } } } }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_definitions_with_the_daemon_and_stops_on_ctrl_c(cli_env, tmp_path):
    port = free_port()
    log = tmp_path / "ui.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([*entry_point(), "ui", "--port", str(port)], cwd=REPO_ROOT, env=dict(os.environ),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        data = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                response = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": QUERY}, timeout=10)
                nodes = response.json()["data"]["repositoriesOrError"].get("nodes") or []
                if nodes:
                    data = nodes[0]
                    break
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                pass
            time.sleep(2)
        assert data is not None, log.read_text(errors="replace")[-3000:]
        assets = {"/".join(a["assetKey"]["path"]) for a in data["assetNodes"]}
        assert {"users", "migration_report", "backfill_summary", "audit_summary"} <= assets
        sensors = {s["name"]: s["sensorState"]["status"] for s in data["sensors"]}
        assert sensors["summaries_automation_sensor"] == "RUNNING"
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text(errors="replace")
    assert proc.returncode is not None
    assert "superseded" not in text.lower() and "deprecat" not in text.lower(), text[-3000:]
    assert f"http://127.0.0.1:{port}" in text
    # Serving re-ran nothing: no run in the instance (no summary on an empty deployment either).
    with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
        assert instance.get_runs_count() == 0
    # Nothing is left listening.
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
