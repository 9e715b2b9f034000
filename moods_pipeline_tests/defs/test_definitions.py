"""The code location loads as Dagster's own tools load it, with no environment and no stack.

`dagster definitions validate` runs as a subprocess: against the repository's workspace.yaml
(what `dagster dev` and `make demo` load), against the module from a directory with no local
stack, with production-like settings that point nowhere (loading must not connect), and against
deploy/workspace.yaml over gRPC with a `dagster code-server` (the production layout).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

# Each test starts Dagster's own command line (and a code server) in a child process.
pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).parent / "dagster")
SCRUBBED_PREFIXES = ("MONGODB_", "PDS_", "MOODS_", "DAGSTER_")


def clean_env(home: Path, **extra: str) -> dict:
    """This process's environment without any setting of the project or of Dagster."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_PREFIXES)}
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env["DAGSTER_HOME"] = str(home)
    env.update(extra)
    return env


def validate(args: list[str], env: dict, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([DAGSTER, "definitions", "validate", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def assert_valid(result: subprocess.CompletedProcess) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "All code locations passed validation" in output, output[-4000:]


def test_dg_check_defs_loads_the_project(tmp_path):
    """Dagster's project tooling (`dg check defs`, as `dg dev` loads it) from the repository root."""
    result = subprocess.run([str(Path(sys.executable).parent / "dg"), "check", "defs"], cwd=REPO,
                            env=clean_env(tmp_path / "home"), capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "All definitions loaded successfully" in output, output[-4000:]
    assert "does not match the virtual environment" not in output


def test_workspace_yaml_validates_without_settings(tmp_path):
    assert_valid(validate(["-w", str(REPO / "workspace.yaml")], clean_env(tmp_path / "home"), cwd=tmp_path))


def test_module_validates_where_no_local_stack_exists(tmp_path):
    # cwd has no .moods/stack: nothing in the definitions may need the local stack to load.
    assert not (tmp_path / ".moods").exists()
    assert_valid(validate(["-m", "moods_pipeline.definitions"], clean_env(tmp_path / "home"), cwd=tmp_path))


def test_loading_does_not_connect_or_print_secrets(tmp_path):
    secret = "admin-password-that-must-not-print"
    env = clean_env(
        tmp_path / "home",
        MONGODB_CONNECTION_STRING="mongodb://moods:mongo-secret-value@127.0.0.1:9/?serverSelectionTimeoutMS=60000",
        MONGODB_NAME="aesthetic",
        PDS_URL="http://127.0.0.1:9",
        PDS_ADMIN_PASSWORD=secret,
        MOODS_ALERT_WEBHOOK_URL="http://127.0.0.1:9/hook",
    )
    started = time.monotonic()
    result = validate(["-m", "moods_pipeline.definitions"], env, cwd=tmp_path)
    assert_valid(result)
    # Nothing listens on port 9: a load that tried to connect would hang on its timeouts.
    assert time.monotonic() - started < 60
    output = result.stdout + result.stderr
    assert secret not in output and "mongo-secret-value" not in output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_deploy_workspace_loads_over_grpc_from_a_code_server(tmp_path):
    port = _free_port()
    env = clean_env(tmp_path / "home", MOODS_CODE_SERVER_HOST="127.0.0.1", MOODS_CODE_SERVER_PORT=str(port))
    log = open(tmp_path / "code-server.log", "w")
    server = subprocess.Popen(
        [DAGSTER, "code-server", "start", "-m", "moods_pipeline.definitions", "-h", "127.0.0.1", "-p", str(port),
         "--location-name", "moods_pipeline"],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "code-server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "code server did not listen within 90 s"
                time.sleep(0.5)
        result = validate(["-w", str(REPO / "deploy" / "workspace.yaml")], env, cwd=tmp_path)
        assert_valid(result)
        assert "code location moods_pipeline" in result.stdout + result.stderr
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_definitions_load_in_process_with_the_ops_sensors():
    from moods_pipeline.definitions import defs
    from moods_pipeline.defs.alerts.sensors import ops_sensors

    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    jobs = {job.name for job in repo.get_all_jobs()}
    assert {"mood_backfill_job", "backfill_summary_job"} <= jobs
    # The operations sensors fit beside everything else (no name clashes, all loadable).
    sensor_names = {s.name for s in repo.sensor_defs}
    extra = [s for s in ops_sensors if s.name not in sensor_names]
    merged = dg.Definitions.merge(defs, dg.Definitions(sensors=extra))
    dg.Definitions.validate_loadable(merged)
    assert {"moods_run_failure_alerts", "moods_health_alerts"} <= {s.name for s in merged.get_repository_def().sensor_defs}


@pytest.mark.parametrize("path", ["deploy/dagster.yaml", "deploy/workspace.yaml"])
def test_deploy_files_parse(path):
    import yaml

    data = yaml.safe_load((REPO / path).read_text())
    assert isinstance(data, dict) and data
