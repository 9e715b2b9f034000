"""Carries out one user's plan: applyWrites batches, each followed at once by its pointers.

A batch that fails may still have landed (a lost response, a concurrent run), so before any
retry the writer re-reads the repo and re-plans. Only a batch that fails again is split, to
isolate the record the PDS refuses; that record fails alone, with the PDS's reason.

``BatchRunner`` holds that loop for any kind of write (pacing, count- and size-bounded
batches, re-read before retry, split to isolate, stop when the PDS is gone); ``BatchWriter``
runs the backfill's (and live sync's) creates through it, ``sync.repair.RepairWriter`` a
repair's creates, updates and deletes.

Every create and update is checked against the CID the PDS reports for it in the applyWrites
results (``atproto.cid.record_cid`` of the value sent, matched to the result by rkey): a
different CID means the PDS stored another record than the one sent, and that write fails
("the PDS stored a different record: expected bafy..., got bafy..."), its pointer unwritten,
while the rest of its batch lands as usual. A result without a CID (a PDS that reports none)
leaves the write unchecked: counted (``cids_unchecked``) and logged, and the audit compares
the record later. Records found on the PDS after a failed batch are taken as landed without a
CID check: a re-read cannot tell our write from a concurrent writer's.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.cid import CidError, record_cid
from moods_pipeline.atproto.client import PdsError, PdsUnavailable, RateLimited, RequestTooLarge, written_cids
from moods_pipeline.sync.planner import Create, free_rkeys

log = logging.getLogger(__name__)

CREATE = "com.atproto.repo.applyWrites#create"


@dataclass(frozen=True)
class WriteOptions:
    max_batch_writes: int = 200  # the PDS's limit for one applyWrites
    max_batch_bytes: int = 100_000  # the PDS refuses bodies above about 150 kB
    min_batch_interval_s: float = 0.1  # the checklist's 100 ms delay between batches
    retry_delay_s: float = 1.0


@dataclass
class WriteResult:
    created: int = 0
    recovered: int = 0  # records found already there after a failed batch
    pointers_written: int = 0
    batches: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (mood_id, reason)
    cids_checked: int = 0  # writes whose reported CID equals the CID of the record sent
    cids_unchecked: int = 0  # writes the PDS reported no CID for


def differs_reason(expected: str, got: str, rkey: str) -> str:
    """A write's failure when the PDS stored another record than the one sent (no record text)."""
    return f"the PDS stored a different record: expected {expected}, got {got} (rkey {rkey})"


def op_for(create: Create) -> dict:
    return {"$type": CREATE, "collection": MOOD_COLLECTION, "rkey": create.rkey, "value": create.record}


def op_size(item: Any, op: Callable[[Any], dict] = op_for) -> int:
    """Bytes ``item``'s applyWrites operation adds to the request body (with some slack)."""
    return len(json.dumps(op(item), ensure_ascii=False).encode("utf-8", "surrogatepass")) + 16


def make_batches(items: list, options: WriteOptions, op: Callable[[Any], dict] = op_for) -> list[list]:
    """Split items into applyWrites batches bounded by count and by request size.

    ``op`` turns an item into its applyWrites operation (default: a backfill ``Create``)."""
    batches: list[list] = []
    current: list = []
    size = 0
    for item in items:
        this = op_size(item, op)
        if current and (len(current) >= options.max_batch_writes or size + this > options.max_batch_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(item)
        size += this
    if current:
        batches.append(current)
    return batches


T = TypeVar("T")


class BatchRunner(Generic[T]):
    """Runs one user's writes as applyWrites batches through a logged-in session.

    Subclasses say what an item's operation is (``op``), what follows a batch that landed
    (``landed``: Mongo pointers, counters), what a re-read of the repo makes of a failed batch
    (``replan_after_failure``: drop what landed, adjust the rest) and how an item fails
    (``fail``). The loop: pace, apply; on a PDS error re-read and re-plan, retry once, then
    split to isolate the write the PDS refuses; a 413 splits at once; an unreachable PDS fails
    every write not yet settled and stops.
    """

    def __init__(
        self,
        session,
        options: WriteOptions,
        on_batch: Callable[[int, int], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.session = session
        self.options = options
        self.on_batch = on_batch
        self.sleep = sleep
        self.batches = 0
        self.cids_checked = 0
        self.cids_unchecked = 0
        self._last_batch_at = 0.0

    # -- hooks -------------------------------------------------------------------------------
    def op(self, item: T) -> dict:
        raise NotImplementedError

    def landed(self, batch: list[T]) -> None:
        """The batch is on the PDS: record it (Mongo follow-up, counters)."""
        raise NotImplementedError

    def replan_after_failure(self, batch: list[T]) -> list[T]:
        """After a failed batch: what of it still needs writing (re-read the repo first)."""
        raise NotImplementedError

    def fail(self, item: T, reason: str) -> None:
        raise NotImplementedError

    def record_differs(self, item: T, reason: str) -> None:
        """The write landed, but the PDS reports another CID than the record sent: it fails
        with ``reason`` (and is not passed to ``landed``)."""
        self.fail(item, reason)

    def settled(self, item: T) -> bool:
        """Whether the item is done already (so an outage does not fail it)."""
        return False

    def before_send(self, batch: list[T]) -> list[T]:
        """Called right before each applyWrites, after pacing: what of ``batch`` to send now
        (the last chance to re-check a destructive write). An empty list sends nothing."""
        return batch

    def after_send(self, batch: list[T], error: BaseException | None) -> None:
        """Called right after each applyWrites of ``batch``, with its error or None, before
        ``landed`` (e.g. to record the outcome of what was sent)."""

    # -- the loop ----------------------------------------------------------------------------
    def run(self, items: list[T]) -> None:
        batches = make_batches(items, self.options, self.op)
        done = 0
        for index, batch in enumerate(batches):
            try:
                self._write(batch, retried=False)
            except (PdsUnavailable, RateLimited) as exc:
                # The PDS is gone, or refuses this account's writes until a reset further away
                # than the client will wait: failing the rest now beats hammering it write by write.
                reason = f"PDS unreachable: {exc}" if isinstance(exc, PdsUnavailable) else f"rate limited: {exc}"
                for rest in batches[index:]:
                    for item in rest:
                        if not self.settled(item):
                            self.fail(item, reason)
                break
            done += len(batch)
            if self.on_batch:
                self.on_batch(done, len(items))

    def _pace(self) -> None:
        wait = self.options.min_batch_interval_s - (time.monotonic() - self._last_batch_at)
        if wait > 0:
            self.sleep(wait)
        self._last_batch_at = time.monotonic()

    def _apply(self, batch: list[T]) -> None:
        self._pace()
        batch = self.before_send(batch)
        if not batch:
            return
        self.batches += 1
        started = time.monotonic()
        ops = [self.op(item) for item in batch]
        try:
            results = self.session.apply_writes(ops)
        except BaseException as exc:
            self.after_send(batch, exc)
            raise
        self.after_send(batch, None)
        differ = self._check_cids(batch, ops, results)
        if differ:
            for item, reason in differ:
                self.record_differs(item, reason)
            failed = {id(item) for item, _ in differ}
            batch = [item for item in batch if id(item) not in failed]
        if batch:
            self.landed(batch)
        log.debug(
            "batch of %d written (rkeys %s..%s) in %.0f ms",
            len(ops), ops[0]["rkey"], ops[-1]["rkey"], (time.monotonic() - started) * 1000,
        )

    def _check_cids(self, batch: list[T], ops: list[dict], results: Any) -> list[tuple[T, str]]:
        """The writes of a batch that landed whose reported CID differs from the record sent."""
        reported = written_cids(results if isinstance(results, list) else [])
        differ: list[tuple[T, str]] = []
        unchecked = 0
        for item, op in zip(batch, ops):
            value = op.get("value")
            if value is None:  # a delete stores nothing
                continue
            got = reported.get(op["rkey"])
            try:
                expected = record_cid(value)
            except CidError:  # a value this encoder cannot hash; the PDS took it, the audit compares it
                expected = None
            if got is None or expected is None:
                unchecked += 1
            elif got != expected:
                differ.append((item, differs_reason(expected, got, op["rkey"])))
            else:
                self.cids_checked += 1
        if unchecked:
            self.cids_unchecked += unchecked
            log.warning("applyWrites reported no usable CID for %d of %d writes; their records are unchecked "
                        "(the audit compares them)", unchecked, len(ops))
        for _, reason in differ:
            log.error("write refused after the fact: %s", reason)
        return differ

    def _write(self, batch: list[T], retried: bool) -> None:
        try:
            self._apply(batch)
            return
        except RequestTooLarge as exc:
            if len(batch) == 1:
                self.fail(batch[0], f"record refused as too large: {exc}")
                return
            error: PdsError = exc
            retried = True  # resending the same body cannot help: split at once
        except PdsUnavailable:
            # A dropped connection or a timeout may have lost only the answer: if a re-read finds
            # the whole batch on the PDS, it is settled like any landed batch and the run goes on.
            # Otherwise (or if the re-read fails too) the PDS is taken to be gone: run() fails the
            # rest at once.
            if self.replan_after_failure(batch):
                raise
            log.info("batch of %d: the answer was lost, but the batch is on the PDS", len(batch))
            return
        except RateLimited:
            raise  # splitting the batch cannot help: run() fails the rest at once
        except PdsError as exc:
            error = exc
        log.warning("batch of %d failed (%s); re-reading the repo before retrying", len(batch), error)
        batch = self.replan_after_failure(batch)
        if not batch:
            return
        if not retried:
            self.sleep(self.options.retry_delay_s * (1 + random.random()))
            self._write(batch, retried=True)
        elif len(batch) == 1:
            self.fail(batch[0], str(error))
        else:
            middle = len(batch) // 2
            self._write(batch[:middle], retried=True)
            self._write(batch[middle:], retried=True)


class BatchWriter(BatchRunner[Create]):
    """Writes one user's creates through a logged-in session and points Mongo at them."""

    def __init__(
        self,
        session,
        store,
        pds,
        options: WriteOptions,
        on_batch: Callable[[int, int], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.result = WriteResult()
        super().__init__(session, options, on_batch=on_batch, sleep=sleep)
        self.store = store
        self.pds = pds
        self._settled: set[str] = set()  # mood ids now on the PDS with their pointer written

    @property
    def batches(self) -> int:  # type: ignore[override]
        return self.result.batches

    @batches.setter
    def batches(self, value: int) -> None:
        self.result.batches = value

    def write_all(self, creates: list[Create]) -> WriteResult:
        self.run(creates)
        self.result.cids_checked = self.cids_checked
        self.result.cids_unchecked = self.cids_unchecked
        return self.result

    def op(self, item: Create) -> dict:
        return op_for(item)

    def settled(self, item: Create) -> bool:
        # Whatever of a batch did land carries its `ref`; the next run points at it.
        return item.mood_id in self._settled

    def fail(self, item: Create, reason: str) -> None:
        self.result.failed.append((item.mood_id, reason))

    def record_differs(self, item: Create, reason: str) -> None:
        # The record is on the PDS and carries the mood's `ref`, but it is not the record sent:
        # the mood fails and Mongo gets no pointer (the audit shows what the PDS holds).
        self._settled.add(item.mood_id)
        self.fail(item, reason)

    def landed(self, batch: list[Create]) -> None:
        # The pointers follow right away: a crash from here on leaves records that carry their
        # mood's `ref`, which the next run matches instead of writing them again.
        self.result.pointers_written += self.store.write_pointers([(c.mood_id, c.rkey) for c in batch])
        self.result.created += len(batch)
        self._settled.update(c.mood_id for c in batch)

    def replan_after_failure(self, batch: list[Create]) -> list[Create]:
        """Drop what landed (pointing Mongo at it), re-key what collides, keep the rest."""
        existing = {r.rkey: r for r in self.pds.list_records(self.session.did, MOOD_COLLECTION)}
        by_ref = {}
        for record in existing.values():
            if record.mood_ref:
                by_ref.setdefault(record.mood_ref, record)
        landed = [(c.mood_id, by_ref[c.mood_id].rkey) for c in batch if c.mood_id in by_ref]
        if landed:
            self.result.pointers_written += self.store.write_pointers(landed)
            self.result.recovered += len(landed)
            self._settled.update(mood_id for mood_id, _ in landed)
            log.info("%d records of the failed batch were already on the PDS", len(landed))
        landed_ids = {mood_id for mood_id, _ in landed}
        remaining = [c for c in batch if c.mood_id not in landed_ids]
        collisions = {c.mood_id: c.rkey for c in remaining if c.rkey in existing}
        if collisions:
            moved = free_rkeys(collisions, set(existing) | {c.rkey for c in remaining})
            remaining = [Create(c.mood_id, moved.get(c.mood_id, c.rkey), c.record) for c in remaining]
        return remaining
