"""Erasure end to end: the erase job and `moods-pipeline erase` on the real PDS, a real
Mongo-wire server and a real Dagster instance: dry run, records mode, account mode, exit codes,
what is recorded (rkeys and counts, never text)."""

from __future__ import annotations

import argparse
import json

import dagster as dg
import pytest

from moods_pipeline.cli.common import UsageError
from moods_pipeline.cli.erase import register
from moods_pipeline.defs.erase.jobs import erase_job, load_report
from moods_pipeline.storage.journal import read_journal
from moods_pipeline.sync.backfill import sync_user
from moods_pipeline_tests.world import add_user, repo_snapshot, resources_for

pytestmark = pytest.mark.integration

SECRET_TEXT = "zebra-umbrella-secret-mood"


@pytest.fixture
def cli_env(cli_env, monkeypatch):
    """conftest's operator variables, plus the PDS admin password erase needs."""
    monkeypatch.setenv("PDS_ADMIN_PASSWORD", cli_env.pds_admin_password.reveal())
    return cli_env


def account_exists(pds, settings, did: str) -> bool:
    """The admin API's word on whether the PDS still has the account."""
    return pds.admin(settings.pds_admin_password).get_account_info(did) is not None


def erase_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="moods-pipeline")
    parser.add_argument("-v", "--verbose", action="store_true")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["erase", *argv])
    return args.func(args)


def synced_user(db, make_account, store, pds, prefix: str, moods: int = 3):
    account = make_account(prefix)
    user = add_user(db, account, texts=[f"{SECRET_TEXT} {i}" for i in range(moods)])
    sync_user(store.user_by_sub(user.sub), store, pds)
    assert len(repo_snapshot(pds, user.did)) == moods
    return account, user


def test_job_dry_run_lists_and_writes_nothing(mongo_db, make_account, test_settings, dagster_instance, store, pds):
    _, user = synced_user(mongo_db, make_account, store, pds, "dry")
    defs = dg.Definitions(jobs=[erase_job], resources=resources_for(test_settings))
    for mode in ("records", "account"):
        result = defs.resolve_job_def("erase_job").execute_in_process(
            instance=dagster_instance,
            run_config={"ops": {"erase_users": {"config": {"users": [user.sub], "mode": mode}}}},
        )
        assert result.success
        report = load_report(test_settings.state_dir, result.run_id)
        assert report["summary"]["dry_run"] and report["summary"]["records_found"] == 3
        assert report["users"][0]["status"] == "planned" and len(report["users"][0]["found_rkeys"]) == 3
    assert len(repo_snapshot(pds, user.did)) == 3 and account_exists(pds, test_settings, user.did)
    assert all(m.rkey for m in store.moods_of(user.sub))


def test_cli_records_mode_dry_run_then_apply(
    mongo_db, make_account, cli_env, store, pds, capsys
):
    account, user = synced_user(mongo_db, make_account, store, pds, "rec", moods=4)
    bystander_account, bystander = synced_user(mongo_db, make_account, store, pds, "by", moods=1)
    rkeys = sorted(repo_snapshot(pds, user.did))

    assert erase_cli("--user", f"@{user.handle}", "--mode", "records", "--json") == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] and dry["records_found"] == 4 and dry["records_deleted"] == 0
    assert len(repo_snapshot(pds, user.did)) == 4

    assert erase_cli("--user", f"@{user.handle}", "--mode", "records", "--apply", "--json") == 0
    out = capsys.readouterr().out
    summary = json.loads(out)
    assert (summary["records_deleted"], summary["left"], summary["users_failed"]) == (4, 0, 0)
    assert repo_snapshot(pds, user.did) == {}
    assert account_exists(pds, cli_env, user.did)  # the account stays
    assert all(m.rkey is None for m in store.moods_of(user.sub))
    assert len(repo_snapshot(pds, bystander.did)) == 1

    report_file = cli_env.state_dir / "erase" / f"{summary['run_id']}.json"
    report = json.loads(report_file.read_text())
    assert report["users"][0]["removed_rkeys"] == rkeys
    assert SECRET_TEXT not in report_file.read_text() and SECRET_TEXT not in out

    # Again: nothing left to remove, still exit 0.
    assert erase_cli("--user", user.did, "--mode", "records", "--apply", "--json") == 0
    assert json.loads(capsys.readouterr().out)["records_deleted"] == 0


def test_cli_account_mode_deletes_the_account_and_forgets_it(mongo_db, make_account, cli_env, store, pds, capsys):
    account, user = synced_user(mongo_db, make_account, store, pds, "acct", moods=2)
    assert erase_cli("--user", user.sub, "--mode", "account", "--apply", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["accounts_deleted"], summary["records_deleted"], summary["left"]) == (1, 2, 0)
    assert not account_exists(pds, cli_env, user.did)
    assert "atproto" not in mongo_db.users.find_one({"_id": user.sub})
    # Journaled: one account deletion, intent then result, under this run's id.
    intents = [e for e in read_journal(cli_env.state_dir) if e["phase"] == "intent"]
    assert [(e["kind"], e["did"], e["command"], e["run_id"]) for e in intents] == [
        ("account", user.did, "erase", summary["run_id"])]
    results = [e for e in read_journal(cli_env.state_dir) if e["phase"] == "result"]
    assert [(e["id"], e["outcome"]) for e in results] == [(intents[0]["id"], "deleted")]
    # Idempotent: the user is still selectable by handle and has nothing left to erase.
    assert erase_cli("--user", f"@{user.handle}", "--mode", "account", "--apply", "--json") == 0
    again = json.loads(capsys.readouterr().out)
    assert again["accounts_deleted"] == 0 and again["skipped_no_account"] == 1


def test_cli_exit_1_when_something_is_left(mongo_db, make_account, cli_env, store, pds, capsys, monkeypatch):
    _, user = synced_user(mongo_db, make_account, store, pds, "left", moods=1)
    monkeypatch.setenv("PDS_ADMIN_PASSWORD", "wrong-admin-password")
    assert erase_cli("--user", user.sub, "--mode", "account", "--apply", "--json") == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["users_failed"] == 1 and summary["accounts_deleted"] == 0
    assert "wrong-admin-password" not in captured.out + captured.err
    assert account_exists(pds, cli_env, user.did) and mongo_db.users.find_one({"_id": user.sub})["atproto"]

    # Records mode with a stored password that no longer works: the records stay, exit 1.
    mongo_db.users.update_one({"_id": user.sub}, {"$set": {"atproto.password": "changed-elsewhere"}})
    assert erase_cli("--user", user.sub, "--mode", "records", "--apply", "--json") == 1
    assert json.loads(capsys.readouterr().out)["users_failed"] == 1
    assert len(repo_snapshot(pds, user.did)) == 1


def test_cli_bad_usage(mongo_db, cli_env, monkeypatch):
    with pytest.raises(UsageError, match="no user has the handle"):
        erase_cli("--user", "@nobody-at-all", "--mode", "records")
    monkeypatch.delenv("PDS_ADMIN_PASSWORD")
    with pytest.raises(UsageError, match="PDS_ADMIN_PASSWORD"):
        erase_cli("--all", "--mode", "account", "--apply")
    with pytest.raises(SystemExit) as exc:
        erase_cli("--all", "--mode", "everything")
    assert exc.value.code == 2
