"""Identifiers and string formats of the atproto data model, and grapheme counting.

DIDs, NSIDs, record keys, handles, AT-URIs, CIDs, URIs, language tags and datetimes, each by
the atproto spec's syntax (and, for datetimes, as the reference implementation checks them);
`format_ok` answers for any Lexicon string `format`. Grapheme clusters are counted here
because `maxGraphemes`/`minGraphemes` need them. Nothing here knows lexicon documents: this
module imports nothing from the project.
"""

from __future__ import annotations

import re

import regex as _regex
from atproto_core.nsid import validate_nsid

# The string formats a Lexicon document may name (documents naming another are refused).
STRING_FORMATS = frozenset(
    {"at-identifier", "at-uri", "cid", "datetime", "did", "handle", "nsid", "tid", "record-key", "uri", "language"}
)

_RKEY_RE = re.compile(r"[A-Za-z0-9._:~-]{1,512}")
_TID_SYNTAX_RE = re.compile(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}")
_DID_RE = re.compile(r"did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]")
_HANDLE_RE = re.compile(
    r"([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
)
_CID_RE = re.compile(r"[A-Za-z0-9+]{8,}")
_URI_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:[^\s]+")
# BCP 47 (RFC 5646) well-formed tags; the primary language subtag in lowercase, as the
# reference implementation requires.
_LANGUAGE_RE = re.compile(
    r"(?:[a-z]{2,3}(?:-[A-Za-z]{3}){0,3}|[a-z]{5,8})"  # language, extlang
    r"(?:-[A-Za-z]{4})?"  # script
    r"(?:-(?:[A-Za-z]{2}|[0-9]{3}))?"  # region
    r"(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*"  # variants
    r"(?:-[0-9A-WY-Za-wy-z](?:-[A-Za-z0-9]{2,8})+)*"  # extensions
    r"(?:-[xX](?:-[A-Za-z0-9]{1,8})+)?"  # private use
    r"|[xX](?:-[A-Za-z0-9]{1,8})+"
)
_GRANDFATHERED_LANGUAGES = frozenset(
    "en-gb-oed i-ami i-bnn i-default i-enochian i-hak i-klingon i-lux i-mingo i-navajo i-pwn "
    "i-tao i-tay i-tsu sgn-be-fr sgn-be-nl sgn-ch-de art-lojban cel-gaulish no-bok no-nyn "
    "zh-guoyu zh-hakka zh-min zh-min-nan zh-xiang".split()
)
_DATETIME_RE = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"T(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.[0-9]+)?"
    r"(?:Z|(?P<sign>[+-])(?P<tzh>[0-9]{2}):(?P<tzm>[0-9]{2}))"
)
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def is_did(s: object) -> bool:
    """Whether ``s`` is a DID by the atproto syntax (did:<method>:<identifier>)."""
    return isinstance(s, str) and _is_did(s)


def is_nsid(s: object) -> bool:
    return isinstance(s, str) and s.isascii() and "\n" not in s and validate_nsid(s, soft_fail=True)


def is_record_key(s: object) -> bool:
    return isinstance(s, str) and s not in (".", "..") and _RKEY_RE.fullmatch(s) is not None


def _is_did(s: str) -> bool:
    if len(s) > 2048 or _DID_RE.fullmatch(s) is None:
        return False
    return all(re.fullmatch(r"[0-9A-Fa-f]{2}", part[:2]) for part in s.split("%")[1:])


def _is_handle(s: str) -> bool:
    return len(s) <= 253 and _HANDLE_RE.fullmatch(s) is not None


def _is_language(s: str) -> bool:
    if s.lower() in _GRANDFATHERED_LANGUAGES:
        return True
    if _LANGUAGE_RE.fullmatch(s) is None:
        return False
    subtags = s.lower().split("-")
    if "x" in subtags:
        subtags = subtags[: subtags.index("x")]
    singletons = [t for t in subtags[1:] if len(t) == 1]
    first_singleton = next((i for i, t in enumerate(subtags) if i and len(t) == 1), len(subtags))
    variants = [t for t in subtags[1:first_singleton] if len(t) >= 5 or len(t) == 4 and t[0].isdigit()]
    # RFC 5646 2.2.5 and 2.2.6: no repeated variant, no repeated extension singleton.
    return len(set(singletons)) == len(singletons) and len(set(variants)) == len(variants)


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def datetime_problem(s: str) -> str | None:
    """Why `s` is not an atproto `datetime`, or None if it is one.

    Rules (atproto spec "datetime", as @atproto/syntax checks them): at most 64 characters;
    YYYY-MM-DDTHH:MM:SS with an uppercase T, whole seconds required, any fraction after a dot;
    a timezone, `Z` (uppercase) or +HH:MM/-HH:MM, and not -00:00; a real calendar date (no
    month 00 or 13, no April 31st, no February 29th outside leap years, no leap second); and a
    UTC instant between year 0000 and year 9999. One difference from @atproto/syntax, as the
    spec requires: impossible dates (2023-02-29, 1985-04-31) are rejected, where JavaScript's
    Date rolls them over and the reference implementation accepts them.
    """
    if len(s) > 64:
        return "longer than 64 characters"
    m = _DATETIME_RE.fullmatch(s)
    if m is None:
        return "not YYYY-MM-DDTHH:MM:SS[.fraction] with an uppercase T and a Z or ±HH:MM timezone"
    if s.endswith("-00:00"):
        return "-00:00 is not allowed as a timezone (use Z)"
    year, month, day = int(m["year"]), int(m["month"]), int(m["day"])
    hour, minute, second = int(m["hour"]), int(m["minute"]), int(m["second"])
    if not 1 <= month <= 12:
        return f"month {month:02d} does not exist"
    days = 29 if month == 2 and _is_leap(year) else _DAYS_IN_MONTH[month - 1]
    if not 1 <= day <= days:
        return f"day {day:02d} does not exist in month {month:02d} of year {year:04d}"
    if hour > 23 or minute > 59 or second > 59:
        return "time of day out of range (00:00:00 to 23:59:59; no leap seconds)"
    offset = 0
    if m["sign"]:
        tzh, tzm = int(m["tzh"]), int(m["tzm"])
        if tzh > 23 or tzm > 59:
            return "timezone offset out of range"
        offset = (tzh * 60 + tzm) * (1 if m["sign"] == "+" else -1)
    if offset:
        # The UTC instant must stay within years 0000-9999 (it would not print as YYYY otherwise).
        local_minutes = hour * 60 + minute
        if year == 0 and month == 1 and day == 1 and local_minutes - offset < 0:
            return "the UTC time falls before year 0000"
        if year == 9999 and month == 12 and day == 31 and local_minutes - offset >= 24 * 60:
            return "the UTC time falls after year 9999"
    return None


def is_datetime(s: object) -> bool:
    return isinstance(s, str) and datetime_problem(s) is None


def format_ok(fmt: str, s: str) -> bool:
    """Whether `s` is valid for the Lexicon string `format` `fmt` (one of STRING_FORMATS)."""
    if fmt == "datetime":
        return datetime_problem(s) is None
    if fmt == "did":
        return _is_did(s)
    if fmt == "handle":
        return _is_handle(s)
    if fmt == "at-identifier":
        return _is_did(s) if s.startswith("did:") else _is_handle(s)
    if fmt == "nsid":
        return is_nsid(s)
    if fmt == "tid":  # the spec's syntax (data validation is permissive; see tid.is_valid_tid)
        return _TID_SYNTAX_RE.fullmatch(s) is not None
    if fmt == "record-key":
        return is_record_key(s)
    if fmt == "cid":  # CIDv1 only: a 46-character base58 "Qm..." is a CIDv0
        return _CID_RE.fullmatch(s) is not None and not (len(s) == 46 and s.startswith("Qm"))
    if fmt == "uri":
        return len(s) < 8192 and _URI_RE.fullmatch(s) is not None
    if fmt == "language":
        return _is_language(s)
    if fmt == "at-uri":
        return _is_at_uri(s)
    raise AssertionError(f"unchecked format {fmt}")  # documents are checked before use


def is_cid_syntax(s: str) -> bool:
    """Whether `s` looks like a CID string (as a `$link` or blob `ref` must): the loose syntax
    check, which a CIDv0 also passes; the `cid` format additionally refuses CIDv0."""
    return _CID_RE.fullmatch(s) is not None


def _is_at_uri(s: str) -> bool:
    if len(s) >= 8192 or not s.startswith("at://") or "?" in s or "#" in s:
        return False
    parts = s[len("at://") :].split("/")
    if len(parts) > 3 or parts[-1] == "" and len(parts) > 1:
        return False
    authority = parts[0]
    if not (_is_did(authority) if authority.startswith("did:") else _is_handle(authority)):
        return False
    if len(parts) >= 2 and not is_nsid(parts[1]):
        return False
    return len(parts) < 3 or is_record_key(parts[2])


# --- grapheme clusters -----------------------------------------------------------------------


def count_graphemes(s: str) -> int:
    """Extended grapheme clusters (UAX #29) by `regex`'s ``\\X``, at its Unicode version (ZWJ
    sequences, flags, Indic conjuncts): the standard library has no grapheme segmentation."""
    return sum(1 for _ in _regex.finditer(r"\X", s))
