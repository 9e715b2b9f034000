"""demo_data: the seeded generator of production-shaped data (pure; seeding is test_seed.py)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import datetime, timezone

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
