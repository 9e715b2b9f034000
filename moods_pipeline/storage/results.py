"""The pipeline's own record of per-user results, under MOODS_STATE_DIR.

Summaries are built from the latest result of every user, not just the last run, so each
user's latest outcome is kept as one small JSON file (atomic replace). Dry runs go to a
per-run folder and never replace a real result.
"""

from __future__ import annotations

import json
from pathlib import Path

from moods_pipeline.model import UserOutcome
from moods_pipeline.storage.files import safe_name, write_json_atomic


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
