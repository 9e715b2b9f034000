"""A property over random worlds: erase and repair delete only inside verified repos.

Each example builds a small world on the real PDS and the real Mongo-wire server: three fresh
accounts with records, and two to four `users` documents whose stored DID, password and handle
are drawn at random (the account's own DID, a DID another document also holds, a malformed or
non-string one, a well-formed DID nobody has; the right password, a wrong one, none; handles
that may repeat). Then `erase` (records or account) or `repair --apply --delete-orphans` runs
on a random subset of the users, and the property is checked against snapshots taken before:

- an account is gone only if a selected user *owns* it: a well-formed DID held by that user
  alone, with a stored password that logs in to it, and the command was an account erase;
- a record is gone only from a repo a selected user owns;
- a `users` document changes only for an owner whose account was erased, and a mood only
  for a selected user whose repo could be read under a DID held by that user alone;
- and, so that the property cannot pass by deleting nothing: every owner selected for an erase
  has its records (or its account) gone afterwards.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass

import pytest
from bson import ObjectId
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.client import PdsClient
from moods_pipeline.model import did_problem, iso_when
from moods_pipeline.storage.journal import DeletionJournal, read_journal
from moods_pipeline.storage.mongo import MongoStore, SelectorError
from moods_pipeline.sync.live import LiveSync
from moods_pipeline.sync.repair import repair_users
from moods_pipeline_tests.conftest import create_account
from moods_pipeline_tests.reliability import reliability_record  # noqa: F401 - fixture
from moods_pipeline_tests.world import BASE_WHEN

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACCOUNTS = 3
RECORDS_PER_ACCOUNT = 2
HANDLES = ("alpha", "beta", "gamma")

did_kinds = st.sampled_from(["own"] * 5 + ["malformed", "nonstring", "nobody", "none"])
password_kinds = st.sampled_from(["right", "right", "right", "wrong", "missing"])
user_specs = st.fixed_dictionaries({
    "did": did_kinds,
    "account": st.integers(0, ACCOUNTS - 1),
    "password": password_kinds,
    "handle": st.sampled_from(HANDLES),
    "synced_moods": st.integers(0, RECORDS_PER_ACCOUNT),  # moods whose ids the account's records carry
    "new_moods": st.integers(0, 2),
    "selected": st.sampled_from([True, True, False]),
})
operations = st.sampled_from(["erase records", "erase account", "repair"])


@dataclass
class Account:
    did: str
    handle: str
    password: str
    refs: list[str]


def _make_account(pds_url: str, pds: PdsClient) -> Account:
    made = create_account(pds_url, prefix="prop")
    session = pds.login(made.did, made.password, expected_did=made.did)
    refs = [str(ObjectId()) for _ in range(RECORDS_PER_ACCOUNT)]
    for ref in refs:
        session.create_record(MOOD_COLLECTION, {"$type": MOOD_COLLECTION, "mood": f"mood {ref[-6:]}",
                                                "when": iso_when(BASE_WHEN), "ref": ref})
    return Account(made.did, made.handle, made.password.reveal(), refs)


def _stored_did(spec: dict, account: Account):
    return {
        "own": account.did,
        "malformed": "did:not a did",
        "nonstring": 12345,
        "nobody": "did:plc:" + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(24)),
        "none": None,
    }[spec["did"]]


def _owners(db, accounts: list[Account], specs: list[dict], subs: list[str]) -> dict[str, str]:
    """sub -> DID for every user that provably owns its account (what the tools must require)."""
    holders: dict[str, int] = {}
    for doc in db.users.find({}, {"atproto.did": 1}):
        did = (doc.get("atproto") or {}).get("did")
        if isinstance(did, str):
            holders[did] = holders.get(did, 0) + 1
    owners = {}
    for spec, sub in zip(specs, subs):
        account = accounts[spec["account"]]
        if spec["did"] == "own" and spec["password"] == "right" and holders.get(account.did) == 1:
            owners[sub] = account.did
    return owners


def _readable_alone(db, specs: list[dict], subs: list[str]) -> set[str]:
    """Subs whose stored DID is well formed and held by them alone (a repair may read their repo)."""
    holders: dict[str, int] = {}
    docs = {doc["_id"]: doc for doc in db.users.find({})}
    for doc in docs.values():
        did = (doc.get("atproto") or {}).get("did")
        if isinstance(did, str):
            holders[did] = holders.get(did, 0) + 1
    readable = set()
    for sub in subs:
        did = (docs[sub].get("atproto") or {}).get("did")
        if isinstance(did, str) and did_problem(did) is None and holders.get(did) == 1:
            readable.add(sub)
    return readable


def _records(pds: PdsClient, did: str) -> set[str] | None:
    try:
        return {r.rkey for r in pds.list_records(did, MOOD_COLLECTION)}
    except Exception:
        return None


def test_deletions_stay_inside_verified_repos(local_pds, mongo_client, tmp_path_factory, reliability_record):
    totals = Counter()

    def spec(did="own", account=0, password="right", handle="alpha", synced=1, new=1, selected=True) -> dict:
        return {"did": did, "account": account, "password": password, "handle": handle,
                "synced_moods": synced, "new_moods": new, "selected": selected}

    # Worlds that must be in every run, beside the random ones: an owner next to a user holding
    # a copy of another's DID with a wrong password, and two users sharing one account's DID.
    owner_and_impostor = [spec(), spec(account=1, password="wrong", handle="alpha"), spec(account=2, selected=False)]
    shared = [spec(account=0), spec(account=0, handle="beta"), spec(account=1, synced=0, new=2)]

    @settings(max_examples=12, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(specs=st.lists(user_specs, min_size=2, max_size=4), operation=operations,
           nuke_policy=st.sampled_from(["keep", "delete"]))
    @example(specs=owner_and_impostor, operation="erase account", nuke_policy="keep")
    @example(specs=owner_and_impostor, operation="erase records", nuke_policy="keep")
    @example(specs=owner_and_impostor, operation="repair", nuke_policy="delete")
    @example(specs=shared, operation="erase account", nuke_policy="keep")
    def world(specs, operation, nuke_policy):
        check_world(specs, operation, nuke_policy, local_pds, mongo_client, tmp_path_factory, totals)

    world()
    reliability_record(
        "random worlds (hypothesis)",
        f"{totals['examples']} worlds: erase records/account or repair --apply --delete-orphans on random users "
        "with shared, malformed, foreign or unknown DIDs, wrong or missing passwords, repeated handles",
        totals["protected"], totals["lost"], 0,
        f"{totals['owner_records_deleted']} records and {totals['owner_accounts_deleted']} accounts deleted, all "
        f"in repos of verified owners; {totals['refused']} selected users who could not be verified were refused or skipped",
        section="destructive",
    )


def check_world(specs, operation, nuke_policy, local_pds, mongo_client, tmp_path_factory, totals: Counter) -> None:
    db_name = f"prop_{secrets.token_hex(6)}"
    db = mongo_client[db_name]
    pds = PdsClient(local_pds.url)
    store = MongoStore(mongo_client, db_name)
    try:
        accounts = [_make_account(local_pds.url, pds) for _ in range(ACCOUNTS)]
        subs = []
        for n, spec in enumerate(specs):
            account = accounts[spec["account"]]
            sub = f"auth0|prop{n}{secrets.token_hex(6)}"
            subs.append(sub)
            atproto = {"handle": account.handle, "createdAt": "2024-01-01T00:00:00.000Z"}
            did = _stored_did(spec, account)
            if did is not None:
                atproto["did"] = did
            if spec["password"] == "right":
                atproto["password"] = account.password
            elif spec["password"] == "wrong":
                atproto["password"] = secrets.token_urlsafe(16)
            db.users.insert_one({"_id": sub, "code": "ac25prop", "when": BASE_WHEN, "atproto": atproto})
            db["@handles"].insert_one({"_id": sub, "handle": spec["handle"]})
            moods = []
            # Moods whose ids the account's records carry: only the first claimant of an account can
            # take them (ObjectIds are unique), later claimants get new moods instead.
            taken = {m["_id"] for m in db.moods.find({}, {"_id": 1})}
            for ref in account.refs[: spec["synced_moods"]]:
                if ObjectId(ref) not in taken:
                    moods.append({"_id": ObjectId(ref), "user": sub, "mood": f"mood {ref[-6:]}", "when": BASE_WHEN})
            for _ in range(spec["new_moods"]):
                moods.append({"_id": ObjectId(), "user": sub, "mood": "a new mood", "when": BASE_WHEN})
            if moods:
                db.moods.insert_many(moods)

        admin = pds.admin(local_pds.admin_password)
        records_before = {a.did: _records(pds, a.did) for a in accounts}
        users_before = {doc["_id"]: doc for doc in db.users.find({})}
        moods_before = {doc["_id"]: doc for doc in db.moods.find({})}
        owners = _owners(db, accounts, specs, subs)
        readable = _readable_alone(db, specs, subs)
        selected = [sub for spec, sub in zip(specs, subs) if spec["selected"]] or [subs[0]]
        selected_owners = {sub: did for sub, did in owners.items() if sub in selected}

        state_dir = tmp_path_factory.mktemp("journal")
        journal = DeletionJournal(state_dir, command=operation, run_id="property")
        users = []
        for sub in selected:
            try:
                users.extend(store.resolve([sub]))
            except SelectorError:
                pass
        if operation == "repair":
            repair_users(users, store, pds, apply=True, delete_orphans=True, nuke_policy=nuke_policy,
                         concurrency=2, journal=journal)
        else:
            live = LiveSync(store, pds, journal=journal)
            for user in users:
                if operation == "erase records":
                    live.delete_all_moods(user)
                else:
                    live.erase_account(local_pds.admin_password, user)

        owned_dids = set(selected_owners.values())
        # Count first (the table's figures are what was measured), then judge.
        lost_outside: list[str] = []
        for account in accounts:
            gone = admin.get_account_info(account.did) is None
            after = _records(pds, account.did) if not gone else set()
            lost = (records_before[account.did] or set()) - (after or set())
            if account.did in owned_dids:
                totals["owner_records_deleted"] += len(lost)
                totals["owner_accounts_deleted"] += int(gone)
                continue
            totals["protected"] += len(records_before[account.did] or set()) + 1  # its records and the account
            totals["lost"] += len(lost) + int(gone)
            if gone:
                lost_outside.append(f"account {account.did}")
            if lost:
                lost_outside.append(f"records {sorted(lost)} of {account.did}")
        totals["examples"] += 1
        totals["refused"] += len([s for s in selected if s not in selected_owners])
        assert not lost_outside, f"{operation} deleted outside every verified owner's repo: {lost_outside}"
        for account in accounts:
            if account.did in owned_dids and admin.get_account_info(account.did) is None:
                assert operation == "erase account", f"{operation} deleted the account {account.did}"
        for sub, doc in users_before.items():
            if db.users.find_one({"_id": sub}) != doc:
                assert operation == "erase account" and sub in selected_owners, f"users document {sub} changed"
        for mood_id, doc in moods_before.items():
            if db.moods.find_one({"_id": mood_id}) != doc:
                assert doc["user"] in selected and doc["user"] in readable, f"mood {mood_id} of {doc['user']} changed"
                if operation != "repair":
                    assert doc["user"] in selected_owners, f"erase changed mood {mood_id} of a user it cannot verify"
        # Liveness: what the owners asked for happened.
        for sub, did in selected_owners.items():
            if operation == "erase account":
                assert admin.get_account_info(did) is None, f"the account of owner {sub} is still there"
            elif operation == "erase records":
                assert _records(pds, did) == set(), f"records of owner {sub} are still there"
        # Every deletion that happened was journaled before it was sent.
        intents = [e for e in read_journal(state_dir) if e["phase"] == "intent"]
        if any((records_before[a.did] or set()) - (_records(pds, a.did) or set()) for a in accounts):
            assert intents, "records were deleted without a journal line"
    finally:
        pds.close()
        mongo_client.drop_database(db_name)
