"""devstack.seed: demo data into MongoDB (MongoDB-wire server) with PDS accounts (fake creator,
then the reference PDS through the project's client)."""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from datetime import datetime, timezone

import httpx
import pytest

from moods_pipeline.atproto.client import PdsClient, PdsError
from moods_pipeline.devstack import demo_data as dd
from moods_pipeline.devstack import seed as sd
from moods_pipeline.secret import Secret

# --- seeding: MongoDB-wire server, fake account creator -------------------------------------


class FakeCreator:
    """Records calls; thread-safe; optionally fails some handles."""

    def __init__(self, fail: set[str] = frozenset(), delay: float = 0.01) -> None:
        self.calls: list[tuple[str, str, Secret]] = []
        self.fail = set(fail)
        self.delay = delay
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0

    def __call__(self, handle: str, email: str, password: Secret) -> str:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.calls.append((handle, email, password))
        try:
            time.sleep(self.delay)
            if handle in self.fail:
                raise PdsError(400, "InvalidHandle", "Handle too short", method="POST com.atproto.server.createAccount")
            return "did:plc:" + f"{abs(hash(handle)):024d}"[:24].translate(str.maketrans("01890", "abcde"))
        finally:
            with self.lock:
                self.active -= 1


SMALL = dict(users=12, heavy_user_moods=15, users_without_moods=3, seed=11)


@pytest.mark.integration
def test_seed_writes_production_documents(mongo_db, caplog: pytest.LogCaptureFixture) -> None:
    data = dd.generate(**SMALL)
    creator = FakeCreator()
    events: list[tuple] = []
    caplog.set_level(logging.DEBUG, logger="moods_pipeline")
    report = sd.seed(mongo_db, data, creator, concurrency=3, progress=lambda *a: events.append(a))

    accounts = [u for u in data.users if u.has_account]
    assert report.ok and report.accounts_created == len(accounts) == len(creator.calls)
    assert 1 < creator.max_active <= 3
    assert report.users_written == len(data.users)
    assert report.moods_written == len(data.moods) and report.handles_written == len(data.handles)
    assert mongo_db.users.count_documents({}) == len(data.users)
    assert mongo_db.moods.count_documents({}) == len(data.moods)
    assert mongo_db["@handles"].count_documents({}) == len(data.handles)

    # the creator got full handles, emails and Secrets
    for handle, email, password in creator.calls:
        assert handle.endswith(".test") and email == handle[: -len(".test")] + "@example.com"
        assert isinstance(password, Secret)
    # documents come back exactly as generated
    dids = {u.sub: None for u in data.users}
    for doc in mongo_db.users.find():
        user = data.user(doc["_id"])
        assert doc == user.users_doc(doc.get("atproto", {}).get("did"))
        dids[user.sub] = doc.get("atproto", {}).get("did")
    assert all((did is not None) == data.user(sub).has_account for sub, did in dids.items())
    stored = {m["_id"]: m for m in mongo_db.moods.find()}
    assert all(stored[m["_id"]] == m for m in data.moods)
    assert sorted(mongo_db["@handles"].find(), key=lambda r: r["_id"]) == sorted(data.handles, key=lambda r: r["_id"])
    keys = [dict(ix["key"]) for ix in mongo_db.moods.list_indexes()]
    assert {"user": 1} in keys and {"when": 1} in keys

    # progress: counts only; logs: neither passwords nor texts
    assert events and all(isinstance(s, str) and isinstance(d, int) and isinstance(t, int) for s, d, t in events)
    assert ("accounts", len(accounts), len(accounts)) in events
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert logged  # it does say something
    for user in accounts:
        assert user.password.reveal() not in logged
    for mood in data.moods:
        if len(mood["mood"].strip()) > 8:
            assert mood["mood"] not in logged


@pytest.mark.integration
def test_seed_refuses_existing_data_and_resumes(mongo_db) -> None:
    data = dd.generate(**SMALL)
    sd.seed(mongo_db, data, None)
    before = (mongo_db.users.count_documents({}), mongo_db.moods.count_documents({}))
    with pytest.raises(sd.DemoDataExists, match="already holds this demo data"):
        sd.seed(mongo_db, data, FakeCreator())
    assert (mongo_db.users.count_documents({}), mongo_db.moods.count_documents({})) == before

    # an interrupted seed: a user and some moods missing; resume writes only those
    lost_user = data.by_handle("jeffrey")
    mongo_db.users.delete_one({"_id": lost_user.sub})
    lost = [m["_id"] for m in data.moods[:5]]
    mongo_db.moods.delete_many({"_id": {"$in": lost}})
    creator = FakeCreator()
    report = sd.seed(mongo_db, data, creator, if_exists="resume")
    assert [c[0] for c in creator.calls] == ["jeffrey.test"]
    assert report.moods_written == 5 and report.users_written == 1
    assert report.moods_existing == len(data.moods) - 5
    assert (mongo_db.users.count_documents({}), mongo_db.moods.count_documents({})) == before

    again = sd.seed(mongo_db, data, FakeCreator(), if_exists="resume")  # complete: nothing to do
    assert again.users_written == again.moods_written == again.handles_written == 0


@pytest.mark.integration
def test_seed_refuses_a_database_with_other_data(mongo_db) -> None:
    mongo_db.moods.insert_one({"user": "auth0|someone", "mood": "real", "when": datetime.now(timezone.utc)})
    creator = FakeCreator()
    with pytest.raises(sd.DemoDataExists, match="not this demo data set"):
        sd.seed(mongo_db, dd.generate(**SMALL), creator, if_exists="resume")
    assert creator.calls == [] and mongo_db.users.count_documents({}) == 0


@pytest.mark.integration
def test_seed_reports_failed_accounts(mongo_db) -> None:
    data = dd.generate(**SMALL)
    victim = next(u for u in data.users if u.syncable and u.handle != "jeffrey")
    report = sd.seed(mongo_db, data, FakeCreator(fail={f"{victim.pds_label}.test"}))
    assert not report.ok
    assert [sub for sub, _ in report.accounts_failed] == [victim.sub]
    assert "InvalidHandle" in report.accounts_failed[0][1]
    assert victim.password.reveal() not in report.accounts_failed[0][1]
    assert mongo_db.users.find_one({"_id": victim.sub}) is None
    assert report.accounts_created == sum(1 for u in data.users if u.has_account) - 1
    # a later resume retries it
    retry = FakeCreator()
    report = sd.seed(mongo_db, data, retry, if_exists="resume")
    assert report.ok and [c[0] for c in retry.calls] == [f"{victim.pds_label}.test"]


def test_label_suffix_and_offline_did() -> None:
    data = dd.generate()
    user = data.by_handle("jeffrey")
    assert user.pds_handle(".test", "-ab12") == "jeffrey-ab12.test"
    long = next(u for u in data.users if u.pds_label and len(u.pds_label) >= 14)
    fitted = long.pds_handle(".test", "-ab12")
    assert fitted.endswith("-ab12.test") and len(fitted.split(".")[0]) <= 18
    assert sd.offline_did(user.sub) == sd.offline_did(user.sub)
    assert re.fullmatch(r"did:plc:[a-z2-7]{24}", sd.offline_did(user.sub))
    with pytest.raises(ValueError, match="label_suffix"):
        sd.seed(None, data, None, label_suffix="_BAD")


# --- seeding against the reference PDS -------------------------------------------------------


def _login(pds_url: str, identifier: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{pds_url}/xrpc/com.atproto.server.createSession",
        json={"identifier": identifier, "password": password},
        timeout=60,
    )


@pytest.mark.integration
def test_seed_against_the_reference_pds(local_pds, mongo_db) -> None:
    data = dd.generate(**SMALL)
    suffix = "-" + secrets.token_hex(2)  # the session's PDS is shared with other tests
    with sd.pds_account_creator(local_pds.url) as creator:
        report = sd.seed(mongo_db, data, creator, concurrency=4, label_suffix=suffix)
    assert report.ok, report.accounts_failed
    accounts = [u for u in data.users if u.has_account]
    assert report.accounts_created == len(accounts)
    print(f"\n{len(accounts)} PDS accounts in {report.seconds_accounts:.2f}s "
          f"({report.accounts_per_second:.2f} accounts/s), total {report.seconds:.2f}s")

    # the stored DID and password log in, as the application does
    syncable = [mongo_db.users.find_one({"_id": u.sub}) for u in data.users if u.syncable]
    for doc in [syncable[0], mongo_db.users.find_one({"_id": data.by_handle("jeffrey").sub})]:
        response = _login(local_pds.url, doc["atproto"]["did"], doc["atproto"]["password"])
        assert response.status_code == 200, response.text
        assert response.json()["did"] == doc["atproto"]["did"]
        assert response.json()["handle"] == doc["atproto"]["handle"]
        assert doc["atproto"]["handle"].endswith(f"{suffix}.test")
    # a wrong password does not
    assert _login(local_pds.url, syncable[0]["atproto"]["did"], "not-the-password").status_code == 401

    # the account of a user whose Mongo document lacks the password exists all the same
    no_password = mongo_db.users.find_one({"_id": data.cases["atproto_without_password"][0]})
    assert "password" not in no_password["atproto"]
    resolved = httpx.get(
        f"{local_pds.url}/xrpc/com.atproto.identity.resolveHandle",
        params={"handle": no_password["atproto"]["handle"]},
        timeout=30,
    )
    assert resolved.status_code == 200 and resolved.json()["did"] == no_password["atproto"]["did"]

    # seeding the same data again creates no second account
    with sd.pds_account_creator(local_pds.url) as creator, pytest.raises(sd.DemoDataExists):
        sd.seed(mongo_db, data, creator, label_suffix=suffix)

    # and createAccount errors come back as the client's PdsError, without the password
    with sd.pds_account_creator(local_pds.url) as creator, pytest.raises(PdsError) as err:
        creator(f"jeffrey{suffix}.test", "other@example.com", Secret("p" * 32))
    assert err.value.status == 400 and not err.value.retryable
    assert "p" * 32 not in str(err.value) + repr(err.value)


@pytest.mark.integration
def test_pds_account_creator_with_invite_codes(local_pds) -> None:
    """With the admin password, each account gets its own single-use invite code (production
    requires invites); with one code, every account uses it."""
    tag = secrets.token_hex(3)
    with sd.pds_account_creator(local_pds.url, admin_password=local_pds.admin_password) as creator:
        minted = [creator(f"inv{tag}{i}.test", f"inv{tag}{i}@example.com", Secret(secrets.token_urlsafe(16)))
                  for i in range(2)]
    assert len(set(minted)) == 2 and all(did.startswith("did:plc:") for did in minted)

    with PdsClient(local_pds.url) as client:
        code = client.admin(local_pds.admin_password).create_invite_code(1)
    with sd.pds_account_creator(local_pds.url, invite_code=code) as creator:
        did = creator(f"one{tag}.test", f"one{tag}@example.com", Secret(secrets.token_urlsafe(16)))
        assert did.startswith("did:plc:")
        # the code had one use: a second account with it is refused
        with pytest.raises(PdsError) as err:
            creator(f"two{tag}.test", f"two{tag}@example.com", Secret(secrets.token_urlsafe(16)))
    assert err.value.status == 400 and "nvite" in str(err.value)
    assert repr(creator).startswith("PdsAccountCreator(") and "invite" not in repr(creator).lower()
