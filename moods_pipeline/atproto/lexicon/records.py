"""Validating a record against its lexicon: `validate_record`.

Record validation per the atproto spec: `$type`, required and nullable fields, types, string
lengths in UTF-8 bytes and in grapheme clusters, formats (datetime as the reference
implementation checks it), integer bounds, const/enum (knownValues is an open set: never an
error), refs, unions, arrays, blobs, bytes, cid-links and unknown. It returns every problem
found, as `ValidationError`s. Messages name the field path and the rule and never quote a
string value (mood text must not reach logs or metadata).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moods_pipeline.atproto.lexicon.documents import (
    Lexicon,
    check_lexicon,
    default_lexicons,
    split_ref,
)
from moods_pipeline.atproto.lexicon.formats import (
    count_graphemes,
    datetime_problem,
    format_ok,
    is_cid_syntax,
)

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


@dataclass(frozen=True)
class ValidationError:
    """One way a record fails its lexicon. `path` is the field ("" for the record itself),
    `rule` the Lexicon rule (e.g. "maxLength"), `message` the whole sentence, path first."""

    path: str
    rule: str
    message: str

    def __str__(self) -> str:
        return self.message



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
        nsid, name = split_ref(ref, lex.nsid)
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
            n = count_graphemes(value)
            if hi is not None and n > hi:
                self.error(path, "maxGraphemes", f"longer than maxGraphemes {hi} grapheme clusters ({n})")
            if lo is not None and n < lo:
                self.error(path, "minGraphemes", f"shorter than minGraphemes {lo} grapheme clusters ({n})")
        fmt = schema.get("format")
        if fmt == "datetime":
            reason = datetime_problem(value)
            if reason:
                self.error(path, "format", f"not a valid datetime: {reason}")
        elif fmt is not None and not format_ok(fmt, value):
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
            and is_cid_syntax(value["$link"])
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
        nsid, name = split_ref(ref, lex.nsid)
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
        registry = lexicons if lexicons is not None else default_lexicons()
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
        registry = dict(default_lexicons())
    registry[lex.nsid] = lex
    validator = _RecordValidator(registry)
    validator.record(record, lex)
    return validator.errors
