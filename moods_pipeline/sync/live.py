"""Live sync: one mood (or a few) at a time, deletion sync, and account erasure.

Plain Python, no Dagster. Used by the catch-up sensor's job (``sync_moods``, ``delete_moods``),
the erase job and CLI (``delete_all_moods``, ``erase_account``, ``plan_erase``), and by
anything else that wants to mirror one change right away.

Every operation is idempotent (running it again after it succeeded, or after it stopped half
way, does what is left and nothing twice) and returns a result instead of raising for PDS
trouble, the PDS being down included: a live writer must never take the caller down with it.

- ``sync_mood(store, pds, mood_id) -> LiveResult``: the mood's record, written with its
  deterministic rkey through the backfill's planner and batch writer (so a record that is
  already there, whatever its rkey, is matched by the ``ref`` it carries and only the pointer
  is written), then Mongo's ``atproto.rkey`` pointer. ``status``: ``synced`` (``action`` says
  created / pointer_written / already_synced), ``skipped`` (nuked, invalid, no PDS account,
  no such mood; ``reason`` says which) or ``failed`` (PDS or Mongo trouble; ``reason``).
- ``delete_mood(store, pds, mood_id)``: removes every record carrying the mood's id (that is
  the pointed record when it carries the id, and any duplicates), never a record carrying
  another id, then unsets the pointer. ``status`` ``deleted`` (``removed``: the rkeys).
- ``delete_all_moods(store, pds, user)``: every record of ``computer.aesthetic.mood`` in the
  user's repo, in applyWrites delete batches of at most 200; the account stays; all of the
  user's pointers are unset; the repo is listed again to count what is left.
- ``erase_account(store, pds, admin_password, user)``: the admin
  ``com.atproto.admin.deleteAccount``, then the user's pointers and ``users.atproto`` are
  unset (the only operation here that removes anything outside the collection).

``user`` is a sub, an ``@handle`` or a DID (``MongoStore.resolve``), or a ``UserAccount``.
Writes log in with the stored DID and password and ``expected_did`` (CONTRACT.md "Login"), once
per user per ``LiveSync`` object. Logs carry ids, rkeys, DIDs and counts, never mood text or
credentials. The rollout rule (``moods_pipeline.rollout``) is the caller's business: these
functions do what they are asked.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Iterable

from bson import ObjectId
from bson.errors import InvalidId

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.mongo_store import SelectorError
from moods_pipeline.pds.xrpc import MAX_APPLY_WRITES, LoginFailed, PdsClient, PdsError, PdsSession
from moods_pipeline.secret import Secret
from moods_pipeline.sync.model import Mood, UserAccount
from moods_pipeline.sync.planner import plan_user
from moods_pipeline.sync.writer import BatchWriter, WriteOptions

log = logging.getLogger(__name__)

__all__ = [
    "LiveResult",
    "EraseResult",
    "LiveSync",
    "sync_mood",
    "sync_moods",
    "delete_mood",
    "delete_moods",
    "delete_all_moods",
    "erase_account",
    "plan_erase",
    "repo_exists",
    "resolve_user",
]

DELETE = "com.atproto.repo.applyWrites#delete"

SYNCED, DELETED, SKIPPED, FAILED = "synced", "deleted", "skipped", "failed"
ERASED, PLANNED = "erased", "planned"

NO_ACCOUNT = "no PDS account (users.atproto lacks did or password)"


@dataclass(frozen=True)
class LiveResult:
    """What happened to one mood. Ids, rkeys, DIDs and reasons only: never the mood text."""

    mood_id: str
    status: str  # synced | deleted | skipped | failed
    action: str = ""  # synced: created | pointer_written | already_synced; deleted: removed | nothing_on_pds
    reason: str | None = None  # skipped / failed: why
    did: str | None = None
    rkey: str | None = None  # synced: the record Mongo now points at
    removed: tuple[str, ...] = ()  # deleted: the rkeys removed
    pointer_unset: bool = False

    @property
    def ok(self) -> bool:
        return self.status != FAILED

    def to_dict(self) -> dict:
        data = asdict(self)
        data["removed"] = list(self.removed)
        return data


@dataclass
class EraseResult:
    """What erasing one user did (or, for a dry run, would do). No text, rkeys and counts only."""

    mode: str  # records | account
    sub: str | None
    did: str | None
    handle: str | None
    status: str = PLANNED  # planned | erased | skipped | failed
    reason: str | None = None
    dry_run: bool = False
    found_rkeys: list[str] = field(default_factory=list)  # records in the collection before
    removed_rkeys: list[str] = field(default_factory=list)  # records that are gone now
    account_deleted: bool = False
    pointers_unset: int = 0
    left: int | None = None  # records left (records mode), 1 if the account still exists (account mode)
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"@{self.handle}" if self.handle else (self.did or self.sub or "?")

    @property
    def ok(self) -> bool:
        return self.status in (PLANNED, ERASED, SKIPPED) and not self.left

    def to_dict(self) -> dict:
        return asdict(self)


# --- helpers -------------------------------------------------------------------------------------


def _object_id(mood_id: str) -> ObjectId | None:
    try:
        return ObjectId(mood_id)
    except (InvalidId, TypeError):
        return None


def resolve_user(store, user: str | UserAccount) -> UserAccount:
    """A ``UserAccount`` for a sub, ``@handle`` or DID (SelectorError if nobody has it)."""
    if isinstance(user, UserAccount):
        return user
    return store.resolve([user])[0]


def repo_exists(pds: PdsClient, did: str) -> bool:
    """Whether ``com.atproto.repo.describeRepo`` finds the repo (False: RepoNotFound, i.e. gone).

    Other errors (the PDS down) raise PdsError: an outage must not read as "erased".
    """
    try:
        return pds.describe_repo(did) is not None
    except PdsError as exc:
        if exc.status in (400, 404) and exc.error in ("RepoNotFound", "RepoDeactivated", "RepoTakendown",
                                                      "InvalidRequest", "NotFound"):
            return False
        raise


def _unset_user_atproto(store, sub: str) -> int:
    """``$unset users.atproto`` for one user: the only write of this project to ``users``."""
    return store.unset_account(sub)


def _pointed_mood_ids(store, sub: str) -> list[str]:
    return [m.id for m in store.moods_of(sub) if m.rkey]


def _delete_batches(rkeys: list[str]) -> list[list[str]]:
    return [rkeys[i : i + MAX_APPLY_WRITES] for i in range(0, len(rkeys), MAX_APPLY_WRITES)]


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, PdsError) else f"{type(exc).__name__}: {exc}"


# --- the engine ----------------------------------------------------------------------------------


class LiveSync:
    """Live operations sharing one PDS client, one Mongo store and one login per user.

    ``concurrency`` users are worked on at once by ``sync_moods``/``delete_moods`` (a login
    costs at least 350 ms of mostly waiting).
    """

    def __init__(self, store, pds: PdsClient, options: WriteOptions = WriteOptions(), concurrency: int = 4) -> None:
        self.store = store
        self.pds = pds
        self.options = options
        self.concurrency = max(1, concurrency)
        self._sessions: dict[str, PdsSession | LoginFailed] = {}

    # -- sessions --

    def session_for(self, user: UserAccount) -> PdsSession:
        """A logged-in session for the user's stored DID (LoginFailed, cached, if that fails)."""
        cached = self._sessions.get(user.did or "")
        if isinstance(cached, PdsSession):
            return cached
        if isinstance(cached, LoginFailed):
            raise cached
        if not user.has_account or user.problem:
            raise LoginFailed(None, "NoAccount" if not user.problem else "Refused", user.problem or NO_ACCOUNT)
        try:
            session = self.pds.login(user.did, user.password, expected_did=user.did)
        except LoginFailed as exc:
            self._sessions[user.did] = exc
            raise
        self._sessions[user.did] = session
        return session

    # -- sync --

    def sync_moods(self, mood_ids: Iterable[str]) -> list[LiveResult]:
        """``sync_mood`` for several moods: one repo listing and one login per user.

        Results come in the order of ``mood_ids`` (repeats removed)."""
        ids = list(dict.fromkeys(mood_ids))
        results: dict[str, LiveResult] = {}
        by_user: dict[str, list[Mood]] = defaultdict(list)
        for mood_id in ids:
            try:
                mood = self._load(mood_id)
            except Exception as exc:  # Mongo trouble: this mood fails, the others go on
                log.warning("mood %s: reading it from MongoDB failed: %s", mood_id, type(exc).__name__)
                results[mood_id] = LiveResult(mood_id, FAILED, reason=f"MongoDB read failed: {_reason(exc)}")
                continue
            if isinstance(mood, LiveResult):
                results[mood_id] = mood
            elif mood.deleted:
                results[mood_id] = LiveResult(mood_id, SKIPPED, reason="nuked (deleted: true): not synced")
            elif not isinstance(mood.user, str) or not mood.user:
                results[mood_id] = LiveResult(mood_id, SKIPPED, reason="mood has no user")
            else:
                by_user[mood.user].append(mood)

        def run(item: tuple[str, list[Mood]]) -> list[LiveResult]:
            return self._sync_user_moods(*item)

        for done in self._map(run, list(by_user.items())):
            for result in done:
                results[result.mood_id] = result
        for result in results.values():
            log.debug("sync %s: %s %s %s", result.mood_id, result.status, result.action, result.reason or "")
        return [results[m] for m in ids]

    def _load(self, mood_id: str) -> Mood | LiveResult:
        if _object_id(mood_id) is None:
            return LiveResult(str(mood_id), SKIPPED, reason="not an ObjectId (24 hex characters)")
        mood = self.store.mood(mood_id)
        if mood is None:
            return LiveResult(mood_id, SKIPPED, reason="no such mood in MongoDB")
        return mood

    def _map(self, fn, items: list) -> list:
        if self.concurrency <= 1 or len(items) <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)), thread_name_prefix="live") as pool:
            return list(pool.map(fn, items))

    def _sync_user_moods(self, sub: str, wanted: list[Mood]) -> list[LiveResult]:
        wanted_ids = [m.id for m in wanted]
        did = None
        try:
            user = self.store.user_by_sub(sub)
            if user is None or not user.has_account:
                reason = (user.problem if user else None) or NO_ACCOUNT
                return [LiveResult(m, SKIPPED, reason=reason) for m in wanted_ids]
            if user.problem:
                return [LiveResult(m, FAILED, reason=user.problem) for m in wanted_ids]
            did = user.did
            moods = self.store.moods_of(sub)
            records = self.pds.list_records(user.did, MOOD_COLLECTION)
            plan = plan_user(moods, records)
            want = set(wanted_ids)
            results: dict[str, LiveResult] = {}
            for mood_id, reason in plan.invalid:
                if mood_id in want:
                    results[mood_id] = LiveResult(mood_id, SKIPPED, reason=f"invalid: {reason}", did=did)
            pointer_writes = [(m, r) for m, r in plan.pointer_writes if m in want]
            if pointer_writes:
                # The record is there already (matched by its `ref`): only the pointer is missing.
                self.store.write_pointers(pointer_writes)
                for mood_id, rkey in pointer_writes:
                    results[mood_id] = LiveResult(mood_id, SYNCED, "pointer_written", did=did, rkey=rkey)
            creates = [c for c in plan.creates if c.mood_id in want]
            if creates:
                try:
                    session = self.session_for(user)
                except LoginFailed as exc:
                    reason = f"login failed: {exc}"
                    for create in creates:
                        results[create.mood_id] = LiveResult(create.mood_id, FAILED, reason=reason, did=did)
                    creates = []
                if creates:
                    written = BatchWriter(session, self.store, self.pds, self.options).write_all(creates)
                    failed = dict(written.failed)
                    for create in creates:
                        if create.mood_id in failed:
                            results[create.mood_id] = LiveResult(
                                create.mood_id, FAILED, reason=failed[create.mood_id], did=did)
                    if len(failed) < len(creates):
                        # Re-read the pointers: a batch that was recovered may point elsewhere.
                        pointers = {m.id: m.rkey for m in self.store.moods_of(sub)}
                        for create in creates:
                            if create.mood_id not in failed:
                                results[create.mood_id] = LiveResult(
                                    create.mood_id, SYNCED, "created", did=did, rkey=pointers.get(create.mood_id))
            by_id = {m.id: m for m in moods}
            for mood_id in wanted_ids:
                if mood_id not in results:
                    rkey = by_id[mood_id].rkey if mood_id in by_id else None
                    results[mood_id] = LiveResult(mood_id, SYNCED, "already_synced", did=did, rkey=rkey)
            return [results[m] for m in wanted_ids]
        except Exception as exc:  # PDS down, repo unreadable, Mongo trouble: these moods fail
            level = logging.WARNING if isinstance(exc, PdsError) else logging.ERROR
            log.log(level, "live sync of %d moods of %s failed: %s", len(wanted_ids), did or sub, _reason(exc),
                    exc_info=not isinstance(exc, PdsError))
            return [LiveResult(m, FAILED, reason=_reason(exc), did=did) for m in wanted_ids]

    # -- deletion of single moods --

    def delete_moods(self, mood_ids: Iterable[str], user: str | UserAccount | None = None) -> list[LiveResult]:
        """``delete_mood`` for several moods (one listing and one login per user).

        A mood no longer in MongoDB can still be deleted from the PDS when ``user`` names its
        author (its records are found by the id they carry)."""
        ids = list(dict.fromkeys(mood_ids))
        results: dict[str, LiveResult] = {}
        by_user: dict[str, list[tuple[str, Mood | None]]] = defaultdict(list)
        fallback: UserAccount | None = None
        for mood_id in ids:
            try:
                if _object_id(mood_id) is None:
                    results[mood_id] = LiveResult(str(mood_id), SKIPPED, reason="not an ObjectId (24 hex characters)")
                    continue
                mood = self.store.mood(mood_id)
                if mood is not None and isinstance(mood.user, str) and mood.user:
                    by_user[mood.user].append((mood_id, mood))
                    continue
                if user is None:
                    results[mood_id] = LiveResult(mood_id, SKIPPED, reason="no such mood in MongoDB (name its user)")
                    continue
                fallback = fallback or resolve_user(self.store, user)
                by_user[fallback.sub].append((mood_id, mood))
            except SelectorError as exc:
                results[mood_id] = LiveResult(mood_id, SKIPPED, reason=str(exc))
            except Exception as exc:
                results[mood_id] = LiveResult(mood_id, FAILED, reason=f"MongoDB read failed: {_reason(exc)}")

        def run(item: tuple[str, list[tuple[str, Mood | None]]]) -> list[LiveResult]:
            return self._delete_user_moods(*item)

        for done in self._map(run, list(by_user.items())):
            for result in done:
                results[result.mood_id] = result
        for result in results.values():
            log.debug("delete %s: %s removed %s %s", result.mood_id, result.status, list(result.removed),
                      result.reason or "")
        return [results[m] for m in ids]

    def _delete_user_moods(self, sub: str, items: list[tuple[str, Mood | None]]) -> list[LiveResult]:
        ids = [mood_id for mood_id, _ in items]
        did = None
        try:
            user = self.store.user_by_sub(sub)
            if user is None or not user.did:
                # No repo to delete from; the pointers are ours to clear all the same.
                pointed = {m for m, mood in items if mood is not None and mood.rkey}
                self.store.unset_pointers(sorted(pointed))
                return [LiveResult(m, SKIPPED, reason=NO_ACCOUNT, pointer_unset=m in pointed) for m in ids]
            did = user.did
            records = self.pds.list_records(user.did, MOOD_COLLECTION)
            carrying: dict[str, list[str]] = defaultdict(list)
            for record in records:
                if record.mood_ref in ids:
                    carrying[record.mood_ref].append(record.rkey)
            targets = sorted(rkey for rkeys in carrying.values() for rkey in rkeys)
            if targets:
                session = self.session_for(user)
                self._delete_rkeys(session, targets)
            # The records are gone: now the pointers (a crash in between leaves a stale pointer,
            # which the next run, or the audit, finds).
            pointed = [m for m, mood in items if mood is not None and mood.rkey]
            self.store.unset_pointers(pointed)
            return [
                LiveResult(m, DELETED, "removed" if carrying.get(m) else "nothing_on_pds", did=did,
                           removed=tuple(sorted(carrying.get(m, []))), pointer_unset=m in pointed)
                for m in ids
            ]
        except Exception as exc:
            level = logging.WARNING if isinstance(exc, PdsError) else logging.ERROR
            log.log(level, "deleting %d moods of %s failed: %s", len(ids), did or sub, _reason(exc),
                    exc_info=not isinstance(exc, PdsError))
            reason = f"login failed: {exc}" if isinstance(exc, LoginFailed) else _reason(exc)
            return [LiveResult(m, FAILED, reason=reason, did=did) for m in ids]

    def _delete_rkeys(self, session: PdsSession, rkeys: list[str]) -> None:
        """Delete these rkeys of the collection: applyWrites batches of at most 200.

        A batch fails as a whole if one of its rkeys is already gone (a concurrent delete), so
        a failed batch is re-listed and retried with what is still there; a second failure
        falls back to deleteRecord one by one, which succeeds for a missing rkey.
        """
        for batch in _delete_batches(rkeys):
            writes = [{"$type": DELETE, "collection": MOOD_COLLECTION, "rkey": rkey} for rkey in batch]
            try:
                session.apply_writes(writes)
                log.debug("deleted %d records of %s (%s..%s)", len(batch), session.did, batch[0], batch[-1])
                continue
            except PdsError as exc:
                if not exc.retryable:
                    raise
                log.warning("delete batch of %d in %s failed (%s); re-reading the repo", len(batch), session.did, exc)
            present = {r.rkey for r in self.pds.list_records(session.did, MOOD_COLLECTION)}
            still = [rkey for rkey in batch if rkey in present]
            if not still:
                continue
            try:
                session.apply_writes([{"$type": DELETE, "collection": MOOD_COLLECTION, "rkey": r} for r in still])
            except PdsError as exc:
                if not exc.retryable:
                    raise
                for rkey in still:
                    session.delete_record(MOOD_COLLECTION, rkey)

    # -- whole users --

    def plan_erase(self, user: str | UserAccount, mode: str) -> EraseResult:
        """Dry run of ``delete_all_moods`` (mode ``records``) or ``erase_account`` (``account``)."""
        result, account = self._start_erase(user, mode, dry_run=True)
        if account is None:
            return result
        started = time.monotonic()
        try:
            if mode == "account" and not repo_exists(self.pds, account.did):
                result.reason = "account already gone from the PDS"
                result.left = 0
            else:
                result.found_rkeys = sorted(r.rkey for r in self.pds.list_records(account.did, MOOD_COLLECTION))
                result.left = len(result.found_rkeys) if mode == "records" else 1
        except PdsError as exc:
            result.status, result.reason = FAILED, f"repo unreadable: {exc}"
        result.seconds = time.monotonic() - started
        return result

    def _start_erase(self, user: str | UserAccount, mode: str, dry_run: bool) -> tuple[EraseResult, UserAccount | None]:
        if mode not in ("records", "account"):
            raise ValueError(f"erase mode must be records or account, not {mode!r}")
        try:
            account = resolve_user(self.store, user)
        except SelectorError as exc:
            return EraseResult(mode, None, None, None, status=SKIPPED, reason=str(exc), dry_run=dry_run), None
        result = EraseResult(mode, account.sub, account.did, account.handle, dry_run=dry_run)
        need = account.did if mode == "account" else account.has_account
        if not need:
            result.status = SKIPPED
            result.reason = NO_ACCOUNT + ": nothing to erase"
            result.left = 0
            if not dry_run:
                try:
                    result.pointers_unset = self.store.unset_pointers(_pointed_mood_ids(self.store, account.sub))
                except Exception as exc:
                    result.status, result.reason = FAILED, f"MongoDB: {_reason(exc)}"
            return result, None
        return result, account

    def delete_all_moods(self, user: str | UserAccount) -> EraseResult:
        """Every record of the collection in the user's repo; the account stays (see module doc)."""
        result, account = self._start_erase(user, "records", dry_run=False)
        if account is None:
            return result
        started = time.monotonic()
        try:
            found = sorted(r.rkey for r in self.pds.list_records(account.did, MOOD_COLLECTION))
            result.found_rkeys = found
            if found:
                self._delete_rkeys(self.session_for(account), found)
            result.pointers_unset = self.store.unset_pointers(_pointed_mood_ids(self.store, account.sub))
            left = {r.rkey for r in self.pds.list_records(account.did, MOOD_COLLECTION)}
            result.removed_rkeys = [r for r in found if r not in left]
            result.left = len(left)
            if left:
                result.status, result.reason = FAILED, f"{len(left)} records left after deleting"
            else:
                result.status = ERASED
            log.info("erase records of %s: %d removed, %d left, %d pointers unset",
                     account.did, len(result.removed_rkeys), len(left), result.pointers_unset)
        except Exception as exc:
            result.status = FAILED
            result.reason = f"login failed: {exc}" if isinstance(exc, LoginFailed) else _reason(exc)
            log.log(logging.WARNING if isinstance(exc, PdsError) else logging.ERROR,
                    "erase records of %s failed: %s", account.did, result.reason,
                    exc_info=not isinstance(exc, PdsError))
        result.seconds = time.monotonic() - started
        return result

    def erase_account(self, admin_password: Secret | None, user: str | UserAccount) -> EraseResult:
        """Delete the whole PDS account (admin API), then unset the pointers and users.atproto."""
        result, account = self._start_erase(user, "account", dry_run=False)
        if account is None:
            return result
        started = time.monotonic()
        try:
            if not admin_password:
                raise ValueError("PDS_ADMIN_PASSWORD is not set: the admin API is needed to delete an account")
            exists = repo_exists(self.pds, account.did)
            if exists:
                try:
                    result.found_rkeys = sorted(r.rkey for r in self.pds.list_records(account.did, MOOD_COLLECTION))
                except PdsError as exc:
                    log.info("records of %s unreadable before deletion (%s)", account.did, exc)
                self.pds.admin(admin_password).delete_account(account.did)
                result.account_deleted = True
            else:
                result.reason = "account already gone from the PDS"
            # Verify before forgetting the DID: if the account is still there, keep what is
            # needed to try again.
            if repo_exists(self.pds, account.did):
                result.left = 1
                result.status, result.reason = FAILED, "the account still exists after deleteAccount"
            else:
                result.left = 0
                result.removed_rkeys = list(result.found_rkeys)
                result.pointers_unset = self.store.unset_pointers(_pointed_mood_ids(self.store, account.sub))
                _unset_user_atproto(self.store, account.sub)
                result.status = ERASED
            log.info("erase account %s: deleted=%s, %d records with it, %d pointers unset",
                     account.did, result.account_deleted, len(result.removed_rkeys), result.pointers_unset)
        except Exception as exc:
            result.status = FAILED
            result.reason = _reason(exc)
            log.log(logging.WARNING if isinstance(exc, (PdsError, ValueError)) else logging.ERROR,
                    "erase account %s failed: %s", account.did, result.reason,
                    exc_info=not isinstance(exc, (PdsError, ValueError)))
        result.seconds = time.monotonic() - started
        return result


# --- module-level functions ----------------------------------------------------------------------


def sync_mood(store, pds: PdsClient, mood_id: str, options: WriteOptions = WriteOptions()) -> LiveResult:
    """Write one mood's record (deterministic rkey) and its pointer. Never raises for PDS trouble."""
    return LiveSync(store, pds, options).sync_moods([mood_id])[0]


def sync_moods(store, pds: PdsClient, mood_ids: Iterable[str], options: WriteOptions = WriteOptions(),
               concurrency: int = 4) -> list[LiveResult]:
    return LiveSync(store, pds, options, concurrency).sync_moods(mood_ids)


def delete_mood(store, pds: PdsClient, mood_id: str, user: str | UserAccount | None = None) -> LiveResult:
    """Remove every record carrying this mood's id and unset its pointer. Never raises for PDS trouble."""
    return LiveSync(store, pds).delete_moods([mood_id], user=user)[0]


def delete_moods(store, pds: PdsClient, mood_ids: Iterable[str], concurrency: int = 4) -> list[LiveResult]:
    return LiveSync(store, pds, concurrency=concurrency).delete_moods(mood_ids)


def delete_all_moods(store, pds: PdsClient, user: str | UserAccount) -> EraseResult:
    """Every record of computer.aesthetic.mood in the user's repo; all the user's pointers unset."""
    return LiveSync(store, pds).delete_all_moods(user)


def erase_account(store, pds: PdsClient, admin_password: Secret | None, user: str | UserAccount) -> EraseResult:
    """Admin deleteAccount, then the user's pointers and users.atproto unset."""
    return LiveSync(store, pds).erase_account(admin_password, user)


def plan_erase(store, pds: PdsClient, user: str | UserAccount, mode: str) -> EraseResult:
    """What erasing would remove (rkeys found), writing nothing."""
    return LiveSync(store, pds).plan_erase(user, mode)
