"""A mood as the `computer.aesthetic.mood` record written for it (docs/interface.md "Words": valid mood).

`build_record(mood)` gives the record, or `Invalid(reason)` saying why the mood can never get one.
A mood is valid when:

- `_id` is an ObjectId (24 lowercase hex characters, as `str(ObjectId)` gives);
- the text is a string, non-empty after trimming whitespace, encodable as UTF-8 (no lone
  surrogate) and within the lexicon's maxLength (5000 UTF-8 bytes);
- `when` is a date from 1970-01-01T00:00:00.000Z up to 2255-06-05T23:47:34.739Z, the last
  millisecond whose record key still fits a TID's 53 bits of microseconds. (docs/interface.md says
  "up to 2255"; dates later in 2255, and year 2256 on, cannot be given a TID.) A naive datetime
  is UTC; an aware one is converted to UTC. A `bson.datetime_ms.DatetimeMS` (what pymongo's
  DATETIME_AUTO gives for dates Python cannot represent) is reported, not a crash;
- and the record built from it passes lexicon validation (`moods_pipeline.atproto.lexicon`).

NUL characters (U+0000) and other control characters are allowed: the lexicon and the atproto
data model allow them, JSON and DAG-CBOR carry them, and the record's text must equal Mongo's
for the audit to call it synced. The reference PDS (the version in pds/) stores and returns
"a\x00b" and "\x00" unchanged (checked by hand against the local stack). Refusing them would
leave such a mood unsynced forever; a PDS that refused one would show up as a failed write with
its reason, not as silent data loss.

Reasons name the field and the rule and never contain the mood text (docs/interface.md "Privacy").

`expected_cid(mood)` gives the CID of that record (`atproto.cid.record_cid`: CIDv1, dag-cbor,
sha-256 of its canonical DAG-CBOR bytes), which the PDS reports for the record it stores; the
published vector is `moods_pipeline_tests/atproto/cid_vectors.json`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from bson import ObjectId
from bson.datetime_ms import DatetimeMS

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto import tid
from moods_pipeline.atproto.cid import record_cid
from moods_pipeline.atproto.lexicon import Lexicon, get_lexicon, validate_record
from moods_pipeline.model import Mood, iso_when

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MIN_WHEN = EPOCH
MAX_WHEN = EPOCH + timedelta(milliseconds=tid.MAX_WHEN_MS)  # 2255-06-05T23:47:34.739Z
_MS = timedelta(milliseconds=1)
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Invalid:
    """Why a mood cannot get a record: names the field and the rule, never the text."""

    reason: str


@functools.lru_cache(maxsize=1)
def mood_lexicon() -> Lexicon:
    """The repository's `computer.aesthetic.mood` lexicon, loaded and checked once."""
    return get_lexicon(MOOD_COLLECTION)


def max_mood_bytes() -> int:
    return mood_lexicon().main["record"]["properties"]["mood"]["maxLength"]


def _iso(dt: datetime) -> str:
    """Millisecond ISO form for messages; works for any year (strftime does not pad < 1000)."""
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
        f".{dt.microsecond // 1000:03d}Z"
    )


def _as_utc(when: datetime) -> datetime:
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def _type_name(value: object) -> str:
    return type(value).__name__


def _id_problem(mood_id: Any) -> str | None:
    if not isinstance(mood_id, str) or len(mood_id) != 24 or not set(mood_id) <= _HEX:
        return "_id is not an ObjectId (24 lowercase hex characters)"
    return None


def _text_problem(text: Any) -> str | None:
    if text is None:
        return "mood is missing"
    if not isinstance(text, str):
        return f"mood is not a string ({_type_name(text)})"
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # only lone surrogates fail to encode
        code = ord(text[exc.start])
        return f"mood contains a lone surrogate (U+{code:04X} at index {exc.start:,}); it cannot be encoded as UTF-8"
    # Whitespace as Python's str.isspace sees it, plus U+FEFF, which JavaScript's trim() removes.
    if not text.replace("\ufeff", "").strip():
        return "mood is empty after trimming whitespace" if text else "mood is empty"
    limit = max_mood_bytes()
    if size > limit:
        return f"mood is {size:,} UTF-8 bytes; the lexicon allows {limit:,}"
    return None


def _when_ms(when: Any) -> tuple[int | None, str | None]:
    """(milliseconds since the epoch, None), or (None, the problem)."""
    if when is None:
        return None, "when is missing"
    if isinstance(when, DatetimeMS):
        ms = int(when)
        side = "before 1970" if ms < 0 else f"after {_iso(MAX_WHEN)}"
        return None, f"when is {ms:,} ms from 1970-01-01, {side} (outside the dates Python can represent)"
    if not isinstance(when, datetime):
        kind = "a date without a time" if isinstance(when, date) else _type_name(when)
        return None, f"when is not a datetime ({kind})"
    utc = _as_utc(when)
    ms = (utc - EPOCH) // _MS
    if ms < 0:
        return None, f"when {_iso(utc)} is before 1970"
    if ms > tid.MAX_WHEN_MS:
        return None, f"when {_iso(utc)} is after {_iso(MAX_WHEN)}, the last time a record key (TID) can hold"
    return ms, None


def build_record(mood: Mood) -> dict | Invalid:
    """The lexicon record for `mood`, or Invalid with every reason it cannot have one."""
    problems = []
    mood_id = mood.id
    if isinstance(mood_id, ObjectId):  # tolerated, though Mood.id is documented as the hex string
        mood_id = str(mood_id)
    problem = _id_problem(mood_id)
    if problem:
        problems.append(problem)
    problem = _text_problem(mood.text)
    if problem:
        problems.append(problem)
    ms, problem = _when_ms(mood.when)
    if problem:
        problems.append(problem)
    if problems:
        return Invalid("; ".join(problems))
    record = {
        "$type": MOOD_COLLECTION,
        "mood": mood.text,
        "when": iso_when(_as_utc(mood.when)),
        "ref": mood_id,
    }
    errors = validate_record(mood_lexicon(), record)
    if errors:  # only if the lexicon gained a rule the checks above do not know
        return Invalid("record fails the lexicon: " + "; ".join(str(e) for e in errors))
    return record


def expected_cid(mood: Mood) -> str | Invalid:
    """The CID of the record ``build_record`` gives for ``mood`` (what the PDS must report for
    it), or Invalid with the reasons the mood has no record."""
    built = build_record(mood)
    if isinstance(built, Invalid):
        return built
    return record_cid(built)


def mood_when_ms(mood: Mood) -> int:
    """The mood's `when` in milliseconds since the epoch (the TID's input); ValueError if unusable."""
    ms, problem = _when_ms(mood.when)
    if problem:
        raise ValueError(f"mood {mood.id}: {problem}")
    return ms  # type: ignore[return-value]


def record_key_for(mood: Mood) -> str:
    """The deterministic TID of a valid mood, before collision resolution (docs/interface.md
    "Record keys"). For a user's moods use `rkeys_for`, which resolves collisions.
    ValueError (with the reason) for an invalid mood."""
    built = build_record(mood)
    if isinstance(built, Invalid):
        raise ValueError(f"mood {mood.id} is invalid: {built.reason}")
    return tid.mood_tid(built["ref"], mood_when_ms(mood))


def rkeys_for(moods: Iterable[Mood]) -> dict[str, str]:
    """{mood id: rkey} for one user's valid moods, collisions resolved (`tid.assign_rkeys`);
    invalid moods are left out. Pass all of the user's moods, live and nuked, so that nuking
    or restoring one never shifts another's rkey."""
    pairs = []
    for mood in moods:
        built = build_record(mood)
        if not isinstance(built, Invalid):
            pairs.append((built["ref"], mood_when_ms(mood)))
    return tid.assign_rkeys(pairs)
