"""Exit codes and ``--json`` through the installed entry point (docs/interface.md "Command line").

Each test runs ``.venv/bin/moods-pipeline`` as its own process, as an operator does, with the
variables of docs/interface.md pointing at the test stack, and reads stdout whole: with
``--json`` it must parse as exactly one JSON object, nothing before or after (Dagster's output,
progress, warnings and logs go to stderr). Each process pays a Python and Dagster start, so the
cases are few and share their runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moods_pipeline_tests.world import add_user, dead_url

pytestmark = pytest.mark.integration

# Bounds a hung child; a dead MongoDB costs pymongo's 10 s server selection (storage.mongo.connect).
CHILD_TIMEOUT_S = 300


def entry_point() -> list[str]:
    """The console script pyproject.toml installs, else the module it points at."""
    script = Path(sys.executable).parent / "moods-pipeline"
    return [str(script)] if script.exists() else [sys.executable, "-m", "moods_pipeline.cli.app"]


def run(cwd: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The command in a child process with this process's environment (which ``cli_env`` set),
    or ``env``; stdin closed, so nothing is a terminal but what the test makes one."""
    return subprocess.run(
        [*entry_point(), *argv], cwd=cwd, env=env if env is not None else dict(os.environ),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
    )


def one_json_object(proc: subprocess.CompletedProcess) -> dict:
    """stdout parsed WHOLE: one JSON object and nothing else (``json.loads`` refuses extra data)."""
    data = json.loads(proc.stdout)
    assert isinstance(data, dict), proc.stdout
    assert proc.stdout.count("\n") == 1 and proc.stdout.endswith("\n"), proc.stdout
    return data


def test_backfill_exit_0_when_clean_1_with_a_failed_user_and_stdout_one_json_object(
    cli_env, mongo_db, make_account, tmp_path
):
    ok = add_user(mongo_db, make_account("epok"), moods=2)
    bad = add_user(mongo_db, make_account("epbad"), moods=1, password="wrong-password-for-sure")

    failed = run(tmp_path, "backfill", "--all", "--json")
    assert failed.returncode == 1, failed.stderr[-2000:]
    summary = one_json_object(failed)
    assert (summary["users"], summary["users_failed"], summary["created"]) == (2, 1, 2)
    assert f"FAILED @{bad.handle}" in failed.stderr and "wrong-password-for-sure" not in failed.stderr

    clean = run(tmp_path, "backfill", "--user", f"@{ok.handle}", "--json")
    assert clean.returncode == 0, clean.stderr[-2000:]
    summary = one_json_object(clean)
    assert (summary["users"], summary["users_failed"], summary["already_synced"]) == (1, 0, 2)


def test_verbose_audit_with_a_problem_exits_1_json_on_stdout_debug_on_stderr(
    cli_env, mongo_db, make_account, tmp_path
):
    user = add_user(mongo_db, make_account("epaud"), moods=2)  # never backfilled: 2 missing_on_pds

    proc = run(tmp_path, "-v", "audit", "--user", f"@{user.handle}", "--json")
    assert proc.returncode == 1, proc.stderr[-2000:]
    total = one_json_object(proc)
    assert total["problems"] == 2 and total["by_status"]["missing_on_pds"] == 2
    # -v: this project's DEBUG logs (one per PDS request) go to stderr, never into the JSON.
    assert "DEBUG moods_pipeline." in proc.stderr
    assert user.password not in proc.stderr + proc.stdout


def test_unknown_selector_exits_2_with_nothing_on_stdout(cli_env, tmp_path):
    proc = run(tmp_path, "backfill", "--user", "@nobody-here", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "no user has the handle @nobody-here" in proc.stderr


def test_unreachable_mongodb_exits_2_naming_the_setting(cli_env, tmp_path):
    env = dict(os.environ, MONGODB_CONNECTION_STRING=dead_url().replace("http://", "mongodb://"))
    proc = run(tmp_path, "audit", "--all", "--json", env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "MongoDB unreachable" in proc.stderr and "MONGODB_CONNECTION_STRING" in proc.stderr


def test_missing_setting_exits_2_naming_it(tmp_path):
    # tmp_path has no .moods/stack: no local stack to fall back on; conftest removed the variables.
    proc = run(tmp_path, "backfill", "--all", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "MONGODB_CONNECTION_STRING is not set" in proc.stderr
