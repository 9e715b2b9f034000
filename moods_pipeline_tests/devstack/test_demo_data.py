"""demo_data: the seeded generator (pure) and the seeder (MongoDB-wire server, reference PDS)."""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone

import httpx
import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moods_pipeline.devstack import demo_data as dd
from moods_pipeline.secret import Secret

SUB_RE = re.compile(r"^auth0\|[0-9a-f]{24}$")
CODE_RE = re.compile(r"^ac25[a-z]{5}$")
LABEL_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,16}[a-z0-9]$")
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# a few of the reference PDS's reserved subdomains (pds/dist/handle/reserved.js)
RESERVED = {"admin", "support", "example", "demo", "user", "ruby", "pixel", "wave", "static", "test"}


@pytest.fixture(scope="module")
def quick() -> dd.DemoData:
    return dd.generate()


def docs_of(data: dd.DemoData) -> dict[str, list[dict]]:
    by_user: dict[str, list[dict]] = defaultdict(list)
    for mood in data.moods:
        by_user[mood["user"]].append(mood)
    return by_user


# --- counts ----------------------------------------------------------------------------------


def test_quick_default_counts(quick: dd.DemoData) -> None:
    with_moods = [u for u in quick.users if u.mood_count]
    assert len(with_moods) == 150
    assert len(quick.moods) == 1000
    assert len(quick.users) == 155  # + 5 users without moods
    per_user = Counter(m["user"] for m in quick.moods)
    assert per_user == {u.sub: u.mood_count for u in with_moods}
    jeffrey = quick.by_handle("jeffrey")
    assert jeffrey.mood_count == 226 and jeffrey.syncable
    assert quick.cases["heavy"] == (jeffrey.sub,)
    others = [u.mood_count for u in with_moods if u is not jeffrey]
    assert max(others) < 226
    assert sum(1 for c in others if c <= 5) >= 0.7 * len(others)  # skewed: many 1-5
    assert sum(1 for c in others if c == 1) >= 20
    assert quick.summary()["moods"] == 1000 and quick.summary()["max_moods_per_user"] == 226


def test_moods_per_user_gives_every_user_exactly_m() -> None:
    data = dd.generate(users=200, moods_per_user=50)
    counts = Counter(m["user"] for m in data.moods)
    assert len(counts) == 200 and set(counts.values()) == {50}
    assert len(data.moods) == 10_000
    assert data.by_handle("jeffrey").mood_count == 50


def test_production_scale() -> None:
    data = dd.generate(scale="production")
    assert sum(1 for u in data.users if u.mood_count) == 1000
    assert len(data.moods) == 2700
    assert data.by_handle("jeffrey").mood_count == 226
    assert len(data.cases["no_moods"]) == 300
    assert sum(1 for u in data.users if u.has_account) > 1000
    more = dd.generate(scale="production", users_without_moods=3200)
    assert len(more.users) == 4200


def test_options_and_errors() -> None:
    assert len(dd.generate(users=20, users_without_moods=0).users) == 20
    assert len(dd.generate(users=30, total_moods=100, heavy_user_moods=20).moods) == 100
    plain = dd.generate(users=5, moods_per_user=3, odd_cases=False, users_without_moods=0)
    assert len(plain.moods) == 15 and all("deleted" not in m for m in plain.moods)
    assert all(u.syncable for u in plain.users)
    with pytest.raises(ValueError, match="scale"):
        dd.generate(scale="huge")
    with pytest.raises(ValueError, match="at least 10"):
        dd.generate(users=5)
    with pytest.raises(ValueError):
        dd.generate(moods_per_user=0)


# --- determinism -----------------------------------------------------------------------------


def test_same_seed_same_data(quick: dd.DemoData) -> None:
    again = dd.generate()
    assert again == quick
    assert [u.password for u in again.users] == [u.password for u in quick.users]
    assert [m["_id"] for m in again.moods] == [m["_id"] for m in quick.moods]
    other = dd.generate(seed=8)
    assert {u.sub for u in other.users}.isdisjoint({u.sub for u in quick.users})
    assert other.moods[0]["_id"] != quick.moods[0]["_id"]


# --- shapes ----------------------------------------------------------------------------------


def _is_ms_utc(when: object) -> bool:
    return (
        isinstance(when, datetime)
        and when.utcoffset() is not None
        and when.utcoffset().total_seconds() == 0
        and when.microsecond % 1000 == 0
    )


def test_mood_documents_have_the_production_shape(quick: dd.DemoData) -> None:
    subs = {u.sub for u in quick.users}
    for mood in quick.moods:
        assert set(mood) in ({"_id", "user", "mood", "when"}, {"_id", "user", "mood", "when", "deleted"})
        assert isinstance(mood["_id"], ObjectId)
        assert isinstance(mood["user"], str) and mood["user"] in subs
        assert isinstance(mood["mood"], str)
        assert _is_ms_utc(mood["when"])
        assert 2023 <= mood["when"].year <= 2025
        assert mood["when"] <= datetime(2025, 11, 1, tzinfo=timezone.utc)
        # ObjectId timestamp consistent with `when` (the driver made it at insert time)
        assert mood["_id"].generation_time == mood["when"].replace(microsecond=0)
        if "deleted" in mood:
            assert mood["deleted"] in (True, False) and isinstance(mood["deleted"], bool)
    ids = [m["_id"] for m in quick.moods]
    assert len(set(ids)) == len(ids)
    assert [m["when"] for m in quick.moods] == sorted(m["when"] for m in quick.moods)
    years = Counter(m["when"].year for m in quick.moods)
    assert set(years) == {2023, 2024, 2025}
    # most documents carry no `deleted` field
    assert sum(1 for m in quick.moods if "deleted" not in m) > 0.9 * len(quick.moods)


def test_users_documents_have_the_production_shape(quick: dd.DemoData) -> None:
    codes = set()
    for user in quick.users:
        did = "did:plc:" + "a" * 24 if user.has_account else None
        doc = user.users_doc(did)
        assert SUB_RE.match(doc["_id"]) and doc["_id"] == user.sub
        assert CODE_RE.match(doc["code"])
        codes.add(doc["code"])
        assert _is_ms_utc(doc["when"])
        if not user.has_account:
            assert set(doc) == {"_id", "code", "when"}
            assert user.password is None
            continue
        assert set(doc) == {"_id", "code", "when", "atproto"}
        atproto = doc["atproto"]
        created_key = "created" if user.legacy_created else "createdAt"
        expected = {"did", "handle", created_key} | ({"password"} if user.password_in_mongo else set())
        assert set(atproto) == expected
        assert atproto["did"] == did
        assert atproto["handle"] == f"{user.pds_label}.test"
        if user.password_in_mongo:
            assert isinstance(atproto["password"], str) and len(atproto["password"]) == 32
            assert atproto["password"].isalnum()
        if user.legacy_created:
            assert _is_ms_utc(atproto["created"]) and atproto["created"] >= user.when
        else:
            assert ISO_RE.match(atproto["createdAt"])
    assert len(codes) == len(quick.users)
    with pytest.raises(ValueError):
        quick.by_handle("jeffrey").users_doc(None)


def test_handles_are_bare_valid_and_unique(quick: dd.DemoData) -> None:
    for row in quick.handles:
        assert set(row) == {"_id", "handle"}
        assert SUB_RE.match(row["_id"])
        assert not row["handle"].startswith("@")
        assert LABEL_RE.match(row["handle"]) and "--" not in row["handle"]
        assert row["handle"] not in RESERVED
    handles = [row["handle"] for row in quick.handles]
    assert len(set(handles)) == len(handles)
    labels = [u.pds_label for u in quick.users if u.has_account]
    assert len(set(labels)) == len(labels)
    assert all(LABEL_RE.match(label) and label not in RESERVED for label in labels)
    assert {row["_id"] for row in quick.handles} == {u.sub for u in quick.users if u.handle}
    subs = [u.sub for u in quick.users]
    assert len(set(subs)) == len(subs)


def test_no_mood_repeats_the_authors_previous_one(quick: dd.DemoData) -> None:
    for sub, moods in docs_of(quick).items():
        for before, after in zip(moods, moods[1:]):
            assert before["mood"] != after["mood"], sub


def test_passwords_never_show(quick: dd.DemoData) -> None:
    user = quick.by_handle("jeffrey")
    assert user.password.reveal() not in repr(user)
    assert user.password.reveal() not in repr(quick.summary())
    assert all(isinstance(u.password, Secret) for u in quick.users if u.has_account)
    passwords = [u.password.reveal() for u in quick.users if u.has_account]
    assert len(set(passwords)) == len(passwords)


# --- odd cases -------------------------------------------------------------------------------


def test_every_odd_case_is_present_and_listed(quick: dd.DemoData) -> None:
    assert set(quick.cases) == set(dd.USER_CASES) | set(dd.MOOD_CASES)
    for name in dd.USER_CASES + dd.MOOD_CASES:
        assert quick.cases[name], name
    subs = {u.sub for u in quick.users}
    ids = {str(m["_id"]) for m in quick.moods}
    for name in dd.USER_CASES:
        assert set(quick.cases[name]) <= subs, name
    for name in dd.MOOD_CASES:
        assert set(quick.cases[name]) <= ids, name


def test_user_cases(quick: dd.DemoData) -> None:
    cases, by_user = quick.cases, docs_of(quick)
    handled = {row["_id"] for row in quick.handles}

    no_atproto = [quick.user(s) for s in cases["no_atproto"]]
    assert all(not u.has_account and "atproto" not in u.users_doc(None) for u in no_atproto)
    assert any(u.mood_count for u in no_atproto)  # their moods are counted as skipped

    no_password = [quick.user(s) for s in cases["atproto_without_password"]]
    assert all(u.has_account and not u.syncable and u.mood_count for u in no_password)
    assert all("password" not in u.users_doc("did:plc:x")["atproto"] for u in no_password)

    no_handle = [quick.user(s) for s in cases["no_handle"]]
    assert all(u.handle is None and u.sub not in handled for u in no_handle)
    assert any(u.syncable for u in no_handle) and any(not u.has_account and u.mood_count for u in no_handle)

    for sub in cases["nuked"]:
        assert by_user[sub] and all(m.get("deleted") is True for m in by_user[sub])
        assert quick.user(sub).syncable  # nuked users still have accounts and moods
    for sub in cases["unnuked"]:
        assert by_user[sub] and all(m["deleted"] is False for m in by_user[sub])
    for sub in cases["unnuked_then_posted"]:
        flags = [m.get("deleted", "absent") for m in by_user[sub]]
        assert False in flags and "absent" in flags and True not in flags
        assert flags.index("absent") > flags.index(False)  # newer moods lack the field
    nuke_touched = set(cases["nuked"]) | set(cases["unnuked"]) | set(cases["unnuked_then_posted"])
    assert all("deleted" not in m for m in quick.moods if m["user"] not in nuke_touched)

    legacy = set(cases["legacy_created"])
    assert quick.by_handle("jeffrey").sub in legacy
    assert any(u.has_account and u.sub not in legacy for u in quick.users)  # createdAt too

    assert all(quick.user(s).mood_count == 0 and not by_user.get(s) for s in cases["no_moods"])


def test_mood_cases(quick: dd.DemoData) -> None:
    cases = quick.cases
    text = {str(m["_id"]): m["mood"] for m in quick.moods}

    (max_id,) = cases["max_bytes"]
    assert len(text[max_id].encode("utf-8")) == 5000 and len(text[max_id]) < 5000
    (over_id,) = cases["over_max_bytes"]
    # a character-counting validator would accept it: only the UTF-8 length is over
    assert len(text[over_id].encode("utf-8")) == 5001 and len(text[over_id]) < 5000
    (empty_id,) = cases["empty"]
    assert text[empty_id] == ""
    (blank_id,) = cases["whitespace_only"]
    assert text[blank_id] and text[blank_id].strip() == ""
    for mood_id in cases["untrimmed"]:
        assert text[mood_id] != text[mood_id].strip() and text[mood_id].strip()
    for mood_id in cases["emoji"]:
        assert any(ord(c) >= 0x2600 for c in text[mood_id])
    assert any(any(ord(c) > 0xFFFF for c in text[i]) for i in cases["emoji"])
    assert any("\u200d" in text[i] for i in quick.cases["emoji"]) or any(
        "\u200d" in m["mood"] for m in quick.moods
    )
    for mood_id in cases["multiline"]:
        assert "\n" in text[mood_id]
    assert any("\r\n" in text[i] for i in cases["multiline"])
    shared = [quick.mood(i) for i in cases["repeated_text"]]
    assert len({m["mood"] for m in shared}) == 1
    assert len({m["user"] for m in shared}) >= 2
    # repeated texts across users also occur naturally
    users_of_text: dict[str, set] = defaultdict(set)
    for m in quick.moods:
        users_of_text[m["mood"]].add(m["user"])
    assert sum(1 for users in users_of_text.values() if len(users) >= 2) >= 10

    # the invalid and edge texts sit on live moods of syncable users: the pipeline meets them
    for name in ("max_bytes", "over_max_bytes", "empty", "whitespace_only", "untrimmed"):
        for mood_id in cases[name]:
            mood = quick.mood(mood_id)
            assert "deleted" not in mood and quick.user(mood["user"]).syncable, name


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    users=st.integers(min_value=10, max_value=60),
    without=st.integers(min_value=0, max_value=10),
    seed=st.integers(min_value=0, max_value=2**32),
    heavy=st.integers(min_value=2, max_value=40),
    per_user=st.one_of(st.none(), st.integers(min_value=2, max_value=6)),
)
def test_generator_invariants(users: int, without: int, seed: int, heavy: int, per_user: int | None) -> None:
    data = dd.generate(users=users, users_without_moods=without, seed=seed,
                       heavy_user_moods=heavy, moods_per_user=per_user)
    assert sum(1 for u in data.users if u.mood_count) == users
    assert len(data.users) == users + without
    assert len({m["_id"] for m in data.moods}) == len(data.moods)
    assert len({u.sub for u in data.users}) == len(data.users)
    handles = [r["handle"] for r in data.handles]
    assert len(set(handles)) == len(handles)
    for name in dd.USER_CASES + dd.MOOD_CASES:
        if name != "no_moods" or without:
            assert data.cases[name], name
    if per_user is not None:
        assert set(Counter(m["user"] for m in data.moods).values()) == {per_user}
    else:
        assert data.by_handle("jeffrey").mood_count == max(u.mood_count for u in data.users)
    for moods in docs_of(data).values():
        assert all(a["mood"] != b["mood"] for a, b in zip(moods, moods[1:]))


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
                raise dd.AccountCreationError(f"createAccount {handle}: HTTP 400 InvalidHandle")
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
    report = dd.seed(mongo_db, data, creator, concurrency=3, progress=lambda *a: events.append(a))

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
    dd.seed(mongo_db, data, None)
    before = (mongo_db.users.count_documents({}), mongo_db.moods.count_documents({}))
    with pytest.raises(dd.DemoDataExists, match="already holds this demo data"):
        dd.seed(mongo_db, data, FakeCreator())
    assert (mongo_db.users.count_documents({}), mongo_db.moods.count_documents({})) == before

    # an interrupted seed: a user and some moods missing; resume writes only those
    lost_user = data.by_handle("jeffrey")
    mongo_db.users.delete_one({"_id": lost_user.sub})
    lost = [m["_id"] for m in data.moods[:5]]
    mongo_db.moods.delete_many({"_id": {"$in": lost}})
    creator = FakeCreator()
    report = dd.seed(mongo_db, data, creator, if_exists="resume")
    assert [c[0] for c in creator.calls] == ["jeffrey.test"]
    assert report.moods_written == 5 and report.users_written == 1
    assert report.moods_existing == len(data.moods) - 5
    assert (mongo_db.users.count_documents({}), mongo_db.moods.count_documents({})) == before

    again = dd.seed(mongo_db, data, FakeCreator(), if_exists="resume")  # complete: nothing to do
    assert again.users_written == again.moods_written == again.handles_written == 0


@pytest.mark.integration
def test_seed_refuses_a_database_with_other_data(mongo_db) -> None:
    mongo_db.moods.insert_one({"user": "auth0|someone", "mood": "real", "when": datetime.now(timezone.utc)})
    creator = FakeCreator()
    with pytest.raises(dd.DemoDataExists, match="not this demo data set"):
        dd.seed(mongo_db, dd.generate(**SMALL), creator, if_exists="resume")
    assert creator.calls == [] and mongo_db.users.count_documents({}) == 0


@pytest.mark.integration
def test_seed_reports_failed_accounts(mongo_db) -> None:
    data = dd.generate(**SMALL)
    victim = next(u for u in data.users if u.syncable and u.handle != "jeffrey")
    report = dd.seed(mongo_db, data, FakeCreator(fail={f"{victim.pds_label}.test"}))
    assert not report.ok
    assert [sub for sub, _ in report.accounts_failed] == [victim.sub]
    assert "InvalidHandle" in report.accounts_failed[0][1]
    assert victim.password.reveal() not in report.accounts_failed[0][1]
    assert mongo_db.users.find_one({"_id": victim.sub}) is None
    assert report.accounts_created == sum(1 for u in data.users if u.has_account) - 1
    # a later resume retries it
    retry = FakeCreator()
    report = dd.seed(mongo_db, data, retry, if_exists="resume")
    assert report.ok and [c[0] for c in retry.calls] == [f"{victim.pds_label}.test"]


def test_label_suffix_and_offline_did() -> None:
    data = dd.generate()
    user = data.by_handle("jeffrey")
    assert user.pds_handle(".test", "-ab12") == "jeffrey-ab12.test"
    long = next(u for u in data.users if u.pds_label and len(u.pds_label) >= 14)
    fitted = long.pds_handle(".test", "-ab12")
    assert fitted.endswith("-ab12.test") and len(fitted.split(".")[0]) <= 18
    assert dd.offline_did(user.sub) == dd.offline_did(user.sub)
    assert re.fullmatch(r"did:plc:[a-z2-7]{24}", dd.offline_did(user.sub))
    with pytest.raises(ValueError, match="label_suffix"):
        dd.seed(None, data, None, label_suffix="_BAD")


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
    with dd.http_account_creator(local_pds.url) as creator:
        report = dd.seed(mongo_db, data, creator, concurrency=4, label_suffix=suffix)
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
    with pytest.raises(dd.DemoDataExists):
        dd.seed(mongo_db, data, dd.http_account_creator(local_pds.url), label_suffix=suffix)

    # and createAccount errors come back as AccountCreationError without the password
    with dd.http_account_creator(local_pds.url) as creator, pytest.raises(dd.AccountCreationError) as err:
        creator(f"jeffrey{suffix}.test", "other@example.com", Secret("p" * 32))
    assert err.value.status == 400 and not err.value.retryable
    assert "p" * 32 not in str(err.value)
