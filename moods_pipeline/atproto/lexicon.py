"""Lexicon documents: load and check them, and validate records against them.

Checking a document has two layers:

1. Structure, with the atproto SDK's own Lexicon models (`atproto_lexicon`, part of the pinned
   `atproto` package): strict pydantic models that reject unknown keys (a misspelt `maxLenght`),
   wrong JSON types, and unknown `type` values.
2. The language rules those models leave out (atproto spec "Lexicon", and the reference
   implementation's checks): `lexicon` is exactly 1, `id` is an NSID, primary types only as
   `main`, a record's `key` type and explicit `type: object`, `required`/`nullable` name
   declared properties, known string formats, min <= max, local refs resolve and point at
   allowed kinds of definition, no empty closed union, and no `number` type (the data model has
   no floats). `lexrpc` (PyPI) was considered and not used: its document checks are minimal,
   it stops at the first record error, and its error messages quote the value.

`validate_record` implements record validation per the spec: `$type`, required and nullable
fields, types, string lengths in UTF-8 bytes and in grapheme clusters, formats (datetime as
the reference implementation checks it), integer bounds, const/enum (knownValues is an open
set: never an error), refs, unions, arrays, blobs, bytes, cid-links and unknown. It returns
every problem found. Messages name the field path and the rule and never quote a string value
(mood text must not reach logs or metadata).
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import regex as _regex
from atproto_core.nsid import validate_nsid
from atproto_lexicon import models as lex_models
from atproto_lexicon.parser import lexicon_parse
from pydantic import ValidationError as PydanticValidationError

DEFAULT_LEXICON_DIR = Path(__file__).resolve().parents[2] / "lexicons"

PRIMARY_TYPES = frozenset({"record", "query", "procedure", "subscription", "permission-set"})
FIELD_TYPES = frozenset(
    {"boolean", "integer", "string", "bytes", "cid-link", "blob", "array", "object", "ref", "union", "unknown"}
)
# What may be a named definition under `defs` (sub-types, unknown, ref and union may not).
DEF_TYPES = PRIMARY_TYPES | frozenset(
    {"boolean", "integer", "string", "bytes", "cid-link", "blob", "array", "object", "token"}
)
STRING_FORMATS = frozenset(
    {"at-identifier", "at-uri", "cid", "datetime", "did", "handle", "nsid", "tid", "record-key", "uri", "language"}
)
PARAM_TYPES = frozenset({"boolean", "integer", "string", "unknown"})
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

# Top-level definitions of these types are valid Lexicon, but the SDK's document model only
# accepts them as properties: they are checked with the SDK's model for that type instead.
_PRIMITIVE_DEF_MODELS = {
    "boolean": lex_models.LexBoolean,
    "integer": lex_models.LexInteger,
    "bytes": lex_models.LexBytes,
    "cid-link": lex_models.LexCidLink,
}


class LexiconError(ValueError):
    """A lexicon document (or a set of them) that breaks the Lexicon language rules."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: " + "; ".join(self.problems))


@dataclass(frozen=True)
class ValidationError:
    """One way a record fails its lexicon. `path` is the field ("" for the record itself),
    `rule` the Lexicon rule (e.g. "maxLength"), `message` the whole sentence, path first."""

    path: str
    rule: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, eq=False)
class Lexicon:
    """A checked lexicon document. Treat `doc` as read-only; `document()` gives a copy."""

    nsid: str
    doc: dict = field(repr=False)
    source: str | None = None

    @property
    def defs(self) -> dict:
        return self.doc["defs"]

    @property
    def main(self) -> dict | None:
        return self.doc["defs"].get("main")

    @property
    def record_key(self) -> str | None:
        """The record key type of a record lexicon (`tid`, `nsid`, `any`, `literal:...`)."""
        main = self.main
        return main.get("key") if main and main.get("type") == "record" else None

    def document(self) -> dict:
        return copy.deepcopy(self.doc)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lexicon) and (self.nsid, self.doc) == (other.nsid, other.doc)

    def __hash__(self) -> int:
        return hash(self.nsid)


# --- identifiers and formats ------------------------------------------------------------------

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


def _format_ok(fmt: str, s: str) -> bool:
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


def _count_graphemes(s: str) -> int:
    """Extended grapheme clusters (UAX #29) by `regex`'s ``\\X``, at its Unicode version (ZWJ
    sequences, flags, Indic conjuncts): the standard library has no grapheme segmentation."""
    return sum(1 for _ in _regex.finditer(r"\X", s))


# --- checking documents ------------------------------------------------------------------------


def _pydantic_problems(exc: PydanticValidationError, prefix: str) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"])
        out.append(f"{prefix}{loc}: {err['msg']}")
    return out


def _split_ref(ref: str, nsid: str) -> tuple[str, str]:
    """(nsid, def name) of a ref; "#x" is local, "a.b.c" means "a.b.c#main"."""
    target, _, name = ref.partition("#")
    return target or nsid, name or "main"


def _ref_syntax_ok(ref: object) -> bool:
    if not isinstance(ref, str) or not ref:
        return False
    target, hash_, name = ref.partition("#")
    if hash_ and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        return False
    return target == "" and bool(hash_) or is_nsid(target)


class _DocChecker:
    def __init__(self, doc: dict):
        self.doc = doc
        self.nsid = doc["id"]
        self.problems: list[str] = []

    def problem(self, path: str, text: str) -> None:
        self.problems.append(f"{path}: {text}")

    def run(self) -> list[str]:
        for name, d in self.doc["defs"].items():
            path = f"defs.{name}"
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
                self.problem(path, "definition names must be letters, digits and _ (starting with a letter)")
            kind = d.get("type")
            if kind not in DEF_TYPES:
                self.problem(path, f"type {kind!r} cannot be a named definition")
                continue
            if kind in PRIMARY_TYPES and name != "main":
                self.problem(path, f"a {kind} definition must be named 'main'")
            self.check_def(path, d)
        return self.problems

    def check_def(self, path: str, d: dict) -> None:
        kind = d["type"]
        if kind == "record":
            key = d.get("key")
            if key is None:
                self.problem(path, "a record needs a 'key' (tid, nsid, any or literal:<key>)")
            elif not (key in ("tid", "nsid", "any") or key.startswith("literal:") and is_record_key(key[8:])):
                self.problem(f"{path}.key", f"{key!r} is not a record key type (tid, nsid, any or literal:<key>)")
            if d["record"].get("type") != "object":
                self.problem(f"{path}.record", "must say \"type\": \"object\"")
            else:
                self.check_field(f"{path}.record", d["record"])
        elif kind in ("query", "procedure", "subscription"):
            params = d.get("parameters")
            if params:
                self.check_params(f"{path}.parameters", params)
            for body in ("input", "output"):
                if d.get(body) and d[body].get("schema"):
                    self.check_field(f"{path}.{body}.schema", d[body]["schema"])
            if kind == "subscription" and d.get("message"):
                schema = d["message"].get("schema")
                if not schema or schema.get("type") != "union":
                    self.problem(f"{path}.message.schema", "a subscription message schema must be a union")
                else:
                    self.check_field(f"{path}.message.schema", schema)
        elif kind in ("permission-set", "token"):
            pass
        else:
            self.check_field(path, d)

    def check_params(self, path: str, params: dict) -> None:
        self.check_required(path, params, nullable=False)
        for name, p in params.get("properties", {}).items():
            kind = p.get("type")
            item_kind = p.get("items", {}).get("type") if kind == "array" else None
            if kind not in PARAM_TYPES and not (kind == "array" and item_kind in PARAM_TYPES - {"unknown"}):
                self.problem(f"{path}.properties.{name}", "params allow boolean, integer, string, unknown, or arrays of the first three")
            self.check_field(f"{path}.properties.{name}", p)

    def check_required(self, path: str, obj: dict, nullable: bool = True) -> None:
        props = obj.get("properties") or {}
        for listname in ("required", "nullable") if nullable else ("required",):
            for name in obj.get(listname) or []:
                if name not in props:
                    self.problem(f"{path}.{listname}", f"{name!r} is not a declared property")

    def check_bounds(self, path: str, d: dict, low: str, high: str) -> None:
        lo, hi = d.get(low), d.get(high)
        for key, value in ((low, lo), (high, hi)):
            if value is not None and value < 0 and low != "minimum":
                self.problem(f"{path}.{key}", "must not be negative")
        if lo is not None and hi is not None and lo > hi:
            self.problem(path, f"{low} {lo} is greater than {high} {hi}")

    def check_field(self, path: str, d: dict) -> None:
        kind = d.get("type")
        if kind not in FIELD_TYPES:
            if kind == "number":
                self.problem(path, "'number' is not a Lexicon type (the data model has no floats)")
            elif kind == "token":
                self.problem(path, "a token can only be a named definition, not a field")
            elif kind not in ("params",):
                self.problem(path, f"{kind!r} is not a field type")
            return
        if kind == "string":
            fmt = d.get("format")
            if fmt is not None and fmt not in STRING_FORMATS:
                self.problem(f"{path}.format", f"unknown string format {fmt!r}")
            self.check_bounds(path, d, "minLength", "maxLength")
            self.check_bounds(path, d, "minGraphemes", "maxGraphemes")
            if d.get("const") is not None and d.get("default") is not None:
                self.problem(path, "const and default are mutually exclusive")
        elif kind == "integer":
            self.check_bounds(path, d, "minimum", "maximum")
        elif kind == "bytes":
            self.check_bounds(path, d, "minLength", "maxLength")
        elif kind == "array":
            self.check_bounds(path, d, "minLength", "maxLength")
            self.check_field(f"{path}.items", d["items"])
        elif kind == "blob":
            for pattern in d.get("accept") or []:
                if not (pattern == "*/*" or re.fullmatch(r"[a-z0-9.+-]+/(\*|[a-zA-Z0-9.+_-]+)", pattern)):
                    self.problem(f"{path}.accept", f"{pattern!r} is not a MIME type or type/* pattern")
        elif kind == "object":
            self.check_required(path, d)
            for name, p in d.get("properties", {}).items():
                self.check_field(f"{path}.properties.{name}", p)
        elif kind == "ref":
            self.check_ref(f"{path}.ref", d["ref"], union=False)
        elif kind == "union":
            if d.get("closed") and not d["refs"]:
                self.problem(path, "an empty closed union is invalid")
            for i, ref in enumerate(d["refs"]):
                self.check_ref(f"{path}.refs[{i}]", ref, union=True)

    def check_ref(self, path: str, ref: str, union: bool) -> None:
        if not _ref_syntax_ok(ref):
            self.problem(path, f"{ref!r} is not a reference (#name, nsid or nsid#name)")
            return
        nsid, name = _split_ref(ref, self.nsid)
        if nsid != self.nsid:
            return  # other documents are checked when a set is loaded (load_lexicons)
        target = self.doc["defs"].get(name)
        if target is None:
            self.problem(path, f"{ref!r} names no definition in this document")
            return
        self.problems.extend(f"{path}: {p}" for p in _ref_target_problems(ref, target, union))


def _ref_target_problems(ref: str, target: dict, union: bool) -> list[str]:
    kind = target.get("type")
    if union and kind not in ("object", "record"):
        return [f"a union variant must be an object or record, and {ref!r} is a {kind}"]
    if not union and kind in ("token", "query", "procedure", "subscription", "permission-set"):
        return [f"a ref cannot point at a {kind} ({ref!r})"]
    return []


def check_lexicon(doc: object, source: str = "<document>") -> Lexicon:
    """Check one lexicon document; LexiconError (listing every problem) if it breaks the rules."""
    if not isinstance(doc, dict):
        raise LexiconError(source, [f"a lexicon document is a JSON object, not {type(doc).__name__}"])
    problems: list[str] = []
    if type(doc.get("lexicon")) is not int or doc["lexicon"] != 1:
        problems.append("lexicon: must be the integer 1")
    nsid = doc.get("id")
    if not is_nsid(nsid):
        problems.append("id: must be an NSID (e.g. computer.aesthetic.mood)")
    defs = doc.get("defs")
    if not isinstance(defs, dict) or not defs:
        problems.append("defs: must be an object with at least one definition")
        raise LexiconError(source, problems)
    primitive_defs = {k: v for k, v in defs.items() if isinstance(v, dict) and v.get("type") in _PRIMITIVE_DEF_MODELS}
    rest = {k: v for k, v in doc.items() if k != "defs"}
    rest["defs"] = {k: v for k, v in defs.items() if k not in primitive_defs}
    try:
        lexicon_parse(rest)
    except PydanticValidationError as exc:
        problems.extend(_pydantic_problems(exc, ""))
    except (TypeError, ValueError) as exc:  # e.g. a non-string key
        problems.append(f"not a Lexicon document ({type(exc).__name__})")
    for name, d in primitive_defs.items():
        try:
            _PRIMITIVE_DEF_MODELS[d["type"]](**d)
        except PydanticValidationError as exc:
            problems.extend(_pydantic_problems(exc, f"defs.{name}."))
    if not problems:  # the walk below assumes the structure is sound
        problems.extend(_DocChecker(doc).run())
    if problems:
        raise LexiconError(source, problems)
    return Lexicon(nsid=nsid, doc=copy.deepcopy(doc), source=source)


def load_lexicon_file(path: str | os.PathLike[str]) -> Lexicon:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LexiconError(str(path), [f"cannot read JSON ({type(exc).__name__}: {exc})"]) from exc
    return check_lexicon(doc, source=str(path))


def _check_cross_refs(lexicons: Mapping[str, Lexicon]) -> list[str]:
    problems = []
    for lex in lexicons.values():
        for ref, union in _iter_refs(lex.doc["defs"]):
            nsid, name = _split_ref(ref, lex.nsid)
            if nsid == lex.nsid or nsid not in lexicons:
                continue  # local refs are checked per document; unknown NSIDs are allowed
            target = lexicons[nsid].defs.get(name)
            if target is None:
                problems.append(f"{lex.nsid}: {ref!r} names no definition in {nsid}")
            else:
                problems.extend(f"{lex.nsid}: {p}" for p in _ref_target_problems(ref, target, union))
    return problems


def _iter_refs(node: Any) -> Iterable[tuple[str, bool]]:
    if isinstance(node, dict):
        if node.get("type") == "ref" and isinstance(node.get("ref"), str):
            yield node["ref"], False
        if node.get("type") == "union" and isinstance(node.get("refs"), list):
            yield from ((r, True) for r in node["refs"] if isinstance(r, str))
        for value in node.values():
            yield from _iter_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _iter_refs(value)


def load_lexicons(directory: str | os.PathLike[str] | None = None) -> dict[str, Lexicon]:
    """Every `*.json` under `directory` (default: the repository's `lexicons/`), checked.

    Each file must sit at the path its NSID spells (`a/b/c.json` for `a.b.c`); NSIDs must be
    unique; references into another loaded document must name an existing definition.
    Raises LexiconError listing every problem in every file.
    """
    root = Path(directory) if directory is not None else DEFAULT_LEXICON_DIR
    if not root.is_dir():
        raise LexiconError(str(root), ["not a directory"])
    lexicons: dict[str, Lexicon] = {}
    problems: list[str] = []
    for path in sorted(root.rglob("*.json")):
        try:
            lex = load_lexicon_file(path)
        except LexiconError as exc:
            problems.append(str(exc))
            continue
        expected = root.joinpath(*lex.nsid.split(".")).with_suffix(".json")
        if path != expected:
            problems.append(f"{path}: id {lex.nsid} belongs at {expected.relative_to(root)}")
        if lex.nsid in lexicons:
            problems.append(f"{path}: {lex.nsid} is defined twice")
        lexicons[lex.nsid] = lex
    if not problems:
        problems.extend(_check_cross_refs(lexicons))
    if problems:
        raise LexiconError(str(root), problems)
    return dict(sorted(lexicons.items()))


@functools.lru_cache(maxsize=1)
def _default_lexicons() -> dict[str, Lexicon]:
    return load_lexicons(DEFAULT_LEXICON_DIR)


def default_lexicons() -> dict[str, Lexicon]:
    """The repository's lexicons, loaded and checked once per process."""
    return dict(_default_lexicons())


def get_lexicon(nsid: str) -> Lexicon:
    """A lexicon of the repository by NSID; KeyError if there is none."""
    lexicons = _default_lexicons()
    if nsid not in lexicons:
        raise KeyError(f"no lexicon {nsid} in {DEFAULT_LEXICON_DIR}")
    return lexicons[nsid]


# --- validating records --------------------------------------------------------------------------

_DATA_TYPE_NAMES = {
    dict: "object",
    list: "array",
    str: "string",
    int: "integer",
    bool: "boolean",
    float: "float",
    type(None): "null",
    bytes: "bytes",
}


def _type_name(value: object) -> str:
    return _DATA_TYPE_NAMES.get(type(value), type(value).__name__)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _surrogate_problem(s: str) -> str | None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:  # only lone surrogates fail to encode
        return f"contains a lone surrogate (U+{ord(s[exc.start]):04X} at index {exc.start}); not encodable as UTF-8"
    return None


class _RecordValidator:
    def __init__(self, registry: Mapping[str, Lexicon]):
        self.registry = registry
        self.errors: list[ValidationError] = []

    def error(self, path: str, rule: str, text: str) -> None:
        self.errors.append(ValidationError(path, rule, f"{path or 'record'}: {text}"))

    def resolve(self, ref: str, lex: Lexicon) -> tuple[Lexicon, dict] | None:
        nsid, name = _split_ref(ref, lex.nsid)
        target_lex = self.registry.get(nsid)
        if target_lex is None or name not in target_lex.defs:
            return None
        return target_lex, target_lex.defs[name]

    def value(self, value: Any, schema: dict, path: str, lex: Lexicon) -> None:
        kind = schema["type"]
        handler = getattr(self, "v_" + kind.replace("-", "_"))
        handler(value, schema, path, lex)

    def expect(self, value: Any, types: tuple[type, ...], path: str, expected: str) -> bool:
        if type(value) in types:
            return True
        self.error(path, "type", f"must be {expected}, not {_type_name(value)}")
        return False

    def v_boolean(self, value: Any, schema: dict, path: str, lex: Lexicon) -> None:
        if self.expect(value, (bool,), path, "a boolean") and "const" in schema and value != schema["const"]:
            self.error(path, "const", f"must be {json.dumps(schema['const'])} (const)")

    def v_integer(self, value: Any, schema: dict, path: str, lex: Lexicon) -> None:
        if not self.expect(value, (int,), path, "an integer"):
            return
        if not INT64_MIN <= value <= INT64_MAX:
            self.error(path, "integer", "outside the 64-bit signed integer range")
        if schema.get("const") is not None and value != schema["const"]:
            self.error(path, "const", f"must be {schema['const']} (const)")
        if schema.get("enum") is not None and value not in schema["enum"]:
            self.error(path, "enum", f"not one of the enum values {schema['enum']} ({value})")
        if schema.get("minimum") is not None and value < schema["minimum"]:
            self.error(path, "minimum", f"less than minimum {schema['minimum']} ({value})")
        if schema.get("maximum") is not None and value > schema["maximum"]:
            self.error(path, "maximum", f"greater than maximum {schema['maximum']} ({value})")

    def v_string(self, value: Any, schema: dict, path: str, lex: Lexicon) -> None:
        if not self.expect(value, (str,), path, "a string"):
            return
        surrogate = _surrogate_problem(value)
        if surrogate:
            self.error(path, "utf8", surrogate)
            return
        if schema.get("const") is not None and value != schema["const"]:
            self.error(path, "const", f"must be the const value {json.dumps(schema['const'])}")
        if schema.get("enum") is not None and value not in schema["enum"]:
            self.error(path, "enum", f"not one of the {len(schema['enum'])} enum values")
        # knownValues is an open set ("values are not limited to this set"): never an error.
        lo, hi = schema.get("minLength"), schema.get("maxLength")
        if lo is not None or hi is not None:
            n = len(value.encode("utf-8"))
            if hi is not None and n > hi:
                self.error(path, "maxLength", f"longer than maxLength {hi} UTF-8 bytes ({n})")
            if lo is not None and n < lo:
                self.error(path, "minLength", f"shorter than minLength {lo} UTF-8 bytes ({n})")
        lo, hi = schema.get("minGraphemes"), schema.get("maxGraphemes")
        if lo is not None or hi is not None:
            n = _count_graphemes(value)
            if hi is not None and n > hi:
                self.error(path, "maxGraphemes", f"longer than maxGraphemes {hi} grapheme clusters ({n})")
            if lo is not None and n < lo:
                self.error(path, "minGraphemes", f"shorter than minGraphemes {lo} grapheme clusters ({n})")
        fmt = schema.get("format")
        if fmt == "datetime":
            reason = datetime_problem(value)
            if reason:
                self.error(path, "format", f"not a valid datetime: {reason}")
        elif fmt is not None and not _format_ok(fmt, value):
            self.error(path, "format", f"not a valid {fmt}")

    def v_bytes(self, value: Any, schema: dict, path: str, lex: Lexicon) -> None:
        if isinstance(value, bytes):
            data = value
        elif isinstance(value, dict) and set(value) == {"$bytes"} and isinstance(value["$bytes"], str):
            encoded = value["$bytes"]
            try:
                data = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
            except (binascii.Error, ValueError):
                self.error(path, "bytes", "$bytes is not base64")
                return
        else:
            self.error(path, "type", f'must be bytes ({{"$bytes": base64}}), not {_type_name(value)}')
            return
        lo, hi = schema.get("minLength"), schema.get("maxLength")
        if hi is not None and len(data) > hi:
            self.error(path, "maxLength", f"longer than maxLength {hi} bytes ({len(data)})")
        if lo is not None and len(data) < lo:
            self.error(path, "minLength", f"shorter than minLength {lo} bytes ({len(data)})")

    def _is_link(self, value: Any) -> bool:
        return (
            isinstance(value, dict)
            and set(value) == {"$link"}
            and isinstance(value["$link"], str)
            and _CID_RE.fullmatch(value["$link"]) is not None
        )

    def v_cid_link(self, value: Any, schema: dict, path: str, lex: Lexicon) -> None:
        if not self._is_link(value):
            self.error(path, "type", f'must be a cid-link ({{"$link": cid}}), not {_type_name(value)}')

    def v_blob(self, value: Any, schema: dict, path: str, lex: Lexicon) -> None:
        if not isinstance(value, dict):
            self.error(path, "type", f"must be a blob, not {_type_name(value)}")
            return
        if value.get("$type") == "blob":
            size, mime = value.get("size"), value.get("mimeType")
            if not self._is_link(value.get("ref")) or type(size) is not int or size < 0:
                self.error(path, "blob", "a blob needs ref {$link}, a non-negative integer size and a mimeType")
                return
        elif set(value) == {"cid", "mimeType"} and isinstance(value["cid"], str):  # legacy blob
            size, mime = None, value["mimeType"]
        else:
            self.error(path, "blob", 'not a blob (needs "$type": "blob")')
            return
        if not isinstance(mime, str) or not mime:
            self.error(path, "blob", "mimeType must be a non-empty string")
            return
        if schema.get("maxSize") is not None and size is not None and size > schema["maxSize"]:
            self.error(path, "maxSize", f"larger than maxSize {schema['maxSize']} bytes ({size})")
        accept = schema.get("accept")
        if accept and not any(
            a == "*/*" or a == mime or a.endswith("/*") and mime.startswith(a[:-1]) for a in accept
        ):
            self.error(path, "accept", f"mimeType is not one of {accept}")

    def v_array(self, value: Any, schema: dict, path: str, lex: Lexicon) -> None:
        if not self.expect(value, (list, tuple), path, "an array"):
            return
        lo, hi = schema.get("minLength"), schema.get("maxLength")
        if hi is not None and len(value) > hi:
            self.error(path, "maxLength", f"more than maxLength {hi} elements ({len(value)})")
        if lo is not None and len(value) < lo:
            self.error(path, "minLength", f"fewer than minLength {lo} elements ({len(value)})")
        for i, item in enumerate(value):
            if item is None:
                self.error(f"{path}[{i}]", "nullable", "is null")
                continue
            self.value(item, schema["items"], f"{path}[{i}]", lex)

    def v_object(self, value: Any, schema: dict, path: str, lex: Lexicon) -> None:
        if not self.expect(value, (dict,), path, "an object"):
            return
        props = schema.get("properties") or {}
        nullable = set(schema.get("nullable") or [])
        for name in schema.get("required") or []:
            if name not in value:
                self.error(_join(path, name), "required", "required field is missing")
        for name, item in value.items():
            item_path = _join(path, str(name))
            if not isinstance(name, str):
                self.error(path, "data-model", "object keys must be strings")
                continue
            if name not in props:
                # Unexpected fields are allowed, but must still be valid data.
                if name != "$type":
                    self.data_model(item, item_path)
                continue
            if item is None:
                if name not in nullable:
                    self.error(item_path, "nullable", "is null, and the field is not nullable")
                continue
            self.value(item, props[name], item_path, lex)

    def v_ref(self, value: Any, schema: dict, path: str, lex: Lexicon) -> None:
        found = self.resolve(schema["ref"], lex)
        if found is None:
            self.error(path, "ref", f"cannot validate: {schema['ref']} is not a loaded definition")
            return
        target_lex, target = found
        if target["type"] == "record":
            self.record(value, target_lex, path)
        else:
            self.value(value, target, path, target_lex)

    def v_union(self, value: Any, schema: dict, path: str, lex: Lexicon) -> None:
        if not self.expect(value, (dict,), path, "an object with $type (union)"):
            return
        variant = value.get("$type")
        if not isinstance(variant, str) or not variant:
            self.error(_join(path, "$type"), "union", "a union member needs a $type")
            return
        if variant.endswith("#main"):
            self.error(_join(path, "$type"), "union", "must not end in #main (use the bare NSID)")
            return
        refs = {self._qualify(r, lex): r for r in schema["refs"]}
        if variant not in refs:
            if schema.get("closed"):
                self.error(_join(path, "$type"), "union", "not one of the closed union's types")
            else:
                self.data_model(value, path)
            return
        found = self.resolve(refs[variant], lex)
        if found is None:
            self.error(path, "ref", f"cannot validate: {refs[variant]} is not a loaded definition")
            return
        target_lex, target = found
        schema_ = target["record"] if target["type"] == "record" else target
        self.value(value, schema_, path, target_lex)

    @staticmethod
    def _qualify(ref: str, lex: Lexicon) -> str:
        nsid, name = _split_ref(ref, lex.nsid)
        return nsid if name == "main" else f"{nsid}#{name}"

    def v_unknown(self, value: Any, schema: dict, path: str, lex: Lexicon) -> None:
        if not self.expect(value, (dict,), path, "an object (unknown)"):
            return
        if value.get("$type") == "blob" or "$bytes" in value or "$link" in value:
            self.error(path, "type", "must be a plain object, not a blob, bytes or cid-link")
            return
        self.data_model(value, path)

    def data_model(self, value: Any, path: str) -> None:
        """The atproto data model: no floats, string keys, encodable strings."""
        if isinstance(value, float):
            self.error(path, "data-model", "floats are not allowed in atproto data")
        elif isinstance(value, str):
            problem = _surrogate_problem(value)
            if problem:
                self.error(path, "utf8", problem)
        elif isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    self.error(path, "data-model", "object keys must be strings")
                else:
                    self.data_model(v, _join(path, k))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                self.data_model(v, f"{path}[{i}]")
        elif not (value is None or isinstance(value, (bool, int, bytes))):
            self.error(path, "data-model", f"{_type_name(value)} is not an atproto data type")

    def record(self, value: Any, lex: Lexicon, path: str = "") -> None:
        if not isinstance(value, dict):
            self.error(path, "type", f"must be an object, not {_type_name(value)}")
            return
        type_path = _join(path, "$type")
        if "$type" not in value:
            self.error(type_path, "$type", f"missing; a record must carry \"$type\": \"{lex.nsid}\"")
        elif value["$type"] != lex.nsid:
            self.error(type_path, "$type", f"must be \"{lex.nsid}\"")
        self.v_object(value, lex.main["record"], path, lex)


def validate_record(
    lexicon_doc_or_nsid: Lexicon | Mapping | str,
    record: object,
    *,
    lexicons: Mapping[str, Lexicon] | None = None,
) -> list[ValidationError]:
    """Every way `record` fails the record lexicon given (a Lexicon, a document, or an NSID
    of the repository's lexicons); [] if it is valid.

    `lexicons` resolves refs into other documents (default: the repository's lexicons for an
    NSID, else only the document itself). A document that is not a valid lexicon, or whose main
    definition is not a record, raises LexiconError / ValueError: that is a bug, not bad data.
    """
    if isinstance(lexicon_doc_or_nsid, Lexicon):
        lex = lexicon_doc_or_nsid
    elif isinstance(lexicon_doc_or_nsid, str):
        registry = lexicons if lexicons is not None else _default_lexicons()
        if lexicon_doc_or_nsid not in registry:
            raise KeyError(f"no lexicon {lexicon_doc_or_nsid} loaded")
        lex = registry[lexicon_doc_or_nsid]
    else:
        lex = check_lexicon(dict(lexicon_doc_or_nsid))
    main = lex.main
    if not main or main.get("type") != "record":
        raise ValueError(f"lexicon {lex.nsid} has no record definition named main")
    registry = dict(lexicons or {})
    if isinstance(lexicon_doc_or_nsid, str) and lexicons is None:
        registry = dict(_default_lexicons())
    registry[lex.nsid] = lex
    validator = _RecordValidator(registry)
    validator.record(record, lex)
    return validator.errors
