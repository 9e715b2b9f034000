"""The pipeline's own record of per-user results, under MOODS_STATE_DIR (a local directory or
an object-store URL: ``storage.files``).

Summaries are built from the latest result of every user, not just the last run, so each
user's latest outcome is kept as one small JSON file (replaced whole). Dry runs go to a
per-run folder and never replace a real result.
"""

from __future__ import annotations

import json
import os

from upath import UPath

from moods_pipeline.model import UserOutcome
from moods_pipeline.storage.files import list_files, read_many, safe_name, state_path, write_json_atomic


class ResultsStore:
    def __init__(self, state_dir: str | os.PathLike | UPath) -> None:
        self.state_dir = state_path(state_dir)

    def _backfill_dir(self) -> UPath:
        return self.state_dir / "backfill" / "latest"

    def _run_dir(self, run_id: str) -> UPath:
        return self.state_dir / "backfill" / "runs" / run_id

    def save_backfill(self, outcome: UserOutcome, run_id: str) -> None:
        key = safe_name(outcome.did or outcome.sub)
        write_json_atomic(self._run_dir(run_id) / f"{key}.json", outcome.to_dict())
        if not outcome.dry_run:
            write_json_atomic(self._backfill_dir() / f"{key}.json", outcome.to_dict())

    def _load_dir(self, folder: UPath) -> list[UserOutcome]:
        paths = list_files(folder, ".json")
        data = read_many(paths)
        # A file removed between the listing and the read is skipped, not an error.
        return [UserOutcome.from_dict(json.loads(data[str(p)])) for p in paths if str(p) in data]

    def latest_backfill(self) -> list[UserOutcome]:
        return self._load_dir(self._backfill_dir())

    def run_backfill(self, run_id: str) -> list[UserOutcome]:
        return self._load_dir(self._run_dir(run_id))
