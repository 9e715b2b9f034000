"""The audit on the real local PDS, a real Mongo-wire server and a real Dagster instance: every
status built for real (odd records written with a session), precedence and counts, unreadable
repos, users without accounts, broken logins, orphan repos, the assets' metadata, the CLI."""

from __future__ import annotations

import argparse
import json
import secrets
from dataclasses import dataclass, field
from datetime import timedelta

import dagster as dg
import httpx
import pandas as pd
import pytest
from bson import ObjectId

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.client import PdsClient
from moods_pipeline.atproto.tid import tid_from_parts
from moods_pipeline.cli.common import run_job_over_partitions
from moods_pipeline.model import iso_when
from moods_pipeline.storage.audits import AuditStore
from moods_pipeline.sync import audit as engine
from moods_pipeline.sync.backfill import sync_user
from moods_pipeline.sync.mood_record import build_record
from moods_pipeline.sync.reconcile import reconcile
from moods_pipeline_tests.world import (
    add_user,
    definitions_for,
    store_for,
)

pytestmark = pytest.mark.integration

CREATE = "com.atproto.repo.applyWrites#create"


# --- shared helpers (test_repair.py and test_checks.py use them too) ---------------------------


def audit_definitions(settings, **pds_options) -> dg.Definitions:
    """The project's real Definitions on the test stack: a job missing from definitions.py fails
    the tests that resolve it."""
    return definitions_for(settings, **pds_options)


def with_settings(settings, **changes):
    from dataclasses import replace

    return replace(settings, **changes)


def run_audit_job(instance, settings, users, config=None, **pds_options):
    defs = audit_definitions(settings, **pds_options)
    run_config = {"ops": {"mood_audit": {"config": config or {}}}}
    run_ids = run_job_over_partitions(instance, "mood_audit_job", [u.did for u in users], run_config, defs=defs)
    store = AuditStore(settings.state_dir)
    return run_ids, {s["did"]: s for run_id in run_ids for s in store.load_run(run_id)}


def session_for(pds: PdsClient, account):
    return pds.login(account.did, account.password, expected_did=account.did)


def odd_record(text: str | None, when: str, ref: str | None = None, *, legacy: str | None = None,
               field_name: str = "mood") -> dict:
    value = {"$type": MOOD_COLLECTION, "when": when}
    if text is not None:
        value[field_name] = text
    if ref is not None:
        value["ref"] = ref
    if legacy is not None:
        value["mongoId"] = legacy
    return value


def free_tid(n: int) -> str:
    """An rkey far from any deterministic mood TID (year ~2001)."""
    return tid_from_parts(1_000_000_000_000_000 + n * 1000 + secrets.randbelow(999), secrets.randbelow(1024))


@dataclass
class Messy:
    user: object  # WorldUser
    account: object
    ids: dict[str, str]  # role -> mood id
    expected: dict[str, str]  # mood id -> status
    extra: dict[str, list[str]] = field(default_factory=dict)  # "duplicate"/"orphan" -> rkeys
    texts: list[str] = field(default_factory=list)


MESSY_ROLES = [
    "synced", "missing", "stale", "text_field", "when_drift", "when_within", "no_pointer",
    "legacy", "duplicated", "stale_and_content", "nuked_on_pds", "nuked", "invalid",
]
MESSY_COUNTS = {
    "synced": 3, "missing_on_pds": 1, "stale_pointer": 2, "content_mismatch": 2, "pointer_missing": 1,
    "legacy_field": 1, "duplicate": 1, "orphan": 2, "nuked_on_pds": 1, "nuked": 1, "invalid": 1,
}
MESSY_PROBLEMS_KEEP = 9  # missing 1 + stale 2 + content 2 + pointer 1 + duplicate 1 + orphan 2


def make_messy_user(mongo_db, make_account, pds: PdsClient, store, prefix: str = "messy") -> Messy:
    """A user with one mood per role and two orphan records, every status of docs/interface.md."""
    account = make_account(prefix)
    texts = [f"secret mood text {role} {secrets.token_hex(4)}" for role in MESSY_ROLES]
    texts[MESSY_ROLES.index("invalid")] = "   "
    user = add_user(mongo_db, account, texts=texts)
    ids = dict(zip(MESSY_ROLES, user.mood_ids))
    sync_user(store.user_by_did(account.did), store, pds)  # everything valid synced first
    moods = {m.id: m for m in store.moods_of(user.sub)}
    session = session_for(pds, account)

    def rkey_of(role: str) -> str:
        return moods[ids[role]].rkey

    def built(role: str) -> dict:
        return build_record(moods[ids[role]])

    # missing: its record deleted (pointer left naming the gone record)
    session.delete_record(MOOD_COLLECTION, rkey_of("missing"))
    # stale: pointer names an rkey that does not exist
    store.write_pointers([(ids["stale"], free_tid(1))])
    # text_field: the bulk-sync bug, `text` instead of `mood`
    rec = built("text_field")
    session.put_record(MOOD_COLLECTION, rkey_of("text_field"),
                       odd_record(rec["mood"], rec["when"], ids["text_field"], field_name="text"))
    # when drifted by 5 s (tolerance 1 s) and by 0.5 s (within)
    for role, drift in (("when_drift", 5000), ("when_within", 500)):
        mood = moods[ids[role]]
        session.put_record(MOOD_COLLECTION, rkey_of(role),
                           odd_record(mood.text, iso_when(mood.when + timedelta(milliseconds=drift)), ids[role]))
    # pointer missing
    store.unset_pointers([ids["no_pointer"]])
    # legacy mongoId instead of ref
    rec = built("legacy")
    session.put_record(MOOD_COLLECTION, rkey_of("legacy"), odd_record(rec["mood"], rec["when"], legacy=ids["legacy"]))
    # duplicate: a second record carrying the same id (the interrupted migration)
    dup_rkey = free_tid(2)
    rec = built("duplicated")
    session.put_record(MOOD_COLLECTION, dup_rkey, odd_record(rec["mood"], rec["when"], ids["duplicated"]))
    # stale pointer hiding a content mismatch: pointer names the duplicated mood's record
    rec = built("stale_and_content")
    session.put_record(MOOD_COLLECTION, rkey_of("stale_and_content"),
                       odd_record(rec["mood"] + " (edited)", rec["when"], ids["stale_and_content"]))
    store.write_pointers([(ids["stale_and_content"], rkey_of("duplicated"))])
    # nuked with and without a record
    session.delete_record(MOOD_COLLECTION, rkey_of("nuked"))
    mongo_db.moods.update_many({"_id": {"$in": [ObjectId(ids["nuked_on_pds"]), ObjectId(ids["nuked"])]}},
                               {"$set": {"deleted": True}})
    # orphans: a ref that is no mood of the user, and a record with no id at all
    orphan_a, orphan_b = free_tid(3), free_tid(4)
    session.apply_writes([
        {"$type": CREATE, "collection": MOOD_COLLECTION, "rkey": orphan_a,
         "value": odd_record("orphan text", "2024-01-01T00:00:00.000Z", str(ObjectId()))},
        {"$type": CREATE, "collection": MOOD_COLLECTION, "rkey": orphan_b,
         "value": odd_record("no id text", "2024-01-01T00:00:00.000Z")},
    ])
    expected = {
        ids["synced"]: "synced", ids["missing"]: "missing_on_pds", ids["stale"]: "stale_pointer",
        ids["text_field"]: "content_mismatch", ids["when_drift"]: "content_mismatch",
        ids["when_within"]: "synced", ids["no_pointer"]: "pointer_missing", ids["legacy"]: "legacy_field",
        ids["duplicated"]: "synced", ids["stale_and_content"]: "stale_pointer",
        ids["nuked_on_pds"]: "nuked_on_pds", ids["nuked"]: "nuked", ids["invalid"]: "invalid",
    }
    return Messy(user, account, ids, expected, {"duplicate": [dup_rkey], "orphan": sorted([orphan_a, orphan_b])},
                 texts + ["orphan text", "no id text"])


def assert_no_text(blob: str, texts: list[str]) -> None:
    for text in texts:
        if text.strip():
            assert text not in blob, "mood text leaked"


def audit(users, store, pds, **options):
    options.setdefault("nuke_policy", "keep")
    options.setdefault("when_tolerance_ms", 1000)
    return engine.audit_users([store.user_by_did(u.did) if u.did else store.user_by_sub(u.sub) for u in users],
                              store, pds, **options)


# --- the engine ---------------------------------------------------------------------------------


def test_every_status_is_found_exactly_with_precedence_and_counts(mongo_db, make_account, test_settings, pds):
    store = store_for(test_settings)
    messy = make_messy_user(mongo_db, make_account, pds, store)
    [result] = audit([messy.user], store, pds)

    assert result.unreadable is None and not result.no_account
    frame = result.frame
    moods = frame[frame["kind"] == "mood"].set_index("mood_id")
    assert {mood_id: moods.loc[mood_id, "status"] for mood_id in messy.expected} == messy.expected
    # precedence: a stale pointer hides (but still lists) the content mismatch
    assert moods.loc[messy.ids["stale_and_content"], "issues"] == "stale_pointer,content_mismatch"
    assert "differs" in moods.loc[messy.ids["text_field"], "detail"] or "lacks mood" in moods.loc[
        messy.ids["text_field"], "detail"]
    assert "has text" in moods.loc[messy.ids["text_field"], "detail"]
    assert "when differs by 5,000 ms" in moods.loc[messy.ids["when_drift"], "detail"]
    records = frame[frame["kind"] == "record"]
    assert sorted(records[records["status"] == "duplicate"]["rkey"]) == messy.extra["duplicate"]
    assert sorted(records[records["status"] == "orphan"]["rkey"]) == messy.extra["orphan"]
    assert {k: v for k, v in result.counts.items() if v} == MESSY_COUNTS
    assert result.problems == MESSY_PROBLEMS_KEEP
    assert result.moods_live == 11 and result.moods_valid_live == 10
    assert result.read == "pages+car"  # problems are confirmed by a second, independent read
    # the audit's frame is reconcile()'s for the same data
    expected = reconcile(store.user_by_did(messy.user.did), store.moods_of(messy.user.sub),
                         pds.list_records(messy.user.did, MOOD_COLLECTION))
    pd.testing.assert_frame_equal(frame, expected)
    assert frame.attrs == expected.attrs
    assert_no_text(frame.to_json(), messy.texts)

    # the nuke policy and legacy rewriting change what counts as a problem, not the statuses
    [deleting] = audit([messy.user], store, pds, nuke_policy="delete", rewrite_legacy=True)
    assert deleting.counts == result.counts and deleting.problems == MESSY_PROBLEMS_KEEP + 2


@pytest.mark.parametrize("read", ["pages", "list", "car"])
def test_every_read_mode_sees_the_same(mongo_db, make_account, test_settings, pds, read):
    store = store_for(test_settings)
    messy = make_messy_user(mongo_db, make_account, pds, store)
    heavy = add_user(mongo_db, make_account("heavy"), moods=230)  # three listRecords pages
    sync_user(store.user_by_did(heavy.did), store, pds)
    reference = {a.user.did: a.frame for a in audit([messy.user, heavy], store, pds, read="auto")}
    for result in audit([messy.user, heavy], store, pds, read=read, concurrency=2):
        pd.testing.assert_frame_equal(result.frame, reference[result.user.did])
    assert reference[heavy.did]["status"].tolist() == ["synced"] * 230


def test_unreadable_repos_are_reported_never_as_missing(mongo_db, make_account, test_settings, pds, local_pds):
    store = store_for(test_settings)
    # a DID that does not exist on the PDS
    ghost_account = make_account("ghost")
    ghost = add_user(mongo_db, ghost_account, moods=3)
    fake_did = "did:plc:" + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(24))
    mongo_db.users.update_one({"_id": ghost.sub}, {"$set": {"atproto.did": fake_did}})
    ghost.did = fake_did
    # a deactivated account
    deact_account = make_account("deact")
    deact = add_user(mongo_db, deact_account, moods=2)
    sync_user(store.user_by_did(deact.did), store, pds)
    session = session_for(pds, deact_account)
    pds._request("POST", "com.atproto.server.deactivateAccount", body={}, kind="write", session=session)
    # a taken-down account
    down_account = make_account("down")
    down = add_user(mongo_db, down_account, moods=2)
    httpx.post(f"{local_pds.url}/xrpc/com.atproto.admin.updateSubjectStatus",
               auth=("admin", local_pds.admin_password.reveal()),
               json={"subject": {"$type": "com.atproto.admin.defs#repoRef", "did": down.did},
                     "takedown": {"applied": True, "ref": "test"}}, timeout=30).raise_for_status()
    fine = add_user(mongo_db, make_account("fine"), moods=2)
    sync_user(store.user_by_did(fine.did), store, pds)

    results = {a.user.did: a for a in audit([ghost, deact, down, fine], store, pds)}
    for user, live in ((ghost, 3), (deact, 2), (down, 2)):
        result = results[user.did]
        assert result.unreadable, user.handle
        assert len(result.frame) == 0 and sum(result.counts.values()) == 0  # never "missing_on_pds"
        assert result.moods_live == live and result.moods_unverified == live
    assert "not found" in results[ghost.did].unreadable
    assert results[deact.did].unreadable.startswith("repo deactivated")
    assert results[down.did].unreadable.startswith("repo takendown")
    assert results[fine.did].ok
    total = engine.totals([a.summary() for a in results.values()])
    assert total["users_audited"] == 4 and total["users_unreadable"] == 3
    assert total["moods_live"] == 9 and total["by_status"]["synced"] == 2
    assert total["sync_rate_pct"] == pytest.approx(22.22)  # 2 of 9: unverified moods are not in step
    assert engine.something_wrong(total)


def test_users_without_account_are_counted_apart(mongo_db, make_account, test_settings, pds):
    store = store_for(test_settings)
    nobody = add_user(mongo_db, None, moods=2)
    fine = add_user(mongo_db, make_account("apart"), moods=1)
    sync_user(store.user_by_did(fine.did), store, pds)
    results = audit([nobody, fine], store, pds)
    assert results[0].no_account and len(results[0].frame) == 0
    total = engine.totals([a.summary() for a in results])
    assert (total["users_audited"], total["users_no_account"], total["problems"]) == (1, 1, 0)
    assert total["sync_rate_pct"] == 100.0 and not engine.something_wrong(total)


def test_check_logins_reports_broken_credentials_and_writes_nothing(mongo_db, make_account, test_settings, pds):
    store = store_for(test_settings)
    good = add_user(mongo_db, make_account("lgood"), moods=1)
    wrong = add_user(mongo_db, make_account("lwrong"), moods=1, password="not-the-password-at-all")
    victim, mallory = make_account("lvict"), make_account("lmall")
    other = add_user(mongo_db, victim, moods=1, password=mallory.password.reveal())
    before = pds.counters.logins
    results = {a.user.did: a for a in audit([good, wrong, other], store, pds, check_logins=True,
                                             login_interval_s=0.05)}
    assert results[good.did].login == "ok"
    assert results[wrong.did].login.startswith("login failed")
    assert results[other.did].login.startswith("login failed")  # the victim's DID with mallory's password
    assert pds.counters.logins - before == 1
    total = engine.totals([a.summary() for a in results.values()])
    assert (total["logins_checked"], total["logins_broken"]) == (3, 2)
    assert "not-the-password-at-all" not in json.dumps(total) + repr(results)
    assert all(len(pds.list_records(u.did, MOOD_COLLECTION)) == 0 for u in (good, wrong, other))


def test_find_orphan_repos(mongo_db, make_account, test_settings, pds):
    store = store_for(test_settings)
    gone = make_account("gone")
    unset = make_account("unset")
    empty = make_account("empty")  # in no users document, but holds no mood record
    kept = add_user(mongo_db, make_account("kept"), moods=1)
    for account in (gone, unset):
        user = add_user(mongo_db, account, moods=2)
        sync_user(store.user_by_did(account.did), store, pds)
        if account is gone:
            mongo_db.users.delete_one({"_id": user.sub})
        else:
            mongo_db.users.update_one({"_id": user.sub}, {"$unset": {"atproto": ""}})
    sync_user(store.user_by_did(kept.did), store, pds)
    orphans, facts = engine.find_orphan_repos(store, pds)
    found = {o.did: o for o in orphans}
    assert gone.did in found and unset.did in found
    assert empty.did not in found and kept.did not in found
    assert found[gone.did].records == 2
    assert "no users document" in found[gone.did].reason
    assert "no longer names this DID" in found[unset.did].reason
    assert facts["repos"] >= 4


# --- Dagster ------------------------------------------------------------------------------------


def test_audit_job_materializes_each_user_with_counts_and_a_bounded_table(
    mongo_db, make_account, test_settings, dagster_instance, pds
):
    store = store_for(test_settings)
    messy = make_messy_user(mongo_db, make_account, pds, store)
    clean = add_user(mongo_db, make_account("clean"), moods=120)
    sync_user(store.user_by_did(clean.did), store, pds)

    run_ids, summaries = run_audit_job(dagster_instance, test_settings, [messy.user, clean])
    assert summaries[messy.user.did]["problems"] == MESSY_PROBLEMS_KEEP and summaries[clean.did]["problems"] == 0

    def metadata_of(did):
        records = dagster_instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("mood_audit"), asset_partitions=[did]), limit=1).records
        return records[0].asset_materialization.metadata

    meta = metadata_of(messy.user.did)
    assert {s: meta[s].value for s in MESSY_COUNTS} == MESSY_COUNTS
    assert meta["problems"].value == MESSY_PROBLEMS_KEEP and meta["handle"].value == f"@{messy.user.handle}"
    table = meta["reconciliation"].value.records
    flags = [row.data["status"] in ("missing_on_pds", "stale_pointer", "content_mismatch", "pointer_missing",
                                    "duplicate", "orphan") for row in table]
    assert flags == sorted(flags, reverse=True) and sum(flags) == MESSY_PROBLEMS_KEEP  # problems first
    clean_meta = metadata_of(clean.did)
    assert clean_meta["synced"].value == 120 and len(clean_meta["reconciliation"].value.records) == 100
    assert clean_meta["reconciliation_rows"].value == 120

    # the per-user Parquet keeps the whole reconciliation
    stored = {s.did: s for s in AuditStore(test_settings.state_dir).load_latest()}
    assert len(stored[clean.did].frame()) == 120
    assert stored[messy.user.did].frame()["status"].value_counts().to_dict() == MESSY_COUNTS

    # the run's check fails and names the user; no mood text anywhere in the run's events
    check = dagster_instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("mood_audit"), "audited_users_in_step")])
    evaluation = list(check.values())[0].event.dagster_event.event_specific_data
    assert not evaluation.passed and messy.user.did in evaluation.description
    assert "9 problems" in evaluation.description
    events = " ".join(str(e) for run_id in run_ids for e in dagster_instance.all_logs(run_id))
    assert_no_text(events, messy.texts)
    assert dagster_instance.get_run_by_id(run_ids[0]).status == dg.DagsterRunStatus.SUCCESS


def test_unreadable_user_is_an_observation_and_fails_the_run(
    mongo_db, make_account, test_settings, dagster_instance, pds
):
    store = store_for(test_settings)
    fine = add_user(mongo_db, make_account("okay"), moods=2)
    sync_user(store.user_by_did(fine.did), store, pds)
    ghost = add_user(mongo_db, make_account("ghost"), moods=2)
    fake = "did:plc:" + "a" * 23 + "b"
    mongo_db.users.update_one({"_id": ghost.sub}, {"$set": {"atproto.did": fake}})
    ghost.did = fake
    run_ids, summaries = run_audit_job(dagster_instance, test_settings, [fine, ghost])
    assert "not found" in summaries[fake]["unreadable"]
    status = dagster_instance.get_status_by_partition(
        dg.AssetKey("mood_audit"), [fine.did, fake], dg.DynamicPartitionsDefinition(name="users"))
    assert status == {fine.did: dg.AssetPartitionStatus.MATERIALIZED, fake: dg.AssetPartitionStatus.FAILED}
    assert dagster_instance.get_run_by_id(run_ids[0]).status == dg.DagsterRunStatus.FAILURE


def test_audit_summary_covers_the_latest_audit_of_every_user(
    mongo_db, make_account, test_settings, dagster_instance, pds
):
    store = store_for(test_settings)
    messy = make_messy_user(mongo_db, make_account, pds, store)
    clean = add_user(mongo_db, make_account("sumcl"), moods=3)
    sync_user(store.user_by_did(clean.did), store, pds)
    add_user(mongo_db, None, moods=1)
    run_audit_job(dagster_instance, test_settings, [messy.user])  # two separate runs
    run_audit_job(dagster_instance, test_settings, [clean])
    defs = audit_definitions(test_settings)
    result = defs.resolve_job_def("audit_summary_job").execute_in_process(instance=dagster_instance)
    assert result.success
    meta = dagster_instance.get_latest_materialization_event(
        dg.AssetKey("audit_summary")).asset_materialization.metadata
    assert meta["users_audited"].value == 2 and meta["users_unreadable"].value == 0
    assert meta["moods_live"].value == 11 + 3 and meta["problems"].value == MESSY_PROBLEMS_KEEP
    assert meta["by_status.synced"].value == 3 + 3 and meta["by_status.orphan"].value == 2
    assert meta["users_no_account"].value == 1
    assert meta["sync_rate_pct"].value == pytest.approx(53.84)  # (6 synced + 1 legacy) / 13 valid live
    # Numbers only: no markdown table repeating them.
    assert "stats" not in meta
    export = pd.read_parquet(meta["reconciliation_export"].value)
    assert set(export["did"]) == {messy.user.did, clean.did} and len(export) == 16 + 3  # 13 moods + duplicate + 2 orphans, 3 moods
    assert_no_text(export.to_json() + str(meta), messy.texts)


# --- the command line -----------------------------------------------------------------------


def cli_args(argv, defs):
    from moods_pipeline.cli import audit as cli_audit

    parser = argparse.ArgumentParser()
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_audit.register(sub)
    args = parser.parse_args(argv)
    args.defs = defs
    return args


@pytest.fixture
def cli_env(cli_env, monkeypatch, dagster_instance):
    """conftest's operator variables; the commands run on the test's instance; the definitions."""
    import moods_pipeline.cli.audit as cli_audit

    monkeypatch.setattr(cli_audit, "dagster_instance", lambda: dagster_instance)
    return audit_definitions(cli_env)


def run_cli(argv, defs, capsys):
    args = cli_args(argv, defs)
    code = args.func(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_audit_json_and_exit_codes(mongo_db, make_account, test_settings, pds, cli_env, capsys):
    from moods_pipeline.cli import common as cli

    store = store_for(test_settings)
    messy = make_messy_user(mongo_db, make_account, pds, store)
    clean = add_user(mongo_db, make_account("cliok"), moods=2)
    sync_user(store.user_by_did(clean.did), store, pds)

    code, out, err = run_cli(["audit", "--user", f"@{clean.handle}", "--json"], cli_env, capsys)
    assert code == 0
    data = json.loads(out)  # exactly one JSON object on stdout
    assert set(data) >= {"users_audited", "users_unreadable", "moods_live", "by_status", "problems", "sync_rate_pct"}
    assert (data["users_audited"], data["problems"], data["sync_rate_pct"]) == (1, 0, 100.0)

    code, out, err = run_cli(["audit", "--all", "--json"], cli_env, capsys)
    assert code == 1
    data = json.loads(out)
    assert data["problems"] == MESSY_PROBLEMS_KEEP and data["by_status"]["orphan"] == 2
    assert messy.user.did not in out and "PROBLEMS" not in out

    code, out, err = run_cli(["audit", "--all"], cli_env, capsys)
    assert code == 1 and out == "" and f"PROBLEMS @{messy.user.handle}" in err
    assert_no_text(out + err, messy.texts)

    # bad usage: exit 2 through the CLI's main error handling
    with pytest.raises(cli.UsageError):
        args = cli_args(["audit", "--user", "@nobody-at-all"], cli_env)
        args.func(args)


def test_a_did_held_by_two_users_is_refused_not_compared(mongo_db, make_account, test_settings, pds):
    from moods_pipeline.sync import repair

    store = store_for(test_settings)
    account = make_account("twice")
    first = add_user(mongo_db, account, moods=2)
    sync_user(store.user_by_sub(first.sub), store, pds)
    copy = add_user(mongo_db, account, moods=3)  # the same credentials copied onto another user
    results = engine.audit_users([store.user_by_sub(first.sub), store.user_by_sub(copy.sub)], store, pds,
                                 nuke_policy="keep", when_tolerance_ms=1000)
    for result in results:
        assert result.unreadable.startswith("credentials refused") and len(result.rows) == 0
    outcome = repair.repair_user(store.user_by_sub(copy.sub), store, pds, apply=True)
    assert outcome.error.startswith("credentials refused") and sum(outcome.applied.values()) == 0
    assert len(pds.list_records(account.did, MOOD_COLLECTION)) == 2


def test_users_by_dids_refuses_every_claimant_of_a_did_as_user_by_did_does(mongo_db, make_account, test_settings):
    store = store_for(test_settings)
    shared = make_account("claimed")
    first = add_user(mongo_db, shared, moods=1)
    copy = add_user(mongo_db, shared, moods=1)
    alone = add_user(mongo_db, make_account("alone"), moods=1)
    found = store.users_by_dids([shared.did, alone.did])
    assert set(found) == {shared.did, alone.did}
    assert found[shared.did].sub == min(first.sub, copy.sub)
    assert found[shared.did].problem == store.user_by_did(shared.did).problem
    assert "held by 2 users" in found[shared.did].problem
    assert first.sub in found[shared.did].problem and copy.sub in found[shared.did].problem
    assert found[alone.did].problem is None and found[alone.did].has_account


def test_user_index_agrees_with_the_store(mongo_db, make_account, test_settings):
    store = store_for(test_settings)
    add_user(mongo_db, make_account("idxa"), moods=1)
    add_user(mongo_db, None, moods=2)
    nopw = add_user(mongo_db, make_account("idxb"), moods=1)
    mongo_db.users.update_one({"_id": nopw.sub}, {"$unset": {"atproto.password": ""}})
    add_user(mongo_db, make_account("idxc"), moods=0)  # an account without moods: not syncable
    mongo_db.moods.insert_one({"_id": ObjectId(), "user": "auth0|nobody", "mood": "x", "when": None})
    index = engine.mongo_user_index(store)
    everyone = store.users_with_moods()
    assert index.syncable_dids == {u.did for u in everyone if u.has_account}
    assert index.no_account_subs == {u.sub for u in everyone if not u.has_account}
    assert len(index.no_account_subs) == 3
