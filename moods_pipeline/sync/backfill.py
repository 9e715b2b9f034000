"""The backfill engine: every valid live mood of the given users into its author's repo.

Used by the Dagster asset, the CLI (through the asset) and the benchmark. Users run
concurrently in a thread pool: a login takes at least 350 ms of mostly waiting (the PDS pads
every password login to 350 ms against timing attacks), and writes to different repos overlap on
the PDS. Fewer users write at once than are in flight (``write_concurrency``): the platform's PDS
answered 500s at 50 concurrent creates while 10 worked, so while at most that many users write,
the others read their repos and log in. One user's trouble never stops another's work.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, ContextManager, Iterable

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.client import LoginFailed, PdsClient, PdsError
from moods_pipeline.model import Mood, PdsRecord, UserAccount, UserOutcome
from moods_pipeline.sync.mood_record import Invalid, build_record
from moods_pipeline.sync.planner import plan_user
from moods_pipeline.sync.reconcile import CONTENT_MISMATCH, DUPLICATE, analyze, content_problems
from moods_pipeline.sync.writer import BatchWriter, WriteOptions

log = logging.getLogger(__name__)

NO_ACCOUNT = "no PDS account (users.atproto lacks did or password)"




def repair_needs(moods: list[Mood], records: list[PdsRecord], when_tolerance_ms: int = 1000) -> list[tuple[str, str]]:
    """What of these moods and records a backfill leaves for the repair: (mood id, reason) for
    each mood whose chosen record differs from it (the audit's ``content_mismatch``, also when
    its pointer is stale or missing) and for each further record carrying a mood's id
    (``duplicate``). Pure: the moods and records the backfill has read already, no request."""
    by_rkey = {r.rkey: r for r in records}
    by_id = {m.id: m for m in moods}
    found: list[tuple[str, str]] = []
    for row in analyze(moods, records, when_tolerance_ms=when_tolerance_ms):
        if row.kind == "record" and row.status == DUPLICATE:
            found.append((row.mood_id, f"duplicate: record rkey {row.rkey} also carries this mood's id"))
        elif row.kind == "mood" and CONTENT_MISMATCH in row.issues:
            built = build_record(by_id[row.mood_id])
            why = content_problems(by_rkey[row.rkey].value, built, when_tolerance_ms) if not isinstance(
                built, Invalid) else []
            found.append((row.mood_id, f"content_mismatch: record rkey {row.rkey}: " + "; ".join(why)))
    return found


def sync_user(
    user: UserAccount,
    store,
    pds: PdsClient,
    *,
    dry_run: bool = False,
    options: WriteOptions = WriteOptions(),
    on_batch: Callable[[UserOutcome, int, int], None] | None = None,
    when_tolerance_ms: int = 1000,
    write_slot: Callable[[], ContextManager] = contextlib.nullcontext,
) -> UserOutcome:
    """Plan and write one user's moods. Never raises for the user's own trouble.

    ``when_tolerance_ms``: how far a record's `when` may drift before the mood counts in
    ``needs_repair``. ``write_slot``: held while the user's records are written (after the login),
    to bound how many users write at once."""
    started = time.monotonic()
    outcome = UserOutcome(sub=user.sub, did=user.did, handle=user.handle, dry_run=dry_run)
    try:
        if not user.has_account:
            outcome.no_account = True
            outcome.error = user.problem or NO_ACCOUNT
            return outcome
        if user.problem:
            outcome.error = user.problem
            return outcome
        moods = store.moods_of(user.sub)
        try:
            records = pds.list_records(user.did, MOOD_COLLECTION)
        except PdsError as exc:
            outcome.error = f"repo unreadable: {exc}"
            return outcome
        plan = plan_user(moods, records)
        outcome.live = plan.live
        outcome.already_synced = plan.already_synced
        outcome.skipped_invalid = plan.invalid
        outcome.duplicates = len(plan.duplicates)
        outcome.orphans = len(plan.orphans)
        outcome.would_create = len(plan.creates)
        outcome.would_write_pointers = len(plan.pointer_writes) + len(plan.creates)
        outcome.needs_repair_reasons = repair_needs(moods, records, when_tolerance_ms)
        outcome.needs_repair = len(outcome.needs_repair_reasons)
        if dry_run:
            return outcome

        # Pointers to records that already exist need no login.
        outcome.pointers_written += store.write_pointers(plan.pointer_writes)
        outcome.already_synced += len(plan.pointer_writes)
        if not plan.creates:
            return outcome
        try:
            session = pds.login(user.did, user.password, expected_did=user.did)
        except LoginFailed as exc:
            outcome.error = f"login failed: {exc}"
            outcome.failed = [(c.mood_id, outcome.error) for c in plan.creates]
            return outcome

        def progress(done: int, total: int) -> None:
            outcome.seconds = time.monotonic() - started
            if on_batch:
                on_batch(outcome, done, total)

        writer = BatchWriter(session, store, pds, options, on_batch=progress)
        with write_slot():
            written = writer.write_all(plan.creates)
        outcome.created = written.created
        outcome.already_synced += written.recovered
        outcome.pointers_written += written.pointers_written
        outcome.batches = written.batches
        outcome.failed = written.failed
        return outcome
    except Exception as exc:  # a Mongo outage or a bug: this user fails, the others go on
        log.exception("user %s failed", outcome.label)
        outcome.error = f"{type(exc).__name__}: {exc}"
        return outcome
    finally:
        outcome.seconds = time.monotonic() - started


def backfill_users(
    users: Iterable[UserAccount],
    store,
    pds: PdsClient,
    *,
    dry_run: bool = False,
    concurrency: int = 16,
    write_concurrency: int = 8,
    options: WriteOptions = WriteOptions(),
    on_batch: Callable[[UserOutcome, int, int], None] | None = None,
    on_user_done: Callable[[UserOutcome], None] | None = None,
    when_tolerance_ms: int = 1000,
) -> list[UserOutcome]:
    """Backfill users concurrently; outcomes in the order the users were given.

    ``concurrency`` users are in flight at once; of those, at most ``write_concurrency`` write."""
    users = list(users)
    writers = threading.BoundedSemaphore(max(1, min(write_concurrency, concurrency)))

    def run(user: UserAccount) -> UserOutcome:
        outcome = sync_user(user, store, pds, dry_run=dry_run, options=options, on_batch=on_batch,
                            when_tolerance_ms=when_tolerance_ms, write_slot=lambda: writers)
        if on_user_done:
            on_user_done(outcome)
        return outcome

    if concurrency <= 1 or len(users) <= 1:
        return [run(u) for u in users]
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="backfill") as pool:
        return list(pool.map(run, users))


def summarize(outcomes: Iterable[UserOutcome], seconds: float | None = None, dry_run: bool = False) -> dict:
    """The backfill JSON object of docs/interface.md (plus a few extra keys)."""
    outcomes = list(outcomes)
    accounts = [o for o in outcomes if not o.no_account]
    summary = {
        "users": len(accounts),
        "users_failed": sum(1 for o in accounts if o.error),
        "moods_live": sum(o.live for o in accounts),
        "created": sum(o.created for o in accounts),
        "already_synced": sum(o.already_synced for o in accounts),
        "pointers_written": sum(o.pointers_written for o in accounts),
        "skipped_invalid": sum(len(o.skipped_invalid) for o in accounts),
        "skipped_no_account": sum(1 for o in outcomes if o.no_account),
        "failed": sum(len(o.failed) for o in accounts),
        "needs_repair": sum(o.needs_repair for o in accounts),
        "seconds": round(seconds if seconds is not None else sum(o.seconds for o in outcomes), 3),
        "dry_run": dry_run,
        "duplicates": sum(o.duplicates for o in accounts),
        "orphans": sum(o.orphans for o in accounts),
    }
    if dry_run:  # planning counts: meaningless beside a run that wrote
        summary["would_create"] = sum(o.would_create for o in accounts)
        summary["would_write_pointers"] = sum(o.would_write_pointers for o in accounts)
    return summary
