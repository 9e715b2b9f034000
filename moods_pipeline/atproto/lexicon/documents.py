"""Lexicon documents: what a checked document is, checking one, loading a folder of them.

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

`load_lexicons` checks a folder (each file at the path its NSID spells, references across
documents resolved); `default_lexicons`/`get_lexicon` give the repository's `lexicons/`.
Validating a record against a document is in `records`; identifier syntax is in `formats`.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atproto_lexicon import models as lex_models
from atproto_lexicon.parser import lexicon_parse
from pydantic import ValidationError as PydanticValidationError

from moods_pipeline.atproto.lexicon.formats import (
    STRING_FORMATS,
    is_nsid,
    is_record_key,
)

# The repository's lexicons/ folder (this file is moods_pipeline/atproto/lexicon/documents.py).
DEFAULT_LEXICON_DIR = Path(__file__).resolve().parents[3] / "lexicons"

PRIMARY_TYPES = frozenset({"record", "query", "procedure", "subscription", "permission-set"})
FIELD_TYPES = frozenset(
    {"boolean", "integer", "string", "bytes", "cid-link", "blob", "array", "object", "ref", "union", "unknown"}
)
# What may be a named definition under `defs` (sub-types, unknown, ref and union may not).
DEF_TYPES = PRIMARY_TYPES | frozenset(
    {"boolean", "integer", "string", "bytes", "cid-link", "blob", "array", "object", "token"}
)
PARAM_TYPES = frozenset({"boolean", "integer", "string", "unknown"})

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


# --- checking documents ------------------------------------------------------------------------


def _pydantic_problems(exc: PydanticValidationError, prefix: str) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"])
        out.append(f"{prefix}{loc}: {err['msg']}")
    return out


def split_ref(ref: str, nsid: str) -> tuple[str, str]:
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
        nsid, name = split_ref(ref, self.nsid)
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
            nsid, name = split_ref(ref, lex.nsid)
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
