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
audit tells what is on the PDS.

``MOODS_STATE_DIR`` may be an object-store URL (``s3://bucket/prefix``), where nothing can be
appended and two writers must never overwrite each other: there each line is an object of its
own, ``journal/<UTC date>/<UTC time to the microsecond>-<uuid>.json``, written whole (one PUT)
before the request it announces is sent. ``read_journal`` reads both layouts, wherever they are,
and sorts by time. Lines never carry mood text, passwords or tokens: ids, rkeys,
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

from upath import UPath

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.storage.files import (
    list_files,
    read_bytes,
    read_many,
    remote_call,
    state_path,
    write_bytes_atomic,
)

__all__ = ["DeletionJournal", "DeletionTarget", "read_journal", "journal_dir"]

ACCOUNT, RECORDS = "account", "records"
DELETED, FAILED, KEPT = "deleted", "failed", "kept"


def journal_dir(state_dir: str | os.PathLike | UPath) -> UPath:
    return state_path(state_dir) / "journal"


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

    def __init__(self, state_dir: str | os.PathLike | UPath, *, command: str, run_id: str | None = None) -> None:
        self.folder = journal_dir(state_dir)
        self.command = command
        self.run_id = run_id
        self._lock = threading.Lock()

    def _append(self, entry: dict) -> None:
        moment = _now()
        entry = {"at": _iso(moment), "command": self.command, "run_id": self.run_id, **entry}
        line = (json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n").encode()
        if not isinstance(self.folder, Path):
            # One object per line: a PUT is whole and durable when it returns, and the name
            # (time, then a random part) never collides with another writer's.
            name = f"{moment.strftime('%Y%m%dT%H%M%S.%fZ')}-{uuid.uuid4().hex}.json"
            write_bytes_atomic(self.folder / moment.date().isoformat() / name, line)
            return
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


def _day(name: str) -> date | None:
    try:
        return date.fromisoformat(name)
    except ValueError:
        return None


def _lines(data: bytes) -> list[dict]:
    entries = []
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn line
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def read_journal(state_dir: str | os.PathLike | UPath, since: date | None = None) -> list[dict]:
    """Every journal line (oldest first), from ``since`` (a UTC date) on when given, from both
    layouts: ``<date>.jsonl`` files and ``<date>/`` folders of one object per line. A torn line
    (a process killed mid-write) is skipped, not fatal."""
    folder = journal_dir(state_dir)
    keyed: list[tuple[str, str, dict]] = []  # (at, tie-breaker, entry)
    for path in list_files(folder, ".jsonl"):
        day = _day(path.name[: -len(".jsonl")])
        if day is None or (since is not None and day < since):
            continue
        for index, entry in enumerate(_lines(read_bytes(path) or b"")):
            keyed.append((entry.get("at", ""), f"{path.name}:{index:09d}", entry))
    days = _day_folders(folder)
    objects = [p for day, sub in days if since is None or day >= since for p in list_files(sub, ".json")]
    data = read_many(objects)
    for path in objects:
        for entry in _lines(data.get(str(path), b"")):
            keyed.append((entry.get("at", ""), path.name, entry))
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [entry for _, _, entry in keyed]


def _day_folders(folder: UPath) -> list[tuple[date, UPath]]:
    """The ``<date>/`` folders of the one-object-per-line layout."""
    folder = state_path(folder)
    if isinstance(folder, Path):
        if not folder.is_dir():
            return []
        names = [p.name for p in folder.iterdir() if p.is_dir()]
    else:
        try:
            entries = remote_call(folder, "list", lambda: folder.fs.ls(folder.path, detail=True, refresh=True))
        except FileNotFoundError:
            return []
        names = [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory"]
    days = [(_day(name), folder / name) for name in sorted(names)]
    return [(day, path) for day, path in days if day is not None]
