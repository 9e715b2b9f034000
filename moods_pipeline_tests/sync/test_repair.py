"""Repair on the real local PDS and Mongo-wire server: dry run writes nothing, apply brings a
messy user to zero problems, failed batches are re-read before any retry, logins and DIDs are
checked, and the job and CLI report docs/interface.md's repair object and exit codes."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from bson import ObjectId

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.client import PdsError
from moods_pipeline.storage.journal import DeletionJournal
from moods_pipeline.sync import audit as audit_engine
from moods_pipeline.sync import repair as engine
from moods_pipeline.sync.backfill import sync_user
from moods_pipeline.sync.repair_plan import plan_repair
from moods_pipeline.sync.writer import WriteOptions
from moods_pipeline_tests.defs.test_audit import (  # noqa: F401 - fixtures
    MESSY_PROBLEMS_KEEP,
    assert_no_text,
    cli_env,
    make_messy_user,
    run_cli,
    session_for,
)
from moods_pipeline_tests.world import add_user, repo_snapshot, store_for

pytestmark = pytest.mark.integration

FAST = WriteOptions(min_batch_interval_s=0, retry_delay_s=0)


def journal_for(settings) -> DeletionJournal:
    """Deletes are sent only with a deletion journal."""
    return DeletionJournal(settings.state_dir, command="repair", run_id="test")


def problems_after(store, pds, user, **options) -> dict:
    options.setdefault("nuke_policy", "keep")
    options.setdefault("when_tolerance_ms", 1000)
    [result] = audit_engine.audit_users([store.user_by_did(user.did)], store, pds, **options)
    assert result.unreadable is None
    return {s: n for s, n in result.counts.items() if n and s in result.frame[result.frame["problem"]]["status"].values}


def check_invariant(store, pds, users, tolerance_ms: int = 1000) -> int:
    """docs/interface.md's invariant, independently of the reconciler: every valid live mood has
    exactly one record carrying its id, with its text and its `when` within the tolerance, and
    Mongo's pointer names it. (world.check_invariant wants `when` exact; a record the app wrote
    with a drifted `when` is in step by the contract.)"""
    from datetime import datetime

    from moods_pipeline.sync.mood_record import Invalid, build_record

    def instant(text):
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    checked = 0
    for user in users:
        records = repo_snapshot(pds, user.did)
        carrying: dict = {}
        for rkey, value in records.items():
            carrying.setdefault(value.get("ref") or value.get("mongoId"), []).append(rkey)
        for mood in store.moods_of(user.sub):
            built = build_record(mood)
            if not mood.live or isinstance(built, Invalid):
                continue
            rkeys = carrying.get(mood.id, [])
            assert len(rkeys) == 1, f"mood {mood.id} has {len(rkeys)} records"
            assert mood.rkey == rkeys[0], f"mood {mood.id}: pointer {mood.rkey!r}, record at {rkeys[0]}"
            value = records[rkeys[0]]
            assert value.get("mood") == built["mood"], f"mood {mood.id}: text differs"
            drift = abs((instant(value["when"]) - instant(built["when"])).total_seconds() * 1000)
            assert drift <= tolerance_ms, f"mood {mood.id}: when drifts {drift} ms"
            checked += 1
    return checked


def pointers(store, user) -> dict:
    return {m.id: m.rkey for m in store.moods_of(user.sub)}


def test_dry_run_plans_everything_and_writes_nothing(mongo_db, make_account, test_settings, pds):
    store = store_for(test_settings)
    messy = make_messy_user(mongo_db, make_account, pds, store)
    repo_before, pointers_before = repo_snapshot(pds, messy.user.did), pointers(store, messy.user)
    outcome = engine.repair_user(store.user_by_did(messy.user.did), store, pds, apply=False)
    planned = {a: n for a, n in outcome.planned.items() if n}
    assert planned == {"create_record": 1, "rewrite_content": 3, "delete_duplicate": 1, "write_pointer": 4}
    assert outcome.problems_before == MESSY_PROBLEMS_KEEP and outcome.dry_run and not outcome.ok
    assert repo_snapshot(pds, messy.user.did) == repo_before
    assert pointers(store, messy.user) == pointers_before
    assert sum(outcome.applied.values()) == 0 and outcome.remaining is None
    assert_no_text(json.dumps(outcome.summary()), messy.texts)
    total = engine.totals([outcome.summary()], dry_run=True)
    assert engine.something_left(total)


def test_apply_brings_a_messy_user_to_zero_problems(mongo_db, make_account, test_settings, pds):
    store = store_for(test_settings)
    messy = make_messy_user(mongo_db, make_account, pds, store)
    user = store.user_by_did(messy.user.did)
    outcome = engine.repair_user(user, store, pds, apply=True, nuke_policy="delete", delete_orphans=True,
                                 rewrite_legacy=True, options=FAST, journal=journal_for(test_settings))
    assert outcome.failed == [] and outcome.error is None, outcome.failed
    assert outcome.applied == outcome.planned
    assert {a: n for a, n in outcome.applied.items() if n} == {
        "create_record": 1, "rewrite_content": 3, "rewrite_legacy": 1, "delete_duplicate": 1,
        "delete_nuked": 1, "delete_orphan": 2, "write_pointer": 4,
        "unset_pointer": 2,  # the nuked mood with a record, and the one whose record is gone already
    }
    assert outcome.remaining == {} and outcome.ok
    assert problems_after(store, pds, messy.user, nuke_policy="delete", rewrite_legacy=True) == {}
    check_invariant(store, pds, [messy.user])
    records = repo_snapshot(pds, messy.user.did)
    assert all("ref" in v and "mongoId" not in v for v in records.values())
    assert messy.ids["nuked_on_pds"] not in {v["ref"] for v in records.values()}
    assert pointers(store, messy.user)[messy.ids["nuked_on_pds"]] is None
    assert pointers(store, messy.user)[messy.ids["nuked"]] is None
    # a second repair has nothing to do
    again = engine.repair_user(user, store, pds, apply=True, nuke_policy="delete", delete_orphans=True,
                               rewrite_legacy=True, options=FAST, journal=journal_for(test_settings))
    assert again.planned_total == 0 and again.batches == 0 and again.ok


def test_apply_without_flags_leaves_orphans_legacy_and_nuked_records(mongo_db, make_account, test_settings, pds):
    store = store_for(test_settings)
    messy = make_messy_user(mongo_db, make_account, pds, store)
    outcome = engine.repair_user(store.user_by_did(messy.user.did), store, pds, apply=True, options=FAST,
                                 journal=journal_for(test_settings))
    assert outcome.failed == [] and outcome.remaining == {"orphan": 2}
    after = problems_after(store, pds, messy.user)
    assert after == {"orphan": 2}
    [result] = audit_engine.audit_users([store.user_by_did(messy.user.did)], store, pds, nuke_policy="keep",
                                        when_tolerance_ms=1000)
    assert result.counts["legacy_field"] == 1 and result.counts["nuked_on_pds"] == 1
    assert engine.something_left(engine.totals([outcome.summary()], dry_run=False))


class FlakySession:
    """A real session whose first applyWrites misbehaves: it may run ``before`` first, land the
    batch and lose the response, or fail without landing anything."""

    def __init__(self, session, *, land: bool, before=None):
        self.session = session
        self.did = session.did
        self.land = land
        self.before = before
        self.calls = 0

    def apply_writes(self, writes):
        self.calls += 1
        if self.calls == 1:
            if self.before:
                self.before(writes)
            if self.land:
                self.session.apply_writes(writes)
            raise PdsError(500, "InternalServerError", "response lost", retryable=True,
                           method="POST com.atproto.repo.applyWrites")
        return self.session.apply_writes(writes)


def execute(store, pds, user, session, journal=None, **plan_options):
    account = store.user_by_did(user.did)
    moods = store.moods_of(user.sub)
    records = pds.list_records(user.did, MOOD_COLLECTION)
    plan = plan_repair(account, moods, records, **plan_options)
    return plan, engine.execute_plan(account, plan, store, pds, session=session, options=FAST, sleep=lambda s: None,
                                     journal=journal)


def test_a_lost_response_is_recovered_by_rereading_not_rewriting(mongo_db, make_account, test_settings, pds):
    store = store_for(test_settings)
    messy = make_messy_user(mongo_db, make_account, pds, store)
    flaky = FlakySession(session_for(pds, messy.account), land=True)
    plan, execution = execute(store, pds, messy.user, flaky, journal_for(test_settings), delete_orphans=True)
    assert flaky.calls == 1  # the batch landed: nothing was sent again
    assert execution.failed == [] and dict(execution.applied) == {k: v for k, v in plan.counts().items() if v}
    assert problems_after(store, pds, messy.user) == {}
    check_invariant(store, pds, [messy.user])


def test_an_update_whose_record_vanished_becomes_a_create(mongo_db, make_account, test_settings, pds):
    store = store_for(test_settings)
    messy = make_messy_user(mongo_db, make_account, pds, store)
    real = session_for(pds, messy.account)

    def delete_rewritten(writes):
        update = next(w for w in writes if w["$type"].endswith("#update"))
        real.delete_record(MOOD_COLLECTION, update["rkey"])  # a concurrent delete

    flaky = FlakySession(real, land=False, before=delete_rewritten)
    plan, execution = execute(store, pds, messy.user, flaky, journal_for(test_settings), delete_orphans=True)
    assert execution.failed == [] and flaky.calls == 2
    assert problems_after(store, pds, messy.user) == {}
    check_invariant(store, pds, [messy.user])


def test_a_mood_nuked_meanwhile_is_not_recreated(mongo_db, make_account, test_settings, pds):
    store = store_for(test_settings)
    messy = make_messy_user(mongo_db, make_account, pds, store)
    missing = messy.ids["missing"]

    def nuke(writes):
        mongo_db.moods.update_one({"_id": ObjectId(missing)}, {"$set": {"deleted": True}})

    flaky = FlakySession(session_for(pds, messy.account), land=False, before=nuke)
    plan, execution = execute(store, pds, messy.user, flaky, journal_for(test_settings))
    assert [s[0] for s in execution.skipped] == ["create_record"]
    assert missing not in {v.get("ref") for v in repo_snapshot(pds, messy.user.did).values()}
    assert execution.failed == []


def test_wrong_password_writes_nothing_but_pointer_fixes_need_no_login(mongo_db, make_account, test_settings, pds):
    store = store_for(test_settings)
    account = make_account("rpw")
    user = add_user(mongo_db, account, moods=3)
    sync_user(store.user_by_did(user.did), store, pds)
    mongo_db.users.update_one({"_id": user.sub}, {"$set": {"atproto.password": "not-the-password-at-all"}})
    store.unset_pointers([user.mood_ids[0]])  # pointer_missing: Mongo only
    session = session_for(pds, account)
    session.delete_record(MOOD_COLLECTION, pointers(store, user)[user.mood_ids[1]])  # missing: needs a login
    before = repo_snapshot(pds, user.did)
    outcome = engine.repair_user(store.user_by_did(user.did), store, pds, apply=True, options=FAST)
    assert outcome.error.startswith("login failed")
    assert outcome.applied["write_pointer"] == 1 and outcome.applied["create_record"] == 0
    assert {f[0] for f in outcome.failed} == {"create_record", "write_pointer"}
    assert repo_snapshot(pds, user.did) == before
    assert "not-the-password-at-all" not in json.dumps(outcome.summary())
    assert problems_after(store, pds, user) == {"missing_on_pds": 1}


def test_a_plan_for_another_did_is_refused(mongo_db, make_account, test_settings, pds):
    store = store_for(test_settings)
    alice, bob = add_user(mongo_db, make_account("ralic"), moods=1), add_user(mongo_db, make_account("rbob"), moods=1)
    a, b = store.user_by_did(alice.did), store.user_by_did(bob.did)
    plan = plan_repair(a, store.moods_of(alice.sub), [])
    with pytest.raises(ValueError):
        engine.execute_plan(b, plan, store, pds)
    bob_session = pds.login(b.did, b.password)
    with pytest.raises(ValueError):
        engine.execute_plan(a, plan, store, pds, session=bob_session)
    assert repo_snapshot(pds, bob.did) == {} and repo_snapshot(pds, alice.did) == {}


def test_big_repairs_go_in_count_and_size_bounded_batches(mongo_db, make_account, test_settings, pds):
    store = store_for(test_settings)
    account = make_account("rbig")
    user = add_user(mongo_db, account, texts=[f"{i:04d}" + "x" * 3000 for i in range(60)] + ["small"] * 0
                    + [f"short {i}" for i in range(240)])
    outcome = engine.repair_user(store.user_by_did(user.did), store, pds, apply=True, options=FAST)
    assert outcome.applied["create_record"] == 300 and outcome.remaining == {}
    # 60 moods of 3 kB fill two size-bounded batches; 240 small ones two count-bounded (<=200)
    assert outcome.batches >= 4
    check_invariant(store, pds, [user])


# --- the job and the command line ---------------------------------------------------------------


def test_cli_repair_dry_run_then_apply_then_audit_is_clean(
    mongo_db, make_account, test_settings, pds, cli_env, capsys, dagster_instance
):
    store = store_for(test_settings)
    messy = make_messy_user(mongo_db, make_account, pds, store)
    clean = add_user(mongo_db, make_account("rclean"), moods=2)
    sync_user(store.user_by_did(clean.did), store, pds)
    add_user(mongo_db, None, moods=1)
    before = repo_snapshot(pds, messy.user.did)

    code, out, err = run_cli(["repair", "--all", "--json"], cli_env, capsys)
    assert code == 1
    data = json.loads(out)
    assert data["dry_run"] is True and data["planned"]["create_record"] == 1
    assert sum(data["applied"].values()) == 0 and data["users_no_account"] == 1
    assert "create_record" in err and messy.ids["missing"] in err  # the plan is printed
    assert repo_snapshot(pds, messy.user.did) == before

    code, out, err = run_cli(["repair", "--user", f"@{messy.user.handle}", "--apply", "--delete-orphans", "--json"],
                             cli_env, capsys)
    data = json.loads(out)
    assert code == 0, err
    assert data["dry_run"] is False and data["applied"]["delete_orphan"] == 2 and data["remaining_problems"] == 0
    assert_no_text(out + err, messy.texts)

    # the repair recorded each user's post-repair audit as the user's latest mood_audit
    meta = dagster_instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("mood_audit"), asset_partitions=[messy.user.did]), limit=1
    ).records[0].asset_materialization.metadata
    assert meta["problems"].value == 0 and "repair run" in meta["source"].value

    code, out, err = run_cli(["audit", "--all", "--json"], cli_env, capsys)
    assert code == 0 and json.loads(out)["problems"] == 0
