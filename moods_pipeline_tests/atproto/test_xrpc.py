"""The XRPC client: retry policy and pacing (scripted transport, fake clock), then the real PDS
(through the fault proxy where a fault is needed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import pickle
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.car import CarError, decode_record, read_car, records_from_car
from moods_pipeline.atproto.client import (
    LoginFailed,
    PdsClient,
    PdsError,
    PdsUnavailable,
    RateLimited,
    RequestTooLarge,
)
from moods_pipeline.atproto.tid import tid_from_parts
from moods_pipeline.secret import Secret
from moods_pipeline_tests.support.fault_proxy import FaultProxy

CREATE = "com.atproto.repo.applyWrites#create"
DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
PASSWORD = "correct-horse-battery-staple-42"
T0 = 1_760_000_000.0


# --- scripted transport and fake time ----------------------------------------------------------


class FakeTime:
    def __init__(self, start: float = T0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _jwt(payload: dict, secret: bytes = b"unit-test") -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "at+jwt"}).encode())
    body = b64(json.dumps(payload).encode())
    sig = b64(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def session_json(did: str = DID, n: int = 1, exp: float = T0 + 7200) -> dict:
    return {
        "did": did,
        "handle": "alice.test",
        "accessJwt": _jwt({"sub": did, "exp": exp, "n": n}),
        "refreshJwt": f"refresh-token-{n}-xxxxxxxx",
        "active": True,
    }


class Script:
    """A mock transport: per-NSID queues of responses (or exceptions); records every request."""

    def __init__(self) -> None:
        self.queues: dict[str, list] = {}
        self.defaults: dict[str, object] = {}
        self.requests: list[httpx.Request] = []

    def on(self, nsid: str, *steps, default=None) -> "Script":
        self.queues.setdefault(nsid, []).extend(steps)
        if default is not None:
            self.defaults[nsid] = default
        return self

    def calls(self, nsid: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == f"/xrpc/{nsid}"]

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        nsid = request.url.path.removeprefix("/xrpc/")
        queue = self.queues.get(nsid)
        step = queue.pop(0) if queue else self.defaults.get(nsid)
        if step is None:
            return httpx.Response(501, json={"error": "MethodNotImplemented", "message": nsid})
        if callable(step) and not isinstance(step, httpx.Response):
            step = step(request)
        if isinstance(step, Exception):
            raise step
        return step


def ok(data: dict | None = None, headers: dict | None = None) -> httpx.Response:
    return httpx.Response(200, json=data or {}, headers=headers)


def err(status: int, error: str, message: str = "", headers: dict | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": error, "message": message}, headers=headers)


def rate_limited(reset: float | None, limit: int = 3000) -> httpx.Response:
    headers = {"RateLimit-Limit": str(limit), "RateLimit-Remaining": "0", "RateLimit-Policy": f"{limit};w=300"}
    if reset is not None:
        headers["RateLimit-Reset"] = str(int(reset))
    return err(429, "RateLimitExceeded", "Rate Limit Exceeded", headers)


def make_client(script: Script, fake: FakeTime, **options) -> PdsClient:
    return PdsClient(
        "http://pds.invalid", sleep=fake.sleep, clock=fake.clock, transport=httpx.MockTransport(script.handler),
        **options,
    )


def logged_in(script: Script, fake: FakeTime, **options):
    script.on("com.atproto.server.createSession", ok(session_json()))
    client = make_client(script, fake, **options)
    return client, client.login("alice.test", Secret(PASSWORD), expected_did=DID)


def a_write(n: int = 0) -> dict:
    return {"$type": CREATE, "collection": MOOD_COLLECTION, "rkey": tid_from_parts(T0_US + n, 1), "value": mood(n)}


T0_US = 1_760_036_428_821_000


def mood(n: int, text: str | None = None) -> dict:
    return {
        "$type": MOOD_COLLECTION,
        "mood": text if text is not None else f"feeling sunny {n}",
        "when": "2025-10-09T19:00:28.821Z",
        "ref": f"{n:024x}",
    }


LIST_PAGE = {"records": [], "cursor": None}


# --- unit: retries ---------------------------------------------------------------------------------


def test_reads_retry_5xx_and_connection_errors_with_bounded_jittered_backoff():
    script = Script().on(
        "com.atproto.repo.listRecords",
        err(500, "InternalServerError"),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        err(502, "BadGateway"),
        ok(LIST_PAGE),
    )
    fake = FakeTime()
    client = make_client(script, fake, backoff_base_s=0.5, backoff_max_s=1.5)
    assert client.list_records(DID, MOOD_COLLECTION) == []
    counters = client.counters
    assert counters.requests == 5 and counters.retries == 4 and counters.backoffs == 4
    ceilings = [0.5, 1.0, 1.5, 1.5]  # min(max, base * 2**n): full jitter below these
    assert len(fake.sleeps) == 4
    assert all(0 <= s <= c for s, c in zip(fake.sleeps, ceilings))
    assert counters.seconds_waited == pytest.approx(sum(fake.sleeps))


def listed(n: int, start: int = 0, cursor: str | None = "next") -> dict:
    return {"records": [{"uri": f"at://{DID}/{MOOD_COLLECTION}/{tid_from_parts(T0_US + i, 1)}", "cid": "bafy",
                         "value": mood(i)} for i in range(start, start + n)], "cursor": cursor}


def test_list_records_reads_until_an_empty_page_or_with_stop_on_short_page_until_a_short_one():
    # The reference PDS sends a cursor even with the last page; a short page is the last one.
    for stop, pages, requests in ((False, [ok(listed(3)), ok(listed(0, cursor=None))], 2), (True, [ok(listed(3))], 1)):
        script = Script().on("com.atproto.repo.listRecords", *pages)
        client = make_client(script, FakeTime())
        records = client.list_records(DID, MOOD_COLLECTION, stop_on_short_page=stop)
        assert [r.value["ref"] for r in records] == [f"{i:024x}" for i in range(3)]
        assert client.counters.requests == requests
    # A full page is never taken for the last one.
    script = Script().on("com.atproto.repo.listRecords", ok(listed(100)), ok(listed(7, start=100)))
    client = make_client(script, FakeTime())
    assert len(client.list_records(DID, MOOD_COLLECTION, stop_on_short_page=True)) == 107
    assert client.counters.requests == 2


def test_reads_give_up_after_max_retries():
    script = Script().on("com.atproto.repo.listRecords", default=err(500, "InternalServerError", "boom"))
    fake = FakeTime()
    client = make_client(script, fake, max_retries=3)
    with pytest.raises(PdsError) as info:
        client.list_records(DID, MOOD_COLLECTION)
    assert info.value.status == 500 and info.value.retryable
    assert len(script.requests) == 4
    assert str(info.value) == "GET com.atproto.repo.listRecords HTTP 500: InternalServerError: boom"


def test_unreachable_pds_is_pds_unavailable():
    script = Script().on("com.atproto.repo.listRecords", default=lambda r: httpx.ConnectError("refused"))
    client = make_client(script, FakeTime(), max_retries=2)
    with pytest.raises(PdsUnavailable) as info:
        client.list_records(DID, MOOD_COLLECTION)
    assert info.value.retryable and info.value.status is None
    assert "GET com.atproto.repo.listRecords" in str(info.value) and "ConnectError" in str(info.value)
    assert len(script.requests) == 3


def test_writes_are_not_retried_on_5xx_or_timeouts():
    script = Script()
    client, session = logged_in(script, FakeTime())
    script.on("com.atproto.repo.applyWrites", err(500, "InternalServerError", "Internal Server Error"))
    with pytest.raises(PdsError) as info:
        session.apply_writes([a_write()])
    assert type(info.value) is PdsError and info.value.status == 500 and info.value.retryable
    script.on("com.atproto.repo.applyWrites", httpx.ReadTimeout("lost"))
    with pytest.raises(PdsUnavailable) as info:
        session.apply_writes([a_write()])
    assert info.value.retryable
    script.on("com.atproto.repo.applyWrites", err(503, "ServiceUnavailable"))
    with pytest.raises(PdsUnavailable):
        session.apply_writes([a_write()])
    assert len(script.calls("com.atproto.repo.applyWrites")) == 3  # one attempt each
    assert client.counters.retries == 0


def test_writes_retry_when_the_connection_could_not_be_opened():
    script = Script()
    client, session = logged_in(script, FakeTime())
    script.on("com.atproto.repo.applyWrites", httpx.ConnectError("Connection refused"), ok({"results": [{"uri": "u"}]}))
    assert session.apply_writes([a_write()]) == [{"uri": "u"}]
    assert client.counters.retries == 1


def test_client_errors_are_not_retried():
    script = Script().on("com.atproto.repo.listRecords", err(400, "InvalidRequest", "Could not find repo"))
    client = make_client(script, FakeTime())
    with pytest.raises(PdsError) as info:
        client.list_records(DID, MOOD_COLLECTION)
    assert info.value.status == 400 and not info.value.retryable and len(script.requests) == 1


# --- unit: 429 and pacing --------------------------------------------------------------------------


def test_429_waits_until_ratelimit_reset_for_reads_and_writes():
    script = Script()
    fake = FakeTime()
    client, session = logged_in(script, fake)
    script.on("com.atproto.repo.applyWrites", rate_limited(reset=T0 + 20), ok({"results": []}))
    session.apply_writes([a_write()])
    assert len(fake.sleeps) == 1 and 20 <= fake.sleeps[0] <= 20.6  # until reset (+ <= 0.6 s jitter)
    reset = int(fake.now) + 5  # whole seconds, as the PDS sends it
    expected = reset - fake.now
    script.on("com.atproto.repo.listRecords", rate_limited(reset=reset), ok(LIST_PAGE))
    client.list_records(DID, MOOD_COLLECTION)
    assert expected + 0.1 <= fake.sleeps[1] <= expected + 0.6
    counters = client.counters
    assert counters.rate_limited == 2 and counters.rate_limited_waits == 2 and counters.retries == 2
    assert counters.seconds_waited == pytest.approx(sum(fake.sleeps))


def test_429_without_reset_header_backs_off():
    script = Script().on("com.atproto.repo.listRecords", rate_limited(reset=None), ok(LIST_PAGE))
    fake = FakeTime()
    client = make_client(script, fake, backoff_base_s=2)
    client.list_records(DID, MOOD_COLLECTION)
    assert len(fake.sleeps) == 1 and 0 <= fake.sleeps[0] <= 2


def test_429_with_a_far_reset_raises_rate_limited_at_once():
    script = Script().on("com.atproto.repo.listRecords", rate_limited(reset=T0 + 3600))
    fake = FakeTime()
    client = make_client(script, fake, max_rate_limit_wait_s=600)
    with pytest.raises(RateLimited) as info:
        client.list_records(DID, MOOD_COLLECTION)
    assert info.value.status == 429 and info.value.retryable and info.value.reset_at == T0 + 3600
    assert fake.sleeps == []


def test_429_retries_are_bounded():
    fake = FakeTime()
    script = Script().on("com.atproto.repo.listRecords", default=lambda r: rate_limited(reset=fake.now + 1))
    client = make_client(script, fake, max_rate_limit_retries=3)
    with pytest.raises(RateLimited):
        client.list_records(DID, MOOD_COLLECTION)
    assert len(script.requests) == 4 and client.counters.rate_limited_waits == 3


def test_pacing_spreads_a_low_budget_and_waits_for_the_reset_when_spent():
    fake = FakeTime()
    script = Script()
    client, session = logged_in(script, fake, rate_limit_low_water=0.1)

    def budget(remaining: int) -> dict:
        return {"RateLimit-Limit": "5000", "RateLimit-Remaining": str(remaining), "RateLimit-Reset": str(int(T0 + 100))}

    script.on("com.atproto.repo.applyWrites", ok({"results": []}, budget(4000)))
    session.apply_writes([a_write()])
    assert fake.sleeps == []
    # Plenty left: no wait. Then 400 left (below 10% of 5000): spread them over the 100 s left.
    script.on("com.atproto.repo.applyWrites", ok({"results": []}, budget(400)))
    session.apply_writes([a_write()])
    assert fake.sleeps == []
    script.on("com.atproto.repo.applyWrites", ok({"results": []}, budget(30)))
    session.apply_writes([a_write(n) for n in range(4)])  # costs 12 of 400
    assert fake.sleeps[-1] == pytest.approx(100 * 12 / 400)
    # 30 left, a batch of 20 creates costs 60: wait for the reset instead of drawing a 429.
    before = fake.now
    script.on("com.atproto.repo.applyWrites", ok({"results": []}))
    session.apply_writes([a_write(n) for n in range(20)])
    assert T0 + 100 - before <= fake.sleeps[-1] <= T0 + 100 - before + 0.6
    assert client.counters.paced_waits == 2
    assert client.counters.rate_limited == 0


def test_min_write_interval_spaces_a_sessions_writes():
    fake = FakeTime()
    script = Script()
    client, session = logged_in(script, fake, min_write_interval_s=0.2)
    script.on("com.atproto.repo.applyWrites", default=ok({"results": []}))
    for _ in range(3):
        session.apply_writes([a_write()])
    assert fake.sleeps == [pytest.approx(0.2), pytest.approx(0.2)]
    script.on("com.atproto.repo.listRecords", ok(LIST_PAGE))
    client.list_records(DID, MOOD_COLLECTION)
    assert len(fake.sleeps) == 2  # reads are not spaced


# --- unit: sessions ----------------------------------------------------------------------------------


def test_login_did_mismatch_fails_before_anything_is_written():
    script = Script().on("com.atproto.server.createSession", ok(session_json(did="did:plc:someoneelse")))
    client = make_client(script, FakeTime())
    with pytest.raises(LoginFailed) as info:
        client.login("alice.test", Secret(PASSWORD), expected_did=DID)
    assert "stored DID did:plc:aaaaaaaaaaaaaaaaaaaaaaaa names another account" in str(info.value)
    assert [r.url.path for r in script.requests] == ["/xrpc/com.atproto.server.createSession"]


def test_credentials_never_appear_in_errors_even_if_the_server_echoes_them():
    script = Script().on(
        "com.atproto.server.createSession", err(401, "AuthenticationRequired", f"bad password {PASSWORD}")
    )
    client = make_client(script, FakeTime())
    with pytest.raises(LoginFailed) as info:
        client.login("alice.test", Secret(PASSWORD))
    assert PASSWORD not in str(info.value) and PASSWORD not in repr(info.value)
    assert info.value.error == "AuthenticationRequired"


def test_expired_token_refreshes_once_then_retries():
    script = Script()
    client, session = logged_in(script, FakeTime())
    script.on("com.atproto.repo.applyWrites", err(400, "ExpiredToken", "Token has expired"), ok({"results": []}))
    script.on("com.atproto.server.refreshSession", ok(session_json(n=2)))
    session.apply_writes([a_write()])
    calls = script.calls("com.atproto.repo.applyWrites")
    assert calls[0].headers["Authorization"] != calls[1].headers["Authorization"]
    assert calls[1].headers["Authorization"] == "Bearer " + session_json(n=2)["accessJwt"]
    refresh = script.calls("com.atproto.server.refreshSession")[0]
    assert refresh.headers["Authorization"] == "Bearer refresh-token-1-xxxxxxxx"
    assert client.counters.refreshes == 1 and client.counters.logins == 1


def test_failed_refresh_falls_back_to_a_password_login():
    script = Script()
    client, session = logged_in(script, FakeTime())
    script.on("com.atproto.repo.applyWrites", err(400, "ExpiredToken"), ok({"results": []}))
    script.on("com.atproto.server.refreshSession", err(400, "ExpiredToken", "Token has expired"))
    script.on("com.atproto.server.createSession", ok(session_json(n=3)))
    session.apply_writes([a_write()])
    assert client.counters.logins == 2
    login = json.loads(script.calls("com.atproto.server.createSession")[-1].content)
    assert login == {"identifier": "alice.test", "password": PASSWORD}


def test_expiry_is_renewed_only_once_per_request():
    script = Script()
    _, session = logged_in(script, FakeTime())
    script.on("com.atproto.repo.applyWrites", default=err(400, "ExpiredToken"))
    script.on("com.atproto.server.refreshSession", default=ok(session_json(n=2)))
    with pytest.raises(PdsError) as info:
        session.apply_writes([a_write()])
    assert info.value.error == "ExpiredToken"
    assert len(script.calls("com.atproto.repo.applyWrites")) == 2


def test_token_about_to_expire_is_refreshed_before_use():
    fake = FakeTime()
    script = Script().on("com.atproto.server.createSession", ok(session_json(exp=T0 + 30)))
    client = make_client(script, fake, refresh_margin_s=60)
    session = client.login("alice.test", Secret(PASSWORD))
    script.on("com.atproto.server.refreshSession", ok(session_json(n=2)))
    script.on("com.atproto.repo.applyWrites", ok({"results": []}))
    session.apply_writes([a_write()])
    assert [r.url.path.rsplit(".", 1)[-1] for r in script.requests] == ["createSession", "refreshSession", "applyWrites"]


def test_writes_only_ever_go_to_the_sessions_repo():
    script = Script()
    _, session = logged_in(script, FakeTime())
    script.on("com.atproto.repo.applyWrites", default=ok({"results": []}))
    for bad in (
        lambda: session.apply_writes([a_write()], repo="did:plc:other"),
        lambda: session.apply_writes([{**a_write(), "repo": "did:plc:other"}]),
        lambda: session.apply_writes([a_write(n) for n in range(201)]),
    ):
        with pytest.raises(PdsError):
            bad()
    assert script.calls("com.atproto.repo.applyWrites") == []
    session.apply_writes([a_write()])
    body = json.loads(script.calls("com.atproto.repo.applyWrites")[0].content)
    assert body["repo"] == DID and "validate" not in body


def test_error_objects_pickle_and_read_well():
    exc = RequestTooLarge(413, "PayloadTooLargeError", "request entity too large", method="POST x")
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is RequestTooLarge and again.status == 413 and str(again) == str(exc)
    assert str(exc) == "POST x HTTP 413: PayloadTooLargeError: request entity too large"


def test_concurrent_use_from_threads_counts_every_request():
    script = Script().on("com.atproto.repo.listRecords", default=ok(LIST_PAGE))
    client = make_client(script, FakeTime())
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: client.list_records(DID, MOOD_COLLECTION), range(200)))
    assert client.counters.requests == 200


# --- unit: CAR ---------------------------------------------------------------------------------------


def test_car_rejects_garbage_and_tampered_blocks():
    with pytest.raises(CarError):
        read_car(b"\x05abc")
    with pytest.raises(CarError):
        decode_record(b"\xff")


# --- integration: the real PDS -----------------------------------------------------------------------


@pytest.fixture
def client(local_pds):
    with PdsClient(local_pds.url) as c:
        yield c


def creates(n: int, start: int = 0, text: str | None = None) -> list[dict]:
    return [
        {"$type": CREATE, "collection": MOOD_COLLECTION, "rkey": tid_from_parts(T0_US + i * 1000, 7), "value": mood(i, text)}
        for i in range(start, start + n)
    ]


@pytest.mark.integration
def test_login_ok_wrong_password_and_did_mismatch(client, make_account):
    alice, bob = make_account("alice"), make_account("bob")
    started = time.monotonic()
    session = client.login(alice.handle, alice.password, expected_did=alice.did)
    took = time.monotonic() - started
    print(f"\nlogin wall time: {took * 1000:.0f} ms")
    assert session.did == alice.did and session.handle == alice.handle
    assert alice.password.reveal() not in repr(session)
    assert client.login(alice.did, alice.password, expected_did=alice.did).did == alice.did  # by DID, as the backfill does

    with pytest.raises(LoginFailed) as info:
        client.login(alice.did, Secret("wrong-" + alice.password.reveal()), expected_did=alice.did)
    exc = info.value
    assert exc.status == 401 and exc.error == "AuthenticationRequired"
    assert "Invalid identifier or password" in str(exc)
    for text in (str(exc), repr(exc)):
        assert alice.password.reveal() not in text

    # Bob's stored DID next to Alice's credentials: the session would be Alice's. Refused, nothing written.
    with pytest.raises(LoginFailed) as info:
        client.login(alice.handle, alice.password, expected_did=bob.did)
    assert f"stored DID {bob.did} names another account" in str(info.value)
    assert alice.password.reveal() not in str(info.value) + repr(info.value)
    assert client.list_records(alice.did, MOOD_COLLECTION) == []
    assert client.list_records(bob.did, MOOD_COLLECTION) == []


@pytest.mark.integration
def test_apply_writes_then_list_and_export_agree(client, make_account):
    account = make_account("batch")
    session = client.login(account.did, account.password, expected_did=account.did)
    writes = creates(200)
    results = session.apply_writes(writes)
    assert len(results) == 200
    assert results[0]["uri"] == f"at://{account.did}/{MOOD_COLLECTION}/{writes[0]['rkey']}"

    started = time.monotonic()
    listed = client.list_records(account.did, MOOD_COLLECTION)
    list_s = time.monotonic() - started
    started = time.monotonic()
    exported = client.export_records(account.did, MOOD_COLLECTION)
    export_s = time.monotonic() - started
    print(f"\n200 records: listRecords (2 pages) {list_s * 1000:.0f} ms, getRepo export {export_s * 1000:.0f} ms")

    assert len(listed) == len(exported) == 200
    assert listed == exported  # same rkeys, values and CIDs, both in rkey order
    assert [r.rkey for r in listed] == sorted(w["rkey"] for w in writes)
    assert {r.rkey: r.value for r in listed} == {w["rkey"]: w["value"] for w in writes}
    assert {r.cid for r in listed} == {res["cid"] for res in results}
    got = client.get_record(account.did, MOOD_COLLECTION, writes[5]["rkey"])
    assert got is not None and got.value == writes[5]["value"] and got.mood_ref == writes[5]["value"]["ref"]
    assert session.get_record(MOOD_COLLECTION, "3zzzzzzzzzzzz") is None


@pytest.mark.integration
def test_export_handles_links_bytes_and_other_collections(client, make_account):
    account = make_account("odd")
    session = client.login(account.did, account.password)
    odd = {
        "$type": MOOD_COLLECTION,
        "mood": "ünïcødé ☀️ \u0000 nul",
        "when": "2025-10-09T19:00:28.821Z",
        "ref": "68e8064c11885fb93a529c8d",
        "extra": {"bytes": {"$bytes": "aGVsbG8"}, "link": {"$link": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}, "n": [-1, 0, 2**40, True, None]},
    }
    session.put_record(MOOD_COLLECTION, "3m2rtp45gkc2b", odd)
    session.put_record("computer.aesthetic.other", "self", {"$type": "computer.aesthetic.other", "x": 1})
    session.put_record("computer.aesthetic.moodz", "3m2rtp45gkc2b", {"$type": "computer.aesthetic.moodz"})
    exported = client.export_records(account.did, MOOD_COLLECTION)
    assert exported == client.list_records(account.did, MOOD_COLLECTION)
    assert [r.value for r in exported] == [odd]
    session.delete_record(MOOD_COLLECTION, "3m2rtp45gkc2b")
    session.delete_record(MOOD_COLLECTION, "3m2rtp45gkc2b")  # missing rkey: silent
    assert client.export_records(account.did, MOOD_COLLECTION) == []


@pytest.mark.integration
def test_oversized_batch_is_request_too_large(client, make_account):
    account = make_account("big")
    session = client.login(account.did, account.password)
    writes = creates(40, text="x" * 5000)  # about 200 kB
    with pytest.raises(RequestTooLarge) as info:
        session.apply_writes(writes)
    assert info.value.status == 413 and not info.value.retryable
    assert "x" * 50 not in str(info.value)
    assert client.list_records(account.did, MOOD_COLLECTION) == []


@pytest.mark.integration
def test_create_on_an_existing_rkey_is_a_500(client, make_account):
    account = make_account("dup")
    session = client.login(account.did, account.password)
    write = creates(1)[0]
    created = session.create_record(MOOD_COLLECTION, write["value"], rkey=write["rkey"])
    assert created["uri"].endswith(write["rkey"])
    with pytest.raises(PdsError) as info:
        session.create_record(MOOD_COLLECTION, write["value"], rkey=write["rkey"])
    assert info.value.status == 500 and info.value.retryable
    with pytest.raises(PdsError) as info:
        session.apply_writes([write])
    assert info.value.status == 500
    assert "feeling sunny" not in str(info.value)
    # putRecord replaces
    session.put_record(MOOD_COLLECTION, write["rkey"], {**write["value"], "mood": "changed"})
    assert client.get_record(account.did, MOOD_COLLECTION, write["rkey"]).value["mood"] == "changed"


@pytest.mark.integration
def test_429_from_the_proxy_waits_until_reset_and_succeeds(local_pds, make_account):
    account = make_account("rl")
    with FaultProxy(local_pds.url) as proxy, PdsClient(proxy.url) as client:
        session = client.login(account.did, account.password)
        rule = proxy.rate_limit(nsid="com.atproto.repo.applyWrites", count=1, reset_in_s=2, limit=5000, window_s=3600)
        session.apply_writes(creates(3))
        assert rule.fired == 1 and proxy.count(status=429) == 1
        assert proxy.count(nsid="com.atproto.repo.applyWrites", status=200) == 1
        limited = next(s for s in proxy.served if s.status == 429)
        retried = next(s for s in proxy.served if s.nsid == "com.atproto.repo.applyWrites" and s.status == 200)
        reset = int(2 + limited.at)  # the 429's own RateLimit-Reset: floor(arrival + 2), a Unix time
        # Causality, from the proxy's arrival times: the retry reached it only after that reset.
        assert retried.at >= reset, (retried.at, reset)
        counters = client.counters
        assert counters.rate_limited == 1 and counters.rate_limited_waits == 1
        assert counters.seconds_waited >= reset - limited.at - 1.0  # it waited, rather than retrying at once
        elapsed = retried.at - limited.at
        print(f"\n429 with Reset 2 s ahead: succeeded after {elapsed:.2f} s")
        assert len(client.list_records(account.did, MOOD_COLLECTION)) == 3


@pytest.mark.integration
def test_reads_retry_a_500_then_succeed(local_pds, make_account):
    account = make_account("rd")
    with FaultProxy(local_pds.url) as proxy, PdsClient(proxy.url, backoff_base_s=0.05) as client:
        session = client.login(account.did, account.password)
        session.apply_writes(creates(2))
        rule = proxy.fail(500, nsid="com.atproto.repo.listRecords", count=2)
        proxy.fail(503, nsid="com.atproto.sync.getRepo", count=1)
        proxy.drop(nsid="com.atproto.repo.getRecord", count=1)
        assert len(client.list_records(account.did, MOOD_COLLECTION)) == 2
        assert len(client.export_records(account.did, MOOD_COLLECTION)) == 2
        assert client.get_record(account.did, MOOD_COLLECTION, creates(1)[0]["rkey"]) is not None
        assert rule.fired == 2
        assert proxy.count(outcome="fail") == 3 and proxy.count(outcome="drop") == 1
        assert client.counters.retries == 4


@pytest.mark.integration
def test_writes_do_not_auto_retry_a_500_or_a_lost_response(local_pds, make_account):
    account = make_account("wr")
    batch = creates(3)
    with FaultProxy(local_pds.url) as proxy, PdsClient(proxy.url) as client:
        session = client.login(account.did, account.password)
        rule = proxy.fail(500, nsid="com.atproto.repo.applyWrites", body_contains=batch[1]["rkey"])
        with pytest.raises(PdsError) as info:
            session.apply_writes(batch)
        assert info.value.status == 500 and info.value.retryable
        assert rule.fired == 1 and proxy.count(nsid="com.atproto.repo.applyWrites") == 1  # no second attempt
        assert client.list_records(account.did, MOOD_COLLECTION) == []
        session.apply_writes(batch[:1] + batch[2:])  # without the "poisoned" record it goes through
        proxy.remove(rule)

        # The response is lost after the PDS applied the batch: the client cannot know, so it
        # raises (retryable) instead of sending it again; the caller re-reads and finds it landed.
        lost = proxy.drop(nsid="com.atproto.repo.applyWrites", after_forward=True, count=1)
        with pytest.raises(PdsUnavailable) as info:
            session.apply_writes([batch[1]])
        assert info.value.retryable and lost.fired == 1
        assert proxy.count(nsid="com.atproto.repo.applyWrites", outcome="drop_after_forward") == 1
        assert len(client.list_records(account.did, MOOD_COLLECTION)) == 3


def _expired(token: str, secret: str) -> str:
    """The same JWT with `exp` in the past, signed again with the PDS's secret (HS256)."""
    head, body, _ = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["iat"] = int(time.time()) - 7200
    payload["exp"] = int(time.time()) - 3600
    new_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    sig = hmac.new(secret.encode(), f"{head}.{new_body}".encode(), hashlib.sha256).digest()
    return f"{head}.{new_body}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


@pytest.mark.integration
def test_session_refresh_after_a_really_expired_token(local_pds, make_account):
    jwt_secret = json.loads(local_pds.secrets_file.read_text())["jwtSecret"]
    account = make_account("exp")
    with FaultProxy(local_pds.url) as proxy, PdsClient(proxy.url) as client:
        session = client.login(account.did, account.password)
        # An access token the PDS itself calls expired: refreshSession, then the write goes through.
        session._access = Secret(_expired(session._access.reveal(), jwt_secret))
        session._access_exp = None  # hide the expiry from the early-refresh check
        session.apply_writes(creates(1))
        assert proxy.count(nsid="com.atproto.repo.applyWrites", status=400) == 1
        assert proxy.count(nsid="com.atproto.server.refreshSession", status=200) == 1
        assert proxy.count(nsid="com.atproto.repo.applyWrites", status=200) == 1
        assert client.counters.refreshes == 1 and client.counters.logins == 1

        # Both tokens expired: the refresh fails too, so the session logs in again with its password.
        session._access = Secret(_expired(session._access.reveal(), jwt_secret))
        session._access_exp = None
        session._refresh = Secret(_expired(session._refresh.reveal(), jwt_secret))
        session.apply_writes(creates(1, start=1))
        assert proxy.count(nsid="com.atproto.server.refreshSession", status=400) == 1
        assert client.counters.logins == 2
        assert len(client.list_records(account.did, MOOD_COLLECTION)) == 2


@pytest.mark.integration
def test_one_client_many_sessions_in_a_thread_pool(client, make_account):
    accounts = [make_account(f"t{i}") for i in range(12)]
    started = time.monotonic()

    def work(account) -> int:
        session = client.login(account.did, account.password, expected_did=account.did)
        session.apply_writes(creates(20))
        return len(client.list_records(account.did, MOOD_COLLECTION))

    with ThreadPoolExecutor(12) as pool:
        counts = list(pool.map(work, accounts))
    took = time.monotonic() - started
    print(f"\n12 users concurrently (login + 20 creates + list): {took:.2f} s")
    assert counts == [20] * 12
    assert client.counters.logins == 12


@pytest.mark.integration
def test_accounts_repos_and_admin(client, local_pds):
    admin = client.admin(local_pds.admin_password)
    code = admin.create_invite_code(1)
    assert isinstance(code, str) and code
    handle = f"adm{int(time.time() * 1000) % 10**9:x}.test"
    did, got_handle = client.create_account(handle, f"{handle}@example.com", Secret("pw-" + handle), invite_code=code)
    assert did.startswith("did:plc:") and got_handle == handle
    assert did in {repo["did"] for repo in client.list_repos()}
    assert client.describe_repo(did)["did"] == did
    admin.delete_account(did)
    assert did not in {repo["did"] for repo in client.list_repos()}
    assert client.describe_repo(did) is None

    wrong = client.admin(Secret("not-the-admin-password"))
    with pytest.raises(PdsError) as info:
        wrong.create_invite_code(1)
    assert info.value.status == 401
    assert "not-the-admin-password" not in str(info.value) + repr(info.value)
    assert local_pds.admin_password.reveal() not in repr(admin)


@pytest.mark.integration
def test_unknown_repo_is_a_specific_error(client):
    with pytest.raises(PdsError) as info:
        client.list_records("did:plc:doesnotexist00000000000", MOOD_COLLECTION)
    assert info.value.status == 400 and "listRecords" in str(info.value)
    with pytest.raises(PdsError) as info:
        client.export_records("did:plc:doesnotexist00000000000", MOOD_COLLECTION)
    assert info.value.status in (400, 404) and "getRepo" in str(info.value)


@pytest.mark.integration
def test_records_from_car_matches_a_raw_getrepo(client, make_account, local_pds):
    account = make_account("car")
    session = client.login(account.did, account.password)
    session.apply_writes(creates(50))
    car = httpx.get(f"{local_pds.url}/xrpc/com.atproto.sync.getRepo", params={"did": account.did}).content
    records = records_from_car(car, MOOD_COLLECTION)
    assert len(records) == 50 and records == client.list_records(account.did, MOOD_COLLECTION)
    broken = car[:-1] + bytes([car[-1] ^ 1])  # the last byte belongs to the last block
    with pytest.raises(CarError, match="does not match its CID"):
        records_from_car(broken, MOOD_COLLECTION)
