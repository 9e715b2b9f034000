"""Repair's deletes on the real PDS and Mongo-wire server: each delete batch is re-checked against
fresh moods right before it is sent (what is a live mood's record by then is kept and reported),
journaled before and after, never sent without a journal; nuked moods lose their pointers under
the delete policy; and one user's bad DID fails that user alone.

Each destructive case records a row of the reliability table (section "destructive"): the
records that must survive are counted on the PDS right before the deletes, and counted again
afterwards."""

from __future__ import annotations

import json
from types import SimpleNamespace

import dagster as dg
import pytest
from bson import ObjectId

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.secret import Secret
from moods_pipeline.storage.journal import DeletionJournal, read_journal
from moods_pipeline.sync import repair as engine
from moods_pipeline.sync.backfill import sync_user
from moods_pipeline.sync.mood_record import build_record
from moods_pipeline.sync.repair_plan import plan_repair
from moods_pipeline_tests.defs.test_audit import (  # noqa: F401 - fixtures
    CREATE,
    assert_no_text,
    cli_env,
    free_tid,
    make_messy_user,
    odd_record,
    run_cli,
    session_for,
)
from moods_pipeline_tests.reliability import reliability_record, tally  # noqa: F401 - fixture
from moods_pipeline_tests.sync.test_repair import FAST, FlakySession, check_invariant
from moods_pipeline_tests.world import BASE_WHEN, add_user, records_by_mood_id, repo_snapshot

pytestmark = pytest.mark.integration


def journal_for(settings, run_id: str = "test") -> DeletionJournal:
    return DeletionJournal(settings.state_dir, command="repair", run_id=run_id)


def must_survive(store, pds, users) -> set[tuple[str, str]]:
    """(did, rkey) of every record that is a live mood's chosen record right now: the pointer's
    record if it carries the mood's id, else the smallest rkey carrying it (counted apart from
    the reconciler)."""
    found = set()
    for user in users:
        carrying = records_by_mood_id(repo_snapshot(pds, user.did))
        for mood in store.moods_of(user.sub):
            own = sorted(carrying.get(mood.id, []))
            if mood.live and own:
                found.add((user.did, mood.rkey if mood.rkey in own else own[0]))
    return found


def still_there(pds, keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
    present = {}
    for did in {did for did, _ in keys}:
        present[did] = set(repo_snapshot(pds, did))
    return {(did, rkey) for did, rkey in keys if rkey in present[did]}


def journal_pairs(state_dir) -> list[tuple[dict, dict | None]]:
    """(intent, its result or None) in the order the intents were written."""
    entries = read_journal(state_dir)
    results = {e["id"]: e for e in entries if e["phase"] == "result"}
    return [(e, results.get(e["id"])) for e in entries if e["phase"] == "intent"]


def simple_user(mongo_db, store, pds, make_account, prefix: str, moods: int = 3):
    account = make_account(prefix)
    user = add_user(mongo_db, account, moods=moods)
    sync_user(store.user_by_did(user.did), store, pds)
    return account, user


def add_orphan(session, text: str = "orphan text") -> str:
    rkey = free_tid(7)
    session.apply_writes([{"$type": CREATE, "collection": MOOD_COLLECTION, "rkey": rkey,
                           "value": odd_record(text, "2024-01-01T00:00:00.000Z", str(ObjectId()))}])
    return rkey


# --- the re-check right before the delete ----------------------------------------------------


def test_an_orphan_whose_mood_is_created_and_synced_during_the_repair_is_kept(
    mongo_db, make_account, test_settings, pds, store, cli_env, capsys, dagster_instance, monkeypatch,
    reliability_record,
):
    """The plan is made from a Mongo read taken before the repo listing: a mood created and
    synced in between looks like an orphan. The re-check finds its mood and keeps its record;
    the true orphan beside it goes. Through the command line and the repair job."""
    account, user = simple_user(mongo_db, store, pds, make_account, "race")
    real_orphan = add_orphan(session_for(pds, account))
    new_text = "created during the repair"
    injected: dict = {}
    real_read = engine.read_records

    def read_records_with_a_mood_created_meanwhile(pds_client, did, read="pages"):
        if not injected:  # the plan's listing: the app creates and syncs a mood just before it
            mood_id = ObjectId()
            mongo_db.moods.insert_one({"_id": mood_id, "user": user.sub, "mood": new_text, "when": BASE_WHEN})
            synced = sync_user(store.user_by_sub(user.sub), store, pds)
            assert synced.created == 1
            injected["mood_id"] = str(mood_id)
            injected["rkey"] = store.mood(str(mood_id)).rkey
            injected["at_stake"] = must_survive(store, pds, [user])
        return real_read(pds_client, did, read)

    monkeypatch.setattr(engine, "read_records", read_records_with_a_mood_created_meanwhile)
    code, out, err = run_cli(["repair", "--user", f"@{user.handle}", "--apply", "--delete-orphans", "--json"],
                             cli_env, capsys)
    data = json.loads(out)

    at_stake = injected["at_stake"]
    lost = len(at_stake - still_there(pds, at_stake))
    after = tally(store, pds, [user])
    records = repo_snapshot(pds, user.did)
    reliability_record(
        "repair: a mood created and synced between the Mongo read and the repo listing",
        "repair --apply --delete-orphans, its plan marking the new mood's record an orphan beside a true orphan",
        len(at_stake), lost, after.duplicated,
        f"true orphan deleted: {real_orphan not in records}; new mood's record kept: {injected['rkey'] in records}; "
        f"kept reported: {data['kept']}",
        section="destructive",
    )
    assert injected["rkey"] in records and records[injected["rkey"]]["ref"] == injected["mood_id"]
    assert real_orphan not in records
    assert lost == 0 and after.clean
    assert data["planned"]["delete_orphan"] == 2 and data["applied"]["delete_orphan"] == 1
    assert data["kept"] == 1 and data["remaining_problems"] == 0 and code == 0, err
    assert f"KEPT delete_orphan rkey {injected['rkey']}" in err and injected["mood_id"] in err
    assert new_text not in out + err

    # the journal names the true orphan only, before and after its delete
    [(intent, result)] = journal_pairs(test_settings.state_dir)
    assert intent["command"] == "repair" and intent["kind"] == "records" and intent["reason"] == "repair"
    assert intent["did"] == user.did and intent["sub"] == user.sub
    assert intent["targets"] == [{"rkey": real_orphan, "mood_id": None, "why": "orphan"}]
    assert result["outcome"] == "deleted" and result["deleted"] == [real_orphan]
    assert intent["run_id"] and intent["at"] <= result["at"]

    # the job's output metadata counts it and lists it
    [run] = [r for r in dagster_instance.get_runs() if r.job_name == "mood_repair_job"]
    outputs = [e.dagster_event.event_specific_data for e in dagster_instance.all_logs(
        run.run_id, of_type=dg.DagsterEventType.STEP_OUTPUT)]
    metadata = outputs[0].metadata
    assert metadata["kept"].value == 1
    [row] = metadata["kept_records"].value.records
    assert row.data["rkey"] == injected["rkey"] and row.data["action"] == "delete_orphan"


def _move_pointer_to_the_duplicate(mongo_db, store, pds, session, mood_id, chosen, duplicate):
    store.write_pointers([(mood_id, duplicate)])


def _delete_the_chosen_record(mongo_db, store, pds, session, mood_id, chosen, duplicate):
    session.delete_record(MOOD_COLLECTION, chosen)


@pytest.mark.parametrize("meanwhile", [_move_pointer_to_the_duplicate, _delete_the_chosen_record],
                         ids=["pointer-moved-to-the-duplicate", "chosen-record-deleted"])
def test_a_duplicate_that_is_its_moods_chosen_record_by_now_is_kept(
    mongo_db, make_account, test_settings, pds, store, monkeypatch, reliability_record, meanwhile
):
    account, user = simple_user(mongo_db, store, pds, make_account, "dup")
    session = session_for(pds, account)
    mood = store.moods_of(user.sub)[0]
    chosen = mood.rkey
    duplicate = free_tid(8)
    session.put_record(MOOD_COLLECTION, duplicate, build_record(mood))
    injected: dict = {}
    real_plan = engine.plan_repair

    def plan_then_change(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        assert [(a.action, a.rkey) for a in plan.actions] == [("delete_duplicate", duplicate)]
        meanwhile(mongo_db, store, pds, session, mood.id, chosen, duplicate)
        injected["at_stake"] = must_survive(store, pds, [user])
        return plan

    monkeypatch.setattr(engine, "plan_repair", plan_then_change)
    outcome = engine.repair_user(store.user_by_did(user.did), store, pds, apply=True, options=FAST,
                                 journal=journal_for(test_settings))
    at_stake = injected["at_stake"]
    lost = len(at_stake - still_there(pds, at_stake))
    after = tally(store, pds, [user])
    reliability_record(
        f"repair: the duplicate became its mood's chosen record ({meanwhile.__name__.strip('_').replace('_', ' ')})",
        "repair --apply deleting a duplicate after the change, between plan and send",
        len(at_stake), lost, after.duplicated,
        f"applied deletes {outcome.applied['delete_duplicate']}; kept {[k[1] for k in outcome.kept]}; "
        "a record left duplicated is the former chosen one, for the next repair",
        section="destructive",
    )
    assert lost == 0 and after.lost == 0
    assert duplicate in repo_snapshot(pds, user.did)
    assert outcome.applied["delete_duplicate"] == 0 and outcome.failed == []
    [(action, rkey, why)] = outcome.kept
    assert (action, rkey) == ("delete_duplicate", duplicate) and mood.id in why
    assert outcome.summary()["kept"] == [["delete_duplicate", duplicate, why]]
    assert read_journal(test_settings.state_dir) == []  # nothing was sent, nothing journaled


def test_the_record_of_a_mood_un_nuked_meanwhile_is_kept_with_its_pointer(
    mongo_db, make_account, test_settings, pds, store, monkeypatch, reliability_record
):
    account, user = simple_user(mongo_db, store, pds, make_account, "unnuke")
    nuked, other_nuked = store.moods_of(user.sub)[:2]
    mongo_db.moods.update_many({"_id": {"$in": [ObjectId(nuked.id), ObjectId(other_nuked.id)]}},
                               {"$set": {"deleted": True}})
    injected: dict = {}
    real_plan = engine.plan_repair

    def plan_then_un_nuke(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        assert sorted((a.action, a.rkey or a.mood_id) for a in plan.actions) == sorted([
            ("delete_nuked", nuked.rkey), ("delete_nuked", other_nuked.rkey),
            ("unset_pointer", nuked.id), ("unset_pointer", other_nuked.id)])
        mongo_db.moods.update_one({"_id": ObjectId(nuked.id)}, {"$set": {"deleted": False}})
        injected["at_stake"] = must_survive(store, pds, [user])
        return plan

    monkeypatch.setattr(engine, "plan_repair", plan_then_un_nuke)
    outcome = engine.repair_user(store.user_by_did(user.did), store, pds, apply=True, nuke_policy="delete",
                                 options=FAST, journal=journal_for(test_settings))
    at_stake = injected["at_stake"]
    lost = len(at_stake - still_there(pds, at_stake))
    after = tally(store, pds, [user])
    records = repo_snapshot(pds, user.did)
    reliability_record(
        "repair: a nuked mood made live again between plan and send",
        "repair --apply under nuke policy delete, deleting two nuked moods' records",
        len(at_stake), lost, after.duplicated,
        f"still-nuked record deleted: {other_nuked.rkey not in records}; live-again record kept: {nuked.rkey in records}",
        section="destructive",
    )
    assert lost == 0 and after.clean
    assert nuked.rkey in records and other_nuked.rkey not in records
    assert outcome.kept == [("delete_nuked", nuked.rkey, f"it is live mood {nuked.id}'s record now: the mood's "
                                                          "pointer names it and it carries the mood's id")]
    assert store.mood(nuked.id).rkey == nuked.rkey and store.mood(other_nuked.id).rkey is None
    assert outcome.applied["delete_nuked"] == 1 and outcome.applied["unset_pointer"] == 1
    assert ("unset_pointer", nuked.id, "a record of the mood was kept") in outcome.skipped
    assert outcome.remaining == {} and outcome.ok
    [(intent, result)] = journal_pairs(test_settings.state_dir)
    assert intent["targets"] == [{"rkey": other_nuked.rkey, "mood_id": other_nuked.id, "why": "nuked"}]
    assert result["outcome"] == "deleted"


# --- the journal --------------------------------------------------------------------------------


class WatchedSession:
    """A real session that notes each applyWrites in ``events`` and, for a batch holding deletes,
    what the journal held at that moment."""

    def __init__(self, session, events: list, state_dir):
        self.session = session
        self.did = session.did
        self.events = events
        self.state_dir = state_dir
        self.journal_at_send: list = []

    def apply_writes(self, writes):
        deletes = sorted(w["rkey"] for w in writes if w["$type"].endswith("#delete"))
        self.events.append(("send", bool(deletes)))
        if deletes:
            self.journal_at_send.append((deletes, journal_pairs(self.state_dir)))
        return self.session.apply_writes(writes)


def test_every_delete_is_journaled_before_it_is_sent_right_after_the_recheck(
    mongo_db, make_account, test_settings, pds, store, monkeypatch, reliability_record
):
    messy = make_messy_user(mongo_db, make_account, pds, store)
    events: list = []
    for name in ("moods_of", "moods_by_id"):
        real = getattr(store, name)
        monkeypatch.setattr(store, name, lambda *a, _real=real, **k: (events.append(("read", "mongo")), _real(*a, **k))[1])
    real_list = pds.list_records
    monkeypatch.setattr(pds, "list_records",
                        lambda *a, **k: (events.append(("read", "pds")), real_list(*a, **k))[1])
    session = WatchedSession(session_for(pds, messy.account), events, test_settings.state_dir)
    account = store.user_by_did(messy.user.did)
    plan = plan_repair(account, store.moods_of(messy.user.sub), pds.list_records(messy.user.did, MOOD_COLLECTION),
                       nuke_policy="delete", delete_orphans=True)
    at_stake = must_survive(store, pds, [messy.user])
    before = repo_snapshot(pds, messy.user.did)
    events.clear()
    execution = engine.execute_plan(account, plan, store, pds, session=session, options=FAST,
                                    sleep=lambda s: None, journal=journal_for(test_settings))
    lost = len(at_stake - still_there(pds, at_stake))
    reliability_record(
        "repair: deletes journaled and re-checked on a messy user",
        "repair --apply --delete-orphans under nuke policy delete (duplicate, nuked, two orphans)",
        len(at_stake), lost, tally(store, pds, [messy.user]).duplicated,
        f"deleted {sum(execution.applied[a] for a in engine.DELETE_WHY)} records, kept {len(execution.kept)}",
        section="destructive",
    )
    assert lost == 0 and execution.failed == [] and execution.kept == []

    wanted = {(messy.extra["duplicate"][0], messy.ids["duplicated"], "duplicate"),
              (messy.extra["orphan"][0], None, "orphan"), (messy.extra["orphan"][1], None, "orphan")}
    nuked_rkey = next(r for r, v in before.items() if v.get("ref") == messy.ids["nuked_on_pds"])
    wanted.add((nuked_rkey, messy.ids["nuked_on_pds"], "nuked"))
    pairs = journal_pairs(test_settings.state_dir)
    journaled = {(t["rkey"], t["mood_id"], t["why"]) for intent, _ in pairs for t in intent["targets"]}
    assert journaled == wanted
    for intent, result in pairs:
        assert (intent["kind"], intent["command"], intent["reason"]) == ("records", "repair", "repair")
        assert result is not None and result["outcome"] == "deleted"
        assert result["deleted"] == sorted(t["rkey"] for t in intent["targets"])
    # at each send of deletes: their intent is on disk, without a result yet
    for deletes, pairs_then in session.journal_at_send:
        open_intents = [i for i, r in pairs_then if r is None]
        assert len(open_intents) == 1 and sorted(t["rkey"] for t in open_intents[0]["targets"]) == deletes
    # the last reads before a send of deletes: the repo, then Mongo, and nothing after
    for index, event in enumerate(events):
        if event == ("send", True):
            reads = [e for e in events[:index] if e[0] == "read"]
            assert reads[-1] == ("read", "mongo") and ("read", "pds") in reads
            last_pds = max(i for i, e in enumerate(events[:index]) if e == ("read", "pds"))
            assert all(e[0] != "send" for e in events[last_pds:index])  # re-read for this very batch
    text = "".join(p.read_text() for p in (test_settings.state_dir / "journal").glob("*.jsonl"))
    assert_no_text(text, messy.texts)


@pytest.mark.parametrize("land", [True, False], ids=["landed-answer-lost", "not-landed"])
def test_a_failed_delete_batch_is_journaled_by_what_the_reread_finds(
    mongo_db, make_account, test_settings, pds, store, land
):
    account, user = simple_user(mongo_db, store, pds, make_account, "flaky")
    orphan = add_orphan(session_for(pds, account))
    flaky = FlakySession(session_for(pds, account), land=land)
    plan = plan_repair(store.user_by_did(user.did), store.moods_of(user.sub),
                       pds.list_records(user.did, MOOD_COLLECTION), delete_orphans=True)
    execution = engine.execute_plan(store.user_by_did(user.did), plan, store, pds, session=flaky, options=FAST,
                                    sleep=lambda s: None, journal=journal_for(test_settings))
    assert execution.failed == [] and orphan not in repo_snapshot(pds, user.did)
    pairs = journal_pairs(test_settings.state_dir)
    outcomes = [(r["outcome"], r["deleted"]) for _, r in pairs]
    if land:  # one send: the re-read found the record gone, so it was deleted
        assert flaky.calls == 1 and outcomes == [("deleted", [orphan])]
    else:  # the first send failed and deleted nothing; the retry, journaled anew, deleted it
        assert flaky.calls == 2 and outcomes == [("failed", []), ("deleted", [orphan])]
        assert "response lost" in pairs[0][1]["error"]


def test_without_a_journal_no_delete_is_sent(mongo_db, make_account, test_settings, pds, store, reliability_record):
    messy = make_messy_user(mongo_db, make_account, pds, store)
    account = store.user_by_did(messy.user.did)
    plan = plan_repair(account, store.moods_of(messy.user.sub), pds.list_records(messy.user.did, MOOD_COLLECTION),
                       nuke_policy="delete", delete_orphans=True)
    before = repo_snapshot(pds, messy.user.did)
    deletes = {a.rkey for a in plan.actions if a.action in engine.DELETE_WHY}
    execution = engine.execute_plan(account, plan, store, pds, options=FAST, sleep=lambda s: None)
    after = repo_snapshot(pds, messy.user.did)
    lost = len(set(before) - set(after))
    reliability_record(
        "repair: no deletion journal configured",
        f"repair --apply of a plan with {len(deletes)} deletes and no journal",
        len(before), lost, 0,
        f"deletes failed: {sum(1 for f in execution.failed if f[2] == engine.NO_JOURNAL)}; "
        f"other writes applied: {execution.applied['create_record'] + execution.applied['rewrite_content']}",
        section="destructive",
    )
    assert lost == 0 and deletes <= set(after)
    assert {(f[0], f[1]) for f in execution.failed if f[2] == engine.NO_JOURNAL} == {
        (a.action, a.rkey) for a in plan.actions if a.action in engine.DELETE_WHY}
    assert ("unset_pointer", messy.ids["nuked_on_pds"], "a record of the nuked mood remains") in execution.failed
    assert execution.applied["create_record"] == 1 and execution.applied["rewrite_content"] == 3  # the rest goes on
    assert not (test_settings.state_dir / "journal").exists()
    outcome = engine.repair_user(account, store, pds, apply=True, delete_orphans=True, options=FAST)
    assert not outcome.ok and any(f[2] == engine.NO_JOURNAL for f in outcome.failed)
    assert engine.something_left(engine.totals([outcome.summary()], dry_run=False))


# --- nuke policy delete: pointers of nuked moods without record --------------------------------


def test_nuke_policy_delete_removes_the_pointer_of_a_nuked_mood_without_record(
    mongo_db, make_account, test_settings, pds, store, cli_env, capsys, monkeypatch
):
    account, user = simple_user(mongo_db, store, pds, make_account, "nkptr", moods=2)
    nuked = store.moods_of(user.sub)[0]
    session_for(pds, account).delete_record(MOOD_COLLECTION, nuked.rkey)
    mongo_db.moods.update_one({"_id": ObjectId(nuked.id)}, {"$set": {"deleted": True}})
    before = repo_snapshot(pds, user.did)

    code, out, _ = run_cli(["repair", "--user", f"@{user.handle}", "--json"], cli_env, capsys)
    assert code == 0 and sum(json.loads(out)["planned"].values()) == 0  # policy keep: nothing to do

    monkeypatch.setenv("MOODS_NUKE_POLICY", "delete")
    code, out, err = run_cli(["repair", "--user", f"@{user.handle}", "--json"], cli_env, capsys)
    data = json.loads(out)
    assert code == 1 and data["dry_run"] and data["planned"]["unset_pointer"] == 1
    assert sum(data["planned"].values()) == 1 and "unset_pointer" in err
    assert store.mood(nuked.id).rkey == nuked.rkey  # a dry run writes nothing

    code, out, err = run_cli(["repair", "--user", f"@{user.handle}", "--apply", "--json"], cli_env, capsys)
    data = json.loads(out)
    assert code == 0, err
    assert data["applied"]["unset_pointer"] == 1 and sum(data["applied"].values()) == 1
    assert store.mood(nuked.id).rkey is None and repo_snapshot(pds, user.did) == before
    code, out, _ = run_cli(["repair", "--user", f"@{user.handle}", "--json"], cli_env, capsys)
    assert code == 0 and sum(json.loads(out)["planned"].values()) == 0


# --- one bad user never stops the others -------------------------------------------------------


def _fake_account(did, handle: str):
    return SimpleNamespace(did=did, handle=f"{handle}.test", password=Secret(f"pw-{handle}-not-real"))


def test_one_bad_did_fails_its_user_alone(
    mongo_db, make_account, test_settings, pds, store, cli_env, capsys, dagster_instance, reliability_record
):
    # two users with drift, one of them with a duplicate and an orphan to delete
    first_account, first = simple_user(mongo_db, store, pds, make_account, "good")
    store.unset_pointers([first.mood_ids[0]])
    second_account, second = simple_user(mongo_db, store, pds, make_account, "good")
    second_session = session_for(pds, second_account)
    second_mood = store.moods_of(second.sub)[1]
    second_session.put_record(MOOD_COLLECTION, free_tid(9), build_record(second_mood))
    add_orphan(second_session)
    # the odd ones: a DID Dagster cannot take as a partition key, a DID of nobody, a DID that
    # is not a string, and a real account's DID held by two users
    dots = add_user(mongo_db, _fake_account("did:plc:abc...def", "dots"), moods=1)
    nobody = add_user(mongo_db, _fake_account("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "nobody"), moods=1)
    number = add_user(mongo_db, _fake_account("did:plc:placeholder", "number"), moods=1)
    mongo_db.users.update_one({"_id": number.sub}, {"$set": {"atproto.did": 12345}})
    shared_account = make_account("shared")
    shared_a = add_user(mongo_db, shared_account, moods=2)
    sync_user(store.user_by_sub(shared_a.sub), store, pds)  # its records, before the copy appears
    shared_b = add_user(mongo_db, shared_account, moods=1)
    shared_records = repo_snapshot(pds, shared_account.did)
    at_stake = must_survive(store, pds, [first, second]) | {(shared_account.did, r) for r in shared_records}

    code, out, err = run_cli(["repair", "--all", "--apply", "--delete-orphans", "--json"], cli_env, capsys)
    data = json.loads(out)
    lost = len(at_stake - still_there(pds, at_stake))
    duplicated = tally(store, pds, [first, second]).duplicated
    reliability_record(
        "repair: one run over good users and users with odd DIDs",
        "repair --all --apply --delete-orphans; DIDs: 'did:plc:abc...def', 12345, one nobody has, one held by two users",
        len(at_stake), lost, duplicated,
        f"users repaired {data['users'] - data['users_failed']}, failed {data['users_failed']}; "
        f"deleted {data['applied']['delete_duplicate'] + data['applied']['delete_orphan']} records "
        f"of the good users; the shared account's records untouched: {repo_snapshot(pds, shared_account.did) == shared_records}",
        section="destructive",
    )
    assert code == 1
    assert lost == 0 and duplicated == 0
    assert data["users"] == 7 and data["users_failed"] == 5 and data["remaining_problems"] == 0
    assert data["applied"]["delete_duplicate"] == 1 and data["applied"]["delete_orphan"] == 1
    assert data["applied"]["write_pointer"] == 1
    check_invariant(store, pds, [first, second])
    assert repo_snapshot(pds, shared_account.did) == shared_records
    reasons = {
        dots.sub: "repo not found", nobody.sub: "repo not found", number.sub: "is not a DID",
        shared_a.sub: "held by 2 users", shared_b.sub: "held by 2 users",
    }
    for sub, reason in reasons.items():
        lines = [line for line in err.splitlines() if line.startswith("FAILED") and reason in line]
        assert lines, f"no FAILED line for {sub} ({reason})"
    assert len([line for line in err.splitlines() if line.startswith("FAILED @")]) == 5
    partitions = set(dagster_instance.get_dynamic_partitions("users"))
    assert {first.did, second.did} <= partitions and "did:plc:abc...def" not in partitions

    # the repair job over all users says the same (a dry run: the good users are in step now)
    from moods_pipeline_tests.world import definitions_for

    job = definitions_for(test_settings).resolve_job_def("mood_repair_job")
    result = job.execute_in_process(instance=dagster_instance, raise_on_error=False, run_config={
        "ops": {"repair_moods": {"config": {"all_users": True}}}})
    failure = next(e for e in result.all_events if e.is_step_failure)
    description = failure.event_specific_data.error.message
    assert "5 of 7 users not fully repaired" in description
    output = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT)
    assert output.event_specific_data.metadata["users_failed"].value == 5


def test_partition_keys_dagster_refuses_are_recognized():
    from moods_pipeline.sync.refusal import partition_key_problem

    assert partition_key_problem("did:plc:abc...def") and partition_key_problem("did:plc:a\nb")
    assert partition_key_problem(12345) and partition_key_problem("")
    assert partition_key_problem("did:plc:abc.def") is None and partition_key_problem("did:web:a..b") is None
