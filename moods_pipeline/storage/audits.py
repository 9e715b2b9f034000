"""The audit's and the repair's own files under MOOD_STATE_DIR (``<state>/audit``, ``<state>/repair``).

- ``audit/latest/<did>.parquet``: each user's latest reconciliation (the columns of
  ``sync.reconcile``), with the user's audit facts (``UserAudit.summary()``, ``audited_at``,
  ``run_id``) as JSON in the Parquet schema metadata under ``moods_audit``. An unreadable user's
  file has no rows and says why in ``unreadable``. Replaced atomically, so summaries read the
  latest result of every user, not just the last run's.
- ``audit/runs/<run_id>.jsonl``: one line per user audited in that run (the summary facts),
  appended as each user finishes; the CLI reads its runs' users from there. On an object store
  (nothing can be appended there) each line is an object of its own,
  ``audit/runs/<run_id>/<time>-<uuid>.json``; ``load_run`` reads both.
- ``audit/reconciliation.parquet``: the full reconciliation of every user (``audit_summary``'s
  export), and ``audit/summary.json`` the totals that went with it.
- ``repair/runs/<run_id>.jsonl``: one line per user a repair run handled (plan counts, applied
  counts, failures, what was left); the same two layouts.

``MOODS_STATE_DIR`` may be a local directory or an object-store URL (``storage.files``).

Nothing here holds mood text: the frames carry lengths and short hashes only.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from moods_pipeline.model import RECONCILIATION_COLUMNS as COLUMNS
from upath import UPath

from moods_pipeline.storage.files import (
    arrow_paths,
    list_files,
    read_bytes,
    read_json,
    read_many,
    read_parquet,
    safe_name,
    state_path,
    write_atomic,
    write_json_atomic,
)

META_KEY = b"moods_audit"

SCHEMA = pa.schema(
    [
        pa.field(name, pa.bool_() if name == "problem" else pa.int64() if name == "mood_len" else pa.string())
        for name in COLUMNS
    ]
)





def columns_to_table(columns: dict[str, list], meta: dict | None = None) -> pa.Table:
    """Reconciliation columns (lists per column of ``COLUMNS``) as an Arrow table of the fixed
    schema (None stays null), with ``meta`` as JSON in the schema metadata."""
    data = {}
    for name in COLUMNS:
        values = list(columns.get(name, []))
        if name == "mood_len":
            values = [None if v is None or (isinstance(v, float) and v != v) else int(v) for v in values]
        elif name == "problem":
            values = [bool(v) for v in values]
        else:
            values = [None if v is None or (isinstance(v, float) and v != v) else str(v) for v in values]
        data[name] = values
    schema = SCHEMA.with_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()}) if meta else SCHEMA
    return pa.Table.from_pydict(data, schema=schema)


def frame_to_table(frame: pd.DataFrame, meta: dict | None = None) -> pa.Table:
    """A reconciliation frame as an Arrow table of the fixed schema."""
    return columns_to_table({name: list(frame[name]) if len(frame) else [] for name in COLUMNS}, meta)


def table_to_frame(table: pa.Table) -> pd.DataFrame:
    """Back to the reconciliation's shape: object columns of str/None, ``mood_len`` int/None."""
    data = {}
    for name in COLUMNS:
        # A file written before a column existed (expected_cid and cid came later) reads as nulls.
        values = table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows
        data[name] = pd.Series(values, dtype=bool if name == "problem" else object)
    return pd.DataFrame(data, columns=list(COLUMNS))


@dataclass
class StoredAudit:
    """A user's latest audit as kept on disk."""

    summary: dict  # UserAudit.summary() plus audited_at and run_id
    path: UPath

    @property
    def did(self) -> str | None:
        return self.summary.get("did")

    def frame(self) -> pd.DataFrame:
        return table_to_frame(read_parquet(self.path))


class AuditStore:
    def __init__(self, state_dir: str | os.PathLike | UPath) -> None:
        self.state_dir = state_path(state_dir)
        self.root = self.state_dir / "audit"
        self.latest_dir = self.root / "latest"
        self.runs_dir = self.root / "runs"
        self.repair_runs_dir = self.state_dir / "repair" / "runs"
        self.export_path = self.root / "reconciliation.parquet"
        self.summary_path = self.root / "summary.json"
        self._lock = threading.Lock()

    # -- per user ------------------------------------------------------------------------------
    def save_latest(self, audit, run_id: str | None = None) -> UPath:
        """Keep ``audit`` (a ``sync.audit.UserAudit`` of a user with an account) as the user's latest."""
        if not audit.user.did:
            raise ValueError("only users with a DID have audit files")
        meta = dict(audit.summary(), audited_at=datetime.now(timezone.utc).isoformat(), run_id=run_id)
        table = columns_to_table(audit.columns(), meta)
        path = self.latest_dir / f"{safe_name(audit.user.did)}.parquet"
        write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="snappy"))
        return path

    def record_run_user(self, run_id: str, summary: dict, kind: str = "audit") -> None:
        """Append one user's facts to the run's file (thread-safe; one JSON line)."""
        folder = self.runs_dir if kind == "audit" else self.repair_runs_dir
        if not isinstance(folder, Path):
            # No appends on an object store: one object per line, named to sort in time order.
            moment = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
            write_json_atomic(folder / safe_name(run_id) / f"{moment}-{uuid.uuid4().hex}.json", summary)
            return
        folder.mkdir(parents=True, exist_ok=True)
        line = json.dumps(summary, sort_keys=True) + "\n"
        with self._lock, open(folder / f"{safe_name(run_id)}.jsonl", "a", encoding="utf-8") as handle:
            handle.write(line)

    def load_run(self, run_id: str, kind: str = "audit") -> list[dict]:
        """The run's lines, from either layout (a JSON Lines file, or one object per line)."""
        folder = self.runs_dir if kind == "audit" else self.repair_runs_dir
        text = read_bytes(folder / f"{safe_name(run_id)}.jsonl")
        lines = [json.loads(line) for line in (text or b"").decode("utf-8").splitlines() if line.strip()]
        entries = list_files(folder / safe_name(run_id), ".json")
        data = read_many(entries)
        lines.extend(json.loads(data[str(p)]) for p in entries if str(p) in data)
        return lines

    def latest_paths(self) -> list[UPath]:
        return list_files(self.latest_dir, ".parquet")

    def load_latest(self, dids: Iterable[str] | None = None) -> list[StoredAudit]:
        """Every user's latest audit (or those of ``dids``), without reading the rows."""
        wanted = {safe_name(d) for d in dids} if dids is not None else None
        paths = [p for p in self.latest_paths() if wanted is None or p.stem in wanted]
        if not paths:
            return []
        names, filesystem = arrow_paths(paths)
        dataset = ds.dataset(names, format="parquet", schema=SCHEMA, filesystem=filesystem)
        stored = []
        for path, fragment in zip(paths, dataset.get_fragments()):  # a dataset of a list keeps its order
            metadata = fragment.physical_schema.metadata or {}
            stored.append(StoredAudit(summary=json.loads(metadata.get(META_KEY, b"{}")), path=path))
        return stored

    def latest_table(self, stored: list[StoredAudit]) -> pa.Table:
        """The rows of these audits as one Arrow table (no per-file metadata)."""
        if not stored:
            return SCHEMA.empty_table()
        names, filesystem = arrow_paths([s.path for s in stored])
        return ds.dataset(names, format="parquet", schema=SCHEMA, filesystem=filesystem).to_table()

    def latest_frame(self, stored: list[StoredAudit]) -> pd.DataFrame:
        """The rows of these audits as one reconciliation frame."""
        return table_to_frame(self.latest_table(stored))

    # -- everyone ------------------------------------------------------------------------------
    def export(self, rows: pa.Table | pd.DataFrame, totals: dict, detail: dict | None = None) -> UPath:
        """The full reconciliation as one Parquet file (``totals`` in its metadata), and
        ``summary.json`` beside it: ``totals`` plus ``detail`` (per-user facts, orphan repos...)."""
        table = rows if isinstance(rows, pa.Table) else frame_to_table(rows)
        table = table.replace_schema_metadata({META_KEY: json.dumps({"totals": totals}, sort_keys=True).encode()})
        write_atomic(self.export_path, lambda tmp: pq.write_table(table, tmp, compression="snappy"))
        summary = dict(totals, **(detail or {}), export=str(self.export_path))
        write_json_atomic(self.summary_path, summary)
        return self.export_path

    def load_summary(self) -> dict | None:
        return read_json(self.summary_path)
