"""Audit receipts under MOODS_STATE_DIR: for each user, what its latest complete audit saw.

- ``audit/receipts/<did>.json``: one small JSON file per user (atomic replace): the repo's
  ``rev`` and commit CID (``head``) read right before the records were, the user's Mongo
  fingerprint (``sync.fingerprint``, hashes only) of the moods that were compared, the audit
  basis (tolerance, nuke policy, legacy rewriting, recipe version), the audit's summary (counts
  per status, problems) and when and in which run it was made. A user whose audit was not
  complete (unreadable repo, Mongo error) gets an *invalidated* receipt instead (``invalid``:
  why), which counts as none: that user is checked again next time.
- ``audit/incremental.json``: what the latest incremental selection found (how many users were
  verified unchanged, the range of their receipts' revs), for ``audit_summary``'s metadata.

Every file goes through ``storage.files`` (``state_path``, ``safe_name``, ``write_json_atomic``,
``read_many``), as ``storage.results`` does, so the same code runs on a local state dir and on an
object store (a thousand receipts are read concurrently there). No mood text, no secret: ids,
revs, CIDs, counts, hashes.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from typing import Iterable

from upath import UPath

from moods_pipeline.storage.files import read_bytes, read_many, safe_name, state_path, write_json_atomic

log = logging.getLogger(__name__)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class ReceiptStore:
    def __init__(self, state_dir: str | os.PathLike | UPath) -> None:
        self.state_dir = state_path(state_dir)
        self.root = self.state_dir / "audit" / "receipts"
        self.pass_path = self.state_dir / "audit" / "incremental.json"

    def path_of(self, did: str) -> UPath:
        return self.root / f"{safe_name(did)}.json"

    def save(self, receipt: dict) -> None:
        """Keep ``receipt`` (a dict with at least ``did``) as the user's latest."""
        did = receipt.get("did")
        if not isinstance(did, str) or not did:
            raise ValueError("a receipt needs the user's DID")
        write_json_atomic(self.path_of(did), dict(receipt, saved_at=now_iso()))

    def invalidate(self, did: str, reason: str, run_id: str | None = None) -> None:
        """Replace the user's receipt by one that says why there is none (always re-checked)."""
        write_json_atomic(self.path_of(did), {"did": did, "invalid": reason, "run_id": run_id, "saved_at": now_iso()})

    @staticmethod
    def _parse(raw: bytes | None, name: str) -> dict | None:
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            # A damaged receipt is no receipt: the user is audited again and gets a new one.
            log.warning("receipt %s unreadable (%s): the user will be audited again", name, type(exc).__name__)
            return None
        return data if isinstance(data, dict) else None

    @staticmethod
    def _valid(data: dict | None, did: str) -> dict | None:
        if data is None or data.get("invalid") or data.get("did") != did:
            return None
        return data

    def load(self, did: str) -> dict | None:
        """The user's valid receipt, or None (no receipt, an invalidated or a damaged one)."""
        path = self.path_of(did)
        return self._valid(self._parse(read_bytes(path), path.name), did)

    def load_many(self, dids: Iterable[str]) -> dict[str, dict]:
        """did -> valid receipt, for the DIDs that have one (one concurrent read of them all)."""
        paths = {did: self.path_of(did) for did in dict.fromkeys(dids)}
        raw = read_many(paths.values())
        found = {}
        for did, path in paths.items():
            receipt = self._valid(self._parse(raw.get(str(path)), path.name), did)
            if receipt is not None:
                found[did] = receipt
        return found

    # -- the latest incremental selection ------------------------------------------------------
    def save_pass(self, facts: dict) -> None:
        write_json_atomic(self.pass_path, dict(facts, at=now_iso()))

    def load_pass(self) -> dict | None:
        return self._parse(read_bytes(self.pass_path), self.pass_path.name)
