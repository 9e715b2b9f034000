"""Lexicon publication on the real local PDS, through the Dagster job and the CLI."""

from __future__ import annotations

import json

import pytest

from moods_pipeline.atproto.client import PdsClient
from moods_pipeline.atproto.lexicon import default_lexicons
from moods_pipeline.atproto.lexicon_publish import SCHEMA_COLLECTION
from moods_pipeline_tests.world import definitions_for

pytestmark = pytest.mark.integration


def run(settings, instance, apply: bool):
    job = definitions_for(settings).resolve_job_def("publish_lexicons_job")
    result = job.execute_in_process(
        instance=instance, run_config={"ops": {"publish_lexicons": {"config": {"apply": apply}}}}
    )
    assert result.success
    return result.output_for_node("publish_lexicons")


def test_dry_run_then_apply_then_up_to_date(test_settings, dagster_instance, local_pds):
    pds = PdsClient(local_pds.url)
    did = test_settings.lexicon_account
    nsids = sorted(default_lexicons())
    assert "computer.aesthetic.mood" in nsids
    before = {nsid: pds.get_record(did, SCHEMA_COLLECTION, nsid) for nsid in nsids}

    dry = run(test_settings, dagster_instance, apply=False)
    assert dry["dry_run"] and dry["written"] == []
    assert {nsid: pds.get_record(did, SCHEMA_COLLECTION, nsid) for nsid in nsids} == before

    applied = run(test_settings, dagster_instance, apply=True)
    assert sorted(applied["written"]) == sorted(n for n, a in applied["actions"].items() if a != "up-to-date")
    published = pds.get_record(did, SCHEMA_COLLECTION, "computer.aesthetic.mood")
    assert published.value["$type"] == SCHEMA_COLLECTION
    assert published.value["id"] == "computer.aesthetic.mood"
    assert published.value["defs"] == default_lexicons()["computer.aesthetic.mood"].document()["defs"]

    again = run(test_settings, dagster_instance, apply=True)
    assert set(again["actions"].values()) == {"up-to-date"} and again["written"] == []
    assert again["dns_records"] == {"_lexicon.aesthetic.computer": f"did={did}"}
    pds.close()


def test_cli_publish_lexicons_json(test_settings, local_pds, tmp_path, monkeypatch, capsys):
    from moods_pipeline import cli

    env = {
        "MONGODB_CONNECTION_STRING": test_settings.mongodb_connection_string.reveal(),
        "MONGODB_NAME": test_settings.mongodb_name,
        "PDS_URL": test_settings.pds_url,
        "MOODS_LEXICON_ACCOUNT": test_settings.lexicon_account,
        "MOODS_LEXICON_PASSWORD": test_settings.lexicon_password.reveal(),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "MOODS_STATE_DIR": str(tmp_path / "state"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "home").mkdir()
    assert cli.main(["publish-lexicons", "--apply", "--json"]) == 0
    assert cli.main(["publish-lexicons", "--json"]) == 0  # nothing pending after apply
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    assert len(out) == 2
    report = json.loads(out[-1])
    assert report["dry_run"] is True and set(report["actions"].values()) == {"up-to-date"}
    assert "computer.aesthetic.mood: up-to-date" in captured.err
    assert test_settings.lexicon_password.reveal() not in captured.err + captured.out
