"""The `moods-pipeline` command line: selectors, JSON output, exit codes, configuration errors."""

from __future__ import annotations

import json
import shlex

import dagster as dg
import pytest

from moods_pipeline import cli
from moods_pipeline.defs.backfill.sensors import users_partition_sensor
from moods_pipeline.defs.partitions import partition_runs
from moods_pipeline_tests.world import add_user, backfill_json, resources_for

BACKFILL_KEYS = {"users", "users_failed", "moods_live", "created", "already_synced", "pointers_written",
                 "skipped_invalid", "skipped_no_account", "failed", "needs_repair", "seconds", "dry_run"}


@pytest.mark.integration
def test_backfill_all_json_counts_and_exit_codes(cli_env, mongo_db, make_account, capsys):
    ok = add_user(mongo_db, make_account("cliok"), texts=["one", "two", ""])
    add_user(mongo_db, None, moods=2)
    bad = add_user(mongo_db, make_account("clibad"), moods=2, password="wrong-password-for-sure")

    code, summary, err = backfill_json(capsys, "--all", "--dry-run")
    assert code == 0 and summary["dry_run"] is True and summary["created"] == 0
    assert summary["would_create"] == 4

    code, summary, err = backfill_json(capsys, "--all")
    assert BACKFILL_KEYS <= set(summary)
    assert "would_create" not in summary and "would_write_pointers" not in summary  # dry-run counts only
    assert code == 1  # the wrong password leaves moods unsynced
    assert (summary["users"], summary["users_failed"], summary["skipped_no_account"]) == (2, 1, 1)
    assert (summary["moods_live"], summary["created"], summary["skipped_invalid"], summary["failed"]) == (5, 2, 1, 2)
    assert f"FAILED @{bad.handle}" in err and "login failed" in err
    assert "wrong-password-for-sure" not in err

    code, summary, _ = backfill_json(capsys, "--user", f"@{ok.handle}")
    assert code == 0 and summary["created"] == 0 and summary["already_synced"] == 2

    code, summary, _ = backfill_json(capsys, "--user", ok.sub, "--user", ok.did)
    assert code == 0 and summary["users"] == 1


@pytest.mark.integration
def test_first_n_orders_by_sub(cli_env, mongo_db, make_account, capsys):
    users = sorted((add_user(mongo_db, make_account("first"), moods=1) for _ in range(3)), key=lambda u: u.sub)
    code, summary, _ = backfill_json(capsys, "--first", "2")
    assert code == 0 and summary["users"] == 2 and summary["created"] == 2
    code, summary, _ = backfill_json(capsys, "--user", users[2].did, "--dry-run")
    assert summary["would_create"] == 1  # the third user was not in --first 2


@pytest.mark.integration
def test_unknown_user_is_usage_error(cli_env, mongo_db, capsys):
    assert cli.main(["backfill", "--user", "@nobody-here"]) == 2
    assert "no user has the handle @nobody-here" in capsys.readouterr().err


def test_missing_configuration_exits_2_naming_the_setting(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no .moods/stack here: no local stack to fall back on
    assert cli.main(["backfill", "--all"]) == 2
    assert "MONGODB_CONNECTION_STRING is not set" in capsys.readouterr().err
    monkeypatch.setenv("MONGODB_CONNECTION_STRING", "mongodb://127.0.0.1:1")
    monkeypatch.setenv("PDS_URL", "ftp://nope")
    assert cli.main(["backfill", "--all"]) == 2
    assert "PDS_URL" in capsys.readouterr().err
    monkeypatch.setenv("PDS_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("MOODS_NUKE_POLICY", "sometimes")
    assert cli.main(["backfill", "--all"]) == 2
    assert "MOODS_NUKE_POLICY" in capsys.readouterr().err


def test_selector_is_required(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["backfill"])
    assert exit_info.value.code == 2


def test_partition_runs_are_contiguous_and_bounded():
    keys = [f"k{i}" for i in range(10)]
    assert partition_runs(keys, {"k1", "k2", "k3", "k7"}, per_run=2) == [["k1", "k2"], ["k3"], ["k7"]]
    assert partition_runs(keys, set(keys), per_run=50) == [keys]
    assert partition_runs(keys, set(), per_run=5) == []
    with pytest.raises(ValueError):
        partition_runs(keys, set(keys), per_run=0)


@pytest.mark.integration
def test_partition_sensor_adds_each_syncable_user_once(test_settings, mongo_db, make_account, dagster_instance):
    synced = [add_user(mongo_db, make_account("sens"), moods=1) for _ in range(2)]
    add_user(mongo_db, None, moods=1)  # no account: no partition
    add_user(mongo_db, make_account("nomoods"), moods=0)  # no moods: no partition
    shared = make_account("sensh")
    add_user(mongo_db, shared, moods=1)
    add_user(mongo_db, shared, moods=1)  # a DID two users hold: refused, no partition
    dots = add_user(mongo_db, make_account("sendot"), moods=1)
    mongo_db.users.update_one({"_id": dots.sub}, {"$set": {"atproto.did": "did:web:a...b"}})  # no partition
    resources = {"mongo": resources_for(test_settings)["mongo"]}

    def tick(cursor=None):
        with dg.build_sensor_context(instance=dagster_instance, resources=resources, cursor=cursor) as context:
            return users_partition_sensor(context)

    result = tick()
    assert sorted(result.dynamic_partitions_requests[0].partition_keys) == sorted(u.did for u in synced)
    dagster_instance.add_dynamic_partitions("users", list(result.dynamic_partitions_requests[0].partition_keys))
    again = tick()
    assert again.dynamic_partitions_requests == []
    assert isinstance(tick(cursor=again.cursor), dg.SkipReason)


@pytest.mark.integration
def test_backfill_reports_moods_needing_a_repair_exits_1_and_names_the_command(
    cli_env, store, mongo_db, make_account, pds, capsys
):
    from moods_pipeline_tests.sync.test_backfill import NEEDS_REPAIR_ROLES, tamper

    user = add_user(mongo_db, make_account("needr"), texts=[f"mood {i}" for i in range(6)])
    clean = add_user(mongo_db, make_account("needc"), moods=2)
    tamper(pds, store, user)
    hint = f"moods need a repair: run `moods-pipeline repair --user @{user.handle} --user {shlex.quote(clean.sub)} --apply`"

    for dry_run in (["--dry-run"], []):
        code, summary, err = backfill_json(capsys, "--user", f"@{user.handle}", "--user", clean.sub, *dry_run)
        assert code == 1, (dry_run, summary)
        assert BACKFILL_KEYS <= set(summary)
        assert summary["needs_repair"] == len(NEEDS_REPAIR_ROLES) and summary["users_failed"] == 0
        assert f"{len(NEEDS_REPAIR_ROLES)} moods need a repair" in err and hint in err, err
        assert f"NEEDS REPAIR @{user.handle}" in err and "mood 0" not in err
    assert summary["created"] == 2  # the clean user synced all the same

    # The command the hint names fixes them; the next backfill has nothing left.
    assert cli.main(["repair", "--user", f"@{user.handle}", "--user", clean.sub, "--apply", "--json"]) == 0
    capsys.readouterr()
    code, summary, err = backfill_json(capsys, "--user", f"@{user.handle}", "--user", clean.sub)
    assert code == 0 and summary["needs_repair"] == 0 and "need a repair" not in err
    # The audit agrees (a `when` within the tolerance is in step, so not check_invariant's equality).
    assert cli.main(["audit", "--user", f"@{user.handle}", "--user", clean.sub, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["problems"] == 0
