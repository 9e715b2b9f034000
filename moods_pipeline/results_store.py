"""The pipeline's own record of per-user results, under MOODS_STATE_DIR.

Summaries are built from the latest result of every user, not just the last run, so each
user's latest outcome is kept as one small JSON file (atomic replace). Dry runs go to a
per-run folder and never replace a real result.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from moods_pipeline.sync.backfill import UserOutcome


MAX_NAME = 200  # characters of a file name made from a key (file systems allow 255 bytes)
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-%")


def safe_name(key: str) -> str:
    """A file name (without suffix) for a DID, sub or run id: one name per key, one key per
    name, and never a path.

    ":" becomes "_" (so "did:plc:x" is "did_plc_x", as it always was); every other character
    outside letters, digits and ``.-%`` (the DID characters), "_" included, becomes "+XX" per
    UTF-8 byte, so no two keys share a name (before, "did:web:a_b" and "did:web:a:b" did) and
    no key makes a separator or a hidden file ("/", a leading "."). A key whose name would be
    longer than ``MAX_NAME`` (a DID may have 2,048 characters) is cut and ends with "+~" and a
    hash of the whole key ("+~" never occurs otherwise)."""
    out = []
    for position, char in enumerate(key):
        if char == ":":
            out.append("_")
        elif char in _PLAIN and not (position == 0 and char == "."):
            out.append(char)
        else:
            out.append("".join(f"+{byte:02X}" for byte in char.encode("utf-8", "surrogatepass")))
    name = "".join(out) or "+"
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        name = name[: MAX_NAME - 34] + "+~" + digest
    return name



def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, sort_keys=True)
    os.replace(tmp, path)


class ResultsStore:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)

    def _backfill_dir(self) -> Path:
        return self.state_dir / "backfill" / "latest"

    def _run_dir(self, run_id: str) -> Path:
        return self.state_dir / "backfill" / "runs" / run_id

    def save_backfill(self, outcome: UserOutcome, run_id: str) -> None:
        key = safe_name(outcome.did or outcome.sub)
        write_json_atomic(self._run_dir(run_id) / f"{key}.json", outcome.to_dict())
        if not outcome.dry_run:
            write_json_atomic(self._backfill_dir() / f"{key}.json", outcome.to_dict())

    def _load_dir(self, folder: Path) -> list[UserOutcome]:
        if not folder.exists():
            return []
        return [UserOutcome.from_dict(json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]

    def latest_backfill(self) -> list[UserOutcome]:
        return self._load_dir(self._backfill_dir())

    def run_backfill(self, run_id: str) -> list[UserOutcome]:
        return self._load_dir(self._run_dir(run_id))
