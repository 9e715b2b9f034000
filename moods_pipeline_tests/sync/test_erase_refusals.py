"""Destructive operations that must prove their target, on the real PDS and a real Mongo-wire
server: account erase refuses a DID two users hold, another account's DID with a wrong
password, a malformed DID and a taken-down account whose admin handle is not the stored one; it
deletes deactivated and taken-down accounts it can prove, verified by the admin API before
Mongo forgets them; records erase never guesses; a live delete re-reads the moods right before
the batch; one odd user never stops an erase run; every deletion is journaled; the ``journal``
command reads it back.

Each destructive test records a reliability row (section "destructive"): the records and
accounts that had to survive, measured on the PDS before, and how many of them were deleted,
measured after."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import date, timedelta
from types import SimpleNamespace

import httpx
import pytest
from bson import ObjectId

from moods_pipeline import MOOD_COLLECTION, cli
from moods_pipeline.atproto.client import PdsClient, PdsError
from moods_pipeline.secret import Secret
from moods_pipeline.storage.journal import DeletionJournal, journal_dir, read_journal
from moods_pipeline.sync.backfill import sync_user
from moods_pipeline.sync.live import LiveSync
from moods_pipeline_tests.reliability import reliability_record  # noqa: F401 - fixture
from moods_pipeline_tests.world import add_user, repo_snapshot

pytestmark = pytest.mark.integration

SECRET_TEXT = "velvet-lantern-private-mood"
UNKNOWN_DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"  # well formed; no PDS has it


@pytest.fixture
def cli_env(cli_env, monkeypatch):
    """conftest's operator variables, plus the PDS admin password account erase needs."""
    monkeypatch.setenv("PDS_ADMIN_PASSWORD", cli_env.pds_admin_password.reveal())
    return cli_env


@pytest.fixture
def journal(tmp_path):
    return DeletionJournal(tmp_path / "journal-state", command="test", run_id="test-run")


@pytest.fixture
def admin(pds, local_pds):
    return pds.admin(local_pds.admin_password)


# --- the world ---------------------------------------------------------------------------------


def synced(db, account, store, pds, moods: int = 3, **kwargs):
    user = add_user(db, account, texts=[f"{SECRET_TEXT} {i}" for i in range(moods)], **kwargs)
    if store.user_by_sub(user.sub).has_account and not store.user_by_sub(user.sub).problem:
        sync_user(store.user_by_sub(user.sub), store, pds)
    return user


def deactivate(url: str, account) -> None:
    """com.atproto.server.deactivateAccount with the account's own session (plain XRPC)."""
    session = httpx.post(f"{url}/xrpc/com.atproto.server.createSession",
                         json={"identifier": account.did, "password": account.password.reveal()}, timeout=30)
    session.raise_for_status()
    response = httpx.post(f"{url}/xrpc/com.atproto.server.deactivateAccount", json={}, timeout=30,
                          headers={"Authorization": f"Bearer {session.json()['accessJwt']}"})
    response.raise_for_status()


def take_down(url: str, admin_password: Secret, did: str) -> None:
    """The admin API's takedown of a whole repo (plain XRPC)."""
    response = httpx.post(
        f"{url}/xrpc/com.atproto.admin.updateSubjectStatus", timeout=30,
        auth=("admin", admin_password.reveal()),
        json={"subject": {"$type": "com.atproto.admin.defs#repoRef", "did": did},
              "takedown": {"applied": True, "ref": f"test-{secrets.token_hex(3)}"}},
    )
    response.raise_for_status()


@dataclass
class RepoState:
    exists: bool
    rkeys: set[str] | None  # None: not listable (a taken-down repo)
    duplicates: int  # records beyond the first carrying the same id


def measure(pds, admin, dids) -> dict[str, RepoState]:
    """What the PDS holds for these DIDs, through the admin API and listRecords."""
    state = {}
    for did in dids:
        exists = admin.get_account_info(did) is not None
        rkeys = duplicates = None
        if exists:
            try:
                records = pds.list_records(did, MOOD_COLLECTION)
                rkeys = {r.rkey for r in records}
                refs = [r.mood_ref for r in records]
                duplicates = len(refs) - len(set(refs))
            except PdsError:
                rkeys = None
        state[did] = RepoState(exists, rkeys if exists else set(), duplicates or 0)
    return state


def at_stake(before: dict[str, RepoState]) -> int:
    """Accounts and (listable) records that must survive."""
    return sum(int(s.exists) + len(s.rkeys or ()) for s in before.values())


def lost(before: dict[str, RepoState], after: dict[str, RepoState]) -> int:
    count = 0
    for did, was in before.items():
        now = after[did]
        if was.exists and not now.exists:
            count += 1 + len(was.rkeys or ())
        elif was.rkeys is not None and now.rkeys is not None:
            count += len(was.rkeys - now.rkeys)
    return count


def duplicated(before: dict[str, RepoState], after: dict[str, RepoState]) -> int:
    return sum(max(0, after[d].duplicates - before[d].duplicates) for d in before)


def mongo_snapshot(db) -> tuple[list, list]:
    return list(db.users.find({}).sort("_id", 1)), list(db.moods.find({}).sort("_id", 1))


def journal_lines(state_dir) -> list[dict]:
    return read_journal(state_dir)


def journal_text(state_dir) -> str:
    return "".join(p.read_text() for p in sorted(journal_dir(state_dir).glob("*.jsonl")))


def run_cli(capsys, *argv: str) -> tuple[int, dict | None, str]:
    """``moods-pipeline ARGV`` in-process: (exit code, the JSON object if one was printed, stderr)."""
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    out = captured.out.strip()
    return code, (json.loads(out) if out else None), captured.err


# --- account erase: refusals ---------------------------------------------------------------------


def test_account_erase_refuses_a_did_two_users_hold(mongo_db, make_account, store, pds, admin, local_pds, journal,
                                                    reliability_record):
    shared = make_account("shar")
    holder = synced(mongo_db, shared, store, pds)
    # A second user with the same credentials (copied by hand): neither can prove the account.
    copier = add_user(mongo_db, shared, moods=2)
    other = make_account("othr")
    synced(mongo_db, other, store, pds, moods=1)
    before = measure(pds, admin, [shared.did, other.did])
    mongo_before = mongo_snapshot(mongo_db)

    live = LiveSync(store, pds, journal=journal)
    results = [live.erase_account(local_pds.admin_password, user.sub) for user in (holder, copier)]
    planned = [live.plan_erase(user.sub, "account", local_pds.admin_password) for user in (holder, copier)]

    after = measure(pds, admin, [shared.did, other.did])
    reliability_record("account erase, DID held by two users", "erase --mode account of both holders (apply and dry run)",
                       at_stake(before), lost(before, after), duplicated(before, after),
                       "nothing deleted: both refused (DID held by 2 users); the bystander untouched",
                       section="destructive")
    for result in results + planned:
        assert result.status == "failed" and not result.ok and not result.account_deleted
        assert "held by 2 users" in result.reason
    assert lost(before, after) == 0 and after[shared.did].exists and after[other.did].exists
    assert mongo_snapshot(mongo_db) == mongo_before
    assert journal_lines(journal.folder.parent) == []  # nothing was about to be deleted


def test_account_erase_refuses_another_accounts_did_with_a_wrong_password(
    mongo_db, make_account, store, pds, admin, local_pds, journal, reliability_record
):
    own = make_account("ownr")
    victim = make_account("vict")
    victim_user = synced(mongo_db, victim, store, pds, moods=2)
    # The stored DID names the victim's account; the stored password is this user's own.
    confused = add_user(mongo_db, SimpleNamespace(did=victim.did, handle=own.handle, password=own.password), moods=1)
    mongo_db.users.delete_one({"_id": victim_user.sub})  # the DID is this user's alone in Mongo
    mongo_db.moods.delete_many({"user": victim_user.sub})
    before = measure(pds, admin, [own.did, victim.did])
    mongo_before = mongo_snapshot(mongo_db)

    live = LiveSync(store, pds, journal=journal)
    result = live.erase_account(local_pds.admin_password, confused.sub)
    planned = live.plan_erase(confused.sub, "account", local_pds.admin_password)

    after = measure(pds, admin, [own.did, victim.did])
    reliability_record("account erase, stored DID of another account", "erase --mode account with a wrong password",
                       at_stake(before), lost(before, after), duplicated(before, after),
                       "nothing deleted: the login to the stored DID failed, no fallback to the admin API",
                       section="destructive")
    for r in (result, planned):
        assert r.status == "failed" and r.reason.startswith("login failed") and not r.account_deleted
    assert lost(before, after) == 0 and after[victim.did].exists
    assert mongo_snapshot(mongo_db) == mongo_before
    assert journal_lines(journal.folder.parent) == []


def test_taken_down_account_with_another_handle_or_a_wrong_password_is_refused(
    mongo_db, make_account, store, pds, admin, local_pds, journal, reliability_record
):
    account = make_account("tdx")
    user = synced(mongo_db, account, store, pds, moods=2)
    wrong_pw_account = make_account("tdw")
    wrong_pw = synced(mongo_db, wrong_pw_account, store, pds, moods=1)
    mongo_db.users.update_one({"_id": user.sub}, {"$set": {"atproto.handle": "someone-else.test"}})
    mongo_db.users.update_one({"_id": wrong_pw.sub}, {"$set": {"atproto.password": "not-the-password-123"}})
    for did in (account.did, wrong_pw_account.did):
        take_down(local_pds.url, local_pds.admin_password, did)
    before = measure(pds, admin, [account.did, wrong_pw_account.did])
    mongo_before = mongo_snapshot(mongo_db)

    live = LiveSync(store, pds, journal=journal)
    mismatch = live.erase_account(local_pds.admin_password, user.sub)
    wrong = live.erase_account(local_pds.admin_password, wrong_pw.sub)

    after = measure(pds, admin, [account.did, wrong_pw_account.did])
    reliability_record("taken-down account, handle or password not the user's",
                       "erase --mode account of two taken-down accounts",
                       at_stake(before), lost(before, after), duplicated(before, after),
                       "nothing deleted: admin handle differs from the stored one; wrong password is not an "
                       "admin fallback", section="destructive")
    assert mismatch.status == "failed" and "does not match the stored handle" in mismatch.reason
    assert wrong.status == "failed" and wrong.reason.startswith("login failed")
    assert "not-the-password-123" not in json.dumps([mismatch.to_dict(), wrong.to_dict()])
    assert lost(before, after) == 0 and after[account.did].exists and after[wrong_pw_account.did].exists
    assert mongo_snapshot(mongo_db) == mongo_before
    assert journal_lines(journal.folder.parent) == []


# --- account erase: deactivated and taken-down accounts are deleted ------------------------------


def test_deactivated_account_is_erased_and_mongo_forgets_it_only_once_the_admin_api_says_gone(
    mongo_db, make_account, store, pds, admin, local_pds, journal, monkeypatch, reliability_record
):
    account = make_account("deac")
    user = synced(mongo_db, account, store, pds, moods=3)
    bystander_account = make_account("byd")
    bystander = synced(mongo_db, bystander_account, store, pds, moods=2)
    deactivate(local_pds.url, account)
    assert admin.get_account_info(account.did) is not None
    before = measure(pds, admin, [bystander_account.did])
    mongo_before = mongo_snapshot(mongo_db)

    # A PDS that answers deleteAccount but keeps the account: nothing is forgotten in Mongo.
    from moods_pipeline.atproto.client import PdsAdmin

    monkeypatch.setattr(PdsAdmin, "delete_account", lambda self, did: None)
    live = LiveSync(store, pds, journal=journal)
    kept = live.erase_account(local_pds.admin_password, user.sub)
    assert kept.status == "failed" and kept.reason == "the account still exists after deleteAccount"
    assert kept.left == 1 and mongo_snapshot(mongo_db) == mongo_before
    monkeypatch.undo()

    result = LiveSync(store, pds, journal=journal).erase_account(local_pds.admin_password, user.sub)
    after = measure(pds, admin, [bystander_account.did])
    reliability_record("deactivated account erase", "erase --mode account of a deactivated account "
                       "(first against a deleteAccount that does nothing)",
                       at_stake(before), lost(before, after), duplicated(before, after),
                       "the deactivated account deleted (proved by login, verified by getAccountInfo); "
                       "the bystander untouched", section="destructive")
    assert (result.status, result.account_deleted, result.proved_by, result.left) == ("erased", True, "login", 0)
    assert admin.get_account_info(account.did) is None
    assert "atproto" not in mongo_db.users.find_one({"_id": user.sub})
    assert all(m.rkey is None for m in store.moods_of(user.sub))
    assert lost(before, after) == 0 and all(m.rkey for m in store.moods_of(bystander.sub))
    entries = journal_lines(journal.folder.parent)
    assert [(e["phase"], e.get("kind") or e.get("outcome")) for e in entries] == [
        ("intent", "account"), ("result", "failed"), ("intent", "account"), ("result", "deleted")]
    assert SECRET_TEXT not in journal_text(journal.folder.parent)


def test_taken_down_account_is_erased_when_the_admin_handle_is_the_stored_one(
    mongo_db, make_account, store, pds, admin, local_pds, journal, reliability_record
):
    account = make_account("tdok")
    user = synced(mongo_db, account, store, pds, moods=2)
    bystander_account = make_account("byt")
    synced(mongo_db, bystander_account, store, pds, moods=1)
    take_down(local_pds.url, local_pds.admin_password, account.did)
    before = measure(pds, admin, [bystander_account.did])

    planned = LiveSync(store, pds).plan_erase(user.sub, "account", local_pds.admin_password)
    assert (planned.status, planned.proved_by, planned.left) == ("planned", "admin_handle", 1)
    result = LiveSync(store, pds, journal=journal).erase_account(local_pds.admin_password, user.sub)

    after = measure(pds, admin, [bystander_account.did])
    reliability_record("taken-down account erase", "erase --mode account of a taken-down account",
                       at_stake(before), lost(before, after), duplicated(before, after),
                       "deleted: the PDS refused the login as taken down, admin handle = stored handle",
                       section="destructive")
    assert (result.status, result.account_deleted, result.proved_by) == ("erased", True, "admin_handle")
    assert admin.get_account_info(account.did) is None
    assert "atproto" not in mongo_db.users.find_one({"_id": user.sub})
    assert lost(before, after) == 0


def test_an_account_this_pds_does_not_know_is_not_forgotten_unless_this_project_deleted_it(
    mongo_db, make_account, store, pds, admin, local_pds, journal, monkeypatch
):
    # Deleted elsewhere (or PDS_URL names another PDS): the admin API's "not found" alone does not
    # let the tool forget the DID; refused, Mongo unchanged.
    account = make_account("gone")
    user = synced(mongo_db, account, store, pds, moods=1)
    admin.delete_account(account.did)
    before = mongo_db.users.find_one({"_id": user.sub})
    result = LiveSync(store, pds, journal=journal).erase_account(local_pds.admin_password, user.sub)
    assert result.status == "failed" and not result.account_deleted
    assert "never deleted it" in result.reason and "PDS_URL" in result.reason
    assert mongo_db.users.find_one({"_id": user.sub}) == before
    assert journal_lines(journal.folder.parent) == []  # nothing was deleted

    # This project's own erase that died after deleteAccount, before forgetting the DID: the
    # journal has its intent, so the next erase finishes the job.
    mine = make_account("mine")
    mine_user = synced(mongo_db, mine, store, pds, moods=1)
    monkeypatch.setattr(store, "unset_account", lambda sub: (_ for _ in ()).throw(ConnectionError("Mongo went away")))
    died = LiveSync(store, pds, journal=journal).erase_account(local_pds.admin_password, mine_user.sub)
    assert died.status == "failed" and died.account_deleted and admin.get_account_info(mine.did) is None
    assert mongo_db.users.find_one({"_id": mine_user.sub})["atproto"]["did"] == mine.did
    monkeypatch.undo()
    finished = LiveSync(store, pds, journal=journal).erase_account(local_pds.admin_password, mine_user.sub)
    assert (finished.status, finished.account_deleted) == ("erased", False)
    assert finished.reason.startswith("account already gone")
    assert "atproto" not in mongo_db.users.find_one({"_id": mine_user.sub})

    # With the account still there, a user without a password cannot prove it: refused.
    alive = make_account("nopw")
    nopw = synced(mongo_db, alive, store, pds, moods=1)
    mongo_db.users.update_one({"_id": nopw.sub}, {"$unset": {"atproto.password": ""}})
    refused = LiveSync(store, pds, journal=journal).erase_account(local_pds.admin_password, nopw.sub)
    assert refused.status == "failed" and "no password" in refused.reason
    assert admin.get_account_info(alive.did) is not None and mongo_db.users.find_one({"_id": nopw.sub})["atproto"]


# --- records erase ---------------------------------------------------------------------------------


def test_records_erase_without_a_password_lists_and_deletes_nothing(
    mongo_db, make_account, cli_env, store, pds, admin, capsys, reliability_record
):
    account = make_account("rnpw")
    user = synced(mongo_db, account, store, pds, moods=3)
    mongo_db.users.update_one({"_id": user.sub}, {"$unset": {"atproto.password": ""}})
    rkeys = sorted(repo_snapshot(pds, user.did))
    pointers = {m.id: m.rkey for m in store.moods_of(user.sub)}
    before = measure(pds, admin, [account.did])

    dry_code, dry, _ = run_cli(capsys, "erase", "--user", user.sub, "--mode", "records", "--json")
    code, summary, err = run_cli(capsys, "erase", "--user", user.sub, "--mode", "records", "--apply", "--json")

    after = measure(pds, admin, [account.did])
    reliability_record("records erase, no stored password", "erase --mode records --apply",
                       at_stake(before), lost(before, after), duplicated(before, after),
                       "nothing deleted: refused (no password), the rkeys listed", section="destructive")
    assert dry_code == 1 and dry["users_failed"] == 1 and dry["records_found"] == 3
    assert code == 1 and (summary["users_failed"], summary["records_deleted"], summary["left"]) == (1, 0, 3)
    report = json.loads((cli_env.state_dir / "erase" / f"{summary['run_id']}.json").read_text())
    assert report["users"][0]["found_rkeys"] == rkeys and "no password" in report["users"][0]["reason"]
    assert sorted(repo_snapshot(pds, user.did)) == rkeys
    assert {m.id: m.rkey for m in store.moods_of(user.sub)} == pointers
    assert lost(before, after) == 0 and "no password" in err


def test_records_erase_unsets_only_the_pointers_of_records_that_are_gone(
    mongo_db, make_account, store, pds, admin, journal, monkeypatch, reliability_record
):
    account = make_account("rpart")
    user = synced(mongo_db, account, store, pds, moods=4)
    records = {r.rkey: r.value for r in pds.list_records(user.did, MOOD_COLLECTION)}
    survivor = sorted(records)[0]
    session = pds.login(account.did, account.password, expected_did=account.did)
    live = LiveSync(store, pds, journal=journal)
    original = live._delete_rkeys

    def delete_then_rewrite(sess, rkeys):
        # The application writes one record back right after the batch (a concurrent write).
        original(sess, rkeys)
        session.put_record(MOOD_COLLECTION, survivor, records[survivor])

    monkeypatch.setattr(live, "_delete_rkeys", delete_then_rewrite)
    result = live.delete_all_moods(user.sub)

    remaining = pds.list_records(user.did, MOOD_COLLECTION)
    after = {r.rkey for r in remaining}
    pointers = {m.id: m.rkey for m in store.moods_of(user.sub)}
    survivor_mood = records[survivor]["ref"]
    # At stake: the records still on the PDS after the erase, whose pointers must still name them.
    refs = [r.mood_ref for r in remaining]
    reliability_record("records erase with a record written back mid-erase",
                       "erase --mode records; one record rewritten after the delete batch",
                       len(remaining), sum(1 for r in remaining if pointers.get(r.mood_ref) != r.rkey),
                       len(refs) - len(set(refs)),
                       f"{len(result.removed_rkeys)} records deleted and their pointers unset; the rewritten "
                       "record's pointer kept", section="destructive")
    assert result.status == "failed" and result.left == 1 and after == {survivor}
    assert sorted(result.removed_rkeys) == sorted(set(records) - {survivor})
    assert pointers[survivor_mood] == survivor
    assert all(rkey is None for mood_id, rkey in pointers.items() if mood_id != survivor_mood)
    assert result.pointers_unset == 3
    entries = journal_lines(journal.folder.parent)
    assert [e["phase"] for e in entries] == ["intent", "result"]
    assert entries[1]["outcome"] == "failed" and sorted(entries[1]["deleted"]) == sorted(result.removed_rkeys)


# --- live deletes re-check right before deleting ---------------------------------------------------


@pytest.mark.parametrize("change", ["none", "un-nuked", "re-created", "re-pointed"])
def test_live_delete_keeps_a_record_that_became_a_live_moods_record(
    change, mongo_db, make_account, store, pds, admin, journal, monkeypatch, reliability_record
):
    account = make_account("keep")
    user = synced(mongo_db, account, store, pds, moods=2)
    target, other = user.mood_ids
    target_rkey = store.mood(target).rkey
    mongo_db.moods.update_one({"_id": ObjectId(target)}, {"$set": {"deleted": True}})
    doc = mongo_db.moods.find_one({"_id": ObjectId(target)})
    if change == "re-created":
        mongo_db.moods.delete_one({"_id": ObjectId(target)})  # hard-deleted: the user must be named
    before = measure(pds, admin, [account.did])

    live = LiveSync(store, pds, journal=journal)
    login = live.session_for

    def login_then_change(account_user):
        # Between the listing and the re-check: the mood comes back (or another live mood
        # takes the record as its own).
        session = login(account_user)
        if change == "un-nuked":
            mongo_db.moods.update_one({"_id": ObjectId(target)}, {"$unset": {"deleted": ""}})
        elif change == "re-created":
            mongo_db.moods.insert_one({**doc, "deleted": False})
        elif change == "re-pointed":
            mongo_db.moods.update_one({"_id": ObjectId(other)}, {"$set": {"atproto.rkey": target_rkey}})
        return session

    monkeypatch.setattr(live, "session_for", login_then_change)
    result = live.delete_moods([target], user=user.sub)[0]

    after = measure(pds, admin, [account.did])
    # Everything must survive but the nuked mood's record, and that one too once Mongo changed.
    was, now = before[account.did], after[account.did]
    must_survive = was.rkeys - ({target_rkey} if change == "none" else set())
    reliability_record("live delete, Mongo unchanged between listing and delete" if change == "none"
                       else f"live delete, mood {change} between listing and delete",
                       "delete_mood of a nuked mood" + ("" if change == "none" else
                                                        "; Mongo changed after the repo was listed"),
                       len(must_survive) + int(was.exists),
                       len(must_survive - (now.rkeys or set())) + int(was.exists and not now.exists),
                       duplicated(before, after),
                       "deleted the nuked mood's record" if change == "none"
                       else f"kept the record: {result.reason}", section="destructive")
    assert must_survive <= now.rkeys
    entries = journal_lines(journal.folder.parent)
    assert [e["phase"] for e in entries] == ["intent", "result"]
    assert [t["rkey"] for t in entries[0]["targets"]] == [target_rkey]
    if change == "none":
        assert (result.status, result.removed) == ("deleted", (target_rkey,))
        assert target_rkey not in after[account.did].rkeys and entries[1]["outcome"] == "deleted"
        return
    assert result.status == "skipped" and result.kept == (target_rkey,) and result.removed == ()
    assert result.reason.startswith("kept: record is now the live mood")
    assert (other if change == "re-pointed" else target) in result.reason
    assert target_rkey in after[account.did].rkeys and lost(before, after) == 0
    assert entries[1]["outcome"] == "kept"
    if change == "un-nuked":
        assert store.mood(target).rkey == target_rkey  # the pointer of a live mood stays


# --- one odd user never stops an erase run ---------------------------------------------------------


def odd_users(db, make_account, store, pds):
    """Two good users and users whose DIDs cannot be acted on: malformed, not a string, held by
    two users, well formed but unknown to the PDS."""
    good = [synced(db, make_account("good"), store, pds, moods=2) for _ in range(2)]
    shared_account = make_account("shr")
    shared = [synced(db, shared_account, store, pds, moods=1), add_user(db, shared_account, moods=1)]
    def fake(did: str) -> SimpleNamespace:
        return SimpleNamespace(did=did, handle=f"odd{secrets.token_hex(4)}.test", password=Secret("whatever-pw-1"))

    malformed = add_user(db, fake("did:plc:has spaces!"), moods=1)
    number = add_user(db, fake("did:plc:placeholder"), moods=1)
    db.users.update_one({"_id": number.sub}, {"$set": {"atproto.did": 42}})
    unknown = add_user(db, fake(UNKNOWN_DID), moods=1)
    return good, shared_account, shared, [malformed, number, unknown]


def test_erase_run_with_odd_dids_fails_them_alone_and_erases_the_others(
    mongo_db, make_account, cli_env, store, pds, admin, capsys, reliability_record
):
    good, shared_account, shared, odd = odd_users(mongo_db, make_account, store, pds)
    protected = [shared_account.did]
    before = measure(pds, admin, protected)
    good_rkeys = {u.sub: sorted(repo_snapshot(pds, u.did)) for u in good}
    selectors = [arg for u in [good[0], *shared, *odd, good[1]] for arg in ("--user", u.sub)]

    code, summary, err = run_cli(capsys, "erase", *selectors, "--mode", "records", "--apply", "--json")

    after = measure(pds, admin, protected)
    report = json.loads((cli_env.state_dir / "erase" / f"{summary['run_id']}.json").read_text())
    by_sub = {u["sub"]: u for u in report["users"]}
    reliability_record("records erase run with odd DIDs", "erase --mode records --apply of 2 good users and "
                       "5 with a shared, malformed, non-string or unknown DID",
                       at_stake(before), lost(before, after), duplicated(before, after),
                       f"{summary['records_deleted']} records of the 2 good users deleted; the other 5 refused",
                       section="destructive")
    assert code == 1 and summary["users"] == 7 and summary["users_failed"] == 5
    for user in good:
        assert by_sub[user.sub]["status"] == "erased" and by_sub[user.sub]["removed_rkeys"] == good_rkeys[user.sub]
        assert repo_snapshot(pds, user.did) == {}
    for user in shared:
        assert by_sub[user.sub]["status"] == "failed" and "held by 2 users" in by_sub[user.sub]["reason"]
        assert len(by_sub[user.sub]["found_rkeys"]) == 1
    malformed, number, unknown = odd
    assert "is not a DID" in by_sub[malformed.sub]["reason"]
    assert "not a string" in by_sub[number.sub]["reason"]
    assert by_sub[unknown.sub]["status"] == "failed" and by_sub[unknown.sub]["reason"]
    assert lost(before, after) == 0
    assert SECRET_TEXT not in json.dumps(report) + err


def test_account_erase_run_with_odd_dids_fails_them_alone_and_erases_the_others(
    mongo_db, make_account, cli_env, store, pds, admin, capsys, reliability_record
):
    good, shared_account, shared, odd = odd_users(mongo_db, make_account, store, pds)
    malformed, number, unknown = odd
    protected = [shared_account.did]
    before = measure(pds, admin, protected)
    selectors = [arg for u in [good[0], *shared, malformed, number, unknown, good[1]] for arg in ("--user", u.sub)]

    code, summary, _ = run_cli(capsys, "erase", *selectors, "--mode", "account", "--apply", "--json")

    after = measure(pds, admin, protected)
    report = json.loads((cli_env.state_dir / "erase" / f"{summary['run_id']}.json").read_text())
    by_sub = {u["sub"]: u for u in report["users"]}
    reliability_record("account erase run with odd DIDs", "erase --mode account --apply of 2 good users and "
                       "5 with a shared, malformed, non-string or unknown DID",
                       at_stake(before), lost(before, after), duplicated(before, after),
                       f"{summary['accounts_deleted']} accounts deleted (the good users'); shared, malformed and "
                       "non-string DIDs refused; the DID this PDS does not know refused too (never deleted by this project)",
                       section="destructive")
    assert code == 1 and summary["accounts_deleted"] == 2 and summary["users_failed"] == 5
    for user in good:
        assert by_sub[user.sub]["status"] == "erased" and admin.get_account_info(user.did) is None
    for user in [*shared, malformed, number, unknown]:
        assert by_sub[user.sub]["status"] == "failed", by_sub[user.sub]
        assert mongo_db.users.find_one({"_id": user.sub})["atproto"]
    # Unknown to this PDS and never deleted by this project: its DID is not forgotten.
    assert not by_sub[unknown.sub]["account_deleted"] and "never deleted it" in by_sub[unknown.sub]["reason"]
    assert lost(before, after) == 0
    intents = [e for e in read_journal(cli_env.state_dir) if e["phase"] == "intent"]
    assert sorted(e["did"] for e in intents) == sorted(u.did for u in good)


# --- the journal command ---------------------------------------------------------------------------


def test_journal_command_pairs_intents_and_results_and_filters_by_day(
    mongo_db, make_account, cli_env, store, pds, capsys, monkeypatch
):
    user = synced(mongo_db, make_account("jrnl"), store, pds, moods=2)
    code, summary, _ = run_cli(capsys, "erase", "--user", user.sub, "--mode", "records", "--apply", "--json")
    assert code == 0 and summary["records_deleted"] == 2
    # A deletion whose outcome nobody saw (a crash after the intent), and an old day's line.
    DeletionJournal(cli_env.state_dir, command="repair", run_id="crashed").intent(
        kind="records", did=user.did, sub=user.sub, handle=user.handle, reason="orphan", targets=[])
    old_day = date.today() - timedelta(days=400)
    (journal_dir(cli_env.state_dir) / f"{old_day.isoformat()}.jsonl").write_text(json.dumps(
        {"at": f"{old_day.isoformat()}T00:00:00.000Z", "id": "old", "phase": "intent", "kind": "account",
         "command": "erase", "run_id": "old-run", "did": "did:plc:old", "targets": [], "reason": "erase account"})
        + "\n")

    # Only MOODS_STATE_DIR is needed.
    for name in ("MONGODB_CONNECTION_STRING", "PDS_URL", "PDS_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MOODS_ROLLOUT", "not a rollout")  # another setting wrong: still works
    monkeypatch.chdir(cli_env.state_dir)

    code, everything, _ = run_cli(capsys, "journal", "--json")
    assert code == 0 and set(everything) >= {"entries", "deletions", "without_result"}
    assert (everything["deletions"], everything["without_result"]) == (3, 2)
    erase_intent = next(e for e in everything["entries"] if e.get("run_id") == summary["run_id"])
    assert erase_intent["kind"] == "records" and len(erase_intent["targets"]) == 2

    code, recent, _ = run_cli(capsys, "journal", "--since", (old_day + timedelta(days=1)).isoformat(), "--json")
    assert code == 0 and (recent["deletions"], recent["without_result"]) == (2, 1)
    assert all(e.get("run_id") != "old-run" for e in recent["entries"])

    code = cli.main(["journal"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and len(out) == 3
    assert any(summary["run_id"] in line and "2 rkeys" in line and "deleted" in line for line in out)
    assert sum("no result recorded" in line for line in out) == 2
    assert SECRET_TEXT not in "\n".join(out) + json.dumps(everything)

    for bad in ("yesterday", "2024-02-30", "20240101"):
        assert cli.main(["journal", "--since", bad]) == 2


def test_only_the_pdss_not_found_answer_means_gone(local_pds, make_account):
    """getAccountInfo's "no such account" (400 NotFound "Account not found") is the only answer
    that reads as gone: a malformed DID (the reference PDS answers 500) raises, as does a wrong
    admin password."""
    quick = PdsClient(local_pds.url, max_retries=1, backoff_base_s=0.01)
    try:
        admin = quick.admin(local_pds.admin_password)
        assert admin.get_account_info(UNKNOWN_DID) is None
        assert admin.get_account_info(make_account("info").did)["handle"].startswith("info")
        with pytest.raises(PdsError):
            admin.get_account_info("not-a-did")
        with pytest.raises(PdsError) as refused:
            quick.admin(Secret("not-the-admin-password")).get_account_info(UNKNOWN_DID)
        assert refused.value.status == 401
    finally:
        quick.close()
