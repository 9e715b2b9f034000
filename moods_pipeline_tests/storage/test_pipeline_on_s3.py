"""The pipeline with ``MOODS_STATE_DIR=s3://bucket/prefix`` on a real S3 endpoint: a backfill and
an audit of two users through the commands (Dagster runs in-process), an erase whose deletions
are journaled there, and the ``journal`` command, in a child process that knows the state only
by the variables, reading them back. Nothing lands on the local disk."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace

import pytest

from moods_pipeline import cli
from moods_pipeline.storage import files
from moods_pipeline.storage.audits import AuditStore
from moods_pipeline.storage.journal import read_journal
from moods_pipeline.storage.results import ResultsStore
from moods_pipeline.sync.catchup import Attempt, CatchupState
from moods_pipeline.sync.firehose_follower import FirehoseFollower
from moods_pipeline_tests.cli.test_entry_point import entry_point
from moods_pipeline_tests.world import add_user, backfill_json, repo_snapshot

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TEXT = "a mood that must stay out of the state"


def command_json(capsys, *argv: str) -> tuple[int, dict]:
    code = cli.main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_backfill_audit_erase_and_journal_on_s3(
    mongo_db, make_account, cli_env, s3_state_dir, local_s3, monkeypatch, capsys, pds
):
    monkeypatch.setenv("MOODS_STATE_DIR", str(s3_state_dir))
    monkeypatch.setenv("PDS_ADMIN_PASSWORD", cli_env.pds_admin_password.reveal())
    settings = replace(cli_env, state_dir=s3_state_dir)
    one = add_user(mongo_db, make_account("sthree"), texts=[f"{TEXT} {i}" for i in range(3)])
    two = add_user(mongo_db, make_account("sthree"), texts=[f"{TEXT} {i}" for i in range(2)])
    selector = ["--user", f"@{one.handle}", "--user", f"@{two.handle}"]

    code, backfill, _ = backfill_json(capsys, *selector)
    assert code == 0 and (backfill["users"], backfill["created"], backfill["failed"]) == (2, 5, 0)
    latest = ResultsStore(settings.state_dir).latest_backfill()
    assert sorted((o.did, o.created) for o in latest) == sorted([(one.did, 3), (two.did, 2)])

    code, audit = command_json(capsys, "audit", *selector)
    assert code == 0 and audit["problems"] == 0
    assert {k: v for k, v in audit["by_status"].items() if v} == {"synced": 5}
    stored = AuditStore(settings.state_dir).load_latest()
    assert sorted(s.did for s in stored) == sorted([one.did, two.did])
    assert sum(len(s.frame()) for s in stored) == 5

    code, erase = command_json(capsys, "erase", "--user", f"@{one.handle}", "--mode", "records", "--apply")
    assert code == 0 and (erase["records_deleted"], erase["left"]) == (3, 0)
    assert repo_snapshot(pds, one.did) == {} and len(repo_snapshot(pds, two.did)) == 2
    report = files.read_json(s3_state_dir / "erase" / f"{erase['run_id']}.json")
    assert report["summary"]["records_deleted"] == 3

    # The journal command in a fresh process: only the variables say where the state is.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "PDS_"))}
    proc = subprocess.run([*entry_point(), "journal", "--json"], env=env,
                          cwd=cli_env.state_dir.parent, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    journal = json.loads(proc.stdout)
    assert journal["deletions"] == 1 and journal["without_result"] == 0
    phases = [(e["phase"], e["did"] if e["phase"] == "intent" else e["outcome"]) for e in journal["entries"]]
    assert phases == [("intent", one.did), ("result", "deleted")]
    assert journal["entries"] == read_journal(s3_state_dir)

    # Everything went to the bucket, nothing to the local disk; no mood text anywhere in it.
    s3 = local_s3.filesystem()
    keys = s3.find(s3_state_dir.path)
    relative = sorted(k[len(s3_state_dir.path) + 1:] for k in keys)
    assert any(k.startswith("journal/") and k.endswith(".json") for k in relative)
    assert {k.split("/")[0] for k in relative} >= {"backfill", "audit", "erase", "journal"}
    assert not any(cli_env.state_dir.rglob("*"))  # the local state dir the fixture made stays empty
    assert not any(TEXT.encode() in s3.cat_file(k) for k in keys if not k.endswith(".parquet"))


def test_follower_statistics_and_catchup_attempts_on_s3(mongo_db, s3_state_dir):
    """The live sensors' state-dir files (the follower's statistics, catch-up attempts and run
    reports) on the object store."""
    from moods_pipeline.storage.mongo import MongoStore

    state = CatchupState(s3_state_dir)
    mood_id = "0123456789abcdef01234567"
    state.save(Attempt(mood_id, "sync", attempts=2, last_status="failed", last_reason="PDS 500"))
    state.save(Attempt("0123456789abcdef01234568", "delete", attempts=1))
    assert state.get(mood_id).attempts == 2 and state.get("0123456789abcdef0123456f") is None
    assert sorted(state.all()) == [mood_id, "0123456789abcdef01234568"]
    state.forget(mood_id)
    assert sorted(state.all()) == ["0123456789abcdef01234568"]

    store = MongoStore(mongo_db.client, mongo_db.name)
    follower = FirehoseFollower(store, "http://pds.example", s3_state_dir, commits=lambda *a, **k: iter(()))
    follower.state.cursor = 9
    follower._save()
    assert FirehoseFollower.load_state(s3_state_dir).cursor == 9
    resumed = FirehoseFollower(store, "http://pds.example", s3_state_dir)
    assert (resumed.resumed_from, resumed.position) == ("file", 9)
