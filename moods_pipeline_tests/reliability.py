"""Rows for the reliability table: what each fault test injected and what it cost.

Fault and bad-input tests call ``reliability_record(...)`` (a fixture) or :func:`record` with
what was injected, how many moods were at stake and how many of them were lost or duplicated
once the test's re-run finished. A row is written only when ``MOODS_RELIABILITY_OUT`` names a
directory; otherwise recording does nothing, so the tests run the same either way.

``bench/reliability.py`` runs the tests with that variable set and prints the markdown table.
The variable is read when this module is imported: the suite's conftest hides every
``MOODS_*`` variable from tests, so load this module as a plugin before the conftest
(``pytest -p moods_pipeline_tests.reliability``), which is what the bench script does.

:func:`tally` counts, for some users, what the invariant of docs/interface.md is about: valid live
moods at stake, moods without a record (lost), extra records (duplicated), records carrying an
id that is no mood of the repo's user (leaked) and pointers not naming the mood's record.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.sync.mood_record import Invalid, build_record

ENV = "MOODS_RELIABILITY_OUT"
_OUT = os.environ.get(ENV) or None


def out_dir() -> Path | None:
    """Where rows go (None: recording is off)."""
    value = _OUT or os.environ.get(ENV)
    return Path(value) if value else None


def record(
    fault: str,
    injected: str,
    at_stake: int,
    lost: int,
    duplicated: int,
    note: str = "",
    *,
    section: str = "fault",
    test: str | None = None,
) -> dict:
    """Write one row (when recording is on) and return it. ``section``: "fault", "bad_input" or
    "destructive" (a deletion that was attempted: ``at_stake`` are the records and accounts that
    had to survive, ``lost`` those deleted all the same)."""
    row = {
        "section": section,
        "fault": fault,
        "injected": injected,
        "at_stake": int(at_stake),
        "lost": int(lost),
        "duplicated": int(duplicated),
        "note": note,
        "test": test,
        "at": time.time(),
    }
    folder = out_dir()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        (folder / name).write_text(json.dumps(row, ensure_ascii=False))
    return row


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """With recording on (this module loaded as a plugin), every test's outcome goes beside the
    rows, so the table can mark the rows of a test that failed after recording them."""
    folder = out_dir()
    if folder is None or (report.when != "call" and report.passed):
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "outcomes.jsonl", "a") as handle:
        handle.write(json.dumps({"test": report.nodeid, "when": report.when, "outcome": report.outcome}) + "\n")


@pytest.fixture
def reliability_record(request: pytest.FixtureRequest):
    """``reliability_record(fault, injected, at_stake, lost, duplicated, note="", section="fault")``."""

    def _record(fault, injected, at_stake, lost, duplicated, note="", section="fault"):
        return record(fault, injected, at_stake, lost, duplicated, note, section=section, test=request.node.nodeid)

    return _record


@dataclass
class Tally:
    at_stake: int = 0  # valid live moods of the users
    lost: int = 0  # of those, with no record carrying their id
    duplicated: int = 0  # records beyond the first carrying a mood's id
    leaked: int = 0  # records carrying an id that is no mood of the repo's user
    bad_pointers: int = 0  # valid live moods with a record whose pointer does not name one

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.leaked or self.bad_pointers)


def tally(store, pds, users) -> Tally:
    """Count what matters for the invariant over ``users`` (``world.WorldUser``: sub and did)."""
    result = Tally()
    for user in users:
        records = pds.list_records(user.did, MOOD_COLLECTION)
        moods = store.moods_of(user.sub)
        mood_ids = {m.id for m in moods}
        carrying: dict[str, list[str]] = {}
        for rec in records:
            ref = rec.mood_ref
            if ref in mood_ids:
                carrying.setdefault(ref, []).append(rec.rkey)
            else:
                result.leaked += 1
        for rkeys in carrying.values():
            result.duplicated += len(rkeys) - 1
        for mood in moods:
            if not mood.live or isinstance(build_record(mood), Invalid):
                continue
            result.at_stake += 1
            rkeys = carrying.get(mood.id, [])
            if not rkeys:
                result.lost += 1
            elif mood.rkey not in rkeys:
                result.bad_pointers += 1
    return result
