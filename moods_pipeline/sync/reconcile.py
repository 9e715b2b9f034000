"""The audit: docs/interface.md's statuses for one user's moods and records, as a pandas DataFrame.

Pure: no I/O, no Dagster. ``reconcile`` compares what Mongo says (the user's moods, nuked ones
included, each with its ``atproto.rkey`` pointer) with the records of ``computer.aesthetic.mood``
in the user's repo; ``summarize`` folds one or many users' frames into the audit's counts.

Columns (fixed; one row per mood, then one row per record that is not a mood's chosen record)
-------------------------------------------------------------------------------------------
``did``, ``sub``, ``handle``  the user (``handle`` bare, no "@"; ``did`` None without account)
``kind``       ``"mood"`` (a Mongo mood) or ``"record"`` (a duplicate or orphan record)
``mood_id``    the mood's ObjectId hex; for a duplicate the mood it duplicates; None for orphans
``rkey``       the mood's chosen record (None if it has none); for record rows that record
``pointer``    Mongo's ``atproto.rkey`` of the mood (None if unset); None for record rows
``status``     one of ``STATUSES``
``issues``     every status that applies to the row, comma separated, in precedence order;
               the first is ``status`` (a stale pointer can hide a content mismatch, and
               repair must fix both)
``problem``    bool: ``status`` is in ``PROBLEM_STATUSES(nuke_policy, rewrite_legacy)``
``detail``     what a person can act on: ids, rkeys, which field differs and by how much
               ("" when there is nothing to say). Never the mood text, never record contents
               (an orphan's unknown ``ref`` is echoed only if it has the shape of an ObjectId).
``mood_len``   UTF-8 byte length of the text (mood rows: Mongo's text; record rows: the
               record's ``mood``), None when that is not a string
``mood_hash``  first 8 hex digits of SHA-256 of those UTF-8 bytes, None likewise (compare a
               record with its mood without reading either)
``expected_cid`` the CID of the record this project writes for the row's mood
               (``mood_record.expected_cid``) when that mood is live and valid (mood rows and
               its duplicate rows); None otherwise (invalid or nuked moods, orphans)
``cid``        the CID the PDS reports for the row's record (``rkey``): None when the row has no
               record or the PDS gave no CID
String columns hold Python ``str`` or None; ``mood_len`` holds Python ``int`` or None (object
dtype); ``problem`` is ``bool``. Mood rows come in the order the moods were given; record rows
follow, by rkey.

Matching records to moods
-------------------------
A record *carries* a mood's id when its ``ref`` (or, failing a non-empty string ``ref``, the
legacy ``mongoId``) equals the mood's ObjectId hex exactly (``PdsRecord.mood_ref``). Only
records carrying a mood's id are that mood's: the pointer ("rkey second") only chooses among
them. A record at the pointer that carries no id, or an id that is no mood of the user, is not
the mood's record (the invariant wants one carrying its ``ref``): the mood is
``missing_on_pds`` and that record an ``orphan``, as the backfill planner sees it too.

The chosen record of a mood: the record the pointer names if it carries the mood's id; else
the record carrying the id with the smallest rkey; else none.
Every other record carrying the mood's id is a ``duplicate`` row (also for invalid and nuked
moods: a further copy is never history). Every record matched to no mood is an ``orphan`` row
(a record naming a *nuked* mood of the user is that mood's record, not an orphan).

Rules for a mood row
--------------------
* nuked (``deleted: true``): ``nuked_on_pds`` if it has a chosen record, else ``nuked``.
  Validity and the pointer are not judged. A problem only when ``nuke_policy == "delete"``.
* live, ``build_record`` gives ``Invalid``: ``invalid`` with its reason (and its chosen
  record's rkey, if any). Not a problem; repair never touches the mood, its pointer or its
  chosen record (its further records are ``duplicate`` rows like any other).
* live and valid, the issues (status = the first in docs/interface.md's precedence
  ``invalid > missing_on_pds > stale_pointer > content_mismatch > pointer_missing >
  legacy_field > synced``):

  - ``missing_on_pds``: no chosen record. Nothing else is judged (a pointer it may have is
    named in ``detail``: repair creates the record and then writes the pointer).
  - ``stale_pointer``: the pointer is set and is not the chosen record's rkey: it names an
    rkey that does not exist, a record carrying another mood's id (live or nuked), or a record
    that is an orphan. Only the pointer is wrong; that other record is never rewritten.
  - ``content_mismatch``: the chosen record lacks ``mood`` or ``when`` (``"text"`` instead of
    ``mood`` is said so), has them with the wrong type, an unparseable ``when``, a ``mood``
    different from ``build_record``'s, a ``when`` more than ``when_tolerance_ms`` from it
    (exactly the tolerance is within), a ``$type`` other than ``computer.aesthetic.mood``
    (a missing ``$type`` is not judged). Extra fields are not judged. ``when`` values are compared as instants: ISO 8601 with ``T``, ``t`` or a
    space, seconds and fraction (any number of digits) optional, ``Z``/``z`` or ``+HH:MM``,
    ``+HHMM``, ``+HH``; a ``when`` without a timezone is no instant and counts as a mismatch.
  - ``pointer_missing``: the pointer is unset (None or "").
  - ``legacy_field``: the chosen record carries the id in ``mongoId`` and not in ``ref``.
    A problem only when ``rewrite_legacy``.
  - ``synced``: none of the above.

  The CID comes first: a chosen record whose CID equals ``expected_cid`` *is* the expected
  record (same canonical bytes), so its fields are not compared (no ``content_mismatch``, no
  ``legacy_field``; the pointer is still judged). Only where the CIDs differ (or the PDS gave
  no CID) are the fields compared, as above; a record that passes them although its CID
  differs (e.g. one the application wrote, with another ``when`` form or a ``when`` a few
  milliseconds off, or with ``mongoId``) keeps the status the fields give, and ``detail`` says
  that the CID differs and why ("record CID differs from the expected: ...").

``sync_rate_pct`` (``summarize``): 100 x (``synced`` + ``legacy_field``) / valid live moods,
where valid live moods = mood rows that are neither nuked status nor ``invalid``; floored to two
decimals so that anything short of all never reads 100; 100.0 when there are no valid live moods.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Any, Iterable

import pandas as pd

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.cid import record_cid
from moods_pipeline.model import RECONCILIATION_COLUMNS, Mood, PdsRecord, UserAccount
from moods_pipeline.sync.mood_record import Invalid, build_record

# ---------------------------------------------------------------------------------------------
# Names

INVALID = "invalid"
MISSING_ON_PDS = "missing_on_pds"
STALE_POINTER = "stale_pointer"
CONTENT_MISMATCH = "content_mismatch"
POINTER_MISSING = "pointer_missing"
LEGACY_FIELD = "legacy_field"
SYNCED = "synced"
DUPLICATE = "duplicate"
ORPHAN = "orphan"
NUKED_ON_PDS = "nuked_on_pds"
NUKED = "nuked"

STATUSES: tuple[str, ...] = (
    INVALID,
    MISSING_ON_PDS,
    STALE_POINTER,
    CONTENT_MISMATCH,
    POINTER_MISSING,
    LEGACY_FIELD,
    SYNCED,
    DUPLICATE,
    ORPHAN,
    NUKED_ON_PDS,
    NUKED,
)
# Precedence among the statuses of a live valid mood (first wins).
MOOD_PRECEDENCE: tuple[str, ...] = STATUSES[:7]

NUKE_POLICIES = ("keep", "delete")

COLUMNS = RECONCILIATION_COLUMNS

_ALWAYS_PROBLEMS = frozenset({MISSING_ON_PDS, STALE_POINTER, CONTENT_MISMATCH, POINTER_MISSING, DUPLICATE, ORPHAN})


def check_nuke_policy(nuke_policy: str) -> str:
    if nuke_policy not in NUKE_POLICIES:
        raise ValueError(f"nuke_policy must be one of {', '.join(NUKE_POLICIES)}, not {nuke_policy!r}")
    return nuke_policy


def PROBLEM_STATUSES(nuke_policy: str = "keep", rewrite_legacy: bool = False) -> frozenset[str]:  # noqa: N802
    """The statuses that count as problems (checks fail on them, repair fixes them)."""
    check_nuke_policy(nuke_policy)
    extra = set()
    if nuke_policy == "delete":
        extra.add(NUKED_ON_PDS)
    if rewrite_legacy:
        extra.add(LEGACY_FIELD)
    return _ALWAYS_PROBLEMS | extra


# ---------------------------------------------------------------------------------------------
# `when` as an instant

_WHEN_RE = re.compile(
    r"\s*(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"\s*(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?\s*"
)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def parse_when_us(value: Any) -> int | str:
    """Microseconds since the Unix epoch of an ISO 8601 datetime string, or why it is none.

    Returns an ``int`` for a parseable datetime with a timezone, else a short reason (a
    ``str``) that never repeats the value.
    """
    if not isinstance(value, str):
        return f"is not a string ({type(value).__name__})"
    match = _WHEN_RE.fullmatch(value)
    if match is None:
        return "is not an ISO 8601 datetime"
    y, mo, d, h, mi, s, frac, zulu, sign, oh, om = match.groups()
    if not zulu and not sign:
        return "has no timezone"
    try:
        days = date(int(y), int(mo), int(d)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return "is not a valid date"
    hour, minute, second = int(h), int(mi), int(s or 0)
    offset_h, offset_m = int(oh or 0), int(om or 0)
    if hour > 23 or minute > 59 or second > 60 or offset_h > 23 or offset_m > 59:
        return "is not a valid time"
    micros = int((frac or "0")[:6].ljust(6, "0"))
    total_s = days * 86400 + hour * 3600 + minute * 60 + second
    if sign:
        offset_s = offset_h * 3600 + offset_m * 60
        total_s += -offset_s if sign == "+" else offset_s
    return total_s * 1_000_000 + micros


def _ms_text(micros: int) -> str:
    if micros % 1000 == 0:
        return f"{micros // 1000:,}"
    return f"{micros / 1000:,.3f}"


# ---------------------------------------------------------------------------------------------
# The analysis


@dataclass(frozen=True)
class RowFacts:
    """One row of the reconciliation before it becomes a DataFrame row."""

    kind: str  # "mood" | "record"
    mood_id: str | None
    rkey: str | None
    pointer: str | None
    issues: tuple[str, ...]
    detail: str
    text: Any  # only for mood_len / mood_hash; never leaves this module as text
    expected_cid: str | None = None
    cid: str | None = None

    @property
    def status(self) -> str:
        return self.issues[0]


def _text_facts(text: Any) -> tuple[int | None, str | None]:
    if not isinstance(text, str):
        return None, None
    raw = text.encode("utf-8", "surrogatepass")
    return len(raw), hashlib.sha256(raw).hexdigest()[:8]


def _describe_id_holder(record: PdsRecord, mood_ids: dict[str, Mood]) -> str:
    ref = record.mood_ref
    if ref is None:
        return "a record that carries no mood id"
    mood = mood_ids.get(ref)
    if mood is None:
        return f"a record for id {_short(ref)}, which is no mood of this user"
    return f"mood {ref}'s record" + (" (nuked)" if mood.deleted else "")


_OBJECT_ID_RE = re.compile(r"[0-9a-fA-F]{24}")


def _short(value: str) -> str:
    """An id as found in a record: echoed only if it looks like an ObjectId (a record's fields
    are not ours to trust: one could hold text)."""
    if _OBJECT_ID_RE.fullmatch(value):
        return repr(value)
    return f"(not an ObjectId, {len(value.encode('utf-8', 'surrogatepass')):,} bytes)"


def content_problems(value: dict, expected: dict, when_tolerance_ms: int) -> list[str]:
    """Why the record ``value`` is not the record ``expected`` (``build_record``'s), or []."""
    problems: list[str] = []
    rtype = value.get("$type")
    if rtype is not None and rtype != MOOD_COLLECTION:
        problems.append(f"record $type is not {MOOD_COLLECTION}")
    if "mood" not in value:
        problems.append("record lacks mood (has text)" if "text" in value else "record lacks mood")
    else:
        got = value["mood"]
        if not isinstance(got, str):
            problems.append(f"record mood is not a string ({type(got).__name__})")
        elif got != expected["mood"]:
            got_len, _ = _text_facts(got)
            want_len, _ = _text_facts(expected["mood"])
            if got_len == want_len:
                problems.append(f"mood differs (both {got_len:,} bytes)")
            else:
                problems.append(f"mood differs (record {got_len:,} bytes, Mongo {want_len:,} bytes)")
    if "when" not in value:
        problems.append("record lacks when")
    else:
        got_us = parse_when_us(value["when"])
        want_us = parse_when_us(expected["when"])
        if isinstance(got_us, str):
            problems.append(f"record when {got_us}")
        elif isinstance(want_us, int):
            drift = abs(got_us - want_us)
            if drift > when_tolerance_ms * 1000:
                later = "later" if got_us > want_us else "earlier"
                problems.append(
                    f"when differs by {_ms_text(drift)} ms (tolerance {when_tolerance_ms:,}; record {later})"
                )
    return problems


_FIELD_NAME_RE = re.compile(r"[A-Za-z$][A-Za-z0-9_$.-]{0,39}")


def _field_names(names: Iterable[str]) -> str:
    """Field names of a record, echoed only when they look like field names (never text)."""
    names = sorted(names)
    shown = [n for n in names if _FIELD_NAME_RE.fullmatch(n)]
    other = len(names) - len(shown)
    return ", ".join(shown + ([f"{other} other"] if other else []))


def cid_difference(value: dict, expected: dict) -> str:
    """Why a record whose fields pass the comparison has another CID than ``expected`` (the
    record ``build_record`` gives): which fields are written differently. Never the text."""
    why: list[str] = []
    if "$type" not in value:
        why.append("record lacks $type")
    if "ref" not in value and "mongoId" in value:
        why.append("record carries mongoId instead of ref")
    extra = set(value) - set(expected) - {"mongoId"}
    if extra:
        why.append(f"record has further field(s) {_field_names(extra)}")
    got_when, want_when = value.get("when"), expected["when"]
    if got_when != want_when:
        got_us, want_us = parse_when_us(got_when), parse_when_us(want_when)
        if got_us == want_us:
            why.append("record when is the same instant written differently")
        elif isinstance(got_us, int) and isinstance(want_us, int):
            later = "later" if got_us > want_us else "earlier"
            why.append(f"record when is {_ms_text(abs(got_us - want_us))} ms {later} (within tolerance)")
        else:
            why.append("record when is written differently")
    if not why:
        why.append("the fields read the same, yet the stored encoding differs")
    return "record CID differs from the expected: " + "; ".join(why)


def analyze(
    moods: Iterable[Mood],
    records: Iterable[PdsRecord],
    *,
    when_tolerance_ms: int = 1000,
) -> list[RowFacts]:
    """The reconciliation as plain rows (``reconcile`` without the DataFrame)."""
    moods = list(moods)
    records = sorted(records, key=lambda r: r.rkey)
    if when_tolerance_ms < 0:
        raise ValueError("when_tolerance_ms must be >= 0")

    by_rkey: dict[str, PdsRecord] = {}
    for record in records:
        if record.rkey in by_rkey:
            raise ValueError(f"records hold rkey {record.rkey} twice")
        by_rkey[record.rkey] = record
    by_id: dict[str, Mood] = {}
    for mood in moods:
        if mood.id in by_id:
            raise ValueError(f"moods hold id {mood.id} twice")
        by_id[mood.id] = mood

    carrying: dict[str, list[PdsRecord]] = defaultdict(list)  # in rkey order
    for record in records:
        ref = record.mood_ref
        if ref is not None and ref in by_id:
            carrying[ref].append(record)

    rows: list[RowFacts] = []
    extra_rows: list[RowFacts] = []
    matched_rkeys: set[str] = set()

    for mood in moods:
        pointer = mood.rkey or None
        own = carrying.get(mood.id, [])
        chosen: PdsRecord | None = None
        if own:
            pointed = by_rkey.get(pointer) if pointer else None
            chosen = pointed if (pointed is not None and pointed.mood_ref == mood.id) else own[0]
        # The record this project writes for a live mood, and its CID (None for a nuked mood,
        # which is not judged, and for an invalid one, which has none).
        built = build_record(mood) if not mood.deleted else None
        expected = record_cid(built) if isinstance(built, dict) else None
        for record in own:
            matched_rkeys.add(record.rkey)
            if record is not chosen:
                extra_rows.append(
                    RowFacts(
                        kind="record",
                        mood_id=mood.id,
                        rkey=record.rkey,
                        pointer=None,
                        issues=(DUPLICATE,),
                        detail=f"further record carrying mood {mood.id}; the mood's record is rkey {chosen.rkey}",
                        text=record.value.get("mood"),
                        expected_cid=expected,
                        cid=record.cid,
                    )
                )
        duplicates_note = f"; {len(own) - 1} duplicate(s)" if len(own) > 1 else ""
        chosen_rkey = chosen.rkey if chosen is not None else None
        chosen_cid = chosen.cid if chosen is not None else None

        if mood.deleted:
            if chosen is not None:
                issues, detail = (NUKED_ON_PDS,), f"mood nuked; its record rkey {chosen.rkey} remains{duplicates_note}"
            else:
                issues, detail = (NUKED,), "mood nuked; no record"
            rows.append(RowFacts("mood", mood.id, chosen_rkey, pointer, issues, detail, mood.text, None, chosen_cid))
            continue

        if isinstance(built, Invalid):
            detail = built.reason
            if chosen is not None:
                detail += f"; its record rkey {chosen.rkey} is left alone{duplicates_note}"
            rows.append(RowFacts("mood", mood.id, chosen_rkey, pointer, (INVALID,), detail, mood.text, None, chosen_cid))
            continue

        if chosen is None:
            detail = f"no record carries mood id {mood.id}"
            if pointer:
                held = by_rkey.get(pointer)
                if held is None:
                    detail += f"; pointer names rkey {pointer}, which does not exist"
                else:
                    detail += f"; pointer names rkey {pointer}, which holds {_describe_id_holder(held, by_id)}"
            rows.append(RowFacts("mood", mood.id, None, pointer, (MISSING_ON_PDS,), detail, mood.text, expected))
            continue

        found: dict[str, str] = {}
        if pointer and pointer != chosen.rkey:
            held = by_rkey.get(pointer)
            if held is None:
                what = "which does not exist"
            else:
                what = f"which holds {_describe_id_holder(held, by_id)}"
            found[STALE_POINTER] = f"pointer names rkey {pointer}, {what}; the mood's record is rkey {chosen.rkey}"
        cid_note = ""
        # The same CID is the same canonical bytes: the record is the expected one, field for field.
        if chosen_cid != expected:
            mismatch = content_problems(chosen.value, built, when_tolerance_ms)
            if mismatch:
                found[CONTENT_MISMATCH] = f"record rkey {chosen.rkey}: " + "; ".join(mismatch)
            elif chosen_cid is not None:
                cid_note = cid_difference(chosen.value, built)
            if chosen.value.get("ref") != mood.id:
                found[LEGACY_FIELD] = f"record rkey {chosen.rkey} carries mongoId instead of ref"
        if not pointer:
            found[POINTER_MISSING] = f"Mongo has no atproto.rkey; the mood's record is rkey {chosen.rkey}"
        if not found:
            issues, detail = (SYNCED,), ""
        else:
            issues = tuple(s for s in MOOD_PRECEDENCE if s in found)
            detail = "; also: ".join(found[s] for s in issues)
        if cid_note:
            detail = f"{detail}; {cid_note}" if detail else cid_note
        rows.append(RowFacts("mood", mood.id, chosen.rkey, pointer, issues, detail + duplicates_note, mood.text,
                             expected, chosen_cid))

    pointed_by: dict[str, list[str]] = defaultdict(list)
    for mood in moods:
        if mood.rkey:
            pointed_by[mood.rkey].append(mood.id)
    for record in records:
        if record.rkey in matched_rkeys:
            continue
        ref = record.mood_ref
        if ref is None:
            detail = "record carries no mood id (neither ref nor mongoId)"
        else:
            field_name = "ref" if record.value.get("ref") == ref else "mongoId"
            detail = f"record {field_name} {_short(ref)} names no mood of this user"
        if record.rkey in pointed_by:
            detail += "; named by the pointer of mood " + ", ".join(pointed_by[record.rkey])
        extra_rows.append(RowFacts("record", None, record.rkey, None, (ORPHAN,), detail, record.value.get("mood"),
                                   None, record.cid))

    extra_rows.sort(key=lambda row: row.rkey)
    return rows + extra_rows


def reconcile(
    user: UserAccount,
    moods: list[Mood],
    records: list[PdsRecord],
    *,
    nuke_policy: str = "keep",
    when_tolerance_ms: int = 1000,
    rewrite_legacy: bool = False,
) -> pd.DataFrame:
    """One user's audit: one row per mood (nuked included) and per non-chosen record.

    See the module docstring for the columns and the rules. ``df.attrs`` records
    ``when_tolerance_ms``, ``nuke_policy`` and ``rewrite_legacy``.
    """
    check_nuke_policy(nuke_policy)
    facts = analyze(moods, records, when_tolerance_ms=when_tolerance_ms)
    problems = PROBLEM_STATUSES(nuke_policy, rewrite_legacy)
    n = len(facts)
    lens: list[int | None] = []
    hashes: list[str | None] = []
    for row in facts:
        length, digest = _text_facts(row.text)
        lens.append(length)
        hashes.append(digest)
    data = {
        "did": [user.did] * n,
        "sub": [user.sub] * n,
        "handle": [user.handle] * n,
        "kind": [row.kind for row in facts],
        "mood_id": [row.mood_id for row in facts],
        "rkey": [row.rkey for row in facts],
        "pointer": [row.pointer for row in facts],
        "status": [row.status for row in facts],
        "issues": [",".join(row.issues) for row in facts],
        "problem": [row.status in problems for row in facts],
        "detail": [row.detail for row in facts],
        "mood_len": lens,
        "mood_hash": hashes,
        "expected_cid": [row.expected_cid for row in facts],
        "cid": [row.cid for row in facts],
    }
    df = pd.DataFrame(
        {c: pd.Series(data[c], dtype=bool if c == "problem" else object) for c in COLUMNS},
        columns=list(COLUMNS),
    )
    df.attrs.update(when_tolerance_ms=when_tolerance_ms, nuke_policy=nuke_policy, rewrite_legacy=rewrite_legacy)
    return df


def empty_frame() -> pd.DataFrame:
    """A reconciliation with no rows and the fixed columns (e.g. to concatenate onto)."""
    return pd.DataFrame({c: pd.Series([], dtype=bool if c == "problem" else object) for c in COLUMNS})


def summarize(df: pd.DataFrame) -> dict:
    """Counts over one or many users' reconciliations.

    Keys: ``users`` (distinct subs), ``moods`` (mood rows), ``moods_live`` (mood rows not
    nuked), ``moods_valid_live`` (``moods_live`` minus ``invalid``), ``moods_nuked``,
    ``records_extra`` (duplicate and orphan rows), ``by_status`` (every status in
    ``STATUSES``, zeros included), ``problems`` (rows whose ``problem`` is true) and
    ``sync_rate_pct`` (see the module docstring).
    """
    counts = df["status"].value_counts() if len(df) else {}
    by_status = {status: int(counts.get(status, 0)) for status in STATUSES}
    moods = int((df["kind"] == "mood").sum()) if len(df) else 0
    nuked = by_status[NUKED] + by_status[NUKED_ON_PDS]
    live = moods - nuked
    valid_live = live - by_status[INVALID]
    ok = by_status[SYNCED] + by_status[LEGACY_FIELD]
    rate = math.floor(ok * 10000 / valid_live) / 100 if valid_live else 100.0
    return {
        "users": int(df["sub"].nunique()) if len(df) else 0,
        "moods": moods,
        "moods_live": live,
        "moods_valid_live": valid_live,
        "moods_nuked": nuked,
        "records_extra": by_status[DUPLICATE] + by_status[ORPHAN],
        "by_status": by_status,
        "problems": int(df["problem"].sum()) if len(df) else 0,
        "sync_rate_pct": rate,
    }
