"""The audit engine: every selected user's moods against the records in their repo.

Plain Python (no Dagster): the ``mood_audit`` asset, the CLI (through the asset) and the
benchmark all call :func:`audit_users`. Per user it reads Mongo's moods (nuked included) and
the repo's ``computer.aesthetic.mood`` records, and reconciles them with
``sync.reconcile.reconcile`` (docs/interface.md's statuses). Reading needs no login.

A repo that cannot be read (unknown DID, deactivated or taken-down account, PDS unreachable)
makes the user **unreadable** with the reason: such a user gets no reconciliation rows, never a
page of ``missing_on_pds``. Users without a PDS account are counted apart (``no_account``).

Reading records (measured on the reference PDS, 0.4.217, 2 cores; figures in the README):

- ``"pages"``: ``com.atproto.repo.listRecords`` pages of 100, stopping at the first page shorter
  than 100 (``PdsClient.list_records(stop_on_short_page=True)``): one request for the typical
  user with a handful of moods.
- ``"list"``: ``PdsClient.list_records`` (every page until an empty one: one request more).
- ``"car"``: one ``com.atproto.sync.getRepo`` export per user, records read from the CAR.
- ``"auto"`` (default): ``"pages"``, and every user whose reconciliation shows a problem is read
  again with a ``getRepo`` export and reconciled again, so each reported problem is confirmed
  by a second, independent read (which also absorbs a live write racing the first read).

Users are audited ``concurrency`` at a time (threads: the PDS and Mongo do the work).

``check_logins=True`` also logs in with each user's stored DID and password (``expected_did``,
as the backfill does) and reports the ones that fail; logins are rate limited, so they are
paced (``login_interval_s`` between starts, across all threads) and never retried here beyond
what the client does for a 429. The session is dropped at once; nothing is written.

:func:`find_orphan_repos` lists repos on the PDS holding mood records whose DID no Mongo user
holds any more (user gone, or its ``atproto`` unset).

Privacy: reasons and details carry ids, rkeys, statuses, counts; never mood text or secrets.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable

import pandas as pd

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.client import LoginFailed, PdsError, PdsUnavailable
from moods_pipeline.model import Mood, PdsRecord, UserAccount
from moods_pipeline.sync.mood_record import Invalid, build_record
from moods_pipeline.sync.reconcile import (
    COLUMNS,
    INVALID,
    LEGACY_FIELD,
    NUKED,
    NUKED_ON_PDS,
    PROBLEM_STATUSES,
    STATUSES,
    SYNCED,
    RowFacts,
    analyze,
    check_nuke_policy,
)

log = logging.getLogger(__name__)

READ_MODES = ("auto", "pages", "list", "car")
NO_ACCOUNT = "no PDS account (users.atproto lacks did or password)"
LOGIN_OK = "ok"
# Statuses of mood rows (the others are record rows: duplicate, orphan).
_MOOD_STATUSES = frozenset(STATUSES) - {"duplicate", "orphan"}


# ---------------------------------------------------------------------------------------------
# Reading a repo


def read_records(pds, did: str, read: str = "pages") -> list[PdsRecord]:
    """The user's mood records by one of ``READ_MODES`` (``auto`` reads as ``pages``)."""
    if read in ("auto", "pages"):
        return pds.list_records(did, MOOD_COLLECTION, stop_on_short_page=True)
    if read == "list":
        return pds.list_records(did, MOOD_COLLECTION)
    if read == "car":
        return pds.export_records(did, MOOD_COLLECTION)
    raise ValueError(f"read must be one of {', '.join(READ_MODES)}, not {read!r}")


def unreadable_reason(exc: Exception) -> str:
    """Why a repo could not be read, for a person (no secrets: PdsError texts carry none)."""
    if isinstance(exc, PdsUnavailable):
        return f"PDS unreachable: {exc}"
    if isinstance(exc, PdsError):
        text = str(exc)
        error = (exc.error or "") + " " + (exc.message or "")
        if "Could not find repo" in error or "RepoNotFound" in error:
            return f"repo not found on the PDS (no such account, or deleted or taken down): {text}"
        if "Deactivated" in error or "deactivated" in error:
            return f"repo deactivated: {text}"
        if "Takendown" in error or "TakenDown" in error or "takendown" in error:
            return f"repo taken down: {text}"
        return f"repo unreadable: {text}"
    return f"repo unreadable: {type(exc).__name__}: {exc}"


def explain_unreadable(pds, did: str, exc: Exception) -> str:
    """``unreadable_reason``, made precise for a repo listRecords cannot find: getRepoStatus
    tells a deactivated or taken-down account from one that does not exist (one request, only
    for unreadable users)."""
    reason = unreadable_reason(exc)
    if not reason.startswith("repo not found"):
        return reason
    try:
        status = pds.repo_status(did)
    except PdsError as status_exc:
        if "RepoNotFound" in str(status_exc) or "Could not find" in str(status_exc):
            return f"repo not found on the PDS (no account with this DID): {exc}"
        return reason
    if isinstance(status, dict) and status.get("active") is False:
        return f"repo {status.get('status') or 'inactive'} (account not active): {exc}"
    return reason


# ---------------------------------------------------------------------------------------------
# One user's audit


def _text_facts(text) -> tuple[int | None, str | None]:
    """UTF-8 length and short hash of a text, as ``reconcile`` reports them."""
    if not isinstance(text, str):
        return None, None
    raw = text.encode("utf-8", "surrogatepass")
    return len(raw), hashlib.sha256(raw).hexdigest()[:8]


@dataclass
class UserAudit:
    """One user's audit: the reconciliation rows, counts per status, and what stopped it.

    The rows are ``reconcile.analyze``'s; ``frame`` is the same DataFrame ``reconcile()`` returns
    for them (built on first use: most callers want counts, and a DataFrame per user costs more
    than reading the user's repo)."""

    user: UserAccount
    rows: list[RowFacts] = field(default_factory=list, repr=False)
    counts: dict[str, int] = field(default_factory=lambda: {s: 0 for s in STATUSES})
    unreadable: str | None = None  # the repo (or Mongo) could not be read: why
    no_account: bool = False
    login: str | None = None  # None: not checked; "ok"; else why the stored credentials fail
    moods_live: int = 0  # live moods in Mongo (also for an unreadable user)
    moods_valid_live: int = 0  # of which valid (also for an unreadable user)
    records: int = 0  # records of the collection read from the repo
    read: str = ""  # how the records were read ("pages", "car", "pages+car", ...)
    seconds: float = 0.0
    nuke_policy: str = "keep"
    when_tolerance_ms: int = 1000
    rewrite_legacy: bool = False
    # With ``track_heads``: the repo's rev and commit CID read right before its records, and the
    # fingerprint of the moods compared (``sync.incremental`` makes the receipt from them).
    repo_rev: str | None = None
    repo_head: str | None = None
    fingerprint: str | None = None
    _frame: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    @property
    def did(self) -> str | None:
        return self.user.did

    @property
    def label(self) -> str:
        return self.user.label

    @property
    def problem_statuses(self) -> frozenset[str]:
        return PROBLEM_STATUSES(self.nuke_policy, self.rewrite_legacy)

    @property
    def problems(self) -> int:
        wanted = self.problem_statuses
        return sum(1 for row in self.rows if row.status in wanted)

    def problem_counts(self) -> dict[str, int]:
        """Problem rows by status (only the statuses that occur)."""
        wanted = self.problem_statuses
        return {s: n for s, n in self.counts.items() if n and s in wanted}

    def columns(self) -> dict[str, list]:
        """The reconciliation as lists per column of ``reconcile.COLUMNS`` (reconcile's values)."""
        wanted = self.problem_statuses
        lens, hashes = [], []
        for row in self.rows:
            length, digest = _text_facts(row.text)
            lens.append(length)
            hashes.append(digest)
        n = len(self.rows)
        return {
            "did": [self.user.did] * n,
            "sub": [self.user.sub] * n,
            "handle": [self.user.handle] * n,
            "kind": [row.kind for row in self.rows],
            "mood_id": [row.mood_id for row in self.rows],
            "rkey": [row.rkey for row in self.rows],
            "pointer": [row.pointer for row in self.rows],
            "status": [row.status for row in self.rows],
            "issues": [",".join(row.issues) for row in self.rows],
            "problem": [row.status in wanted for row in self.rows],
            "detail": [row.detail for row in self.rows],
            "mood_len": lens,
            "mood_hash": hashes,
            "expected_cid": [row.expected_cid for row in self.rows],
            "cid": [row.cid for row in self.rows],
        }

    @property
    def frame(self) -> pd.DataFrame:
        """The user's reconciliation DataFrame, equal to ``reconcile()``'s for the same data."""
        if self._frame is None:
            data = self.columns()
            frame = pd.DataFrame(
                {c: pd.Series(data[c], dtype=bool if c == "problem" else object) for c in COLUMNS},
                columns=list(COLUMNS),
            )
            frame.attrs.update(when_tolerance_ms=self.when_tolerance_ms, nuke_policy=self.nuke_policy,
                               rewrite_legacy=self.rewrite_legacy)
            self._frame = frame
        return self._frame

    @property
    def login_broken(self) -> bool:
        return self.login is not None and self.login != LOGIN_OK

    @property
    def ok(self) -> bool:
        """Nothing wrong: readable, no problem rows, login fine (or unchecked)."""
        return self.unreadable is None and not self.no_account and self.problems == 0 and not self.login_broken

    @property
    def moods_unverified(self) -> int:
        """Valid live moods nobody could compare with the repo (the user is unreadable)."""
        return self.moods_valid_live if self.unreadable else 0

    def summary(self) -> dict:
        """JSON-able facts (no rows): what the CLI and the run record keep per user."""
        return {
            "did": self.user.did,
            "sub": self.user.sub,
            "handle": self.user.handle,
            "unreadable": self.unreadable,
            "no_account": self.no_account,
            "login": self.login,
            "by_status": dict(self.counts),
            "problems": self.problems,
            "problem_counts": self.problem_counts(),
            "moods_live": self.moods_live,
            "moods_valid_live": self.moods_valid_live,
            "records": self.records,
            "read": self.read,
            "seconds": round(self.seconds, 4),
        }


def _counts(rows: list[RowFacts]) -> dict[str, int]:
    counted = Counter(row.status for row in rows)
    return {status: int(counted.get(status, 0)) for status in STATUSES}


def _live_counts(moods: list[Mood]) -> tuple[int, int]:
    live = [m for m in moods if m.live]
    valid = sum(1 for m in live if not isinstance(build_record(m), Invalid))
    return len(live), valid


def _live_counts_of_rows(rows: list[RowFacts]) -> tuple[int, int]:
    moods = [row for row in rows if row.kind == "mood" and row.status not in (NUKED, NUKED_ON_PDS)]
    return len(moods), sum(1 for row in moods if row.status != INVALID)


class MoodSource:
    """Users' moods read in bulk: one query per chunk of users (``MongoStore.moods_of_users``)
    instead of one per user, loaded when a worker first asks for one of the chunk's users and
    handed out once."""

    def __init__(self, store, subs: list[str], chunk: int = 100) -> None:
        self.store = store
        self._chunk_of = {sub: i // chunk for i, sub in enumerate(subs)}
        self._chunks = [subs[i : i + chunk] for i in range(0, len(subs), chunk)]
        self._loaded: dict[int, dict[str, list[Mood]]] = {}
        self._locks = [threading.Lock() for _ in self._chunks]

    def moods_of(self, sub: str) -> list[Mood]:
        index = self._chunk_of.get(sub)
        if index is None:
            return self.store.moods_of(sub)
        with self._locks[index]:
            if index not in self._loaded:
                self._loaded[index] = self.store.moods_of_users(self._chunks[index])
            return self._loaded[index].pop(sub, [])


class LoginPacer:
    """Spaces login starts across threads (logins are rate limited)."""

    def __init__(self, interval_s: float, sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval_s = interval_s
        self.sleep = sleep
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval_s
        if start > now:
            self.sleep(start - now)


def check_login(user: UserAccount, pds, pacer: LoginPacer | None = None) -> str:
    """``"ok"`` if the stored DID and password log in to that DID, else why not."""
    if pacer is not None:
        pacer.wait()
    try:
        pds.login(user.did, user.password, expected_did=user.did)
    except LoginFailed as exc:
        return f"login failed: {exc}"
    except PdsError as exc:
        return f"login not checked: {exc}"
    return LOGIN_OK


def audit_user(
    user: UserAccount,
    store,
    pds,
    *,
    nuke_policy: str = "keep",
    when_tolerance_ms: int = 1000,
    rewrite_legacy: bool = False,
    check_logins: bool = False,
    read: str = "auto",
    moods: MoodSource | None = None,
    pacer: LoginPacer | None = None,
    track_heads: bool = False,
) -> UserAudit:
    """Audit one user. Never raises for the user's own trouble (it lands in ``unreadable``).

    ``track_heads``: also read the repo's latest commit (getLatestCommit) before its records
    and fingerprint the moods compared, for the user's receipt (``sync.incremental``)."""
    started = time.monotonic()
    audit = UserAudit(user=user, nuke_policy=nuke_policy, when_tolerance_ms=when_tolerance_ms,
                      rewrite_legacy=rewrite_legacy)
    try:
        if not user.has_account:
            audit.no_account = True
            return audit
        try:
            user_moods = moods.moods_of(user.sub) if moods is not None else store.moods_of(user.sub)
        except Exception as exc:  # noqa: BLE001 - a Mongo outage: this user cannot be audited
            audit.unreadable = f"Mongo unreadable: {type(exc).__name__}: {exc}"
            return audit
        if getattr(user, "problem", None):
            # A DID several users claim (or a malformed one): whose repo it is cannot be told, so
            # comparing it with this user's moods would invent problems. Reported, not compared.
            audit.unreadable = f"credentials refused: {user.problem}"
            audit.moods_live, audit.moods_valid_live = _live_counts(user_moods)
            return audit
        if check_logins:
            audit.login = check_login(user, pds, pacer)
        first = "pages" if read == "auto" else read
        audit.read = first
        if track_heads:
            try:
                head = pds.latest_commit(user.did)
                audit.repo_rev, audit.repo_head = head.rev, head.head
            except PdsError as exc:  # no receipt then; reading the records says what is wrong
                log.debug("latest commit of %s unreadable: %s", user.label, exc)
        try:
            records = read_records(pds, user.did, first)
        except PdsError as exc:
            audit.unreadable = explain_unreadable(pds, user.did, exc)
            audit.moods_live, audit.moods_valid_live = _live_counts(user_moods)
            return audit
        rows = analyze(user_moods, records, when_tolerance_ms=when_tolerance_ms)
        problem_statuses = audit.problem_statuses
        if read == "auto" and any(row.status in problem_statuses for row in rows):
            # Confirm every problem with an independent read before reporting it.
            audit.read = "pages+car"
            try:
                records = read_records(pds, user.did, "car")
                user_moods = store.moods_of(user.sub)
            except PdsError as exc:
                audit.unreadable = explain_unreadable(pds, user.did, exc)
                audit.moods_live, audit.moods_valid_live = _live_counts(user_moods)
                return audit
            rows = analyze(user_moods, records, when_tolerance_ms=when_tolerance_ms)
        audit.rows = rows
        audit.counts = _counts(rows)
        if track_heads:
            from moods_pipeline.sync.fingerprint import user_fingerprint

            audit.fingerprint = user_fingerprint(user.sub, user.did, user_moods)
        audit.moods_live, audit.moods_valid_live = _live_counts_of_rows(rows)
        audit.records = len(records)
        return audit
    except Exception as exc:  # a bug or an odd document: this user fails, the others go on
        log.exception("audit of %s failed", user.label)
        audit.unreadable = f"audit failed: {type(exc).__name__}: {exc}"
        audit.rows = []
        audit.counts = {s: 0 for s in STATUSES}
        return audit
    finally:
        audit.seconds = time.monotonic() - started


def audit_users(
    users: Iterable[UserAccount],
    store,
    pds,
    *,
    nuke_policy: str,
    when_tolerance_ms: int,
    rewrite_legacy: bool = False,
    concurrency: int = 8,
    check_logins: bool = False,
    read: str = "auto",
    login_interval_s: float = 0.2,
    on_user_done: Callable[[UserAudit], None] | None = None,
    track_heads: bool = False,
) -> list[UserAudit]:
    """Audit users concurrently; the audits in the order the users were given."""
    check_nuke_policy(nuke_policy)
    if read not in READ_MODES:
        raise ValueError(f"read must be one of {', '.join(READ_MODES)}, not {read!r}")
    if when_tolerance_ms < 0:
        raise ValueError("when_tolerance_ms must be >= 0")
    users = list(users)
    pacer = LoginPacer(login_interval_s) if check_logins else None
    moods = MoodSource(store, [u.sub for u in users if u.has_account])

    def run(user: UserAccount) -> UserAudit:
        audit = audit_user(
            user, store, pds, nuke_policy=nuke_policy, when_tolerance_ms=when_tolerance_ms,
            rewrite_legacy=rewrite_legacy, check_logins=check_logins, read=read, moods=moods, pacer=pacer,
            track_heads=track_heads,
        )
        if on_user_done:
            on_user_done(audit)
        return audit

    if concurrency <= 1 or len(users) <= 1:
        return [run(u) for u in users]
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="audit") as pool:
        return list(pool.map(run, users))


# ---------------------------------------------------------------------------------------------
# Totals


def sync_rate_pct(ok: int, valid_live: int) -> float:
    """100 x ok / valid_live floored to two decimals (anything short of all never reads 100)."""
    return math.floor(ok * 10000 / valid_live) / 100 if valid_live else 100.0


def totals(summaries: Iterable[dict]) -> dict:
    """docs/interface.md's audit JSON object from per-user summaries (``UserAudit.summary()``).

    ``users_audited``: users with an account that were audited (unreadable ones included);
    ``users_unreadable``; ``moods_live``: live moods of those users (an unreadable user's counted
    from Mongo); ``by_status``: the reconciliation rows of the readable users; ``problems``;
    ``sync_rate_pct``: 100 x (synced + legacy_field) / valid live moods, where the valid live
    moods of unreadable users count as not verified (an outage never reads as in step).
    ``users_checked``: users compared afresh; ``users_unchanged``: users whose receipt still
    held (summaries marked ``unchanged``), counted everywhere from their receipts.
    Extra keys: ``users_no_account``, ``users_with_problems``, ``moods_unverified``,
    ``logins_checked``, ``logins_broken``.
    """
    summaries = list(summaries)
    accounts = [s for s in summaries if not s.get("no_account")]
    by_status = {status: 0 for status in STATUSES}
    for s in accounts:
        for status, n in (s.get("by_status") or {}).items():
            by_status[status] = by_status.get(status, 0) + int(n)
    readable = [s for s in accounts if not s.get("unreadable")]
    unverified = sum(int(s.get("moods_valid_live", 0)) for s in accounts if s.get("unreadable"))
    valid_live_readable = sum(
        by_status[k] for k in by_status if k not in (INVALID, NUKED, NUKED_ON_PDS) and k in _MOOD_STATUSES
    )
    checked = [s for s in accounts if s.get("login") is not None]
    return {
        "users_audited": len(accounts),
        "users_unreadable": len(accounts) - len(readable),
        "moods_live": sum(int(s.get("moods_live", 0)) for s in accounts),
        "by_status": by_status,
        "problems": sum(int(s.get("problems", 0)) for s in accounts),
        "sync_rate_pct": sync_rate_pct(by_status[SYNCED] + by_status[LEGACY_FIELD], valid_live_readable + unverified),
        "users_no_account": len(summaries) - len(accounts),
        "users_with_problems": sum(1 for s in accounts if int(s.get("problems", 0)) > 0),
        "moods_unverified": unverified,
        "logins_checked": len(checked),
        "logins_broken": sum(1 for s in checked if s.get("login") != LOGIN_OK),
        # An unchanged user's summary comes from its receipt (``sync.incremental``); the others
        # were compared afresh.
        "users_checked": sum(1 for s in accounts if not s.get("unchanged")),
        "users_unchanged": sum(1 for s in accounts if s.get("unchanged")),
    }


def something_wrong(total: dict) -> bool:
    """Whether the audit exits 1: problems, unreadable users, or (when checked) broken logins."""
    return total["problems"] > 0 or total["users_unreadable"] > 0 or total.get("logins_broken", 0) > 0


# ---------------------------------------------------------------------------------------------
# Repos nobody in Mongo owns


@dataclass(frozen=True)
class OrphanRepo:
    did: str
    records: int  # mood records in the repo
    reason: str


@dataclass(frozen=True)
class UserIndex:
    """Who is who in Mongo, from one pass over ``users`` (no ``$in`` of thousands of values)."""

    dids_known: frozenset[str]  # every users.atproto.did
    syncable_dids: frozenset[str]  # users with atproto.did, atproto.password and a mood
    no_account_subs: frozenset[str]  # subs with moods but no account (no users document included)
    # Users with moods and a password whose stored DID is refused (``refusal.py``): sub ->
    # (the DID if it is a string, why). A refused DID is never audited as a partition.
    refused: dict = field(default_factory=dict)

    @property
    def refused_dids(self) -> frozenset[str]:
        return frozenset(did for did, _ in self.refused.values() if did)


def mongo_user_index(store) -> UserIndex:
    """``UserIndex`` of the store: docs/interface.md's "syncable" (did and password set, at least one
    mood, as ``UserAccount.has_account``), the users with moods but no account, and the users
    refused for their DID, with the reasons ``MongoStore`` would give."""
    from moods_pipeline.storage.mongo import stored_did_problem
    from moods_pipeline.sync.refusal import partition_key_problem

    with_moods = store.subs_with_moods()
    facts = store.account_facts()
    accounts = {sub: (did, has_pw) for sub, (did, has_pw) in facts.items() if isinstance(did, str)}
    known = {did for did, _ in accounts.values()}
    with_account = {sub: did for sub, (did, has_password) in accounts.items() if has_password}
    syncable = {did for sub, did in with_account.items() if sub in with_moods}
    holders: dict[str, list[str]] = {}
    for sub, (did, _) in accounts.items():
        holders.setdefault(did, []).append(sub)
    refused = {}
    for sub, (did, has_password) in facts.items():
        if not has_password or sub not in with_moods:
            continue
        text_did = did if isinstance(did, str) else None
        reason = stored_did_problem(did, holders.get(text_did) if text_did else None)
        if reason is None and text_did:
            reason = partition_key_problem(text_did)
        if reason:
            refused[sub] = (text_did, reason)
    return UserIndex(frozenset(known), frozenset(syncable), frozenset(with_moods - set(with_account)), refused)


def refused_user(user: UserAccount, reason: str, store) -> UserAudit:
    """The audit of a user whose stored account is refused (``refusal.py``): unreadable with the
    reason, its live moods counted from Mongo as not verified; no request to the PDS."""
    from moods_pipeline.sync.refusal import partition_key_problem

    unpartitionable = bool(user.did) and reason == partition_key_problem(user.did)
    prefix = "not audited" if unpartitionable else "credentials refused"
    audit = UserAudit(user=user, unreadable=f"{prefix}: {reason}")
    try:
        audit.moods_live, audit.moods_valid_live = _live_counts(store.moods_of(user.sub))
    except Exception as exc:  # noqa: BLE001 - the refusal stands without the counts
        audit.unreadable += f" (moods not counted: {type(exc).__name__})"
    return audit


def _orphan_reason(store, records: list[PdsRecord]) -> str:
    refs = [r.mood_ref for r in records if isinstance(r.mood_ref, str) and len(r.mood_ref) == 24][:50]
    sub = store.owner_of_moods(refs)
    if sub is None:
        return "no Mongo user holds this DID and no mood of its records is in Mongo"
    if not store.has_user(sub):
        return f"its records' moods belong to {sub}, who has no users document any more"
    return f"its records' moods belong to {sub}, whose users.atproto no longer names this DID"


def find_orphan_repos(store, pds, *, concurrency: int = 4,
                      known_dids: Iterable[str] | None = None) -> tuple[list[OrphanRepo], dict]:
    """Repos on the PDS (com.atproto.sync.listRepos) holding mood records whose DID no Mongo
    user holds (``users.atproto.did``): the user is gone or has no ``atproto`` any more.

    Returns (orphans by DID, facts: ``repos`` listed, ``repos_inactive`` skipped (deactivated or
    taken down: their records cannot be read), ``repos_unknown`` DIDs not in Mongo,
    ``repos_unreadable`` of those). ``known_dids``: the DIDs Mongo's users hold, if the caller
    has them (``mongo_user_index``), else read here.
    """
    repos = pds.list_repos()
    active = [r for r in repos if r.get("active", True) is not False and isinstance(r.get("did"), str)]
    dids = sorted({r["did"] for r in active})
    known = set(known_dids) if known_dids is not None else mongo_user_index(store).dids_known
    unknown = sorted(set(dids) - known)
    facts = {"repos": len(repos), "repos_inactive": len(repos) - len(active), "repos_unknown": len(unknown),
             "repos_unreadable": 0}

    def look(did: str) -> OrphanRepo | str | None:
        try:
            records = pds.list_records(did, MOOD_COLLECTION, stop_on_short_page=True)
        except PdsError as exc:
            return unreadable_reason(exc)
        if not records:
            return None
        return OrphanRepo(did=did, records=len(records), reason=_orphan_reason(store, records))

    orphans: list[OrphanRepo] = []
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="orphan-repos") as pool:
        for did, found in zip(unknown, pool.map(look, unknown)):
            if isinstance(found, OrphanRepo):
                orphans.append(found)
            elif isinstance(found, str):
                facts["repos_unreadable"] += 1
                log.info("repo %s not in Mongo and unreadable: %s", did, found)
    return orphans, facts
