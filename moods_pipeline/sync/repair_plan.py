"""What a repair must do for one user, derived from the reconciliation: pure, no I/O.

``plan_repair`` turns the audit's rows into actions; a writer carries them out as
``RepairPlan.writes()`` (applyWrites operations) followed by ``pointer_updates()`` and
``pointer_unsets()`` (Mongo). Applying a plan made with ``delete_orphans=True`` and
``rewrite_legacy=True`` leaves no problem behind (the tests check this for arbitrary data).

Actions (``Action.action`` names, fixed; ``ACTIONS`` lists them in plan order):

``create_record``    a ``missing_on_pds`` mood: its record at the deterministic rkey
                     (``mood_record.rkeys_for`` over all the user's moods, live and nuked:
                     ``tid.assign_rkeys`` with collisions resolved); if any record in the repo
                     holds that rkey (even one this plan deletes), the next free microsecond
                     (same clock id), moods taken in id order (``planner.free_rkeys``): the
                     backfill's rule, so a repair and a backfill racing each other pick the
                     same rkey and the second create fails instead of duplicating.
``rewrite_content``  ``content_mismatch`` (also when hidden behind ``stale_pointer`` or
                     ``pointer_missing``): put ``build_record``'s record at the chosen rkey.
``rewrite_legacy``   only with ``rewrite_legacy``: a chosen record carrying ``mongoId`` instead
                     of ``ref`` (and no content mismatch, which already rewrites it): put the
                     record with ``ref`` at the same rkey.
``delete_duplicate`` a ``duplicate`` row: every record carrying a mood's id other than its
                     chosen record (the record the pointer names if it carries the id, else the
                     smallest rkey). Also for invalid moods (their chosen record stays) and,
                     under ``nuke_policy="keep"``, for nuked moods.
``delete_nuked``     only with ``nuke_policy="delete"``: every record of a nuked mood (its
                     chosen record and its duplicates).
``delete_orphan``    only with ``delete_orphans``: an ``orphan`` row.
``write_pointer``    Mongo's ``atproto.rkey`` := the chosen rkey (``stale_pointer``,
                     ``pointer_missing``) or the created rkey (after ``create_record``).
``unset_pointer``    only with ``nuke_policy="delete"``: a nuked mood's pointer, if set, is unset
                     (so an un-nuke later finds the mood ``missing_on_pds`` and recreates it):
                     after its records are deleted (``delete_nuked``), or at once for a nuked
                     mood that has no record left but still a pointer (status ``nuked``).

Invalid moods get no action of their own (no create, rewrite or pointer). Each rkey gets at
most one write; created rkeys never collide with any rkey the repo holds, so the writes can be
applied in any batching. The value dicts carry mood text: they never appear in ``repr``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import ClassVar

import pandas as pd

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.model import Mood, PdsRecord, UserAccount
from moods_pipeline.sync.mood_record import Invalid, build_record, rkeys_for
from moods_pipeline.sync.planner import free_rkeys
from moods_pipeline.sync.reconcile import (
    CONTENT_MISMATCH,
    DUPLICATE,
    LEGACY_FIELD,
    MISSING_ON_PDS,
    NUKED,
    NUKED_ON_PDS,
    ORPHAN,
    POINTER_MISSING,
    STALE_POINTER,
    check_nuke_policy,
    reconcile,
)

CREATE_OP = "com.atproto.repo.applyWrites#create"
UPDATE_OP = "com.atproto.repo.applyWrites#update"
DELETE_OP = "com.atproto.repo.applyWrites#delete"


# ---------------------------------------------------------------------------------------------
# Actions


@dataclass(frozen=True)
class Action:
    action: ClassVar[str] = ""
    op: ClassVar[str | None] = None  # the applyWrites operation, None for Mongo-only actions

    mood_id: str | None
    rkey: str | None

    def write(self) -> dict | None:
        if self.op is None:
            return None
        write = {"$type": self.op, "collection": MOOD_COLLECTION, "rkey": self.rkey}
        value = getattr(self, "value", None)
        if self.op != DELETE_OP:
            write["value"] = value
        return write


@dataclass(frozen=True)
class CreateRecord(Action):
    action: ClassVar[str] = "create_record"
    op: ClassVar[str | None] = CREATE_OP
    value: dict = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class RewriteContent(Action):
    action: ClassVar[str] = "rewrite_content"
    op: ClassVar[str | None] = UPDATE_OP
    value: dict = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class RewriteLegacy(Action):
    action: ClassVar[str] = "rewrite_legacy"
    op: ClassVar[str | None] = UPDATE_OP
    value: dict = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class DeleteDuplicate(Action):
    action: ClassVar[str] = "delete_duplicate"
    op: ClassVar[str | None] = DELETE_OP


@dataclass(frozen=True)
class DeleteNuked(Action):
    action: ClassVar[str] = "delete_nuked"
    op: ClassVar[str | None] = DELETE_OP


@dataclass(frozen=True)
class DeleteOrphan(Action):
    action: ClassVar[str] = "delete_orphan"
    op: ClassVar[str | None] = DELETE_OP


@dataclass(frozen=True)
class WritePointer(Action):
    action: ClassVar[str] = "write_pointer"


@dataclass(frozen=True)
class UnsetPointer(Action):
    action: ClassVar[str] = "unset_pointer"


ACTION_TYPES: tuple[type[Action], ...] = (
    CreateRecord,
    RewriteContent,
    RewriteLegacy,
    DeleteDuplicate,
    DeleteNuked,
    DeleteOrphan,
    WritePointer,
    UnsetPointer,
)
ACTIONS: tuple[str, ...] = tuple(t.action for t in ACTION_TYPES)
_ORDER = {name: i for i, name in enumerate(ACTIONS)}


@dataclass
class RepairPlan:
    """One user's repair: PDS writes first, then Mongo pointer writes and unsets."""

    did: str | None
    sub: str
    actions: list[Action] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def is_empty(self) -> bool:
        return not self.actions

    def counts(self) -> dict[str, int]:
        """{action: n} for every action name (zeros included)."""
        counted = Counter(a.action for a in self.actions)
        return {name: counted.get(name, 0) for name in ACTIONS}

    def of(self, action: str) -> list[Action]:
        if action not in _ORDER:
            raise ValueError(f"unknown action {action!r}")
        return [a for a in self.actions if a.action == action]

    def writes(self) -> list[dict]:
        """The PDS writes in applyWrites form: creates, then updates, then deletes."""
        return [w for w in (a.write() for a in self.actions) if w is not None]

    def pointer_updates(self) -> list[tuple[str, str]]:
        """(mood_id, rkey) for Mongo's ``atproto.rkey``; apply after ``writes()`` landed."""
        return [(a.mood_id, a.rkey) for a in self.actions if isinstance(a, WritePointer)]

    def pointer_unsets(self) -> list[str]:
        """Mood ids whose ``atproto.rkey`` is to be unset; apply after ``writes()`` landed."""
        return [a.mood_id for a in self.actions if isinstance(a, UnsetPointer)]


# ---------------------------------------------------------------------------------------------
# Planning


def _check_matches(df: pd.DataFrame, moods: list[Mood], records: list[PdsRecord], when_tolerance_ms: int) -> None:
    stale = "the reconciliation does not match these moods and records ({}); reconcile again"
    tolerance = df.attrs.get("when_tolerance_ms")
    if tolerance is not None and tolerance != when_tolerance_ms:
        raise ValueError(stale.format(f"made with when_tolerance_ms={tolerance}, not {when_tolerance_ms}"))
    mood_rows = df[df["kind"] == "mood"]
    if set(mood_rows["mood_id"]) != {m.id for m in moods} or len(mood_rows) != len(moods):
        raise ValueError(stale.format("mood ids differ"))
    row_rkeys = [r for r in df["rkey"] if r is not None and not pd.isna(r)]
    record_rkeys = {r.rkey for r in records}
    if len(row_rkeys) != len(record_rkeys) or set(row_rkeys) != record_rkeys:
        raise ValueError(stale.format("record rkeys differ"))


def plan_repair(
    user: UserAccount,
    moods: list[Mood],
    records: list[PdsRecord],
    reconciliation: pd.DataFrame | None = None,
    *,
    nuke_policy: str = "keep",
    delete_orphans: bool = False,
    rewrite_legacy: bool = False,
    when_tolerance_ms: int = 1000,
) -> RepairPlan:
    """The actions that fix one user's problems (see the module docstring).

    ``reconciliation`` is ``reconcile(user, moods, records, ...)`` of the same data if the caller
    has it (saves recomputing); None recomputes it. A reconciliation that does not fit the moods
    and records given (other mood ids or rkeys, another tolerance) raises ValueError: a repair
    must never act on an outdated audit.
    """
    check_nuke_policy(nuke_policy)
    moods = list(moods)
    records = list(records)
    if reconciliation is None:
        reconciliation = reconcile(user, moods, records, when_tolerance_ms=when_tolerance_ms)
    else:
        _check_matches(reconciliation, moods, records, when_tolerance_ms)

    by_id = {m.id: m for m in moods}
    built: dict[str, dict] = {}
    for mood in moods:
        if mood.live:
            value = build_record(mood)
            if not isinstance(value, Invalid):
                built[mood.id] = value

    actions: list[Action] = []
    to_create: list[str] = []
    nuked_ids: set[str] = set()
    for row in reconciliation.itertuples(index=False):
        issues = set(row.issues.split(","))
        mood_id, rkey = row.mood_id, row.rkey
        if row.kind == "record":
            if row.status == DUPLICATE:
                if nuke_policy == "delete" and by_id[mood_id].deleted:
                    actions.append(DeleteNuked(mood_id, rkey))
                else:
                    actions.append(DeleteDuplicate(mood_id, rkey))
            elif row.status == ORPHAN and delete_orphans:
                actions.append(DeleteOrphan(None, rkey))
            continue
        if row.status == NUKED_ON_PDS:
            if nuke_policy == "delete":
                actions.append(DeleteNuked(mood_id, rkey))
                nuked_ids.add(mood_id)
            continue
        if row.status == NUKED:
            if nuke_policy == "delete":
                nuked_ids.add(mood_id)  # no record left: only a pointer to remove, if any
            continue
        if mood_id not in built:  # invalid or nuked without record: nothing to do
            continue
        if row.status == MISSING_ON_PDS:
            to_create.append(mood_id)
            continue
        if CONTENT_MISMATCH in issues:
            actions.append(RewriteContent(mood_id, rkey, built[mood_id]))
        elif LEGACY_FIELD in issues and rewrite_legacy:
            actions.append(RewriteLegacy(mood_id, rkey, built[mood_id]))
        if STALE_POINTER in issues or POINTER_MISSING in issues:
            actions.append(WritePointer(mood_id, rkey))

    for mood_id in sorted(nuked_ids):
        if by_id[mood_id].rkey:
            actions.append(UnsetPointer(mood_id, None))

    if to_create:
        # The backfill planner's keys: collisions resolved over all of the user's moods, so a
        # mood's key depends neither on which others are on the PDS already nor on nuking.
        wanted = rkeys_for(moods)
        rkeys = free_rkeys({m: wanted[m] for m in to_create}, {r.rkey for r in records})
        for mood_id in sorted(to_create):
            actions.append(CreateRecord(mood_id, rkeys[mood_id], built[mood_id]))
            actions.append(WritePointer(mood_id, rkeys[mood_id]))

    actions.sort(key=lambda a: (_ORDER[a.action], a.rkey or "", a.mood_id or ""))
    written = [a.rkey for a in actions if a.op is not None]
    if len(written) != len(set(written)):  # a bug, never data: one write per rkey
        raise AssertionError("repair plan writes one rkey twice")
    return RepairPlan(did=user.did, sub=user.sub, actions=actions)


def apply_plan_in_memory(
    moods: list[Mood], records: list[PdsRecord], plan: RepairPlan
) -> tuple[list[Mood], list[PdsRecord]]:
    """What the user's moods and records become once ``plan`` is carried out (for tests and
    dry-run previews). Raises ValueError where the PDS would fail the write: a create at an
    existing rkey, an update or delete of a missing one."""
    by_rkey = {r.rkey: r for r in records}
    for write in plan.writes():
        rkey, op = write["rkey"], write["$type"]
        if op == CREATE_OP:
            if rkey in by_rkey:
                raise ValueError(f"create at existing rkey {rkey}")
            by_rkey[rkey] = PdsRecord(rkey=rkey, value=dict(write["value"]))
        elif op == UPDATE_OP:
            if rkey not in by_rkey:
                raise ValueError(f"update of missing rkey {rkey}")
            by_rkey[rkey] = PdsRecord(rkey=rkey, value=dict(write["value"]))
        elif op == DELETE_OP:
            if rkey not in by_rkey:
                raise ValueError(f"delete of missing rkey {rkey}")
            del by_rkey[rkey]
        else:
            raise ValueError(f"unknown write {op}")
    pointers = dict(plan.pointer_updates())
    unsets = set(plan.pointer_unsets())
    new_moods = []
    for mood in moods:
        if mood.id in pointers:
            mood = replace(mood, rkey=pointers[mood.id])
        elif mood.id in unsets:
            mood = replace(mood, rkey=None)
        new_moods.append(mood)
    return new_moods, sorted(by_rkey.values(), key=lambda r: r.rkey)
