"""XRPC client for the platform's PDS: sessions, reads, writes, admin; pacing, retries, 429s.

One :class:`PdsClient` holds one pooled ``httpx.Client`` and is safe to share between threads
(the backfill runs one session per user in a thread pool). Sessions come from
:meth:`PdsClient.login` and are reused for the whole run: a password login costs at least
350 ms on the PDS and logins are rate limited.

Retry policy (what the reference PDS does, measured: docs/architecture.md, "The PDS as measured"):

- **Reads** (GET queries, and the idempotent createSession/refreshSession) are retried on
  5xx and on connection errors and timeouts, with bounded exponential backoff and full jitter
  (``max_retries`` retries; delay ``uniform(0, min(backoff_max_s, backoff_base_s * 2**n))``).
- **Writes** (every other POST procedure) are *not* retried on 5xx or timeouts: a lost
  response may have landed, so the caller re-reads the repo and re-plans. They raise with
  ``retryable=True``. A write whose connection could not even be opened (connection refused,
  connect timeout, no free pool connection) was surely not sent and is retried like a read.
- **429** on any request: the PDS did not process it, so it is retried after waiting until
  ``RateLimit-Reset`` (a Unix time in seconds; the PDS sends no ``Retry-After``), at most
  ``max_rate_limit_wait_s`` per wait and ``max_rate_limit_retries`` times; without the header,
  the backoff above. A reset too far away raises :class:`RateLimited` at once.
- **Pacing**: the last ``RateLimit-Limit/Remaining/Reset`` seen is kept per scope (the
  session's DID for authenticated requests, ``"anon"`` for the rest). When a request's cost
  (applyWrites: 3 points per create, 2 per update, 1 per delete, as the PDS counts them)
  would exceed what remains, the client waits for the reset; when fewer than
  ``rate_limit_low_water`` of the budget would remain, it spreads the remaining budget over the
  time left. ``min_write_interval_s`` spaces the write requests of one session.
- **Expired tokens**: a request answered ``ExpiredToken`` refreshes the session once
  (refreshSession); if that fails, the session logs in again with its stored password. An
  access token about to expire (its JWT ``exp``) is refreshed before use.

Errors are :class:`PdsError` (``status``, ``error``, ``message``, ``retryable``, ``method``)
or a subclass. Their text names the XRPC method, the HTTP status and the PDS's error name and
message, and never carries passwords, tokens, Authorization headers or record contents.
Requests are logged at DEBUG (method, status, milliseconds), 429s and backoffs at WARNING.

Why this client is ours and not the ``atproto`` SDK's (``atproto_client`` 0.0.73, read for this):
could the policy above sit under the SDK's typed namespaces (``client.com.atproto.repo...``) as a
custom request class (``Client(request=...)``, a subclass of ``atproto_client.request.Request``)?
Partly, and not the parts that matter most:

- What a request class could do: it gets ``get``/``post`` with the full URL (so the NSID), the
  params, the already-serialized JSON body and the headers, and sees the raw ``httpx.Response``.
  So 429 waits until ``RateLimit-Reset``, read retries and "never resend a POST procedure except
  createSession/refreshSession" could be written there, keyed on the NSID and GET versus POST.
- What it could not do without reaching into SDK internals: (1) pacing per session: the scope
  (the DID) is nowhere in the call but inside the Authorization JWT, and a write's cost means
  re-parsing the body the SDK just serialized. (2) Sharing one connection pool between sessions:
  auth headers are "header sources" that each ``Client`` registers on its request object, so two
  sessions on one request object send each other's tokens; every session needs its own request,
  so its own pool. (3) Session renewal: the request class does not own the session; the SDK's
  ``Client._invoke`` only refreshes proactively (15 minutes before ``exp``), an ``ExpiredToken``
  answer surfaces as ``UnauthorizedError``, and the SDK never keeps the password, so "refresh,
  else log in again with the stored password" needs a ``Client`` subclass overriding private
  methods (``_invoke``, ``_refresh_and_set_session``). (4) Secret scrubbing: the SDK takes the
  password as a plain ``str`` in a pydantic model and its errors keep the whole response; its
  messages name no XRPC method. Here :class:`~moods_pipeline.secret.Secret` keeps the password out
  of reprs and tracebacks, and every error names its method and carries no secret.
  (5) Error classes: the SDK raises ``NetworkError`` alike for a transport failure and for a
  409, 413 or 502 answer, so "was this write surely not sent?" (connect refused versus a lost
  response) has to be decided below it, in the request class, before the SDK's mapping. The
  SDK itself never retries, so it never resends a write: the one rule it already meets.

So the policy would be split between a request subclass, a client subclass over private methods
and per-session pools, with the typed models as the only gain, and the record values this
project writes are its own lexicon, which the typed models would carry as untyped dicts anyway.
The SDK is used where it does the job: lexicon parsing, and CAR and firehose-frame decoding (what
it lacks there is said in ``car.py`` and ``firehose.py``).
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Iterator

import httpx

from moods_pipeline.atproto.car import CarError, records_from_car
from moods_pipeline.atproto.repo import PdsRecord
from moods_pipeline.secret import Secret

__all__ = [
    "PdsError",
    "LoginFailed",
    "RateLimited",
    "PdsUnavailable",
    "RequestTooLarge",
    "PdsClient",
    "PdsSession",
    "PdsAdmin",
    "ClientCounters",
    "MAX_APPLY_WRITES",
]

log = logging.getLogger(__name__)

MAX_APPLY_WRITES = 200  # the PDS refuses larger applyWrites batches
_LIST_PAGE = 100  # listRecords' maximum page size
_REPOS_PAGE = 1000  # listRepos' maximum page size
_MESSAGE_MAX = 300  # PDS messages are cut to this length in exceptions
_WRITE_POINTS = {"create": 3, "update": 2, "delete": 1}  # the PDS's rate-limit points
_AUTH_NSIDS = ("com.atproto.server.createSession", "com.atproto.server.refreshSession")
_USER_AGENT = "moods-pipeline (+https://aesthetic.computer)"

# --- errors --------------------------------------------------------------------------------------


class PdsError(Exception):
    """A PDS request failed. ``retryable``: trying again later (after re-reading state) may work."""

    def __init__(
        self,
        status: int | None,
        error: str | None,
        message: str | None,
        retryable: bool = False,
        *,
        method: str | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.message = message
        self.retryable = retryable
        self.method = method
        super().__init__(self._text())

    def _text(self) -> str:
        parts = []
        if self.method:
            parts.append(self.method)
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        detail = ": ".join(p for p in (self.error, self.message) if p)
        text = " ".join(parts)
        if detail:
            text = f"{text}: {detail}" if text else detail
        return text or "PDS request failed"

    def __str__(self) -> str:
        return self._text()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, error={self.error!r}, "
            f"message={self.message!r}, retryable={self.retryable!r}, method={self.method!r})"
        )

    def __reduce__(self):
        return (_rebuild_error, (type(self), self.status, self.error, self.message, self.retryable, self.method))


def _rebuild_error(cls, status, error, message, retryable, method):  # pickling (Dagster, pools)
    return cls(status, error, message, retryable, method=method)


class LoginFailed(PdsError):
    """createSession refused (wrong password, unknown or taken-down account) or named another DID."""


class RateLimited(PdsError):
    """429 that the client would not (or could no longer) wait out. ``reset_at``: Unix seconds or None."""

    reset_at: float | None = None


class PdsUnavailable(PdsError):
    """The PDS could not be reached: connection refused or reset, timeout, 502/503/504."""


class RequestTooLarge(PdsError):
    """413: the request body is above the PDS's limit (about 150 kB); split the batch."""


# --- counters ------------------------------------------------------------------------------------


@dataclass
class ClientCounters:
    """What the client did, for tests and benchmarks (a snapshot: ``client.counters``)."""

    requests: int = 0  # HTTP requests sent (every attempt)
    retries: int = 0  # attempts after a 5xx, connection error, timeout or 429
    rate_limited: int = 0  # 429 responses received
    rate_limited_waits: int = 0  # waits for RateLimit-Reset after a 429
    paced_waits: int = 0  # waits before a request to stay within a rate-limit budget
    backoffs: int = 0  # backoff sleeps after a 5xx or connection error
    seconds_waited: float = 0.0  # all sleeping: 429 waits, pacing, backoff, write spacing
    logins: int = 0  # successful createSession calls
    refreshes: int = 0  # sessions refreshed (refreshSession) or re-logged-in after expiry

    def as_dict(self) -> dict:
        return asdict(self)


# --- rate-limit budgets --------------------------------------------------------------------------


@dataclass
class _Budget:
    limit: int
    remaining: int
    reset: float  # Unix seconds


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(float(value.strip()))
    except ValueError:
        return None


def _write_cost(writes: Iterable[dict]) -> int:
    cost = 0
    for write in writes:
        kind = str(write.get("$type", "")).rsplit("#", 1)[-1]
        cost += _WRITE_POINTS.get(kind, 3)
    return max(cost, 1)


def _jwt_exp(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying it (only to refresh in time)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        exp = json.loads(base64.urlsafe_b64decode(payload)).get("exp")
        return float(exp) if isinstance(exp, (int, float)) else None
    except Exception:  # noqa: BLE001 - an unreadable token just means no early refresh
        return None


# --- the client ----------------------------------------------------------------------------------


class PdsClient:
    """Thread-safe XRPC client for one PDS (see the module docstring for the policies)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30,
        min_write_interval_s: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        max_rate_limit_wait_s: float = 900.0,
        max_rate_limit_retries: int = 10,
        rate_limit_low_water: float = 0.1,
        refresh_margin_s: float = 60.0,
        max_connections: int = 64,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.min_write_interval_s = min_write_interval_s
        self.max_rate_limit_wait_s = max_rate_limit_wait_s
        self.max_rate_limit_retries = max_rate_limit_retries
        self.rate_limit_low_water = rate_limit_low_water
        self.refresh_margin_s = refresh_margin_s
        self._sleep = sleep
        self._clock = clock
        self._random = random.Random()
        self._lock = threading.Lock()
        self._counters = ClientCounters()
        self._budgets: dict[str, _Budget] = {}
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"User-Agent": _USER_AGENT},
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"PdsClient({self.base_url!r})"

    # --- lifecycle and counters ---

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "PdsClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def counters(self) -> ClientCounters:
        """A snapshot of the counters."""
        with self._lock:
            return ClientCounters(**asdict(self._counters))

    def reset_counters(self) -> None:
        with self._lock:
            self._counters = ClientCounters()

    def _count(self, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self._counters, name, getattr(self._counters, name) + delta)

    def _wait(self, seconds: float, counter: str | None = None) -> None:
        if seconds <= 0:
            return
        if counter:
            self._count(seconds_waited=seconds, **{counter: 1})
        else:
            self._count(seconds_waited=seconds)
        self._sleep(seconds)

    def _backoff_delay(self, attempt: int) -> float:
        ceiling = min(self.backoff_max_s, self.backoff_base_s * (2**attempt))
        return self._random.uniform(0, ceiling)

    # --- pacing ---

    def _note_budget(self, scope: str, headers: httpx.Headers) -> None:
        limit = _int_header(headers, "RateLimit-Limit")
        remaining = _int_header(headers, "RateLimit-Remaining")
        reset = _int_header(headers, "RateLimit-Reset")
        if limit is None or remaining is None or reset is None:
            return
        with self._lock:
            self._budgets[scope] = _Budget(limit=limit, remaining=remaining, reset=float(reset))

    def _pace(self, scope: str, cost: int, label: str) -> None:
        """Wait, if needed, so that a request costing ``cost`` stays within the known budget."""
        now = self._clock()
        with self._lock:
            budget = self._budgets.get(scope)
            if budget is None or budget.reset <= now:
                return
            remaining, limit, until = budget.remaining, budget.limit, budget.reset - now
            if remaining - cost >= limit * self.rate_limit_low_water:
                budget.remaining -= cost
                return
            budget.remaining -= cost
        if remaining < cost:
            wait = until + self._random.uniform(0.1, 0.6)
            if wait > self.max_rate_limit_wait_s:
                return  # let the PDS answer 429 and raise RateLimited
            log.warning(
                "%s: rate-limit budget of %s nearly spent (%d of %d left, cost %d): waiting %.1f s for its reset",
                label, scope, remaining, limit, cost, wait,
            )
        else:
            wait = until * cost / max(remaining, 1)
            log.debug("%s: pacing %s (%d of %d left): %.2f s", label, scope, remaining, limit, wait)
        self._wait(min(wait, self.max_rate_limit_wait_s), "paced_waits")

    # --- the request loop ---

    def _request(
        self,
        http_method: str,
        nsid: str,
        *,
        params: dict | None = None,
        body: Any = None,
        kind: str = "read",  # "read" | "write" | "auth"
        session: "PdsSession | None" = None,
        auth: httpx.Auth | None = None,
        bearer: Secret | None = None,
        secrets: tuple[Secret | None, ...] = (),
        cost: int = 1,
        raw: bool = False,
    ) -> Any:
        """Send one XRPC call with the retry policy; the decoded JSON (or bytes with ``raw``)."""
        url = f"/xrpc/{nsid}"
        scope = session.did if session is not None else "anon"
        label = f"{http_method} {nsid}"
        retryable_kind = kind != "write"
        error_attempts = 0
        rate_waits = 0
        auth_recovered = False
        content = None
        headers: dict[str, str] = {}
        if body is not None:
            content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
            headers["Content-Type"] = "application/json"
        while True:
            if session is not None:
                token = session._access_token_for_request()
                headers["Authorization"] = f"Bearer {token.reveal()}"
                if kind == "write":
                    session._space_writes()
            elif bearer is not None:
                headers["Authorization"] = f"Bearer {bearer.reveal()}"
            self._pace(scope, cost, label)
            started = time.monotonic()
            self._count(requests=1)
            try:
                response = self._http.request(
                    http_method, url, params=params, content=content, headers=headers, auth=auth
                )
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                ms = (time.monotonic() - started) * 1000
                surely_unsent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
                reason = f"{type(exc).__name__}" + (f" ({exc})" if str(exc) else "")
                reason = _scrub(reason, secrets, session)
                log.debug("%s -> %s after %.0f ms", label, type(exc).__name__, ms)
                if (retryable_kind or surely_unsent) and error_attempts < self.max_retries:
                    delay = self._backoff_delay(error_attempts)
                    error_attempts += 1
                    log.warning("%s: %s; retry %d/%d in %.2f s", label, reason, error_attempts, self.max_retries, delay)
                    self._count(retries=1)
                    self._wait(delay, "backoffs")
                    continue
                unsent = " (not sent)" if surely_unsent else ""
                raise PdsUnavailable(
                    None, type(exc).__name__, f"PDS unreachable at {self.base_url}: {reason}{unsent}",
                    retryable=True, method=label,
                ) from None
            ms = (time.monotonic() - started) * 1000
            status = response.status_code
            log.debug("%s -> %d in %.0f ms", label, status, ms)
            self._note_budget(scope, response.headers)
            if status < 400:
                if raw:
                    return response.content
                if not response.content:
                    return {}
                try:
                    return response.json()
                except ValueError:
                    raise PdsError(status, "InvalidResponse", "response is not JSON", method=label) from None
            error, message = _error_of(response, secrets, session)

            if status == 429:
                self._count(rate_limited=1)
                reset = _int_header(response.headers, "RateLimit-Reset")
                if reset is not None:
                    wait = max(0.0, reset - self._clock()) + self._random.uniform(0.1, 0.6)
                else:
                    wait = self._backoff_delay(rate_waits)
                if rate_waits >= self.max_rate_limit_retries or wait > self.max_rate_limit_wait_s:
                    exc = RateLimited(status, error, message, retryable=True, method=label)
                    exc.reset_at = float(reset) if reset is not None else None
                    why = "too many 429s" if rate_waits >= self.max_rate_limit_retries else f"reset in {wait:.0f} s"
                    log.warning("%s: rate limited (%s), giving up", label, why)
                    raise exc
                rate_waits += 1
                log.warning(
                    "%s: 429 %s (limit %s, policy %s); waiting %.1f s %s",
                    label, error or "", response.headers.get("RateLimit-Limit"),
                    response.headers.get("RateLimit-Policy"), wait,
                    "until RateLimit-Reset" if reset is not None else "(no RateLimit-Reset: backoff)",
                )
                self._count(retries=1)
                self._wait(wait, "rate_limited_waits")
                continue

            if status == 413:
                raise RequestTooLarge(
                    status, error or "PayloadTooLarge",
                    message or f"request body of {len(content or b'')} bytes is too large",
                    method=label,
                )

            if session is not None and not auth_recovered and (
                error == "ExpiredToken" or (status == 401 and error in ("InvalidToken", "AuthMissing"))
            ):
                auth_recovered = True
                log.info("%s: %s for %s; renewing the session", label, error, session.did)
                session._renew(after_error=error)
                continue

            if status >= 500:
                if retryable_kind and error_attempts < self.max_retries:
                    delay = self._backoff_delay(error_attempts)
                    error_attempts += 1
                    log.warning(
                        "%s: HTTP %d %s; retry %d/%d in %.2f s",
                        label, status, error or "", error_attempts, self.max_retries, delay,
                    )
                    self._count(retries=1)
                    self._wait(delay, "backoffs")
                    continue
                cls = PdsUnavailable if status in (502, 503, 504) else PdsError
                raise cls(status, error, message, retryable=True, method=label)

            cls = LoginFailed if kind == "auth" and status in (400, 401, 403) else PdsError
            raise cls(status, error, message, retryable=False, method=label)

    # --- sessions ---

    def login(self, identifier: str, password: Secret, expected_did: str | None = None) -> "PdsSession":
        """createSession; with ``expected_did``, a session for another DID is LoginFailed."""
        if not isinstance(password, Secret):
            raise TypeError("password must be a Secret")
        data = self._create_session(identifier, password)
        did = data.get("did")
        if expected_did is not None and did != expected_did:
            raise LoginFailed(
                None, "DidMismatch",
                f"stored DID {expected_did} names another account: the login is for {did}",
                method="POST com.atproto.server.createSession",
            )
        return PdsSession(self, data, identifier, password)

    def _create_session(self, identifier: str, password: Secret) -> dict:
        data = self._request(
            "POST", "com.atproto.server.createSession",
            body={"identifier": identifier, "password": password.reveal()},
            kind="auth", secrets=(password,),
        )
        if not isinstance(data, dict) or not data.get("accessJwt") or not data.get("did"):
            raise LoginFailed(200, "InvalidResponse", "createSession gave no session",
                              method="POST com.atproto.server.createSession")
        self._count(logins=1)
        return data

    # --- reads (no login needed) ---

    def list_records(self, did: str, collection: str, *, stop_on_short_page: bool = False) -> list[PdsRecord]:
        """Every record of ``collection`` in ``did``'s repo (all pages, oldest rkey first).

        By default pages are read until one comes back empty. ``stop_on_short_page`` stops at the
        first page shorter than the limit instead: the reference PDS applies the limit in SQL
        after every filter, so a short page is the last one, and a repo with a handful of
        records costs one request instead of two (what the audit reads every user with)."""
        records: list[PdsRecord] = []
        cursor: str | None = None
        seen_cursors: set[str] = set()
        while True:
            params = {"repo": did, "collection": collection, "limit": _LIST_PAGE, "reverse": "true"}
            if cursor:
                params["cursor"] = cursor
            page = self._request("GET", "com.atproto.repo.listRecords", params=params)
            items = page.get("records") or []
            for item in items:
                records.append(_record_of(item))
            cursor = page.get("cursor")
            short = stop_on_short_page and len(items) < _LIST_PAGE
            if short or not items or not cursor or cursor in seen_cursors:
                return records
            seen_cursors.add(cursor)

    def export_records(self, did: str, collection: str) -> list[PdsRecord]:
        """The records of ``collection`` from one getRepo CAR download (rkey order)."""
        data = self._request("GET", "com.atproto.sync.getRepo", params={"did": did}, raw=True)
        try:
            return records_from_car(data, collection)
        except CarError as exc:
            raise PdsError(200, "InvalidCar", f"repo export of {did} unreadable: {exc}",
                           method="GET com.atproto.sync.getRepo") from None

    def get_record(self, did: str, collection: str, rkey: str) -> PdsRecord | None:
        """One record, or None if it does not exist."""
        try:
            data = self._request(
                "GET", "com.atproto.repo.getRecord", params={"repo": did, "collection": collection, "rkey": rkey}
            )
        except PdsError as exc:
            if exc.error == "RecordNotFound" or exc.status == 404:
                return None
            raise
        return _record_of(data)

    def describe_repo(self, did: str) -> dict | None:
        """com.atproto.repo.describeRepo (``did``, ``handle``, ``collections``, ...), or None if
        the PDS has no such repo (RepoNotFound). A deactivated or taken-down repo raises
        PdsError (``error`` RepoDeactivated / RepoTakendown), as does an outage."""
        try:
            return self._request("GET", "com.atproto.repo.describeRepo", params={"repo": did})
        except PdsError as exc:
            if exc.status in (400, 404) and (
                exc.error == "RepoNotFound" or (exc.message or "").startswith("Could not find repo")
            ):
                return None
            raise

    def repo_status(self, did: str) -> dict:
        """com.atproto.sync.getRepoStatus: ``did``, ``active``, ``status`` (deactivated,
        takendown...). PdsError (RepoNotFound) for a DID with no account on this PDS."""
        return self._request("GET", "com.atproto.sync.getRepoStatus", params={"did": did})

    def list_repos(self) -> list[dict]:
        """Every repo on the PDS: dicts with ``did``, ``head``, ``rev``, ``active``, ``status``."""
        repos: list[dict] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": _REPOS_PAGE}
            if cursor:
                params["cursor"] = cursor
            page = self._request("GET", "com.atproto.sync.listRepos", params=params)
            items = page.get("repos") or []
            repos.extend(items)
            new_cursor = page.get("cursor")
            if not items or not new_cursor or new_cursor == cursor:
                return repos
            cursor = new_cursor

    def iter_repo_heads(self, page_size: int = _REPOS_PAGE) -> Iterator["RepoHead"]:
        """com.atproto.sync.listRepos page by page (at most 1,000 repos a page, cursor paging):
        each repo's DID, latest ``rev`` and commit CID (``head``), and whether it is active.

        Measured on the reference PDS (0.4.217): every commit gives the repo a new ``rev`` and
        ``head`` (a ``deleteRecord`` of a missing key makes no commit and changes neither); a
        deactivated repo is listed with ``active: false, status: "deactivated"``. Repos come in
        account-creation order, so the cursor stays valid while accounts are added."""
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if cursor:
                params["cursor"] = cursor
            page = self._request("GET", "com.atproto.sync.listRepos", params=params)
            items = page.get("repos") or []
            for item in items:
                head = RepoHead.of(item)
                if head is not None:
                    yield head
            new_cursor = page.get("cursor")
            if not items or not new_cursor or new_cursor == cursor:
                return
            cursor = new_cursor

    def latest_commit(self, did: str) -> "RepoHead":
        """com.atproto.sync.getLatestCommit: one repo's ``rev`` and commit CID. PdsError for a repo
        the PDS cannot serve (``RepoNotFound``, ``RepoDeactivated``, ``RepoTakendown``)."""
        data = self._request("GET", "com.atproto.sync.getLatestCommit", params={"did": did})
        rev, cid = data.get("rev"), data.get("cid")
        if not isinstance(rev, str) or not isinstance(cid, str):
            raise PdsError(200, "InvalidResponse", "getLatestCommit answered without rev or cid",
                           method="GET com.atproto.sync.getLatestCommit")
        return RepoHead(did=did, rev=rev, head=cid, active=True, status=None)

    # --- accounts and admin ---

    def create_account(
        self, handle: str, email: str, password: Secret, invite_code: str | None = None
    ) -> tuple[str, str]:
        """createAccount; returns (did, handle). Not retried on 5xx (it may have landed)."""
        if not isinstance(password, Secret):
            raise TypeError("password must be a Secret")
        body = {"handle": handle, "email": email, "password": password.reveal()}
        if invite_code:
            body["inviteCode"] = invite_code
        data = self._request("POST", "com.atproto.server.createAccount", body=body, kind="write", secrets=(password,))
        return data["did"], data["handle"]

    def resolve_handle(self, handle: str) -> str | None:
        """com.atproto.identity.resolveHandle: the DID of ``handle``, or None if it names no one
        (used to find an account whose creation answered "handle already taken")."""
        try:
            data = self._request("GET", "com.atproto.identity.resolveHandle", params={"handle": handle})
        except PdsError as exc:
            # The reference PDS answers InvalidRequest "Unable to resolve handle" (newer ones
            # HandleNotFound); a malformed handle is another InvalidRequest and raises.
            if exc.status == 400 and (
                exc.error == "HandleNotFound" or (exc.message or "").startswith("Unable to resolve handle")
            ):
                return None
            raise
        return data.get("did")

    def admin(self, admin_password: Secret) -> "PdsAdmin":
        if not isinstance(admin_password, Secret):
            raise TypeError("admin_password must be a Secret")
        return PdsAdmin(self, admin_password)


@dataclass(frozen=True)
class RepoHead:
    """Where a repo stands: its latest commit's ``rev`` (a TID: later commits sort higher) and
    CID (``head``), and whether the PDS serves it (``active``; ``status`` says why not)."""

    did: str
    rev: str | None
    head: str | None
    active: bool = True
    status: str | None = None

    @classmethod
    def of(cls, item: dict) -> "RepoHead | None":
        """A listRepos item, or None for one without a string DID (nothing to match it to)."""
        did = item.get("did") if isinstance(item, dict) else None
        if not isinstance(did, str):
            return None
        rev, head = item.get("rev"), item.get("head")
        return cls(did=did, rev=rev if isinstance(rev, str) else None, head=head if isinstance(head, str) else None,
                   active=item.get("active", True) is not False,
                   status=item.get("status") if isinstance(item.get("status"), str) else None)


def _record_of(item: dict) -> PdsRecord:
    uri = item.get("uri", "")
    cid = item.get("cid")
    # The record's CID as the PDS reports it; anything but a string is no CID (the audit then
    # compares fields, as for a record whose CID differs).
    return PdsRecord(rkey=uri.rsplit("/", 1)[-1], value=item.get("value") or {},
                     cid=cid if isinstance(cid, str) and cid else None)


def written_cids(results: Iterable[Any]) -> dict[str, str]:
    """{rkey: CID} of the records an applyWrites stored, from its ``results``.

    A create or update result is ``{"$type": "...#createResult", "uri": "at://did/coll/rkey",
    "cid", "validationStatus"}``; a delete result has no uri. Results are matched to writes by
    the rkey in their uri, not by position, so a result list that is short or reordered never
    pairs a CID with the wrong write. A result without a string uri or cid is left out: that
    write's CID is unknown (the caller counts it unchecked)."""
    cids: dict[str, str] = {}
    for result in results or ():
        if not isinstance(result, dict):
            continue
        uri, cid = result.get("uri"), result.get("cid")
        if isinstance(uri, str) and uri.startswith("at://") and isinstance(cid, str) and cid:
            cids[uri.rsplit("/", 1)[-1]] = cid
    return cids


def _scrub(text: str | None, secrets: tuple[Secret | None, ...], session: "PdsSession | None") -> str | None:
    """Remove any credential that a server or library might have echoed."""
    if not text:
        return text
    values = [s.reveal() for s in secrets if s]
    if session is not None:
        values.extend(session._secret_values())
    for value in values:
        if value and len(value) >= 4 and value in text:
            text = text.replace(value, "***")
    return text


def _error_of(response: httpx.Response, secrets: tuple, session: "PdsSession | None") -> tuple[str | None, str | None]:
    """The XRPC error name and message of a failed response (message cut and scrubbed)."""
    error = message = None
    try:
        data = response.json()
        if isinstance(data, dict):
            error = data.get("error") if isinstance(data.get("error"), str) else None
            message = data.get("message") if isinstance(data.get("message"), str) else None
    except ValueError:
        text = response.text.strip()
        if text and "<html" not in text[:200].lower():
            message = text
    if error is None and response.reason_phrase:
        error = response.reason_phrase.replace(" ", "")
    if message and len(message) > _MESSAGE_MAX:
        message = message[:_MESSAGE_MAX] + "..."
    return _scrub(error, secrets, session), _scrub(message, secrets, session)


# --- sessions ------------------------------------------------------------------------------------


class PdsSession:
    """A logged-in account. Every write goes to this session's own repo (``did``)."""

    def __init__(self, client: PdsClient, data: dict, identifier: str, password: Secret) -> None:
        self.client = client
        self.did: str = data["did"]
        self.handle: str = data.get("handle", "")
        self.active: bool = data.get("active", True) is not False
        self.status: str | None = data.get("status")
        self._identifier = identifier
        self._password = password
        self._access = Secret(data["accessJwt"])
        self._refresh = Secret(data["refreshJwt"]) if data.get("refreshJwt") else None
        self._access_exp = _jwt_exp(data["accessJwt"])
        self._lock = threading.RLock()
        self._last_write = 0.0

    def __repr__(self) -> str:
        return f"PdsSession(did={self.did!r}, handle={self.handle!r})"

    # --- tokens ---

    def _secret_values(self) -> list[str]:
        values = [self._access.reveal(), self._password.reveal()]
        if self._refresh:
            values.append(self._refresh.reveal())
        return values

    def _access_token_for_request(self) -> Secret:
        with self._lock:
            if self._access_exp is not None and self._access_exp - self.client._clock() < self.client.refresh_margin_s:
                log.debug("access token of %s about to expire; refreshing", self.did)
                self._renew(after_error=None)
            return self._access

    def _renew(self, after_error: str | None) -> None:
        """refreshSession, or a new password login if the refresh fails."""
        with self._lock:
            self.client._count(refreshes=1)
            if self._refresh is not None and after_error != "InvalidToken":
                try:
                    data = self.client._request(
                        "POST", "com.atproto.server.refreshSession", kind="auth", bearer=self._refresh,
                        secrets=(self._refresh, self._access, self._password),
                    )
                    self._adopt(data)
                    return
                except PdsError as exc:
                    if isinstance(exc, (PdsUnavailable, RateLimited)):
                        raise
                    log.info("refreshSession for %s failed (%s); logging in again", self.did, exc.error)
            data = self.client._create_session(self._identifier, self._password)
            self._adopt(data)

    def _adopt(self, data: dict) -> None:
        did = data.get("did")
        if did != self.did or not data.get("accessJwt"):
            raise LoginFailed(None, "DidMismatch", f"renewed session is for {did}, not {self.did}")
        self._access = Secret(data["accessJwt"])
        if data.get("refreshJwt"):
            self._refresh = Secret(data["refreshJwt"])
        self._access_exp = _jwt_exp(data["accessJwt"])

    def _space_writes(self) -> None:
        interval = self.client.min_write_interval_s
        if interval <= 0:
            return
        with self._lock:
            wait = self._last_write + interval - self.client._clock()
            if wait > 0:
                self.client._wait(wait)
            self._last_write = self.client._clock()

    # --- writes ---

    def _check_repo(self, repo: str | None, what: str) -> None:
        if repo is not None and repo != self.did:
            raise PdsError(
                None, "RepoMismatch",
                f"{what} for repo {repo} refused: this session may only write to {self.did}",
                method=what,
            )

    def apply_writes(self, writes: list[dict], *, repo: str | None = None, swap_commit: str | None = None) -> list[dict]:
        """com.atproto.repo.applyWrites into this session's repo (atomic, at most 200 writes).

        ``writes`` are ``{"$type": "com.atproto.repo.applyWrites#create|update|delete",
        "collection", "rkey", "value"}`` items. Returns the PDS's per-write results, in the order
        of the writes (``written_cids`` reads the stored records' CIDs from them).
        """
        method = "POST com.atproto.repo.applyWrites"
        self._check_repo(repo, method)
        writes = list(writes)
        for write in writes:
            if not isinstance(write, dict):
                raise PdsError(None, "InvalidWrite", "each write must be a dict", method=method)
            self._check_repo(write.get("repo"), method)
        if not writes:
            return []
        if len(writes) > MAX_APPLY_WRITES:
            raise PdsError(
                None, "TooManyWrites", f"{len(writes)} writes in one batch; the PDS takes at most {MAX_APPLY_WRITES}",
                method=method,
            )
        body: dict[str, Any] = {"repo": self.did, "writes": [{k: v for k, v in w.items() if k != "repo"} for w in writes]}
        if swap_commit:
            body["swapCommit"] = swap_commit
        data = self.client._request(
            "POST", "com.atproto.repo.applyWrites", body=body, kind="write", session=self, cost=_write_cost(writes)
        )
        return list(data.get("results") or [])

    def create_record(self, collection: str, record: dict, rkey: str | None = None) -> dict:
        """createRecord; returns ``{"uri", "cid"}``. An rkey that exists is a 500 from the PDS."""
        body: dict[str, Any] = {"repo": self.did, "collection": collection, "record": record}
        if rkey:
            body["rkey"] = rkey
        data = self.client._request(
            "POST", "com.atproto.repo.createRecord", body=body, kind="write", session=self, cost=3
        )
        return {"uri": data.get("uri"), "cid": data.get("cid")}

    def put_record(self, collection: str, rkey: str, record: dict, *, swap_record: str | None = None) -> dict:
        """putRecord (create or replace); returns ``{"uri", "cid"}``."""
        body: dict[str, Any] = {"repo": self.did, "collection": collection, "rkey": rkey, "record": record}
        if swap_record:
            body["swapRecord"] = swap_record
        data = self.client._request("POST", "com.atproto.repo.putRecord", body=body, kind="write", session=self, cost=2)
        return {"uri": data.get("uri"), "cid": data.get("cid")}

    def delete_record(self, collection: str, rkey: str, *, swap_record: str | None = None) -> None:
        """deleteRecord; deleting a missing rkey succeeds silently (PDS behaviour)."""
        body: dict[str, Any] = {"repo": self.did, "collection": collection, "rkey": rkey}
        if swap_record:
            body["swapRecord"] = swap_record
        self.client._request("POST", "com.atproto.repo.deleteRecord", body=body, kind="write", session=self, cost=1)

    # --- reads ---

    def get_record(self, collection: str, rkey: str) -> PdsRecord | None:
        return self.client.get_record(self.did, collection, rkey)

    def list_records(self, collection: str) -> list[PdsRecord]:
        return self.client.list_records(self.did, collection)


# --- admin ---------------------------------------------------------------------------------------


class PdsAdmin:
    """Admin calls with Basic auth ``admin:<PDS_ADMIN_PASSWORD>`` (it cannot write into repos)."""

    # getAccountInfo's answer for a DID the PDS has no account for (reference PDS 0.4.217).
    ACCOUNT_NOT_FOUND = (400, "NotFound", "Account not found")

    def __init__(self, client: PdsClient, admin_password: Secret) -> None:
        self.client = client
        self._password = admin_password

    def __repr__(self) -> str:
        return f"PdsAdmin({self.client.base_url!r})"

    def _auth(self) -> httpx.BasicAuth:
        return httpx.BasicAuth("admin", self._password.reveal())

    def delete_account(self, did: str) -> None:
        """com.atproto.admin.deleteAccount: the whole account and repo."""
        self.client._request(
            "POST", "com.atproto.admin.deleteAccount", body={"did": did}, kind="write",
            auth=self._auth(), secrets=(self._password,),
        )

    def create_invite_code(self, use_count: int = 1) -> str:
        data = self.client._request(
            "POST", "com.atproto.server.createInviteCode", body={"useCount": use_count}, kind="write",
            auth=self._auth(), secrets=(self._password,),
        )
        return data["code"]

    def update_account_password(self, did: str, password: Secret) -> None:
        """com.atproto.admin.updateAccountPassword: set a new password (an account whose
        password was lost)."""
        if not isinstance(password, Secret):
            raise TypeError("password must be a Secret")
        self.client._request(
            "POST", "com.atproto.admin.updateAccountPassword",
            body={"did": did, "password": password.reveal()}, kind="write",
            auth=self._auth(), secrets=(self._password, password),
        )

    def get_account_info(self, did: str) -> dict | None:
        """com.atproto.admin.getAccountInfo, or None when the PDS says it has no account with
        this DID (deactivated and taken-down accounts are found).

        Erase decides "the account is gone" on this None alone, so only that exact answer counts
        (the reference PDS: HTTP 400, error ``NotFound``, message "Account not found"); any
        other error, such as ``InvalidRequest`` for a malformed DID, raises PdsError."""
        try:
            return self.client._request(
                "GET", "com.atproto.admin.getAccountInfo", params={"did": did},
                auth=self._auth(), secrets=(self._password,),
            )
        except PdsError as exc:
            if (exc.status, exc.error, exc.message) == self.ACCOUNT_NOT_FOUND:
                return None
            raise
