"""`whois`, `report`, and the `users` / `migration_report` assets they mirror, on the test stack
after a real backfill and audit (one user in step, one whose stored password is wrong, one
without an account)."""

from __future__ import annotations

import json
import os
import re
from urllib.parse import parse_qs, urlsplit

import dagster as dg
import pytest

from moods_pipeline import cli
from moods_pipeline_tests.world import add_user, definitions_for

pytestmark = pytest.mark.integration

UI = "https://dagster.example.org"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def migrated(cli_env, mongo_db, make_account, capsys, monkeypatch):
    monkeypatch.setenv("MOODS_UI_URL", UI)
    ok = add_user(mongo_db, make_account("whok"), moods=3)
    bad = add_user(mongo_db, make_account("whbad"), moods=2, password="wrong-password-for-sure")
    none = add_user(mongo_db, None, moods=1)
    code, _, backfill_err = run_cli(capsys, "backfill", "--all", "--json")
    assert code == 1  # the wrong password
    code, _, audit_err = run_cli(capsys, "audit", "--all", "--json")
    assert code == 1  # bad's moods are missing
    # The commands' instance (the dagster_instance fixture, set up later, points DAGSTER_HOME elsewhere).
    return ok, bad, none, {"backfill": backfill_err, "audit": audit_err, "home": os.environ["DAGSTER_HOME"]}


def test_whois_report_and_their_assets(migrated, capsys, cli_env, dagster_instance):
    """One world (a backfill and an audit cost ~25 s): whois, report, then the assets."""
    each_command_is_one_unit_in_the_runs_page(migrated)
    whois_prints_one_user_with_links_to_its_partition_pages(migrated, capsys)
    report_figures_are_measured(migrated, capsys)
    users_and_migration_report_assets(migrated, cli_env, dagster_instance)


def each_command_is_one_unit_in_the_runs_page(migrated):
    """Every run of one invocation carries one moods/batch tag; stderr names the filtered Runs page."""
    errs = dict(migrated[3])
    instance = dg.DagsterInstance.from_config(errs.pop("home"))
    batches = {}
    for command, err in errs.items():
        match = re.search(r"(\d+) Dagster runs, tagged moods/batch=(\S+): (\S+)", err)
        assert match, err[-500:]
        runs, batch, url = int(match.group(1)), match.group(2), match.group(3)
        assert batch.startswith(command) and url == f"{UI}/runs?q%5B%5D=tag%3Amoods%2Fbatch%3D{batch}"
        tagged = instance.get_runs(filters=dg.RunsFilter(tags={"moods/batch": batch}))
        assert len(tagged) == runs >= 2  # the command's runs and its summary's run
        batches[command] = {r.job_name for r in tagged}
    assert batches == {"backfill": {"mood_backfill_job", "backfill_summary_job"},
                       "audit": {"mood_audit_job", "audit_summary_job"}}


def whois_prints_one_user_with_links_to_its_partition_pages(migrated, capsys):
    ok, bad, none, _ = migrated
    code, out, _ = run_cli(capsys, "whois", f"@{ok.handle}", "--json")
    assert code == 0
    found = json.loads(out)
    assert (found["sub"], found["handle"], found["did"]) == (ok.sub, ok.handle, ok.did)
    assert (found["status"], found["live_moods"], found["backfill"], found["audit"]) == ("syncable", 3, "ok", "in step")
    assert found["audit_problems"] == 0 and found["backfill_created"] == 3
    page = urlsplit(found["links"]["backfill"])
    assert f"{page.scheme}://{page.netloc}{page.path}" == f"{UI}/assets/mood_backfill"
    assert parse_qs(page.query) == {"view": ["partitions"], "partition": [ok.did]}
    assert found["links"]["audit"].startswith(f"{UI}/assets/mood_audit?")

    code, out, _ = run_cli(capsys, "whois", bad.did, "--json")
    found = json.loads(out)
    assert found["backfill"].startswith("failed: login failed") and found["audit"] == "2 problems"
    assert "wrong-password-for-sure" not in out

    code, out, _ = run_cli(capsys, "whois", none.sub)  # the human form
    assert code == 0 and "no account" in out and "never run" in out

    code, out, err = run_cli(capsys, "whois", "@nobody-has-this-handle")
    assert code == 2 and out == "" and "nobody-has-this-handle" in err


def report_figures_are_measured(migrated, capsys):
    ok, bad, none, _ = migrated
    code, out, _ = run_cli(capsys, "report", "--json")
    assert code == 0
    figures = json.loads(out)["figures"]
    assert figures["total_users"] == 3 and figures["users_with_atproto"] == 2
    assert figures["total_moods"] == 3 + 2 + 1
    assert figures["moods_migrated"] == 3 and figures["moods_failed"] == 2 == figures["failed_syncs"]
    assert figures["moods_with_atproto_uri"] == 3 and figures["moods_in_atproto"] == 3
    assert figures["moods_missing_atproto"] == 2 and figures["manual_fixes_required"] == 2
    assert figures["sync_success_rate_pct"] == 60.0 and figures["error_rate_pct"] == 40.0
    assert figures["average_sync_latency_ms"] is None  # no live mood followed: not measured, not 0

    code, out, _ = run_cli(capsys, "report")
    assert "Final Metrics:" in out and "Average sync latency:" in out and "n/a" in out


def users_and_migration_report_assets(migrated, cli_env, dagster_instance):
    ok, bad, none, _ = migrated
    defs = definitions_for(cli_env)
    for job in ("users_job", "migration_report_job"):
        assert defs.resolve_job_def(job).execute_in_process(instance=dagster_instance).success

    meta = dagster_instance.get_latest_materialization_event(dg.AssetKey("users")).asset_materialization.metadata
    assert meta["users"].value == 3 and meta["users_with_trouble"].value == 1
    table = meta["users_table"].value
    assert [c.name for c in table.schema.columns][:4] == ["handle", "sub", "did", "live_moods"]
    rows = [json.loads(r) if isinstance(r, str) else r.data for r in table.records]
    assert rows[0]["handle"] == f"@{bad.handle}"  # trouble first
    by_handle = {r["handle"]: r for r in rows}
    assert by_handle[f"@{ok.handle}"]["audit_problems"] == 0 and by_handle[f"@{bad.handle}"]["audit_problems"] == 2
    directory = meta["directory"].value
    assert f"[backfill]({UI}/assets/mood_backfill?view=partitions&partition=" in directory

    report = dagster_instance.get_latest_materialization_event(
        dg.AssetKey("migration_report")).asset_materialization.metadata
    assert report["moods_migrated"].value == 3 and isinstance(report["moods_migrated"], dg.IntMetadataValue)
    assert isinstance(report["sync_success_rate_pct"], dg.FloatMetadataValue)
    assert "average_sync_latency_ms" not in report  # not measured: absent, not plotted as 0
    rows = report["report"].value
    assert {c.name: c.type for c in rows.schema.columns}["value"] == "float"
    blocks = {r.data["block"] for r in rows.records}
    assert blocks == {"Migration Stats", "Test Results", "Launch Stats", "Final Metrics"}
