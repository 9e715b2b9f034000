"""Secrets stay secret, writes stay in their author's repo, deletions stay in the mood collection.

- A full run of the real command line (``.venv/bin/moods-pipeline -v backfill --all --json`` as a
  subprocess against the test stack, through a proxy that injects a 429, an expired token, a
  dropped read and a 500, with a wrong stored password among the users) leaks no stored
  password, admin password, session token or JWT-looking string, and no mood text, into its
  stdout or stderr, any event of the Dagster instance (all runs), or any file under
  MOODS_STATE_DIR, DAGSTER_HOME or HOME. Every write it sent went to the session's own repo
  and carried only moods of that repo's user.
- A session refuses a write to another repo before sending any request, and a login that comes
  back for another DID is refused before any write.
- Writes and deletions (live sync, nuke sync, erase of records, repair plans) only ever touch
  ``computer.aesthetic.mood`` records; records of other collections, even ones carrying a mood's
  id, are never touched. (``erase --mode account`` deletes the whole account by design and is
  not covered here.)

Failure messages name the kind of secret and where it was found, never its value.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.client import LoginFailed, PdsClient, PdsError
from moods_pipeline.secret import Secret
from moods_pipeline.storage.journal import DeletionJournal
from moods_pipeline.sync.backfill import sync_user
from moods_pipeline.sync.live import LiveSync
from moods_pipeline.sync.planner import plan_user
from moods_pipeline.sync.repair_plan import plan_repair
from moods_pipeline.sync.writer import BatchWriter, WriteOptions
from moods_pipeline_tests.support.fault_proxy import FaultProxy
from moods_pipeline_tests.sync.test_repair_plan import USER, scenarios
from moods_pipeline_tests.world import BASE_WHEN, add_user, repo_snapshot

pytestmark = pytest.mark.timeout(120)  # every test bounded

REPO_ROOT = Path(__file__).resolve().parents[1]
CLI = REPO_ROOT / ".venv" / "bin" / "moods-pipeline"
JWT_RE = re.compile(rb"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+")
WRITE_NSIDS = {
    "com.atproto.repo.applyWrites",
    "com.atproto.repo.createRecord",
    "com.atproto.repo.putRecord",
    "com.atproto.repo.deleteRecord",
}


# --- finding secrets without printing them -------------------------------------------------------


@dataclass
class Secrets:
    values: dict[str, bytes]  # label -> value; labels go into messages, values never do

    def leaks(self, data: bytes, where: str) -> list[str]:
        found = [f"{label} in {where}" for label, value in self.values.items() if value and value in data]
        if JWT_RE.search(data):
            found.append(f"a JWT-looking string in {where}")
        return found


def scan_tree(root: Path, secrets: Secrets) -> tuple[list[str], int]:
    found: list[str] = []
    files = 0
    for path in sorted(root.rglob("*")):
        if path.is_file():
            files += 1
            found += secrets.leaks(path.read_bytes(), str(path.relative_to(root.parent)))
    return found, files


class Spy:
    """A proxy rule that never acts: it keeps every request's nsid, body and bearer token."""

    def __init__(self) -> None:
        self.requests: list[tuple[str | None, bytes, str | None]] = []
        self._lock = threading.Lock()

    def __call__(self, request) -> bool:
        auth = request.headers.get("authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        with self._lock:
            self.requests.append((request.nsid, request.body, token))
        return False

    def tokens(self) -> set[str]:
        return {token for _, _, token in self.requests if token}

    def writes(self) -> list[tuple[str, dict, str | None]]:
        return [(nsid, json.loads(body), token) for nsid, body, token in self.requests if nsid in WRITE_NSIDS]


def jwt_subject(token: str) -> str | None:
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("sub")
    except Exception:  # noqa: BLE001
        return None


def ops_of(nsid: str, body: dict) -> list[dict]:
    """The record operations of a write request: (collection, rkey, value)."""
    if nsid == "com.atproto.repo.applyWrites":
        return list(body.get("writes") or [])
    return [{"collection": body.get("collection"), "rkey": body.get("rkey"), "value": body.get("record")}]


# --- the command line, end to end ------------------------------------------------------------------


def run_cli(argv: list[str], *, test_settings, pds_url: str, admin_password: Secret, tmp_path: Path):
    """The real command as a subprocess, with only the settings a user would export."""
    home, dagster_home, state_dir = (tmp_path / name for name in ("home", "dagster_home", "state"))
    for folder in (home, dagster_home):
        folder.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "MONGODB_CONNECTION_STRING": test_settings.mongodb_connection_string.reveal(),
        "MONGODB_NAME": test_settings.mongodb_name,
        "PDS_URL": pds_url,
        "PDS_ADMIN_PASSWORD": admin_password.reveal(),
        "DAGSTER_HOME": str(dagster_home),
        "MOODS_STATE_DIR": str(state_dir),
    }
    done = subprocess.run([str(CLI), *argv], env=env, cwd=tmp_path, capture_output=True, timeout=100)
    return done, (state_dir, dagster_home, home)


def find_leaks(done, roots: tuple[Path, ...], scanner: Secrets) -> list[str]:
    """Every place a secret shows: CLI output, files under the roots, every Dagster event and run."""
    from dagster import DagsterInstance
    from dagster._serdes import serialize_value

    leaks = scanner.leaks(done.stdout, "CLI stdout") + scanner.leaks(done.stderr, "CLI stderr")
    files = 0
    for root in roots:
        found, count = scan_tree(root, scanner)
        leaks += found
        files += count
    assert files >= 5  # results, runs and event logs, at least
    events = 0
    with DagsterInstance.from_config(str(roots[1])) as instance:
        runs = instance.get_runs()
        assert len(runs) >= 2  # the backfill run(s) and the summary
        for run in runs:
            leaks += scanner.leaks(serialize_value(run).encode(), f"run {run.run_id[:8]}")
            for entry in instance.all_logs(run.run_id):
                events += 1
                leaks += scanner.leaks(serialize_value(entry).encode(), f"an event of run {run.run_id[:8]}")
    assert events > 10
    if leaks and os.environ.get("SECURITY_DEBUG_DIR"):  # debugging aid: stderr with the secrets masked
        text = done.stderr
        for label, value in scanner.values.items():
            text = text.replace(value, f"<{label}>".encode())
        (Path(os.environ["SECURITY_DEBUG_DIR"]) / "stderr-masked.txt").write_bytes(JWT_RE.sub(b"<JWT>", text))
    return leaks


def mood_texts(tag: str, n: int = 8) -> list[str]:
    return [f"SECRET-MOOD-{tag}-{i} 🌧" for i in range(n)]


@pytest.mark.integration
def test_a_full_cli_run_leaks_no_secret_and_writes_only_to_each_authors_repo(
    store, local_pds, mongo_db, make_account, test_settings, tmp_path
):
    accounts = [make_account("sec") for _ in range(3)]
    users = [add_user(mongo_db, account, texts=mood_texts(str(n))) for n, account in enumerate(accounts)]
    wrong_account = make_account("secbad")
    wrong = add_user(mongo_db, wrong_account, texts=mood_texts("w"), password="stored-but-wrong-" + "z" * 16)
    add_user(mongo_db, None, texts=mood_texts("none"))  # no PDS account
    mongo_db.moods.insert_one({"user": users[0].sub, "mood": "   ", "when": BASE_WHEN})  # one invalid mood
    poisoned = plan_user(store.moods_of(users[1].sub), []).creates[3]

    spy = Spy()
    with FaultProxy(local_pds.url) as proxy:
        proxy.fail(match=spy)  # first rule: sees every request, never acts
        proxy.rate_limit(nsid="com.atproto.repo.applyWrites", count=1, reset_in_s=1)
        proxy.fail(400, nsid="com.atproto.repo.applyWrites", count=1, error="ExpiredToken", message="Token has expired")
        proxy.drop(nsid="com.atproto.repo.listRecords", count=1)
        proxy.fail(500, nsid="com.atproto.repo.applyWrites", body_contains=f'"rkey":"{poisoned.rkey}"')
        done, roots = run_cli(["backfill", "--all", "--json"], test_settings=test_settings, pds_url=proxy.url,
                              admin_password=local_pds.admin_password, tmp_path=tmp_path)
        rate_limited = proxy.count(status=429)
        dropped = proxy.count(outcome="drop")
        failed_500 = proxy.count(status=500)
    # The run did what a run does, error paths included.
    assert done.returncode == 1, done.stderr[-2000:].decode("utf-8", "replace")
    summary = json.loads(done.stdout)
    assert summary["users_failed"] == 1 and summary["failed"] == 8 + 1 and summary["created"] == 23
    assert summary["skipped_invalid"] == 1 and summary["skipped_no_account"] == 1
    assert rate_limited == 1 and dropped == 1 and failed_500 >= 2
    assert b"login failed" in done.stderr

    tokens = spy.tokens()
    assert len(tokens) >= 4  # three sessions, one of them renewed after the injected ExpiredToken
    secrets = {f"password of user {i}": a.password.reveal().encode() for i, a in enumerate(accounts)}
    secrets["the wrong stored password"] = wrong.password.encode()
    secrets["the real password of the wrong-password account"] = wrong_account.password.reveal().encode()
    secrets["the PDS admin password"] = local_pds.admin_password.reveal().encode()
    secrets.update({f"session token #{i}": t.encode() for i, t in enumerate(sorted(tokens))})
    leaks = find_leaks(done, roots, Secrets({**secrets, "mood text": b"SECRET-MOOD-"}))
    assert leaks == [], leaks

    # Every write went to the repo of the session that sent it, with moods of that repo's user only.
    writes = spy.writes()
    assert writes
    mood_owner = {m.id: u.did for u in users + [wrong] for m in store.moods_of(u.sub)}
    for nsid, body, token in writes:
        session_did = jwt_subject(token or "")
        assert session_did and body.get("repo") == session_did, f"{nsid} to another repo than its session's"
        for op in ops_of(nsid, body):
            assert op["collection"] == MOOD_COLLECTION
            if op.get("value") is not None:
                assert mood_owner.get(op["value"].get("ref")) == session_did, "a mood written into another repo"
    assert {jwt_subject(t) for _, _, t in writes} == {u.did for u in users}  # never the wrong password's repo


@pytest.mark.integration
def test_a_verbose_cli_run_leaks_no_secret(local_pds, mongo_db, make_account, test_settings, tmp_path):
    account = make_account("secv")
    add_user(mongo_db, account, texts=mood_texts("v", 2))
    done, roots = run_cli(["-v", "backfill", "--all", "--json"], test_settings=test_settings,
                          pds_url=local_pds.url, admin_password=local_pds.admin_password, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:].decode("utf-8", "replace")
    assert b"DEBUG" in done.stderr
    secrets = {"the user's password": account.password.reveal().encode(),
               "the PDS admin password": local_pds.admin_password.reveal().encode(),
               "mood text": b"SECRET-MOOD-"}
    assert find_leaks(done, roots, Secrets(secrets)) == []


# --- sessions refuse other repos before any request -----------------------------------------------


def _jwt(sub: str) -> str:
    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'HS256', 'typ': 'at+jwt'})}.{b64({'sub': sub, 'exp': 4_000_000_000})}.c2ln"


class RecordingPds:
    """A transport that logs in as ``did`` whoever asks, and records every request."""

    def __init__(self, did: str) -> None:
        self.did = did
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        nsid = request.url.path.rsplit("/", 1)[-1]
        if nsid == "com.atproto.server.createSession":
            return httpx.Response(200, json={"did": self.did, "handle": "a.test", "accessJwt": _jwt(self.did),
                                             "refreshJwt": _jwt(self.did)})
        return httpx.Response(200, json={"results": [], "uri": "at://x/y/z", "cid": "bafy"})

    def nsids(self) -> list[str]:
        return [r.url.path.rsplit("/", 1)[-1] for r in self.requests]


OWN = "did:plc:ownownownownownownownown"
OTHER = "did:plc:otherotherotherotherothe"
CREATE = {"$type": "com.atproto.repo.applyWrites#create", "collection": MOOD_COLLECTION, "rkey": "3l2uqkzmxbc2a",
          "value": {"$type": MOOD_COLLECTION, "mood": "x", "when": "2024-01-01T00:00:00.000Z", "ref": "a" * 24}}


def test_a_session_refuses_another_repo_before_sending_anything():
    pds = RecordingPds(OWN)
    client = PdsClient("http://pds.invalid", transport=httpx.MockTransport(pds.handler))
    session = client.login(OWN, Secret("pw"), expected_did=OWN)
    assert pds.nsids() == ["com.atproto.server.createSession"]
    with pytest.raises(PdsError) as refused:
        session.apply_writes([CREATE], repo=OTHER)
    assert refused.value.error == "RepoMismatch"
    with pytest.raises(PdsError):
        session.apply_writes([{**CREATE, "repo": OTHER}])
    assert pds.nsids() == ["com.atproto.server.createSession"]  # nothing was sent
    # What a session does send always names its own repo.
    session.apply_writes([CREATE])
    session.put_record(MOOD_COLLECTION, "3l2uqkzmxbc2a", CREATE["value"])
    session.delete_record(MOOD_COLLECTION, "3l2uqkzmxbc2a")
    assert [json.loads(r.content)["repo"] for r in pds.requests[1:]] == [OWN] * 3


def test_a_login_that_comes_back_for_another_did_is_refused_and_nothing_is_written(store, mongo_db, make_account,
                                                                                    test_settings):
    user = add_user(mongo_db, make_account("didmm"), moods=3)
    pds = RecordingPds(OTHER)  # the PDS says the stored credentials belong to someone else
    client = PdsClient("http://pds.invalid", transport=httpx.MockTransport(pds.handler))
    with pytest.raises(LoginFailed, match="names another account"):
        client.login(OWN, Secret("pw"), expected_did=OWN)
    real = PdsClient(test_settings.pds_url)
    account = store.user_by_sub(user.sub)

    class Mismatched(PdsClient):  # reads from the real PDS, logs in at the lying one
        def login(self, identifier, password, expected_did=None):
            return client.login(identifier, password, expected_did=expected_did)

    mixed = Mismatched(test_settings.pds_url)
    outcome = sync_user(account, store, mixed, options=WriteOptions(min_batch_interval_s=0))
    assert outcome.error.startswith("login failed:") and "names another account" in outcome.error
    assert [n for n in pds.nsids() if n != "com.atproto.server.createSession"] == []
    assert repo_snapshot(real, user.did) == {}
    assert all(m.rkey is None for m in store.moods_of(user.sub))
    real.close()
    mixed.close()


# --- deletions and writes stay in the mood collection ----------------------------------------------


@pytest.mark.integration
def test_live_deletes_and_erase_touch_only_mood_records(store, local_pds, mongo_db, make_account, test_settings):
    account = make_account("coll")
    user = add_user(mongo_db, account, moods=6)
    direct = PdsClient(local_pds.url)
    session = direct.login(account.did, account.password, expected_did=account.did)
    # Records of other collections, one even carrying a mood's id, and a lexicon-like record.
    others = {
        "computer.aesthetic.painting": {"$type": "computer.aesthetic.painting", "ref": user.mood_ids[0], "title": "p"},
        "computer.aesthetic.kidlisp": {"$type": "computer.aesthetic.kidlisp", "source": "(wipe blue)"},
    }
    for collection, value in others.items():
        session.put_record(collection, "3l2uqkzmxbc2a", value)
    assert sync_user(store.user_by_sub(user.sub), store, direct).created == 6

    spy = Spy()
    with FaultProxy(local_pds.url) as proxy:
        proxy.fail(match=spy)
        client = PdsClient(proxy.url)
        live = LiveSync(store, client, journal=DeletionJournal(test_settings.state_dir, command="test"))
        # Deletion sync mirrors moods deleted or nuked in Mongo: nuke the two first.
        mongo_db.moods.update_many({"_id": {"$in": [ObjectId(m) for m in user.mood_ids[:2]]}},
                                   {"$set": {"deleted": True}})
        deleted = live.delete_moods([user.mood_ids[0], user.mood_ids[1]])
        assert [r.status for r in deleted] == ["deleted", "deleted"]
        erased = live.delete_all_moods(store.user_by_sub(user.sub))
        assert erased.ok, erased
        client.close()
    writes = spy.writes()
    assert writes, "no write went through the spy"
    for nsid, body, _ in writes:
        assert body.get("repo") == account.did
        for op in ops_of(nsid, body):
            assert op["collection"] == MOOD_COLLECTION, f"{nsid} touched {op['collection']}"
    assert repo_snapshot(direct, account.did) == {}
    for collection, value in others.items():
        kept = direct.get_record(account.did, collection, "3l2uqkzmxbc2a")
        assert kept is not None and kept.value == value, f"{collection} was touched"
    direct.close()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_repair_plans_and_the_writer_only_write_mood_records_that_exist(scenario):
    moods, records, nuke_policy, tolerance = scenario
    present = {r.rkey for r in records}
    plan = plan_repair(USER, moods, records, nuke_policy=nuke_policy, delete_orphans=True, rewrite_legacy=True,
                       when_tolerance_ms=tolerance)
    for write in plan.writes():
        assert write["collection"] == MOOD_COLLECTION
        if write["$type"].endswith("#delete") or write["$type"].endswith("#update"):
            assert write["rkey"] in present  # only records read from the mood collection
        else:
            assert write["$type"].endswith("#create") and write["rkey"] not in present

    class Session:
        did = USER.did
        sent: list[dict] = []

        def apply_writes(self, ops):
            self.sent.extend(ops)
            return []

    class Store:
        def write_pointers(self, pairs):
            return len(pairs)

    session = Session()
    session.sent = []
    creates = plan_user(moods, records).creates
    BatchWriter(session, Store(), None, WriteOptions(min_batch_interval_s=0), sleep=lambda s: None).write_all(creates)
    assert len(session.sent) == len(creates)
    assert all(op["collection"] == MOOD_COLLECTION and op["$type"].endswith("#create") for op in session.sent)
    assert not {op["rkey"] for op in session.sent} & present


def test_secrets_never_print_and_cannot_be_pickled():
    secret = Secret("hunter2-but-longer")
    assert "hunter2" not in f"{secret} {secret!r} {[secret]} {dict(p=secret)}"
    with pytest.raises(TypeError):
        pickle.dumps(secret)
