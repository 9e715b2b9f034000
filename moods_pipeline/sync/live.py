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
- ``delete_mood(store, pds, mood_id, journal=...)``: mirrors a mood deleted or nuked in
  MongoDB: removes every record carrying the mood's id, never a record carrying another id,
  then unsets the pointer. Right before the delete batch the moods concerned are read again
  (by id, and every mood of the user whose pointer names a target): a record that is by then
  a live mood's record (the mood was un-nuked or re-created, or a live mood's pointer names
  it) is kept (``kept``; ``status`` ``skipped`` when nothing else was deleted). ``status``
  ``deleted`` (``removed``: the rkeys).
- ``delete_all_moods(store, pds, user, journal=...)``: every record of
  ``computer.aesthetic.mood`` in the user's repo, in applyWrites delete batches of at most 200;
  the account stays; the repo is listed again, and only the pointers whose record is gone are
  unset. A user whose records cannot be deleted (no password, a login that fails, a DID that
  is malformed or held by several users) fails with the reason and the rkeys found; nothing
  is written.
- ``erase_account(store, pds, admin_password, user, journal=...)``: the admin
  ``com.atproto.admin.deleteAccount``, only for an account proved to be the user's: its DID
  is well formed and held by this user alone, and the stored credentials log in to exactly
  that DID (for a taken-down account, to which the PDS refuses every login, the admin API's
  handle must equal the stored ``users.atproto.handle``). The account is gone only when
  ``com.atproto.admin.getAccountInfo`` says it does not exist; only then are the user's
  pointers and ``users.atproto`` unset (the only operation here that writes to ``users``).
- ``plan_erase``: the dry run of the two above, with the same refusals, writing nothing.

Every delete (records or account) is journaled (``moods_pipeline.storage.journal``): an
intent line before the request, a result line after. A ``LiveSync`` without a journal refuses
to delete anything (the user or mood fails with "no deletion journal configured").

``user`` is a sub, an ``@handle`` or a DID (``MongoStore.resolve``), or a ``UserAccount``.
Writes log in with the stored DID and password and ``expected_did`` (a stored DID naming
another account fails the login), once per user per ``LiveSync`` object. Logs carry ids,
rkeys, DIDs and counts, never mood text or credentials. The rollout rule
(``moods_pipeline.sync.rollout``) is the caller's business: these functions do what they are asked.
See docs/runbook.md for the operator's side.
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
from moods_pipeline.atproto.client import MAX_APPLY_WRITES, LoginFailed, PdsAdmin, PdsClient, PdsError, PdsSession
from moods_pipeline.model import Mood, UserAccount, did_problem
from moods_pipeline.secret import Secret
from moods_pipeline.storage.journal import ACCOUNT, KEPT, RECORDS, DeletionJournal, DeletionTarget
from moods_pipeline.storage.journal import DELETED as JOURNAL_DELETED
from moods_pipeline.storage.journal import FAILED as JOURNAL_FAILED
from moods_pipeline.storage.mongo import SelectorError
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
    "resolve_user",
]

DELETE = "com.atproto.repo.applyWrites#delete"

SYNCED, DELETED, SKIPPED, FAILED = "synced", "deleted", "skipped", "failed"
ERASED, PLANNED = "erased", "planned"

NO_ACCOUNT = "no PDS account (users.atproto lacks did or password)"
ALREADY_GONE = "account already gone from the PDS (deleted by an earlier erase of this project)"
NO_JOURNAL = "no deletion journal configured: nothing is deleted unjournaled"
NO_PASSWORD = "users.atproto has no password"
TAKEDOWN_ERROR = "AccountTakedown"  # createSession's answer, after the password checked out, for a taken-down account

# Why a record is deleted, as the journal says it.
WHY_NUKED = "carries the id of a mood deleted or nuked in MongoDB"
WHY_ERASE_RECORDS = "erase records"
WHY_ERASE_ACCOUNT = "in the erased account"


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
    kept: tuple[str, ...] = ()  # rkeys found carrying the mood's id but kept (a live mood's record by then)

    @property
    def ok(self) -> bool:
        return self.status != FAILED

    def to_dict(self) -> dict:
        data = asdict(self)
        data["removed"] = list(self.removed)
        data["kept"] = list(self.kept)
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
    proved_by: str | None = None  # account mode: how the account was proved the user's (login, admin_handle)
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


def _unset_user_atproto(store, sub: str) -> int:
    """``$unset users.atproto`` for one user: the only write of this project to ``users``."""
    return store.unset_account(sub)


def _pointed_mood_ids(store, sub: str) -> list[str]:
    return [m.id for m in store.moods_of(sub) if m.rkey]


def _short_ref(ref: object) -> str | None:
    """A record's ``ref``/``mongoId`` as the journal may carry it (an id, cut: a record is not
    ours to trust, and the journal carries ids, not text)."""
    return ref[:64] if isinstance(ref, str) else None


def _delete_batches(rkeys: list[str]) -> list[list[str]]:
    return [rkeys[i : i + MAX_APPLY_WRITES] for i in range(0, len(rkeys), MAX_APPLY_WRITES)]


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, PdsError) else f"{type(exc).__name__}: {exc}"


# --- the engine ----------------------------------------------------------------------------------


class LiveSync:
    """Live operations sharing one PDS client, one Mongo store and one login per user.

    ``concurrency`` users are worked on at once by ``sync_moods``/``delete_moods`` (a login
    costs at least 350 ms of mostly waiting). ``journal``: where deletions are journaled; the
    delete operations refuse to delete without one.
    """

    def __init__(self, store, pds: PdsClient, options: WriteOptions = WriteOptions(), concurrency: int = 4,
                 journal: DeletionJournal | None = None) -> None:
        self.store = store
        self.pds = pds
        self.options = options
        self.concurrency = max(1, concurrency)
        # Where every delete is announced before it is sent and recorded after; without one,
        # nothing is deleted.
        self.journal = journal
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
            log.debug("delete %s: %s removed %s kept %s %s", result.mood_id, result.status, list(result.removed),
                      list(result.kept), result.reason or "")
        return [results[m] for m in ids]

    def _delete_user_moods(self, sub: str, items: list[tuple[str, Mood | None]]) -> list[LiveResult]:
        ids = [mood_id for mood_id, _ in items]
        # A mood that is live is not this function's to delete: its records are a live mood's
        # records (re-checked below in any case, right before the delete).
        live_first = {mood_id for mood_id, mood in items if mood is not None and mood.live}
        live_reason = "kept: the mood is live in MongoDB (neither deleted nor nuked)"
        did = None
        entry: str | None = None
        try:
            user = self.store.user_by_sub(sub)
            if user is None or (not user.did and not user.problem):
                # No repo to delete from; the pointers of moods that are gone are ours to clear.
                pointed = sorted(m for m, mood in items if mood is not None and mood.rkey and m not in live_first)
                self.store.unset_pointers(pointed)
                return [LiveResult(m, SKIPPED, reason=live_reason if m in live_first else NO_ACCOUNT,
                                   pointer_unset=m in pointed) for m in ids]
            if user.problem:
                return [LiveResult(m, FAILED, reason=user.problem, did=user.did) for m in ids]
            did = user.did
            records = self.pds.list_records(user.did, MOOD_COLLECTION)
            candidates = [(r.rkey, r.mood_ref) for r in records if r.mood_ref in ids and r.mood_ref not in live_first]
            carried_by_live: dict[str, list[str]] = defaultdict(list)
            for record in records:
                if record.mood_ref in live_first:
                    carried_by_live[record.mood_ref].append(record.rkey)
            kept: dict[str, str] = {}  # rkey -> why it stays
            deleted: list[str] = []
            pointer_ids: list[str] = [m for m, mood in items if mood is not None and mood.rkey and m not in live_first]
            if candidates:
                if self.journal is None:
                    return [LiveResult(m, FAILED, reason=NO_JOURNAL, did=did) for m in ids]
                session = self.session_for(user)
                entry = self.journal.intent(
                    kind=RECORDS, did=did, sub=sub, handle=user.handle or user.pds_handle,
                    reason="mood deleted or nuked in MongoDB",
                    targets=[DeletionTarget(rkey, WHY_NUKED, mood_id=ref) for rkey, ref in candidates],
                )
                # The last reads before the delete: whatever changed in Mongo since the listing
                # (a mood un-nuked or re-created, a live mood pointed at one of these) counts.
                to_delete, kept, live_now = self._recheck(sub, candidates, ids)
                pointer_ids = [m for m in pointer_ids if m not in live_now]
                if to_delete:
                    self._delete_rkeys(session, to_delete)
                    self.journal.result(entry, JOURNAL_DELETED, deleted=to_delete)
                else:
                    self.journal.result(entry, KEPT, error="; ".join(sorted(set(kept.values()))))
                entry = None
                deleted = to_delete
            # The records are gone: now the pointers (a crash in between leaves a stale pointer,
            # which the next run, or the audit, finds).
            self.store.unset_pointers(pointer_ids)
            removed_of: dict[str, list[str]] = defaultdict(list)
            kept_of: dict[str, list[str]] = defaultdict(list)
            for rkey, ref in candidates:
                (kept_of if rkey in kept else removed_of)[ref].append(rkey)
            results = []
            for m in ids:
                removed = tuple(sorted(r for r in removed_of.get(m, []) if r in deleted))
                kept_here = tuple(sorted(kept_of.get(m, []) + carried_by_live.get(m, [])))
                if m in live_first:
                    results.append(LiveResult(m, SKIPPED, reason=live_reason, did=did, kept=kept_here))
                elif kept_here and not removed:
                    why = "; ".join(sorted({kept[r] for r in kept_of[m]}))
                    results.append(LiveResult(m, SKIPPED, reason=why, did=did, kept=kept_here))
                else:
                    results.append(LiveResult(m, DELETED, "removed" if removed else "nothing_on_pds", did=did,
                                              removed=removed, pointer_unset=m in pointer_ids, kept=kept_here))
            return results
        except Exception as exc:
            if entry is not None and self.journal is not None:
                self.journal.result(entry, JOURNAL_FAILED, error=_reason(exc))
            level = logging.WARNING if isinstance(exc, PdsError) else logging.ERROR
            log.log(level, "deleting %d moods of %s failed: %s", len(ids), did or sub, _reason(exc),
                    exc_info=not isinstance(exc, PdsError))
            reason = f"login failed: {exc}" if isinstance(exc, LoginFailed) else _reason(exc)
            return [LiveResult(m, FAILED, reason=reason, did=did) for m in ids]

    def _recheck(self, sub: str, candidates: list[tuple[str, str]],
                 mood_ids: list[str]) -> tuple[list[str], dict[str, str], set[str]]:
        """Read the moods concerned again: (rkeys still to delete, {rkey kept: why}, the ids
        among ``mood_ids`` and the candidates' that are live now).

        A record stays when the mood whose id it carries is live now, or when a live mood of
        the user points at it."""
        ids = sorted({ref for _, ref in candidates} | set(mood_ids))
        targets = {rkey for rkey, _ in candidates}
        now = self.store.moods_by_id(ids)
        pointing = {m.rkey: m.id for m in self.store.moods_of(sub) if m.live and m.rkey in targets}
        to_delete: list[str] = []
        kept: dict[str, str] = {}
        for rkey, ref in candidates:
            mood = now.get(ref)
            if mood is not None and mood.live:
                kept[rkey] = f"kept: record is now the live mood {ref}'s record (un-nuked or re-created)"
            elif rkey in pointing:
                kept[rkey] = f"kept: record is now the live mood {pointing[rkey]}'s record (its pointer names it)"
            else:
                to_delete.append(rkey)
        live_now = {m for m, mood in now.items() if mood.live}
        return sorted(to_delete), kept, live_now

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

    def _start_erase(self, user: str | UserAccount, mode: str, dry_run: bool) -> tuple[EraseResult, UserAccount | None]:
        """The user to erase, or (None) a finished result: not found, or without any DID."""
        if mode not in ("records", "account"):
            raise ValueError(f"erase mode must be records or account, not {mode!r}")
        try:
            account = resolve_user(self.store, user)
        except SelectorError as exc:
            return EraseResult(mode, None, None, None, status=SKIPPED, reason=str(exc), dry_run=dry_run), None
        result = EraseResult(mode, account.sub, account.did, account.handle, dry_run=dry_run)
        if not account.did and not account.problem:
            # No DID at all: no repo to list or account to delete.
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

    @staticmethod
    def _did_refusal(account: UserAccount) -> str | None:
        """Why this user's DID must not be acted on (malformed, not a string, held by several
        users), or None."""
        if account.problem:
            return account.problem
        return did_problem(account.did)

    def _records_refusal(self, account: UserAccount, found: list[str]) -> str | None:
        """Why the records of this user cannot be deleted (before any write), or None. Logs in
        when there is something to delete: a password that fails is a refusal."""
        refusal = self._did_refusal(account)
        if refusal:
            return refusal
        if not account.password:
            return f"{NO_PASSWORD}: cannot log in to delete the records"
        if found:
            try:
                self.session_for(account)
            except LoginFailed as exc:
                return f"login failed: {exc}"
        return None

    def _list_for_erase(self, account: UserAccount) -> list:
        """The records of the user's repo, or [] for a DID that cannot name a repo (the PDS would
        answer a malformed one with a bare 500). Reading needs no login."""
        if did_problem(account.did):
            return []
        return self.pds.list_records(account.did, MOOD_COLLECTION)

    def plan_erase(self, user: str | UserAccount, mode: str, admin_password: Secret | None = None) -> EraseResult:
        """Dry run of ``delete_all_moods`` (mode ``records``) or ``erase_account`` (``account``):
        what would be removed and the same refusals, nothing deleted or written.

        ``admin_password`` (account mode): to tell a gone or taken-down account apart, as the
        erase does; without it only a login can prove the account."""
        result, account = self._start_erase(user, mode, dry_run=True)
        if account is None:
            return result
        started = time.monotonic()
        try:
            if mode == "records":
                found = self._list_for_erase(account)
                result.found_rkeys = sorted(r.rkey for r in found)
                result.left = len(found)
                refusal = self._records_refusal(account, result.found_rkeys)
                if refusal:
                    result.status, result.reason = FAILED, refusal
            else:
                admin = self.pds.admin(admin_password) if admin_password else None
                proof = self._prove_account(account, admin)
                if proof.gone:
                    forgettable = self._gone_refusal(account)
                    result.reason, result.left = forgettable or ALREADY_GONE, 0
                    if forgettable:
                        result.status = FAILED
                elif proof.refusal:
                    result.status, result.reason, result.left = FAILED, proof.refusal, proof.left
                else:
                    result.proved_by, result.left = proof.proved_by, 1
                    try:
                        result.found_rkeys = sorted(r.rkey for r in self.pds.list_records(account.did, MOOD_COLLECTION))
                    except PdsError as exc:  # a taken-down or deactivated repo: its records are not listed
                        log.info("records of %s unreadable (%s)", account.did, exc)
        except Exception as exc:  # the PDS down, the admin API refusing: nothing was written
            result.status = FAILED
            result.reason = f"repo unreadable: {exc}" if mode == "records" else _reason(exc)
        result.seconds = time.monotonic() - started
        return result

    def delete_all_moods(self, user: str | UserAccount) -> EraseResult:
        """Every record of the collection in the user's repo; the account stays (see module doc)."""
        result, account = self._start_erase(user, "records", dry_run=False)
        if account is None:
            return result
        started = time.monotonic()
        entry: str | None = None
        try:
            found = self._list_for_erase(account)
            result.found_rkeys = sorted(r.rkey for r in found)
            result.left = len(found)
            refusal = self._records_refusal(account, result.found_rkeys)
            if refusal is None and found and self.journal is None:
                refusal = NO_JOURNAL
            if refusal:
                result.status, result.reason = FAILED, refusal
                log.warning("erase records of %s refused: %s", account.did, refusal)
                result.seconds = time.monotonic() - started
                return result
            if found:
                entry = self.journal.intent(
                    kind=RECORDS, did=account.did, sub=account.sub, handle=account.handle or account.pds_handle,
                    reason="erase records",
                    targets=[DeletionTarget(r.rkey, WHY_ERASE_RECORDS, mood_id=_short_ref(r.mood_ref)) for r in found],
                )
                self._delete_rkeys(self.session_for(account), result.found_rkeys)
            left = {r.rkey for r in self.pds.list_records(account.did, MOOD_COLLECTION)}
            result.removed_rkeys = [r for r in result.found_rkeys if r not in left]
            result.left = len(left)
            if entry is not None:
                if left:
                    self.journal.result(entry, JOURNAL_FAILED, error=f"{len(left)} records left after deleting",
                                        deleted=result.removed_rkeys)
                else:
                    self.journal.result(entry, JOURNAL_DELETED, deleted=result.removed_rkeys)
                entry = None
            # Only pointers whose record is gone now: a record that survived keeps its pointer.
            gone = [m.id for m in self.store.moods_of(account.sub) if m.rkey and m.rkey not in left]
            result.pointers_unset = self.store.unset_pointers(gone)
            if left:
                result.status, result.reason = FAILED, f"{len(left)} records left after deleting"
            else:
                result.status = ERASED
            log.info("erase records of %s: %d removed, %d left, %d pointers unset",
                     account.did, len(result.removed_rkeys), len(left), result.pointers_unset)
        except Exception as exc:
            if entry is not None and self.journal is not None:
                self.journal.result(entry, JOURNAL_FAILED, error=_reason(exc))
            result.status = FAILED
            result.reason = f"login failed: {exc}" if isinstance(exc, LoginFailed) else _reason(exc)
            log.log(logging.WARNING if isinstance(exc, PdsError) else logging.ERROR,
                    "erase records of %s failed: %s", account.did, result.reason,
                    exc_info=not isinstance(exc, PdsError))
        result.seconds = time.monotonic() - started
        return result

    def _prove_account(self, account: UserAccount, admin: PdsAdmin | None) -> "_AccountProof":
        """Whether the account of the user's DID is gone, provably the user's, or neither (why).

        Gone: the admin API does not know the DID. The user's: the stored credentials log in to
        exactly that DID; or the PDS refuses the login because the account is taken down (it says
        so only after the password checked out) and the admin API's handle for the DID equals
        the stored ``users.atproto.handle``. Anything else (a wrong password, a login that lands
        on another DID, no password) is a refusal: nothing may be deleted."""
        refusal = self._did_refusal(account)
        if refusal:
            return _AccountProof(refusal=refusal)
        info = None
        if admin is not None:
            info = admin.get_account_info(account.did)
            if info is None:
                return _AccountProof(gone=True)
            if info.get("did") != account.did:
                return _AccountProof(refusal=f"the admin API answered for {info.get('did')!r}, not {account.did}",
                                     left=1)
        if not account.password:
            return _AccountProof(refusal=f"{NO_PASSWORD}: cannot prove that the account {account.did} is this user's",
                                 left=1 if info else None)
        try:
            self.session_for(account)
            return _AccountProof(proved_by="login")
        except LoginFailed as exc:
            if exc.error != TAKEDOWN_ERROR:
                return _AccountProof(
                    refusal=f"login failed: {exc}: the stored credentials do not prove the account is this user's",
                    left=1 if info else None)
            if info is None:
                return _AccountProof(refusal=f"the account {account.did} is taken down: PDS_ADMIN_PASSWORD is "
                                             "needed to check its handle")
            stored = (account.pds_handle or "").lower()
            admin_handle = str(info.get("handle") or "").lower()
            if stored and admin_handle == stored:
                return _AccountProof(proved_by="admin_handle")
            return _AccountProof(
                refusal=f"the PDS refuses every login to {account.did} (taken down) and the admin API's handle "
                        f"{admin_handle or '(none)'!r} does not match the stored handle {stored or '(none)'!r}",
                left=1)

    def erase_account(self, admin_password: Secret | None, user: str | UserAccount) -> EraseResult:
        """Delete the whole PDS account (admin API) once it is proved the user's, verify it is
        gone, then unset the pointers and users.atproto (see module doc)."""
        result, account = self._start_erase(user, "account", dry_run=False)
        if account is None:
            return result
        started = time.monotonic()
        entry: str | None = None
        try:
            if not admin_password:
                raise ValueError("PDS_ADMIN_PASSWORD is not set: the admin API is needed to delete an account")
            admin = self.pds.admin(admin_password)
            proof = self._prove_account(account, admin)
            if proof.refusal:
                result.status, result.reason, result.left = FAILED, proof.refusal, proof.left
                log.warning("erase account %s refused: %s", account.did, proof.refusal)
            elif proof.gone:
                forgettable = self._gone_refusal(account)
                if forgettable:
                    result.status, result.reason, result.left = FAILED, forgettable, 0
                    log.warning("erase account %s refused: %s", account.did, forgettable)
                else:
                    result.reason = ALREADY_GONE
                    self._forget_account(account, result)
            elif self.journal is None:
                result.status, result.reason, result.left = FAILED, NO_JOURNAL, 1
            else:
                result.proved_by = proof.proved_by
                try:
                    result.found_rkeys = sorted(r.rkey for r in self.pds.list_records(account.did, MOOD_COLLECTION))
                except PdsError as exc:  # a taken-down or deactivated repo: its records are not listed
                    log.info("records of %s unreadable before deletion (%s)", account.did, exc)
                entry = self.journal.intent(
                    kind=ACCOUNT, did=account.did, sub=account.sub, handle=account.handle or account.pds_handle,
                    reason=f"erase account (proved by {proof.proved_by})",
                    targets=[DeletionTarget(rkey, WHY_ERASE_ACCOUNT) for rkey in result.found_rkeys],
                )
                admin.delete_account(account.did)
                result.account_deleted = True
                # Gone only when the admin API says so; until then Mongo keeps what is needed
                # to try again.
                if admin.get_account_info(account.did) is not None:
                    self.journal.result(entry, JOURNAL_FAILED, error="the account still exists after deleteAccount")
                    entry = None
                    result.left = 1
                    result.status, result.reason = FAILED, "the account still exists after deleteAccount"
                else:
                    self.journal.result(entry, JOURNAL_DELETED, deleted=result.found_rkeys)
                    entry = None
                    result.removed_rkeys = list(result.found_rkeys)
                    self._forget_account(account, result)
            log.info("erase account %s: %s, deleted=%s, %d records with it, %d pointers unset",
                     account.did, result.status, result.account_deleted, len(result.removed_rkeys),
                     result.pointers_unset)
        except Exception as exc:
            if entry is not None and self.journal is not None:
                self.journal.result(entry, JOURNAL_FAILED, error=_reason(exc))
            result.status = FAILED
            result.reason = _reason(exc)
            if result.left is None:
                result.left = 1 if result.account_deleted or entry is not None else None
            log.log(logging.WARNING if isinstance(exc, (PdsError, ValueError)) else logging.ERROR,
                    "erase account %s failed: %s", account.did, result.reason,
                    exc_info=not isinstance(exc, (PdsError, ValueError)))
        result.seconds = time.monotonic() - started
        return result

    def _gone_refusal(self, account: UserAccount) -> str | None:
        """Why a DID the admin API does not know must still not be forgotten, or None.

        The admin API of *this* PDS not knowing a DID proves little on its own: with PDS_URL
        naming another PDS every account would look gone, and forgetting the DIDs would leave
        the accounts where they are with no way to retry. Only a deletion this project itself
        sent (journaled, a run that died before forgetting the DID) is finished here."""
        if self.journal is not None and self.journal.sent_account_deletion(account.did):
            return None
        return (f"the PDS at {self.pds.base_url} has no account {account.did}, and this project never deleted "
                "it: it may have been deleted elsewhere, or PDS_URL names another PDS; nothing changed "
                "(docs/runbook.md, Erasure)")

    def _forget_account(self, account: UserAccount, result: EraseResult) -> None:
        """The account is gone (the admin API says so): the user's pointers and users.atproto go."""
        result.left = 0
        result.pointers_unset = self.store.unset_pointers(_pointed_mood_ids(self.store, account.sub))
        _unset_user_atproto(self.store, account.sub)
        result.status = ERASED


@dataclass(frozen=True)
class _AccountProof:
    """What ``LiveSync._prove_account`` found: gone, proved (``proved_by``) or refused (why)."""

    gone: bool = False
    proved_by: str | None = None  # login | admin_handle
    refusal: str | None = None
    left: int | None = None  # 1 when the account is known to exist (a refusal leaves it there)


# --- module-level functions ----------------------------------------------------------------------


def sync_mood(store, pds: PdsClient, mood_id: str, options: WriteOptions = WriteOptions()) -> LiveResult:
    """Write one mood's record (deterministic rkey) and its pointer. Never raises for PDS trouble."""
    return LiveSync(store, pds, options).sync_moods([mood_id])[0]


def sync_moods(store, pds: PdsClient, mood_ids: Iterable[str], options: WriteOptions = WriteOptions(),
               concurrency: int = 4) -> list[LiveResult]:
    return LiveSync(store, pds, options, concurrency).sync_moods(mood_ids)


def delete_mood(store, pds: PdsClient, mood_id: str, user: str | UserAccount | None = None, *,
                journal: DeletionJournal | None = None) -> LiveResult:
    """Remove every record carrying the id of this deleted or nuked mood and unset its pointer.
    Never raises for PDS trouble; without ``journal`` nothing is deleted."""
    return LiveSync(store, pds, journal=journal).delete_moods([mood_id], user=user)[0]


def delete_moods(store, pds: PdsClient, mood_ids: Iterable[str], concurrency: int = 4, *,
                 journal: DeletionJournal | None = None) -> list[LiveResult]:
    return LiveSync(store, pds, concurrency=concurrency, journal=journal).delete_moods(mood_ids)


def delete_all_moods(store, pds: PdsClient, user: str | UserAccount, *,
                     journal: DeletionJournal | None = None) -> EraseResult:
    """Every record of computer.aesthetic.mood in the user's repo; the pointers of the records
    gone unset. Without ``journal`` nothing is deleted."""
    return LiveSync(store, pds, journal=journal).delete_all_moods(user)


def erase_account(store, pds: PdsClient, admin_password: Secret | None, user: str | UserAccount, *,
                  journal: DeletionJournal | None = None) -> EraseResult:
    """Admin deleteAccount of an account proved the user's, verified gone, then the user's
    pointers and users.atproto unset. Without ``journal`` nothing is deleted."""
    return LiveSync(store, pds, journal=journal).erase_account(admin_password, user)


def plan_erase(store, pds: PdsClient, user: str | UserAccount, mode: str,
               admin_password: Secret | None = None) -> EraseResult:
    """What erasing would remove (rkeys found) and whether it would be refused, writing nothing."""
    return LiveSync(store, pds).plan_erase(user, mode, admin_password)
