"""The deletion journal: every account and record deletion, written before it is sent and after.

An operator must be able to answer "what did we delete, and why" for any day, including for a
run that died between sending a delete and recording its outcome. So each deletion is two JSON
lines under ``MOODS_STATE_DIR/journal/<UTC date>.jsonl``:

- ``phase: "intent"``, written (and flushed to disk) before the request is sent: ``id`` (pairs it
  with its result), ``at``, ``kind`` (``account`` or ``records``), ``command`` (``erase``,
  ``repair``, ``live``, ...), ``run_id``, ``sub``, ``did``, ``handle``, ``collection``, ``reason``
  (why, in words) and ``targets`` (for records: ``{"rkey", "mood_id", "why"}`` each);
- ``phase: "result"``, written after: the same ``id``, ``outcome`` (``deleted``, ``failed``,
  ``kept``) and ``error`` (the reason, for a failure) and ``deleted`` (rkeys found gone).

An intent without a result is a deletion whose outcome nobody saw (a crash or a kill): the next
audit tells what is on the PDS. Lines never carry mood text, passwords or tokens: ids, rkeys,
DIDs, handles and reasons only. Plain Python, no Dagster.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from contextlib import contextmanager
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from moods_pipeline import MOOD_COLLECTION

__all__ = ["DeletionJournal", "DeletionTarget", "read_journal", "journal_dir"]

ACCOUNT, RECORDS = "account", "records"
DELETED, FAILED, KEPT = "deleted", "failed", "kept"


def journal_dir(state_dir: Path | str) -> Path:
    return Path(state_dir) / "journal"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class DeletionTarget(dict):
    """One record a deletion is aimed at: ``{"rkey", "mood_id", "why"}`` (a dict, so it is a line)."""

    def __init__(self, rkey: str, why: str, mood_id: str | None = None) -> None:
        super().__init__(rkey=rkey, mood_id=mood_id, why=why)


class DeletionJournal:
    """Appends intent and result lines for one command or run; safe to share between threads."""

    def __init__(self, state_dir: Path | str, *, command: str, run_id: str | None = None) -> None:
        self.folder = journal_dir(state_dir)
        self.command = command
        self.run_id = run_id
        self._lock = threading.Lock()

    def _append(self, entry: dict) -> None:
        moment = _now()
        entry = {"at": _iso(moment), "command": self.command, "run_id": self.run_id, **entry}
        line = (json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n").encode()
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{moment.date().isoformat()}.jsonl"
            # One write of a whole line in append mode, then fsync: the intent is on disk before
            # the request that it announces is sent.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def intent(self, *, kind: str, did: str | None, sub: str | None, handle: str | None, reason: str,
               targets: Iterable[dict] = ()) -> str:
        """Record that a deletion is about to be sent; returns its id for :meth:`result`."""
        if kind not in (ACCOUNT, RECORDS):
            raise ValueError(f"journal kind must be account or records, not {kind!r}")
        entry_id = uuid.uuid4().hex
        self._append({
            "id": entry_id, "phase": "intent", "kind": kind, "did": did, "sub": sub, "handle": handle,
            "collection": MOOD_COLLECTION if kind == RECORDS else None, "reason": reason,
            "targets": [dict(t) for t in targets],
        })
        return entry_id

    def result(self, entry_id: str, outcome: str, *, error: str | None = None,
               deleted: Iterable[str] = ()) -> None:
        """Record what came of the deletion ``entry_id``: deleted, failed (with ``error``) or kept."""
        if outcome not in (DELETED, FAILED, KEPT):
            raise ValueError(f"journal outcome must be deleted, failed or kept, not {outcome!r}")
        self._append({"id": entry_id, "phase": "result", "outcome": outcome, "error": error,
                      "deleted": sorted(deleted)})

    def sent_account_deletion(self, did: str) -> bool:
        """Whether this project ever announced the deletion of the account ``did`` (an intent line,
        any command, any day): a run that died after deleteAccount and before forgetting the DID."""
        return any(e.get("phase") == "intent" and e.get("kind") == ACCOUNT and e.get("did") == did
                   for e in read_journal(self.folder.parent))

    @contextmanager
    def deleting(self, *, kind: str, did: str | None, sub: str | None, handle: str | None, reason: str,
                 targets: Iterable[dict] = ()) -> Iterator[str]:
        """Intent before the block; ``deleted`` after it, or ``failed`` with the error if it raises
        (the exception goes on). A block that wants another outcome records it itself."""
        targets = list(targets)
        entry_id = self.intent(kind=kind, did=did, sub=sub, handle=handle, reason=reason, targets=targets)
        try:
            yield entry_id
        except BaseException as exc:
            self.result(entry_id, FAILED, error=f"{type(exc).__name__}: {exc}")
            raise
        self.result(entry_id, DELETED, deleted=[t["rkey"] for t in targets if t.get("rkey")])


def read_journal(state_dir: Path | str, since: date | None = None) -> list[dict]:
    """Every journal line (oldest first), from ``since`` (a UTC date) on when given. A torn last
    line (a process killed mid-write) is skipped, not fatal."""
    folder = journal_dir(state_dir)
    if not folder.exists():
        return []
    entries: list[dict] = []
    for path in sorted(folder.glob("*.jsonl")):
        try:
            day = date.fromisoformat(path.stem)
        except ValueError:
            continue
        if since is not None and day < since:
            continue
        for line in path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return sorted(entries, key=lambda e: e.get("at", ""))
