"""The fault-injecting proxy itself, against a tiny local upstream (no PDS needed)."""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from moods_pipeline_tests.support.fault_proxy import FaultProxy


class _Upstream:
    """Echo server: answers JSON with the method, path, query and body it got; counts requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                upstream.requests.append((self.command, self.path, body))
                out = json.dumps(
                    {"method": self.command, "path": self.path, "body": body.decode(), "host": self.headers.get("Host")}
                ).encode()
                self.send_response(201 if self.path.startswith("/created") else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Upstream", "yes")
                self.send_header("RateLimit-Remaining", "2999")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream():
    server = _Upstream()
    yield server
    server.close()


@pytest.fixture
def proxy(upstream):
    with FaultProxy(upstream.url) as p:
        yield p


def test_passes_requests_through_unchanged(proxy, upstream):
    with httpx.Client(base_url=proxy.url) as http:
        get = http.get("/xrpc/com.atproto.repo.listRecords", params={"repo": "did:plc:x", "limit": "100"})
        post = http.post("/xrpc/com.atproto.repo.applyWrites", json={"writes": [1, 2]})
        created = http.post("/created/thing", content=b"raw")
    assert get.status_code == 200 and get.headers["X-Upstream"] == "yes"
    assert get.headers["RateLimit-Remaining"] == "2999"
    assert get.json()["path"] == "/xrpc/com.atproto.repo.listRecords?repo=did%3Aplc%3Ax&limit=100"
    assert json.loads(post.json()["body"]) == {"writes": [1, 2]}
    assert created.status_code == 201 and created.json()["body"] == "raw"
    assert len(upstream.requests) == 3
    assert proxy.count(outcome="forwarded") == 3
    assert proxy.count(nsid="com.atproto.repo.applyWrites", status=200) == 1


def test_rate_limit_sends_the_pds_headers_for_the_next_n_matching_requests(proxy, upstream):
    rule = proxy.rate_limit(nsid="com.atproto.repo.applyWrites", count=2, reset_in_s=2, limit=5000, window_s=3600)
    with httpx.Client(base_url=proxy.url) as http:
        other = http.get("/xrpc/com.atproto.repo.listRecords")
        before = time.time()
        first = http.post("/xrpc/com.atproto.repo.applyWrites", json={})
        second = http.post("/xrpc/com.atproto.repo.applyWrites", json={})
        third = http.post("/xrpc/com.atproto.repo.applyWrites", json={})
    assert other.status_code == 200
    assert first.status_code == second.status_code == 429
    assert third.status_code == 200
    assert first.json() == {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}
    h = first.headers
    assert h["RateLimit-Limit"] == "5000" and h["RateLimit-Remaining"] == "0"
    assert h["RateLimit-Policy"] == "5000;w=3600"
    assert "Retry-After" not in h
    reset = int(h["RateLimit-Reset"])  # a Unix time in whole seconds, not a delay
    assert math.floor(before + 2) <= reset <= math.floor(time.time() + 2)
    assert rule.fired == 2 and rule.count == 0
    assert proxy.count(status=429) == 2
    assert len(upstream.requests) == 2  # the 429s never reached the upstream


def test_rate_limit_until_a_time(proxy):
    until = time.time() + 0.6
    proxy.rate_limit(until=until, reset_in_s=1)
    with httpx.Client(base_url=proxy.url) as http:
        first = http.get("/xrpc/a").status_code
        time.sleep(max(0.0, until - time.time()) + 0.05)
        assert http.get("/xrpc/a").status_code == 200
    # Judged by the proxy's own arrival times: limited exactly while the rule was in force.
    assert [s.status for s in proxy.served] == [first, 200]
    for served in proxy.served:
        assert (served.status == 429) == (served.at < until), (served, until)


def test_fail_only_requests_whose_body_matches(proxy, upstream):
    rule = proxy.fail(500, nsid="com.atproto.repo.applyWrites", body_contains="3kbadrkey2222")
    with httpx.Client(base_url=proxy.url) as http:
        ok = http.post("/xrpc/com.atproto.repo.applyWrites", json={"rkey": "3kgoodrkey222"})
        bad = http.post("/xrpc/com.atproto.repo.applyWrites", json={"rkey": "3kbadrkey2222"})
        bad_again = http.post("/xrpc/com.atproto.repo.applyWrites", json={"rkey": "3kbadrkey2222"})
    assert ok.status_code == 200
    assert bad.status_code == bad_again.status_code == 500
    assert bad.json() == {"error": "InternalServerError", "message": "Internal Server Error"}
    assert rule.fired == 2
    assert len(upstream.requests) == 1


def test_fail_with_a_custom_error_and_predicate(proxy):
    proxy.fail(400, error="ExpiredToken", message="Token has expired", match=lambda r: r.method == "POST", count=1)
    with httpx.Client(base_url=proxy.url) as http:
        assert http.get("/xrpc/x").status_code == 200
        response = http.post("/xrpc/x", content=b"{}")
        assert http.post("/xrpc/x", content=b"{}").status_code == 200
    assert response.status_code == 400 and response.json()["error"] == "ExpiredToken"


def test_drop_before_and_after_forwarding(proxy, upstream):
    proxy.drop(nsid="a", count=1)
    proxy.drop(nsid="b", count=1, after_forward=True)
    with httpx.Client(base_url=proxy.url) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            http.post("/xrpc/a", content=b"1")
        assert len(upstream.requests) == 0  # never forwarded
        with pytest.raises(httpx.RemoteProtocolError):
            http.post("/xrpc/b", content=b"2")
        assert len(upstream.requests) == 1  # forwarded: the response was lost
        assert http.post("/xrpc/a", content=b"3").status_code == 200
    assert proxy.count(outcome="drop") == 1 and proxy.count(outcome="drop_after_forward") == 1


def test_budget_headers_replace_the_upstream_ones(proxy):
    proxy.budget_headers(limit=100, remaining=7, reset_in_s=30, window_s=60)
    with httpx.Client(base_url=proxy.url) as http:
        response = http.get("/xrpc/x")
    assert response.headers["RateLimit-Remaining"] == "7"
    assert response.headers["RateLimit-Policy"] == "100;w=60"


def test_upstream_down_is_a_502_and_stop_frees_the_port(upstream):
    proxy = FaultProxy("http://127.0.0.1:9").start()  # nothing listens on the discard port
    with httpx.Client(base_url=proxy.url) as http:
        assert http.get("/xrpc/x").status_code == 502
    port = proxy.port
    proxy.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/xrpc/x", timeout=2)
