"""Carrying out a repair: one user's ``RepairPlan`` (``sync.repair_plan``) on the PDS and in Mongo.

Plain Python (no Dagster). :func:`repair_user` is what the repair job runs per user: a fresh
read of the user's moods and records (every listRecords page: a repair never acts on a
shortcut read), ``reconcile`` + ``plan_repair``, and with ``apply`` the plan's execution and a
fresh audit of the user afterwards (what is left).

Execution (:func:`execute_plan`):

1. Pointer writes to records that already exist need no login: one ``bulk_write`` first.
2. The PDS writes (creates, then updates, then deletes, as the plan orders them) go through
   ``writer.BatchRunner`` as applyWrites batches (at most 200 writes, size-bounded), after a
   login with the stored DID and password that must return the same DID. Right after each
   batch: the created records' pointers (one ``bulk_write``) and the unsets of nuked moods
   whose records are now all deleted.
3. A batch that fails may have landed: the runner re-reads the repo (and the user's moods) and
   re-plans before its one retry, then splits to isolate the write the PDS refuses:

   - a create whose mood's id is now carried by a record has landed (the pointer follows it);
     one whose rkey is taken moves to the next free microsecond; one whose mood is no longer
     live (or valid) in Mongo is dropped (``skipped``);
   - an update whose record already holds the wanted value has landed; one whose record is
     gone becomes a create at the same rkey (put semantics: create or replace); one whose mood
     is no longer live is dropped;
   - a delete whose rkey is gone has landed.

Deletes are aimed and verified (``RepairWriter.before_send``). Right before each batch that
holds deletes is sent, the repo is listed again and then, as the last read before the send, the
moods those records concern are re-read from Mongo: the mood each record carries the id of
(whichever user it belongs to now) and every mood of the user whose pointer names the rkey. A
delete is sent only if these fresh facts still make the record an orphan, a duplicate or a
nuked mood's record; otherwise the record is **kept** (``Execution.kept``: action, rkey, why),
e.g. a record that is a live mood's chosen record now, an "orphan" whose mood was created and
synced during the repair, or the record of a mood un-nuked meanwhile. A record already gone is
not deleted again (``skipped``).

Every delete batch is journaled (``deletion_journal.DeletionJournal``: the intent, with each
target's rkey, mood id and why = orphan / duplicate / nuked, before the send; the result after).
Without a journal the deletes are not sent at all: they fail with "no deletion journal
configured" (the rest of the plan is carried out).

Only ``computer.aesthetic.mood`` records of the session's own repo are ever written or
deleted; the executor refuses a plan for another DID or with a write outside the collection.

Privacy: results carry action names, mood ids, rkeys, counts and the PDS's reasons, never
mood text (the write values never appear in a repr).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.client import LoginFailed, PdsError
from moods_pipeline.model import UserAccount
from moods_pipeline.storage.journal import DELETED, FAILED, RECORDS, DeletionJournal, DeletionTarget
from moods_pipeline.sync.audit import UserAudit, audit_user, read_records, unreadable_reason
from moods_pipeline.sync.mood_record import Invalid, build_record
from moods_pipeline.sync.planner import free_rkeys
from moods_pipeline.sync.reconcile import check_nuke_policy, reconcile
from moods_pipeline.sync.repair_plan import (
    ACTIONS,
    CREATE_OP,
    DELETE_OP,
    UPDATE_OP,
    CreateRecord,
    DeleteDuplicate,
    DeleteNuked,
    DeleteOrphan,
    RepairPlan,
    UnsetPointer,
    WritePointer,
    plan_repair,
)
from moods_pipeline.sync.writer import BatchRunner, WriteOptions

log = logging.getLogger(__name__)

NO_ACCOUNT = "no PDS account (users.atproto lacks did or password)"
REPAIR_READ = "list"  # every listRecords page until an empty one
NO_JOURNAL = "no deletion journal configured"
JOURNAL_REASON = "repair"
# The journal's `why` of each delete action.
DELETE_WHY = {DeleteOrphan.action: "orphan", DeleteDuplicate.action: "duplicate", DeleteNuked.action: "nuked"}


@dataclass(frozen=True)
class Write:
    """One applyWrites operation of a repair, with the plan action it carries out."""

    action: str
    mood_id: str | None
    rkey: str
    op: str
    value: dict | None = field(default=None, repr=False)

    def to_op(self) -> dict:
        write = {"$type": self.op, "collection": MOOD_COLLECTION, "rkey": self.rkey}
        if self.op != DELETE_OP:
            write["value"] = self.value
        return write


def writes_of(plan: RepairPlan) -> list[Write]:
    """The plan's PDS writes, checked: only the mood collection, one write per rkey."""
    writes = []
    for action in plan.actions:
        op = action.write()
        if op is None:
            continue
        if op["collection"] != MOOD_COLLECTION:
            raise ValueError(f"repair refuses a write outside {MOOD_COLLECTION}: {op['collection']}")
        writes.append(Write(action.action, action.mood_id, op["rkey"], op["$type"], op.get("value")))
    rkeys = [w.rkey for w in writes]
    if len(rkeys) != len(set(rkeys)):
        raise ValueError("repair plan writes one rkey twice")
    return writes


@dataclass
class Execution:
    """What carrying out one plan did."""

    applied: Counter = field(default_factory=Counter)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (action, rkey or mood id, reason)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # dropped on re-plan: (action, target, why)
    kept: list[tuple[str, str, str]] = field(default_factory=list)  # deletes refused by the re-check: (action, rkey, why)
    batches: int = 0
    error: str | None = None  # the user as a whole (login)


@dataclass
class _SentDeletes:
    """A delete batch journaled as sent whose result is not written yet (its send failed)."""

    entry_id: str
    rkeys: list[str]
    error: str


def _carrying(records: Iterable, mood_id: str) -> list[str]:
    return sorted(r.rkey for r in records if r.mood_ref == mood_id)


def recheck_delete(write: Write, sub: str, records: dict, user_moods: dict, by_id: dict) -> str | None:
    """Why the delete ``write`` must not be sent after all, or None to send it.

    ``records``: the repo as listed right now (rkey -> PdsRecord; the target is in it);
    ``user_moods``: the user's moods as read right now (id -> Mood); ``by_id``: the moods the
    target's record and the action name, read by id whatever user they belong to now.
    """
    record = records[write.rkey]
    ref = record.mood_ref
    # Whatever the action: the chosen record of a live mood (its pointer names this rkey and
    # the record carries its id) is never deleted.
    pointed = user_moods.get(ref) if ref else None
    if pointed is not None and pointed.live and pointed.rkey == write.rkey:
        return f"it is live mood {ref}'s record now: the mood's pointer names it and it carries the mood's id"
    if write.action == DeleteOrphan.action:
        owner = by_id.get(ref) if ref else None
        if owner is not None and owner.user == sub:
            if owner.live:
                return f"it carries the id of live mood {ref} of this user (a mood created or synced since the plan)"
            return f"it carries the id of nuked mood {ref} of this user: that mood's record, not an orphan"
        return None
    mood_id = write.mood_id
    if ref != mood_id:
        return f"it no longer carries mood {mood_id}'s id (the record changed since the plan)"
    mood = by_id.get(mood_id)
    if mood is None:
        return f"mood {mood_id} is no longer in Mongo"
    if mood.user != sub:
        return f"mood {mood_id} no longer belongs to this user"
    if write.action == DeleteNuked.action:
        if mood.live:
            return f"mood {mood_id} is live again"
        return None
    # A duplicate: delete it only if another record of the mood stays its chosen record.
    own = _carrying(records.values(), mood_id)
    chosen = mood.rkey if mood.rkey in own else own[0]
    if chosen == write.rkey:
        how = "its pointer names it" if mood.rkey == write.rkey else "no other record carrying its id comes first"
        return f"it is mood {mood_id}'s chosen record now ({how})"
    return None


class RepairWriter(BatchRunner[Write]):
    """Runs a repair's writes; the Mongo follow-up of each batch comes right after it, and each
    batch holding deletes is re-checked and journaled right before it is sent."""

    def __init__(self, session, store, pds, user: UserAccount, writes: list[Write], unsets: Iterable[str],
                 execution: Execution, options: WriteOptions, journal: DeletionJournal | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 on_batch: Callable[[int, int], None] | None = None) -> None:
        super().__init__(session, options, on_batch=on_batch, sleep=sleep)
        self.store = store
        self.pds = pds
        self.user = user
        self.execution = execution
        self.journal = journal
        self._done: set[str] = set()  # rkeys (as planned) settled: landed, found landed, kept or gone
        # nuked moods: the rkeys still to delete before their pointer is unset
        self._nuked_left: dict[str, set[str]] = {}
        for write in writes:
            if write.action == DeleteNuked.action:
                self._nuked_left.setdefault(write.mood_id, set()).add(write.rkey)
        self._to_unset = set(unsets)
        self._origin: dict[str, str] = {}  # current rkey -> planned rkey (re-keyed creates)
        self._sent: _SentDeletes | None = None

    # -- hooks ---------------------------------------------------------------------------------
    def op(self, item: Write) -> dict:
        return item.to_op()

    def settled(self, item: Write) -> bool:
        return self._planned_rkey(item) in self._done

    def _planned_rkey(self, item: Write) -> str:
        return self._origin.get(item.rkey, item.rkey)

    def fail(self, item: Write, reason: str) -> None:
        target = item.rkey if item.op != CREATE_OP else f"{item.mood_id}@{item.rkey}"
        self.execution.failed.append((item.action, target, reason))
        if item.op == CREATE_OP:
            self.execution.failed.append((WritePointer.action, item.mood_id, "its record was not created"))
        if item.action == DeleteNuked.action and item.mood_id in self._to_unset:
            self._to_unset.discard(item.mood_id)
            self.execution.failed.append((UnsetPointer.action, item.mood_id, "a record of the nuked mood remains"))

    def record_differs(self, item: Write, reason: str) -> None:
        # The write landed, but the PDS reports another CID than the record sent: it fails, and a
        # create's pointer is not written (the next audit shows what the PDS holds).
        self._done.add(self._planned_rkey(item))
        target = item.rkey if item.op != CREATE_OP else f"{item.mood_id}@{item.rkey}"
        self.execution.failed.append((item.action, target, reason))
        if item.op == CREATE_OP:
            self.execution.failed.append((WritePointer.action, item.mood_id, "its record differs from the one sent"))

    def before_send(self, batch: list[Write]) -> list[Write]:
        """Re-check every delete of the batch against a fresh listing and, last, fresh moods;
        drop the deletes the fresh facts no longer justify (kept) or whose record is gone;
        journal the intent of the deletes that go."""
        deletes = [w for w in batch if w.op == DELETE_OP]
        if not deletes:
            return batch
        if self.journal is None:  # execute_plan never gets here without one; never delete unjournaled
            for write in deletes:
                self._done.add(self._planned_rkey(write))
                self.fail(write, NO_JOURNAL)
            return [w for w in batch if w.op != DELETE_OP]
        records = {r.rkey: r for r in read_records(self.pds, self.user.did, REPAIR_READ)}
        present = [w for w in deletes if w.rkey in records]
        ids = {w.mood_id for w in present if w.mood_id} | {records[w.rkey].mood_ref for w in present}
        # The moods last: nothing is read between these two reads and the send.
        user_moods = {m.id: m for m in self.store.moods_of(self.user.sub)}
        by_id = self.store.moods_by_id(sorted(i for i in ids if i))
        dropped: set[int] = set()
        for write in deletes:
            if write.rkey not in records:
                dropped.add(id(write))
                self._gone(write)
                continue
            why = recheck_delete(write, self.user.sub, records, user_moods, by_id)
            if why is not None:
                dropped.add(id(write))
                self._keep(write, why)
        send = [w for w in batch if id(w) not in dropped]
        going = [w for w in send if w.op == DELETE_OP]
        if going:
            targets = [
                DeletionTarget(w.rkey, DELETE_WHY[w.action], w.mood_id if w.action != DeleteOrphan.action else None)
                for w in going
            ]
            entry_id = self.journal.intent(kind=RECORDS, did=self.user.did, sub=self.user.sub,
                                           handle=self.user.handle, reason=JOURNAL_REASON, targets=targets)
            self._sent = _SentDeletes(entry_id, [w.rkey for w in going], "")
        return send

    def after_send(self, batch: list[Write], error: BaseException | None) -> None:
        if self._sent is None:
            return
        if error is None:
            self.journal.result(self._sent.entry_id, DELETED, deleted=self._sent.rkeys)
            self._sent = None
        else:
            # The batch may have landed all the same: the re-read before the retry tells
            # (replan_after_failure), or finish() records it as failed.
            self._sent.error = f"{type(error).__name__}: {error}"

    def finish(self) -> None:
        """Write the result of a journaled delete batch whose outcome nobody saw."""
        if self._sent is not None:
            self.journal.result(self._sent.entry_id, FAILED,
                                error=f"{self._sent.error} (not re-read afterwards: the next audit tells what is left)")
            self._sent = None

    def _keep(self, write: Write, why: str) -> None:
        self._done.add(self._planned_rkey(write))
        self.execution.kept.append((write.action, write.rkey, why))
        log.warning("repair of %s keeps rkey %s (%s): %s", self.user.label, write.rkey, write.action, why)
        if write.action == DeleteNuked.action and write.mood_id in self._to_unset:
            self._to_unset.discard(write.mood_id)
            self.execution.skipped.append((UnsetPointer.action, write.mood_id, "a record of the mood was kept"))

    def _gone(self, write: Write) -> None:
        self._done.add(self._planned_rkey(write))
        self.execution.skipped.append((write.action, write.rkey, "the record is already gone"))
        if write.action == DeleteNuked.action:
            self._nuked_left.get(write.mood_id, set()).discard(write.rkey)
            self._unset_ready()

    def landed(self, batch: list[Write]) -> None:
        self._settle(batch, [(w.mood_id, w.rkey) for w in batch if w.op == CREATE_OP])

    def _settle(self, writes: list[Write], pointers: list[tuple[str, str]]) -> None:
        for write in writes:
            self._done.add(self._planned_rkey(write))
            self.execution.applied[write.action] += 1
            if write.action == DeleteNuked.action:
                self._nuked_left.get(write.mood_id, set()).discard(self._planned_rkey(write))
        if pointers:
            self.execution.applied[WritePointer.action] += self.store.write_pointers(pointers)
        self._unset_ready()

    def _unset_ready(self) -> None:
        ready = sorted(m for m in self._to_unset if not self._nuked_left.get(m))
        if ready:
            self._to_unset.difference_update(ready)
            unset_nuked_pointers(self.store, ready, self.execution)

    def replan_after_failure(self, batch: list[Write]) -> list[Write]:
        """Re-read the repo and the moods: drop what landed (settling it), adjust the rest."""
        batch = [w for w in batch if not self.settled(w)]  # kept or gone before the send
        existing = {r.rkey: r for r in read_records(self.pds, self.user.did, REPAIR_READ)}
        if self._sent is not None:
            gone = [rkey for rkey in self._sent.rkeys if rkey not in existing]
            if len(gone) == len(self._sent.rkeys):
                self.journal.result(self._sent.entry_id, DELETED, deleted=gone)
            else:
                self.journal.result(self._sent.entry_id, FAILED, error=self._sent.error, deleted=gone)
            self._sent = None
        moods = {m.id: m for m in self.store.moods_of(self.user.sub)}
        carrying: dict[str, list[str]] = {}
        for record in existing.values():
            if record.mood_ref:
                carrying.setdefault(record.mood_ref, []).append(record.rkey)
        landed: list[Write] = []
        pointers: list[tuple[str, str]] = []
        remaining: list[Write] = []
        for write in batch:
            if write.op == DELETE_OP:
                if write.rkey not in existing:
                    landed.append(write)
                else:
                    remaining.append(write)
                continue
            mood = moods.get(write.mood_id) if write.mood_id else None
            built = build_record(mood) if mood is not None and mood.live else None
            if write.op == CREATE_OP and write.mood_id in carrying:
                rkeys = sorted(carrying[write.mood_id])
                landed.append(write)
                pointers.append((write.mood_id, write.rkey if write.rkey in rkeys else rkeys[0]))
                continue
            record = existing.get(write.rkey)
            if write.op == UPDATE_OP and record is not None and record.value == write.value:
                landed.append(write)
                continue
            if built is None or isinstance(built, Invalid):
                self._done.add(self._planned_rkey(write))
                self.execution.skipped.append(
                    (write.action, write.rkey, "the mood is no longer live and valid in Mongo")
                )
                continue
            if write.op == UPDATE_OP and record is None:
                # put semantics: the record went away since the plan; create it where it was
                write = replace(write, op=CREATE_OP)
            remaining.append(write)
        if landed:
            log.info("%d writes of the failed batch were already on the PDS", len(landed))
            self._settle(landed, pointers)
        taken = set(existing)
        collisions = {w.mood_id: w.rkey for w in remaining if w.op == CREATE_OP and w.rkey in taken}
        if collisions:
            moved = free_rkeys(collisions, taken | {w.rkey for w in remaining})
            rekeyed = []
            for write in remaining:
                if write.op == CREATE_OP and write.mood_id in moved and moved[write.mood_id] != write.rkey:
                    self._origin[moved[write.mood_id]] = self._planned_rkey(write)
                    write = replace(write, rkey=moved[write.mood_id])
                rekeyed.append(write)
            remaining = rekeyed
        return remaining


def unset_nuked_pointers(store, mood_ids: list[str], execution: Execution) -> None:
    """Unset the pointers of these nuked moods, re-read first: a mood live again keeps its
    pointer (skipped with the reason)."""
    fresh = store.moods_by_id(list(mood_ids))
    still = sorted(m for m in mood_ids if m in fresh and fresh[m].deleted)
    for mood_id in mood_ids:
        if mood_id not in still:
            why = "the mood is live again" if mood_id in fresh else "the mood is no longer in Mongo"
            execution.skipped.append((UnsetPointer.action, mood_id, why))
    if still:
        store.unset_pointers(still)
        execution.applied[UnsetPointer.action] += len(still)


def execute_plan(
    user: UserAccount,
    plan: RepairPlan,
    store,
    pds,
    *,
    session=None,
    options: WriteOptions = WriteOptions(),
    sleep: Callable[[float], None] = time.sleep,
    on_batch: Callable[[int, int], None] | None = None,
    journal: DeletionJournal | None = None,
) -> Execution:
    """Carry out ``plan`` for ``user`` (see the module docstring). Never raises for a PDS or
    login failure (they land in ``failed`` / ``error``). Without ``journal`` the plan's deletes
    fail with NO_JOURNAL and are never sent."""
    if plan.did != user.did or not user.did:
        raise ValueError(f"plan for {plan.did} cannot be applied to {user.did}")
    execution = Execution()
    writes = writes_of(plan)
    created = {(a.mood_id, a.rkey) for a in plan.actions if isinstance(a, CreateRecord)}
    unsets = list(plan.pointer_unsets())
    if journal is None:
        refused = [w for w in writes if w.op == DELETE_OP]
        writes = [w for w in writes if w.op != DELETE_OP]
        for write in refused:
            execution.failed.append((write.action, write.rkey, NO_JOURNAL))
        blocked = {w.mood_id for w in refused if w.action == DeleteNuked.action}
        for mood_id in unsets:
            if mood_id in blocked:
                execution.failed.append((UnsetPointer.action, mood_id, "a record of the nuked mood remains"))
        unsets = [m for m in unsets if m not in blocked]
    # 1. Mongo only, no login: pointers to records that exist already, and the pointers of
    #    nuked moods that have no record left to delete
    direct = [(m, r) for m, r in plan.pointer_updates() if (m, r) not in created]
    if direct:
        execution.applied[WritePointer.action] += store.write_pointers(direct)
    with_deletes = {w.mood_id for w in writes if w.action == DeleteNuked.action}
    unset_now = [m for m in unsets if m not in with_deletes]
    if unset_now:
        unset_nuked_pointers(store, unset_now, execution)
    unsets = [m for m in unsets if m in with_deletes]
    if not writes:
        return execution
    # 2. the PDS writes, logged in as the user's own DID
    if session is None:
        try:
            session = pds.login(user.did, user.password, expected_did=user.did)
        except LoginFailed as exc:
            execution.error = f"login failed: {exc}"
        except PdsError as exc:
            execution.error = f"login not possible: {exc}"
        if execution.error:
            for write in writes:
                execution.failed.append((write.action, write.rkey, execution.error))
            for mood_id, _ in sorted(created):
                execution.failed.append((WritePointer.action, mood_id, execution.error))
            for mood_id in unsets:
                execution.failed.append((UnsetPointer.action, mood_id, execution.error))
            return execution
    if session.did != user.did:
        raise ValueError(f"session for {session.did} cannot repair {user.did}")
    writer = RepairWriter(session, store, pds, user, writes, unsets, execution, options, journal=journal,
                          sleep=sleep, on_batch=on_batch)
    try:
        writer.run(writes)
    finally:
        writer.finish()
        execution.batches = writer.batches
    return execution


# ---------------------------------------------------------------------------------------------
# One user, many users


@dataclass
class RepairOutcome:
    """One user's repair: the plan, what was applied, what failed, what is left."""

    sub: str
    did: str | None
    handle: str | None
    dry_run: bool = True
    planned: dict[str, int] = field(default_factory=lambda: {a: 0 for a in ACTIONS})
    applied: dict[str, int] = field(default_factory=lambda: {a: 0 for a in ACTIONS})
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    kept: list[tuple[str, str, str]] = field(default_factory=list)  # deletes the re-check refused: (action, rkey, why)
    plan_rows: list[tuple[str, str | None, str | None]] = field(default_factory=list)  # (action, mood_id, rkey)
    problems_before: int = 0
    remaining: dict[str, int] | None = None  # problem rows left by status (fresh audit after apply)
    error: str | None = None  # the user as a whole: unreadable repo, login
    unreadable: str | None = None
    no_account: bool = False
    batches: int = 0
    seconds: float = 0.0
    audit_after: UserAudit | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"@{self.handle}" if self.handle else (self.did or self.sub)

    @property
    def remaining_problems(self) -> int:
        return sum(self.remaining.values()) if self.remaining else 0

    @property
    def planned_total(self) -> int:
        return sum(self.planned.values())

    @property
    def ok(self) -> bool:
        """Nothing left: no failure, and (after apply) no problem left; (dry run) nothing planned."""
        if self.no_account:
            return True
        if self.error or self.failed:
            return False
        return self.planned_total == 0 if self.dry_run else self.remaining_problems == 0

    def summary(self) -> dict:
        return {
            "sub": self.sub,
            "did": self.did,
            "handle": self.handle,
            "dry_run": self.dry_run,
            "planned": dict(self.planned),
            "applied": dict(self.applied),
            "failed": [list(f) for f in self.failed],
            "skipped": [list(s) for s in self.skipped],
            "kept": [list(k) for k in self.kept],
            "plan": [list(p) for p in self.plan_rows],
            "problems_before": self.problems_before,
            "remaining": self.remaining,
            "error": self.error,
            "unreadable": self.unreadable,
            "no_account": self.no_account,
            "batches": self.batches,
            "seconds": round(self.seconds, 4),
        }


def repair_user(
    user: UserAccount,
    store,
    pds,
    *,
    apply: bool = False,
    nuke_policy: str = "keep",
    when_tolerance_ms: int = 1000,
    delete_orphans: bool = False,
    rewrite_legacy: bool = False,
    options: WriteOptions = WriteOptions(),
    sleep: Callable[[float], None] = time.sleep,
    journal: DeletionJournal | None = None,
) -> RepairOutcome:
    """Fresh read, plan, and with ``apply`` execute and audit again. Never raises for the
    user's own trouble. ``journal`` records every delete; without one no delete is sent."""
    started = time.monotonic()
    outcome = RepairOutcome(sub=user.sub, did=user.did, handle=user.handle, dry_run=not apply)
    try:
        if getattr(user, "problem", None) and user.password:
            # Credentials that must not be used: a DID several users claim, a malformed or
            # non-string one. Nothing is read or written for this user, and it fails. (Without
            # a password there are no credentials: a user without account, as before.)
            outcome.error = f"credentials refused: {user.problem}"
            return outcome
        if not user.has_account:
            outcome.no_account = True
            return outcome
        moods = store.moods_of(user.sub)
        try:
            records = read_records(pds, user.did, REPAIR_READ)
        except PdsError as exc:
            outcome.unreadable = outcome.error = unreadable_reason(exc)
            return outcome
        frame = reconcile(user, moods, records, nuke_policy=nuke_policy, when_tolerance_ms=when_tolerance_ms,
                          rewrite_legacy=rewrite_legacy)
        outcome.problems_before = int(frame["problem"].sum()) if len(frame) else 0
        plan = plan_repair(user, moods, records, frame, nuke_policy=nuke_policy, delete_orphans=delete_orphans,
                           rewrite_legacy=rewrite_legacy, when_tolerance_ms=when_tolerance_ms)
        outcome.planned = plan.counts()
        outcome.plan_rows = [(a.action, a.mood_id, a.rkey) for a in plan.actions]
        if not apply:
            return outcome
        if not plan.is_empty:
            execution = execute_plan(user, plan, store, pds, options=options, sleep=sleep, journal=journal)
            outcome.applied = {a: int(execution.applied.get(a, 0)) for a in ACTIONS}
            outcome.failed = execution.failed
            outcome.skipped = execution.skipped
            outcome.kept = execution.kept
            outcome.batches = execution.batches
            outcome.error = execution.error
        after = audit_user(user, store, pds, nuke_policy=nuke_policy, when_tolerance_ms=when_tolerance_ms,
                           rewrite_legacy=rewrite_legacy, read=REPAIR_READ)
        outcome.audit_after = after
        if after.unreadable:
            outcome.unreadable = outcome.error = outcome.error or after.unreadable
        else:
            outcome.remaining = after.problem_counts()
        return outcome
    except Exception as exc:  # a Mongo outage or a bug: this user fails, the others go on
        log.exception("repair of %s failed", outcome.label)
        outcome.error = f"{type(exc).__name__}: {exc}"
        return outcome
    finally:
        outcome.seconds = time.monotonic() - started


def repair_users(
    users: Iterable[UserAccount],
    store,
    pds,
    *,
    apply: bool = False,
    nuke_policy: str = "keep",
    when_tolerance_ms: int = 1000,
    delete_orphans: bool = False,
    rewrite_legacy: bool = False,
    concurrency: int = 8,
    options: WriteOptions = WriteOptions(),
    on_user_done: Callable[[RepairOutcome], None] | None = None,
    journal: DeletionJournal | None = None,
) -> list[RepairOutcome]:
    """Repair users concurrently; outcomes in the order the users were given. One user's
    trouble (its repair, or ``on_user_done`` for it) fails that user alone."""
    check_nuke_policy(nuke_policy)
    users = list(users)

    def run(user: UserAccount) -> RepairOutcome:
        outcome = repair_user(user, store, pds, apply=apply, nuke_policy=nuke_policy,
                              when_tolerance_ms=when_tolerance_ms, delete_orphans=delete_orphans,
                              rewrite_legacy=rewrite_legacy, options=options, journal=journal)
        if on_user_done:
            try:
                on_user_done(outcome)
            except Exception as exc:  # noqa: BLE001 - reporting one user must not stop the others
                log.exception("reporting the repair of %s failed", outcome.label)
                outcome.error = outcome.error or f"reporting its repair failed: {type(exc).__name__}: {exc}"
        return outcome

    if concurrency <= 1 or len(users) <= 1:
        return [run(u) for u in users]
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="repair") as pool:
        return list(pool.map(run, users))


def totals(summaries: Iterable[dict], dry_run: bool) -> dict:
    """docs/interface.md's repair JSON object (``planned``, ``applied``, ``dry_run``) from per-user
    summaries (``RepairOutcome.summary()``), plus: ``users``, ``users_failed`` (a user-wide
    error: unreadable repo, login, refused credentials), ``users_unreadable``,
    ``users_no_account``, ``failed`` (actions that failed), ``skipped``, ``kept`` (deletes the
    re-check before sending refused), ``remaining_problems`` and ``remaining`` (problem rows
    left by status, after ``--apply``)."""
    summaries = list(summaries)
    accounts = [s for s in summaries if not s.get("no_account")]
    planned = {a: 0 for a in ACTIONS}
    applied = {a: 0 for a in ACTIONS}
    remaining: dict[str, int] = {}
    for s in accounts:
        for a, n in (s.get("planned") or {}).items():
            planned[a] = planned.get(a, 0) + int(n)
        for a, n in (s.get("applied") or {}).items():
            applied[a] = applied.get(a, 0) + int(n)
        for status, n in (s.get("remaining") or {}).items():
            remaining[status] = remaining.get(status, 0) + int(n)
    return {
        "planned": planned,
        "applied": applied,
        "dry_run": dry_run,
        "users": len(accounts),
        "users_failed": sum(1 for s in accounts if s.get("error")),
        "users_unreadable": sum(1 for s in accounts if s.get("unreadable")),
        "users_no_account": len(summaries) - len(accounts),
        "failed": sum(len(s.get("failed") or []) for s in accounts),
        "skipped": sum(len(s.get("skipped") or []) for s in accounts),
        "kept": sum(len(s.get("kept") or []) for s in accounts),
        "remaining_problems": sum(remaining.values()),
        "remaining": remaining,
    }


def something_left(total: dict) -> bool:
    """Exit 1: a dry run with a non-empty plan, or anything left after --apply (failures,
    problems left, users that could not be read or logged into)."""
    if total["users_failed"] or total["users_unreadable"] or total["failed"]:
        return True
    if total["dry_run"]:
        return sum(total["planned"].values()) > 0
    return total["remaining_problems"] > 0
