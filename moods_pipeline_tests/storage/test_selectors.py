"""Selectors never pick: a --user selector that fits several users is refused (exit 2) naming
every candidate, before anything runs, by every command that works on users.

On the real stack, through the real entry point (``cli.main``): the repos of every candidate are
compared before and after (records and repo revisions), the accounts must still exist, and the
Dagster instance must hold no run.
"""

from __future__ import annotations

from dataclasses import replace

import dagster as dg
import pytest
from bson import ObjectId

from moods_pipeline import MOOD_COLLECTION, cli
from moods_pipeline.secret import Secret
from moods_pipeline.storage.mongo import AmbiguousSelector, SelectorError
from moods_pipeline.sync.backfill import sync_user
from moods_pipeline_tests.reliability import reliability_record  # noqa: F401 - fixture
from moods_pipeline_tests.world import BASE_WHEN, add_user, repo_snapshot

pytestmark = pytest.mark.timeout(300)


def raw_user(db, sub: str, atproto: dict | None, handle: str | None, moods: int = 1) -> None:
    doc = {"_id": sub, "code": "ac25sel"}
    if atproto is not None:
        doc["atproto"] = atproto
    db.users.insert_one(doc)
    if handle is not None:
        db["@handles"].insert_one({"_id": sub, "handle": handle})
    if moods:
        db.moods.insert_many([{"_id": ObjectId(), "user": sub, "mood": f"m{i}", "when": BASE_WHEN} for i in range(moods)])


# --- the store -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_resolve_reads_every_selector_every_way_and_refuses_several(store, mongo_db):
    raw_user(mongo_db, "auth0|one", {"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "password": "p"}, "twin")
    raw_user(mongo_db, "auth0|two", {"did": "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb", "password": "p"}, "twin")
    # A sub that looks like a DID, and another user whose DID is that very string.
    raw_user(mongo_db, "did:plc:cccccccccccccccccccccccc", None, "subdid")
    raw_user(mongo_db, "auth0|three", {"did": "did:plc:cccccccccccccccccccccccc", "password": "p"}, "three")
    # A sub of the usual shape, and a user whose stored DID (malformed) is that string.
    raw_user(mongo_db, "auth0|x", None, "x")
    raw_user(mongo_db, "auth0|four", {"did": "auth0|x", "password": "p"}, "four")
    # A DID two users hold (copied credentials).
    raw_user(mongo_db, "auth0|five", {"did": "did:plc:dddddddddddddddddddddddd", "password": "p"}, "five")
    raw_user(mongo_db, "auth0|six", {"did": "did:plc:dddddddddddddddddddddddd", "password": "p"}, "six")
    # A sub that starts with "@" and a handle row naming another user.
    raw_user(mongo_db, "@seven", None, "seven-handle")
    raw_user(mongo_db, "auth0|eight", None, "seven")
    # A handle on two rows, one of which names no users document.
    raw_user(mongo_db, "auth0|nine", None, "lonely")
    mongo_db["@handles"].insert_one({"_id": "auth0|ghost", "handle": "lonely"})

    cases = {
        "@twin": ["auth0|one", "auth0|two"],
        "did:plc:cccccccccccccccccccccccc": ["auth0|three", "did:plc:cccccccccccccccccccccccc"],
        "auth0|x": ["auth0|four", "auth0|x"],
        "did:plc:dddddddddddddddddddddddd": ["auth0|five", "auth0|six"],
        "@seven": ["@seven", "auth0|eight"],
        "@lonely": ["auth0|ghost", "auth0|nine"],
    }
    for selector, subs in cases.items():
        with pytest.raises(AmbiguousSelector) as refused:
            store.resolve(["auth0|one", selector])  # one good selector does not make it run
        message = str(refused.value)
        assert isinstance(refused.value, SelectorError)
        assert refused.value.selector == selector and len(refused.value.candidates) == len(subs)
        assert f"--user {selector} matches {len(subs)} users" in message, message
        for sub in subs:
            assert sub in message, (selector, message)
    message = str(pytest.raises(AmbiguousSelector, store.resolve, ["@twin"]).value)
    assert "@twin, DID did:plc:aaaaaaaaaaaaaaaaaaaaaaaa" in message and "DID did:plc:bbbbbbbbbbbbbbbbbbbbbbbb" in message
    assert "auth0|ghost (as handle @lonely; no users document)" in str(
        pytest.raises(AmbiguousSelector, store.resolve, ["@lonely"]).value)

    # One user per reading still resolves, by any of its names, without repeats.
    assert [u.sub for u in store.resolve(["@three", "auth0|three", " @three "])] == ["auth0|three"]
    assert [u.sub for u in store.resolve(["did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"])] == ["auth0|one"]
    assert [u.sub for u in store.resolve(["@seven-handle"])] == ["@seven"]
    for selector, fragment in [("@nobody", "no user has the handle @nobody"),
                               ("did:plc:zzzzzzzzzzzzzzzzzzzzzzzz", "no user has the DID"),
                               ("auth0|nobody", "no user has the sub 'auth0|nobody'"),
                               ("  ", "empty")]:
        with pytest.raises(SelectorError, match=fragment) as error:
            store.resolve([selector])
        assert not isinstance(error.value, AmbiguousSelector)


# --- every command, through the real entry point ----------------------------------------------


def _commands(selector: str) -> dict[str, list[str]]:
    return {
        "backfill": ["backfill", "--user", selector, "--json"],
        "audit": ["audit", "--user", selector, "--json"],
        "repair": ["repair", "--user", selector, "--apply", "--delete-orphans", "--json"],
        "erase records": ["erase", "--user", selector, "--mode", "records", "--apply", "--json"],
        "erase account": ["erase", "--user", selector, "--mode", "account", "--apply", "--json"],
    }


@pytest.mark.integration
def test_every_command_refuses_an_ambiguous_selector_before_anything_runs(
    cli_env, store, mongo_db, make_account, pds, local_pds, monkeypatch, capsys, reliability_record
):
    monkeypatch.setenv("PDS_ADMIN_PASSWORD", local_pds.admin_password.reveal())  # erase account may run
    twin_a = add_user(mongo_db, make_account("twina"), moods=2, handle="twin")
    twin_b = add_user(mongo_db, make_account("twinb"), moods=2, handle="twin")
    # Copied credentials: two users documents hold one DID.
    shared_account = make_account("shared")
    shared_a = add_user(mongo_db, shared_account, moods=2)
    shared_b = add_user(mongo_db, shared_account, moods=1)
    # One user's sub is another user's DID.
    holder = add_user(mongo_db, make_account("holder"), moods=2)
    mongo_db.users.insert_one({"_id": holder.did, "code": "ac25sub"})
    mongo_db["@handles"].insert_one({"_id": holder.did, "handle": "subisadid"})
    mongo_db.moods.insert_one({"_id": ObjectId(), "user": holder.did, "mood": "by the sub", "when": BASE_WHEN})
    bystander = add_user(mongo_db, make_account("bystd"), moods=2)
    for user in (twin_a, twin_b, holder, bystander):
        sync_user(store.user_by_sub(user.sub), store, pds)
    # The shared repo gets its records as the application would have written them (the
    # pipeline itself refuses a DID two users hold).
    sync_user(replace(store.user_by_sub(shared_a.sub), problem=None), store, pds)
    # Something for a repair or an erase to delete if they ran: a duplicate record in each repo.
    for user in (twin_a, twin_b, holder):
        session = pds.login(user.did, Secret(user.password), expected_did=user.did)
        value = dict(next(iter(repo_snapshot(pds, user.did).values())))
        session.create_record(MOOD_COLLECTION, value)
    dids = sorted({u.did for u in (twin_a, twin_b, shared_a, holder, bystander)})
    before = {did: repo_snapshot(pds, did) for did in dids}
    revs_before = {r["did"]: r.get("rev") for r in pds.list_repos() if r["did"] in dids}
    pointers_before = {m.id: m.rkey for u in (twin_a, twin_b, shared_a, shared_b, holder, bystander)
                       for m in store.moods_of(u.sub)}
    at_stake = sum(len(records) for records in before.values())

    kinds = {
        "handle on two @handles rows": ("@twin", [twin_a.sub, twin_b.sub]),
        "DID held by two users": (shared_account.did, [shared_a.sub, shared_b.sub]),
        "one user's sub is another's DID": (holder.did, [holder.sub, holder.did]),
    }
    for kind, (selector, subs) in kinds.items():
        for command, argv in _commands(selector).items():
            for with_good in (False, True):
                full = argv + (["--user", f"@{bystander.handle}"] if with_good else [])
                code = cli.main(full)
                out, err = capsys.readouterr()
                assert code == 2, (kind, command, code, err)
                assert out == "", (kind, command, out)  # no JSON: nothing ran
                assert f"--user {selector} matches {len(subs)} users" in err, (kind, command, err)
                for sub in subs:
                    assert sub in err, (kind, command, sub, err)
                assert "Nothing was run" in err

        after = {did: repo_snapshot(pds, did) for did in dids}
        revs_after = {r["did"]: r.get("rev") for r in pds.list_repos() if r["did"] in dids}
        lost = sum(len(set(before[did]) - set(after[did])) for did in dids)
        duplicated = sum(len(set(after[did]) - set(before[did])) for did in dids)
        assert after == before and revs_after == revs_before, kind
        reliability_record(
            f"ambiguous selector: {kind}", f"--user {selector} to backfill, audit, repair --apply, erase --apply "
            "(records and account), alone and beside a good selector",
            at_stake, lost, duplicated,
            "exit 2 naming every candidate (sub, handle, DID); no run, no PDS write, no account deleted",
            section="destructive",
        )

    # Accounts all still there, Mongo untouched, and no Dagster run was ever started.
    for did in dids:
        assert pds.describe_repo(did)["did"] == did
    assert {m.id: m.rkey for u in (twin_a, twin_b, shared_a, shared_b, holder, bystander)
            for m in store.moods_of(u.sub)} == pointers_before
    assert all(isinstance(u.get("atproto"), dict) for u in mongo_db.users.find({"_id": {"$ne": holder.did}}))
    with dg.DagsterInstance.get() as instance:
        assert instance.get_runs() == []
        assert instance.get_dynamic_partitions("users") == []

    # The same selectors, named one way only, do run (the refusal was the selector's doing).
    code = cli.main(["audit", "--user", twin_a.sub, "--json"])
    assert code == 1 and capsys.readouterr().out  # its duplicate is a problem, reported
