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
from moods_pipeline.mood_record import Invalid, build_record
from moods_pipeline.pds.xrpc import LoginFailed, PdsError
from moods_pipeline.sync.audit import UserAudit, audit_user, read_records, unreadable_reason
from moods_pipeline.sync.model import UserAccount
from moods_pipeline.sync.planner import free_rkeys
from moods_pipeline.sync.reconcile import check_nuke_policy, reconcile
from moods_pipeline.sync.repair_plan import (
    ACTIONS,
    CREATE_OP,
    DELETE_OP,
    UPDATE_OP,
    CreateRecord,
    DeleteNuked,
    RepairPlan,
    UnsetPointer,
    WritePointer,
    plan_repair,
)
from moods_pipeline.sync.writer import BatchRunner, WriteOptions

log = logging.getLogger(__name__)

NO_ACCOUNT = "no PDS account (users.atproto lacks did or password)"
REPAIR_READ = "list"  # every listRecords page until an empty one


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
    batches: int = 0
    error: str | None = None  # the user as a whole (login)


class RepairWriter(BatchRunner[Write]):
    """Runs a repair's writes; the Mongo follow-up of each batch comes right after it."""

    def __init__(self, session, store, pds, user: UserAccount, plan: RepairPlan, execution: Execution,
                 options: WriteOptions, sleep: Callable[[float], None] = time.sleep,
                 on_batch: Callable[[int, int], None] | None = None) -> None:
        super().__init__(session, options, on_batch=on_batch, sleep=sleep)
        self.store = store
        self.pds = pds
        self.user = user
        self.execution = execution
        self._done: set[str] = set()  # rkeys (as planned) settled: landed or found landed
        # nuked moods: the rkeys still to delete before their pointer is unset
        self._nuked_left: dict[str, set[str]] = {}
        for action in plan.actions:
            if isinstance(action, DeleteNuked):
                self._nuked_left.setdefault(action.mood_id, set()).add(action.rkey)
        self._to_unset = {a.mood_id for a in plan.actions if isinstance(a, UnsetPointer)}
        self._origin: dict[str, str] = {}  # current rkey -> planned rkey (re-keyed creates)

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
        ready = sorted(m for m in self._to_unset if not self._nuked_left.get(m))
        if ready:
            self.store.unset_pointers(ready)
            self.execution.applied[UnsetPointer.action] += len(ready)
            self._to_unset.difference_update(ready)

    def replan_after_failure(self, batch: list[Write]) -> list[Write]:
        """Re-read the repo and the moods: drop what landed (settling it), adjust the rest."""
        existing = {r.rkey: r for r in read_records(self.pds, self.user.did, REPAIR_READ)}
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
) -> Execution:
    """Carry out ``plan`` for ``user`` (see the module docstring). Never raises for a PDS or
    login failure (they land in ``failed`` / ``error``)."""
    if plan.did != user.did or not user.did:
        raise ValueError(f"plan for {plan.did} cannot be applied to {user.did}")
    execution = Execution()
    writes = writes_of(plan)
    created = {(a.mood_id, a.rkey) for a in plan.actions if isinstance(a, CreateRecord)}
    # 1. pointers to records that exist already: Mongo only, no login
    direct = [(m, r) for m, r in plan.pointer_updates() if (m, r) not in created]
    if direct:
        execution.applied[WritePointer.action] += store.write_pointers(direct)
    if not writes:
        unsets = plan.pointer_unsets()
        if unsets:  # cannot happen with plan_repair (an unset follows a delete), kept for safety
            store.unset_pointers(unsets)
            execution.applied[UnsetPointer.action] += len(unsets)
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
            for mood_id in plan.pointer_unsets():
                execution.failed.append((UnsetPointer.action, mood_id, execution.error))
            return execution
    if session.did != user.did:
        raise ValueError(f"session for {session.did} cannot repair {user.did}")
    writer = RepairWriter(session, store, pds, user, plan, execution, options, sleep=sleep, on_batch=on_batch)
    writer.run(writes)
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
) -> RepairOutcome:
    """Fresh read, plan, and with ``apply`` execute and audit again. Never raises for the
    user's own trouble."""
    started = time.monotonic()
    outcome = RepairOutcome(sub=user.sub, did=user.did, handle=user.handle, dry_run=not apply)
    try:
        if not user.has_account:
            outcome.no_account = True
            return outcome
        if getattr(user, "problem", None):
            # A DID several users claim (or a malformed one): nothing is read or written for it.
            outcome.error = f"credentials refused: {user.problem}"
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
            execution = execute_plan(user, plan, store, pds, options=options, sleep=sleep)
            outcome.applied = {a: int(execution.applied.get(a, 0)) for a in ACTIONS}
            outcome.failed = execution.failed
            outcome.skipped = execution.skipped
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
) -> list[RepairOutcome]:
    """Repair users concurrently; outcomes in the order the users were given."""
    check_nuke_policy(nuke_policy)
    users = list(users)

    def run(user: UserAccount) -> RepairOutcome:
        outcome = repair_user(user, store, pds, apply=apply, nuke_policy=nuke_policy,
                              when_tolerance_ms=when_tolerance_ms, delete_orphans=delete_orphans,
                              rewrite_legacy=rewrite_legacy, options=options)
        if on_user_done:
            on_user_done(outcome)
        return outcome

    if concurrency <= 1 or len(users) <= 1:
        return [run(u) for u in users]
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="repair") as pool:
        return list(pool.map(run, users))


def totals(summaries: Iterable[dict], dry_run: bool) -> dict:
    """CONTRACT.md's repair JSON object (``planned``, ``applied``, ``dry_run``) from per-user
    summaries (``RepairOutcome.summary()``), plus: ``users``, ``users_failed`` (a user-wide
    error: unreadable repo, login), ``users_unreadable``, ``users_no_account``, ``failed``
    (actions that failed), ``skipped``, ``remaining_problems`` and ``remaining`` (problem rows
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
