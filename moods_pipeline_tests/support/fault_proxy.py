"""A fault-injecting HTTP reverse proxy in front of the test PDS.

The PDS's rate-limit budgets are fixed in its code and it fails only when it must, so tests
put this proxy between the client and the PDS and tell it what to break:

    with FaultProxy(local_pds.url) as proxy:
        rule = proxy.rate_limit(nsid="com.atproto.repo.applyWrites", count=1, reset_in_s=2)
        client = PdsClient(proxy.url)
        ...
        assert rule.fired == 1 and proxy.count(status=429) == 1

Rules are tried in the order they were added; the first active rule that matches a request
acts on it. A rule is active for its next ``count`` matching requests, or until ``until``
(Unix seconds), or (with neither) until removed. Actions:

- ``rate_limit``: 429 with the PDS's own headers: ``RateLimit-Limit``, ``RateLimit-Remaining``
  (0), ``RateLimit-Reset`` (a Unix time in whole seconds, as the PDS floors it; not a delay)
  and ``RateLimit-Policy`` (``<limit>;w=<window seconds>``); no ``Retry-After``; body
  ``{"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}``.
- ``fail``: a given status (500 by default) with an XRPC error body, e.g. for requests whose
  body contains a given rkey (``body_contains``).
- ``drop``: close the connection without answering, before forwarding the request or (with
  ``after_forward=True``) after the PDS processed it: a lost response.
- ``delay``: wait before forwarding (client timeouts).
- ``budget_headers``: forward, then replace the response's ``RateLimit-*`` headers (pacing).

Everything else passes through unchanged (bodies are buffered; no streaming, no websockets).
``served`` lists what happened to each request; ``count()`` filters it.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import httpx

__all__ = ["FaultProxy", "ProxyRequest", "Rule", "Served"]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "accept-encoding",
    "content-encoding",
}


@dataclass(frozen=True)
class ProxyRequest:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def nsid(self) -> str | None:
        return self.path[len("/xrpc/") :] if self.path.startswith("/xrpc/") else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Rule:
    action: str
    match: Callable[[ProxyRequest], bool]
    count: int | None = None  # matching requests left (None: no limit)
    until: float | None = None  # Unix seconds (None: no end)
    params: dict = field(default_factory=dict)
    fired: int = 0
    label: str = ""

    def active(self, now: float) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        return self.until is None or now < self.until


@dataclass(frozen=True)
class Served:
    at: float  # Unix seconds
    method: str
    nsid: str | None
    outcome: str  # "forwarded" | "rate_limit" | "fail" | "drop" | "drop_after_forward" | "upstream_error" | ...
    status: int | None  # what the client got (None: connection dropped)
    rule: str | None = None


def _matcher(
    nsid: str | list[str] | tuple[str, ...] | None,
    method: str | None,
    body_contains: str | bytes | None,
    match: Callable[[ProxyRequest], bool] | None,
) -> Callable[[ProxyRequest], bool]:
    nsids = {nsid} if isinstance(nsid, str) else set(nsid) if nsid else None
    needle = body_contains.encode() if isinstance(body_contains, str) else body_contains

    def matches(request: ProxyRequest) -> bool:
        if nsids is not None and request.nsid not in nsids:
            return False
        if method is not None and request.method != method.upper():
            return False
        if needle is not None and needle not in request.body:
            return False
        return match(request) if match is not None else True

    return matches


class FaultProxy:
    """Threaded reverse proxy on 127.0.0.1 (a free port) in front of ``upstream``."""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0, clock=time.time) -> None:
        self.upstream = upstream.rstrip("/")
        self.clock = clock
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self.served: list[Served] = []
        self._connections: set[socket.socket] = set()
        self._upstream = httpx.Client(base_url=self.upstream, timeout=120, follow_redirects=False)
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle ---

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FaultProxy":
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fault-proxy", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # idle keep-alive connections would otherwise linger
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._upstream.close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- rules ---

    def _add(self, action: str, *, nsid, method, body_contains, match, count, until, label, **params) -> Rule:
        rule = Rule(
            action=action,
            match=_matcher(nsid, method, body_contains, match),
            count=count,
            until=until,
            params=params,
            label=label or action,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def rate_limit(
        self,
        *,
        nsid=None,
        method: str | None = None,
        body_contains=None,
        match=None,
        count: int | None = None,
        until: float | None = None,
        reset_in_s: float = 2.0,
        reset_at: float | None = None,
        limit: int = 3000,
        window_s: int = 300,
        label: str | None = None,
    ) -> Rule:
        """429 as the PDS sends it; ``RateLimit-Reset`` = floor(now + reset_in_s) or ``reset_at``."""
        return self._add(
            "rate_limit", nsid=nsid, method=method, body_contains=body_contains, match=match, count=count,
            until=until, label=label, reset_in_s=reset_in_s, reset_at=reset_at, limit=limit, window_s=window_s,
        )

    def fail(
        self,
        status: int = 500,
        *,
        nsid=None,
        method: str | None = None,
        body_contains=None,
        match=None,
        count: int | None = None,
        until: float | None = None,
        error: str | None = None,
        message: str | None = None,
        label: str | None = None,
    ) -> Rule:
        """Answer ``status`` with ``{"error", "message"}`` instead of forwarding."""
        if error is None:
            error = "InternalServerError" if status >= 500 else "InvalidRequest"
        if message is None:
            message = "Internal Server Error" if status >= 500 else "Injected error"
        return self._add(
            "fail", nsid=nsid, method=method, body_contains=body_contains, match=match, count=count, until=until,
            label=label, status=status, error=error, message=message,
        )

    def drop(
        self,
        *,
        nsid=None,
        method: str | None = None,
        body_contains=None,
        match=None,
        count: int | None = None,
        until: float | None = None,
        after_forward: bool = False,
        label: str | None = None,
    ) -> Rule:
        """Close the connection unanswered (after the PDS processed it, with ``after_forward``)."""
        return self._add(
            "drop_after_forward" if after_forward else "drop", nsid=nsid, method=method,
            body_contains=body_contains, match=match, count=count, until=until, label=label,
        )

    def delay(
        self, seconds: float, *, nsid=None, method=None, body_contains=None, match=None, count=None, until=None,
        label: str | None = None,
    ) -> Rule:
        """Wait ``seconds``, then forward."""
        return self._add(
            "delay", nsid=nsid, method=method, body_contains=body_contains, match=match, count=count, until=until,
            label=label, seconds=seconds,
        )

    def budget_headers(
        self, *, limit: int, remaining: int | Callable[[], int], reset_in_s: float, window_s: int = 300,
        nsid=None, method=None, body_contains=None, match=None, count=None, until=None, label: str | None = None,
    ) -> Rule:
        """Forward, then set the response's RateLimit-* headers to this budget."""
        return self._add(
            "budget_headers", nsid=nsid, method=method, body_contains=body_contains, match=match, count=count,
            until=until, label=label, limit=limit, remaining=remaining, reset_in_s=reset_in_s, window_s=window_s,
        )

    def remove(self, rule: Rule) -> None:
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def _pick(self, request: ProxyRequest) -> Rule | None:
        now = self.clock()
        with self._lock:
            for rule in self._rules:
                if rule.active(now) and rule.match(request):
                    if rule.count is not None:
                        rule.count -= 1
                    rule.fired += 1
                    return rule
        return None

    # --- counters ---

    def count(self, *, nsid: str | None = None, outcome: str | None = None, status: int | None = None) -> int:
        with self._lock:
            return sum(
                1
                for s in self.served
                if (nsid is None or s.nsid == nsid)
                and (outcome is None or s.outcome == outcome)
                and (status is None or s.status == status)
            )

    def _record(self, request: ProxyRequest, outcome: str, status: int | None, rule: Rule | None) -> None:
        with self._lock:
            self.served.append(
                Served(self.clock(), request.method, request.nsid, outcome, status, rule.label if rule else None)
            )

    # --- serving ---

    def _forward(self, request: ProxyRequest) -> httpx.Response:
        headers = {k: v for k, v in request.headers.items() if k not in _HOP_BY_HOP}
        return self._upstream.request(
            request.method,
            request.path,
            params=request.query,
            content=request.body or None,
            headers=headers,
        )

    def _handler_class(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 120  # idle keep-alive connections end here (or at stop())

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy._connections.add(self.connection)

            def finish(self) -> None:
                with proxy._lock:
                    proxy._connections.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet
                pass

            def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, status: int, data: dict, extra: list[tuple[str, str]] = ()) -> None:
                body = json.dumps(data).encode()
                self._send(status, [("Content-Type", "application/json; charset=utf-8"), *extra], body)

            def _drop(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = ProxyRequest(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                rule = proxy._pick(request)
                action = rule.action if rule else None
                if action == "rate_limit":
                    p = rule.params
                    reset = p["reset_at"] if p["reset_at"] is not None else proxy.clock() + p["reset_in_s"]
                    headers = [
                        ("RateLimit-Limit", str(p["limit"])),
                        ("RateLimit-Reset", str(math.floor(reset))),
                        ("RateLimit-Remaining", "0"),
                        ("RateLimit-Policy", f"{p['limit']};w={p['window_s']}"),
                    ]
                    proxy._record(request, "rate_limit", 429, rule)
                    self._json(429, {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}, headers)
                    return
                if action == "fail":
                    p = rule.params
                    proxy._record(request, "fail", p["status"], rule)
                    self._json(p["status"], {"error": p["error"], "message": p["message"]})
                    return
                if action == "drop":
                    proxy._record(request, "drop", None, rule)
                    self._drop()
                    return
                if action == "delay":
                    time.sleep(rule.params["seconds"])
                try:
                    response = proxy._forward(request)
                except httpx.HTTPError as exc:
                    proxy._record(request, "upstream_error", 502, rule)
                    self._json(502, {"error": "UpstreamFailure", "message": f"proxy: {type(exc).__name__}"})
                    return
                if action == "drop_after_forward":
                    proxy._record(request, "drop_after_forward", None, rule)
                    self._drop()
                    return
                headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _HOP_BY_HOP]
                if action == "budget_headers":
                    p = rule.params
                    remaining = p["remaining"]() if callable(p["remaining"]) else p["remaining"]
                    headers = [(k, v) for k, v in headers if not k.lower().startswith("ratelimit-")]
                    headers += [
                        ("RateLimit-Limit", str(p["limit"])),
                        ("RateLimit-Reset", str(math.floor(proxy.clock() + p["reset_in_s"]))),
                        ("RateLimit-Remaining", str(remaining)),
                        ("RateLimit-Policy", f"{p['limit']};w={p['window_s']}"),
                    ]
                proxy._record(request, action or "forwarded", response.status_code, rule)
                self._send(response.status_code, headers, response.content)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle

        return Handler
