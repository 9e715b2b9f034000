"""Carries out one user's plan: applyWrites batches, each followed at once by its pointers.

A batch that fails may still have landed (a lost response, a concurrent run), so before any
retry the writer re-reads the repo and re-plans. Only a batch that fails again is split, to
isolate the record the PDS refuses; that record fails alone, with the PDS's reason.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Callable

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.pds.xrpc import PdsError, PdsUnavailable, RequestTooLarge
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


def op_for(create: Create) -> dict:
    return {"$type": CREATE, "collection": MOOD_COLLECTION, "rkey": create.rkey, "value": create.record}


def op_size(create: Create) -> int:
    return len(json.dumps(op_for(create), ensure_ascii=False).encode("utf-8", "surrogatepass")) + 16


def make_batches(creates: list[Create], options: WriteOptions) -> list[list[Create]]:
    """Split creates into applyWrites batches bounded by count and by request size."""
    batches: list[list[Create]] = []
    current: list[Create] = []
    size = 0
    for create in creates:
        this = op_size(create)
        if current and (len(current) >= options.max_batch_writes or size + this > options.max_batch_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(create)
        size += this
    if current:
        batches.append(current)
    return batches


class BatchWriter:
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
        self.session = session
        self.store = store
        self.pds = pds
        self.options = options
        self.on_batch = on_batch
        self.sleep = sleep
        self.result = WriteResult()
        self._settled: set[str] = set()  # mood ids now on the PDS with their pointer written
        self._last_batch_at = 0.0

    def write_all(self, creates: list[Create]) -> WriteResult:
        batches = make_batches(creates, self.options)
        done = 0
        for index, batch in enumerate(batches):
            try:
                self._write(batch, retried=False)
            except PdsUnavailable as exc:
                # The PDS is gone: failing the rest now beats hammering it record by record.
                # Whatever of this batch did land carries its `ref`; the next run points at it.
                reason = f"PDS unreachable: {exc}"
                for rest in batches[index:]:
                    self.result.failed.extend((c.mood_id, reason) for c in rest if c.mood_id not in self._settled)
                break
            done += len(batch)
            if self.on_batch:
                self.on_batch(done, len(creates))
        return self.result

    def _pace(self) -> None:
        wait = self.options.min_batch_interval_s - (time.monotonic() - self._last_batch_at)
        if wait > 0:
            self.sleep(wait)
        self._last_batch_at = time.monotonic()

    def _apply(self, batch: list[Create]) -> None:
        self._pace()
        self.result.batches += 1
        started = time.monotonic()
        self.session.apply_writes([op_for(c) for c in batch])
        # The pointers follow right away: a crash from here on leaves records that carry their
        # mood's `ref`, which the next run matches instead of writing them again.
        self.result.pointers_written += self.store.write_pointers([(c.mood_id, c.rkey) for c in batch])
        self.result.created += len(batch)
        self._settled.update(c.mood_id for c in batch)
        log.debug(
            "batch of %d written (rkeys %s..%s) in %.0f ms",
            len(batch), batch[0].rkey, batch[-1].rkey, (time.monotonic() - started) * 1000,
        )

    def _write(self, batch: list[Create], retried: bool) -> None:
        try:
            self._apply(batch)
            return
        except RequestTooLarge as exc:
            if len(batch) == 1:
                self.result.failed.append((batch[0].mood_id, f"record refused as too large: {exc}"))
                return
            error: PdsError = exc
            retried = True  # resending the same body cannot help: split at once
        except PdsUnavailable:
            raise
        except PdsError as exc:
            error = exc
        log.warning("batch of %d failed (%s); re-reading the repo before retrying", len(batch), error)
        batch = self._replan_after_failure(batch)
        if not batch:
            return
        if not retried:
            self.sleep(self.options.retry_delay_s * (1 + random.random()))
            self._write(batch, retried=True)
        elif len(batch) == 1:
            self.result.failed.append((batch[0].mood_id, str(error)))
        else:
            middle = len(batch) // 2
            self._write(batch[:middle], retried=True)
            self._write(batch[middle:], retried=True)

    def _replan_after_failure(self, batch: list[Create]) -> list[Create]:
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
