"""Lexicon documents (loading, checking) and record validation against them."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto import lexicon_publish
from moods_pipeline.atproto.lexicon import (
    DEFAULT_LEXICON_DIR,
    Lexicon,
    LexiconError,
    check_lexicon,
    count_graphemes,
    datetime_problem,
    default_lexicons,
    get_lexicon,
    is_datetime,
    load_lexicon_file,
    load_lexicons,
    validate_record,
)
from moods_pipeline.atproto.lexicon_publish import (
    SCHEMA_COLLECTION,
    PublishAction,
    plan_publication,
    publish,
    schema_record,
)

MOOD_FILE = DEFAULT_LEXICON_DIR / "computer" / "aesthetic" / "mood.json"
SECRET = "s3cr3t-mood-text"  # must never appear in an error message


def good_mood(**changes) -> dict:
    record = {
        "$type": MOOD_COLLECTION,
        "mood": "feeling sunny",
        "when": "2025-10-09T19:00:28.821Z",
        "ref": "68e8064c11885fb93a529c8d",
    }
    record.update(changes)
    return record


def messages(errors) -> list[str]:
    return [str(e) for e in errors]


# --- the repository's lexicons ---------------------------------------------------------------


def test_repository_lexicons_load_and_check():
    lexicons = load_lexicons()
    assert MOOD_COLLECTION in lexicons
    assert default_lexicons().keys() == lexicons.keys()
    mood = get_lexicon(MOOD_COLLECTION)
    assert mood == lexicons[MOOD_COLLECTION]
    assert mood.record_key == "tid"
    record = mood.main["record"]
    assert record["type"] == "object"
    assert sorted(record["required"]) == ["mood", "ref", "when"]
    props = record["properties"]
    assert props["mood"] == {**props["mood"], "type": "string", "maxLength": 5000}
    assert props["when"]["format"] == "datetime"
    assert (props["ref"]["type"], props["ref"]["minLength"], props["ref"]["maxLength"]) == ("string", 24, 24)
    assert set(json.loads(MOOD_FILE.read_text())) == {"lexicon", "id", "defs"}


def test_get_lexicon_unknown():
    with pytest.raises(KeyError):
        get_lexicon("computer.aesthetic.nothing")


def test_document_is_a_copy():
    mood = get_lexicon(MOOD_COLLECTION)
    doc = mood.document()
    doc["defs"]["main"]["key"] = "any"
    assert mood.record_key == "tid"


def test_load_from_a_given_directory(tmp_path):
    dest = tmp_path / "computer" / "aesthetic"
    dest.mkdir(parents=True)
    shutil.copy(MOOD_FILE, dest / "mood.json")
    (tmp_path / "com" / "example").mkdir(parents=True)
    (tmp_path / "com" / "example" / "defs.json").write_text(
        json.dumps({"lexicon": 1, "id": "com.example.defs", "defs": {"count": {"type": "integer", "minimum": 0}}})
    )
    (tmp_path / "notes.txt").write_text("not a lexicon")
    loaded = load_lexicons(str(tmp_path))
    assert list(loaded) == ["com.example.defs", MOOD_COLLECTION]
    assert loaded[MOOD_COLLECTION].source == str(dest / "mood.json")
    assert load_lexicon_file(dest / "mood.json") == loaded[MOOD_COLLECTION]


# --- broken documents are rejected -----------------------------------------------------------


def mood_doc() -> dict:
    return json.loads(MOOD_FILE.read_text())


def _set(doc: dict, path: str, value) -> dict:
    *parents, last = path.split("/")
    node = doc
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


_DELETE = object()
MAIN = "defs/main"
PROPS = "defs/main/record/properties"

BROKEN = {
    "lexicon version 2": ("lexicon", 2, "lexicon"),
    "lexicon version as a string": ("lexicon", "1", "lexicon"),
    "lexicon version as a boolean": ("lexicon", True, "lexicon"),
    "id not an NSID": ("id", "mood", "id"),
    "id with a trailing newline": ("id", "computer.aesthetic.mood\n", "id"),
    "no defs": ("defs", {}, "defs"),
    "misspelt maxLength": (f"{PROPS}/mood", {"type": "string", "maxLenght": 5000}, "maxLenght"),
    "maxLength as a string": (f"{PROPS}/mood/maxLength", "5000", "maxLength"),
    "unknown field type": (f"{PROPS}/mood/type", "text", "mood"),
    "number type": (f"{PROPS}/mood", {"type": "number"}, "number"),
    "record without key": (f"{MAIN}/key", _DELETE, "key"),
    "record key type uuid": (f"{MAIN}/key", "uuid", "key"),
    "literal key that is no record key": (f"{MAIN}/key", "literal:a/b", "key"),
    "record object without type": (f"{MAIN}/record/type", _DELETE, "object"),
    "required names an undeclared property": (f"{MAIN}/record/required", ["mood", "when", "ref", "text"], "'text'"),
    "nullable names an undeclared property": (f"{MAIN}/record/nullable", ["mongoId"], "'mongoId'"),
    "unknown string format": (f"{PROPS}/when/format", "date-time", "date-time"),
    "minLength above maxLength": (f"{PROPS}/ref/minLength", 25, "minLength 25"),
    "negative maxLength": (f"{PROPS}/mood/maxLength", -1, "negative"),
    "const and default together": (f"{PROPS}/mood", {"type": "string", "const": "a", "default": "a"}, "exclusive"),
    "local ref to a missing definition": (f"{PROPS}/extra", {"type": "ref", "ref": "#nothing"}, "#nothing"),
    "malformed ref": (f"{PROPS}/extra", {"type": "ref", "ref": "not a ref"}, "reference"),
    "empty closed union": (f"{PROPS}/extra", {"type": "union", "refs": [], "closed": True}, "closed union"),
    "token as a field": (f"{PROPS}/extra", {"type": "token"}, "extra"),
    "unknown top-level key": ("revisions", 3, "revisions"),
    "record not named main": ("defs/other", {"type": "record", "key": "tid", "record": {"type": "object", "properties": {}}}, "main"),
    "unknown as a named definition": ("defs/blob", {"type": "unknown"}, "defs.blob"),
    "bad definition name": ("defs/has space", {"type": "integer"}, "definition names"),
}


@pytest.mark.parametrize("path, value, fragment", BROKEN.values(), ids=BROKEN.keys())
def test_broken_documents_are_rejected(path, value, fragment):
    doc = _set(mood_doc(), path, value)
    with pytest.raises(LexiconError) as caught:
        check_lexicon(doc, source="mood.json")
    assert fragment in str(caught.value)
    assert caught.value.problems and caught.value.source == "mood.json"


def test_union_must_point_at_objects():
    doc = mood_doc()
    doc["defs"]["name"] = {"type": "string", "maxLength": 10}
    doc["defs"]["main"]["record"]["properties"]["extra"] = {"type": "union", "refs": ["#name"]}
    with pytest.raises(LexiconError, match="object or record"):
        check_lexicon(doc)


def test_ref_cannot_point_at_a_token():
    doc = mood_doc()
    doc["defs"]["sunny"] = {"type": "token"}
    doc["defs"]["main"]["record"]["properties"]["extra"] = {"type": "ref", "ref": "#sunny"}
    with pytest.raises(LexiconError, match="token"):
        check_lexicon(doc)


@pytest.mark.parametrize("doc", [None, [], "computer.aesthetic.mood", 1])
def test_non_object_documents(doc):
    with pytest.raises(LexiconError):
        check_lexicon(doc)


def test_valid_variety_of_documents():
    check_lexicon({"lexicon": 1, "id": "com.example.flag", "defs": {"main": {"type": "boolean"}}})
    check_lexicon({"lexicon": 1, "id": "com.example.token", "defs": {"sunny": {"type": "token"}}})
    check_lexicon(CATALOG)
    check_lexicon({**mood_doc(), "$type": "com.atproto.lexicon.schema"})
    with pytest.raises(LexiconError):
        check_lexicon({**mood_doc(), "$type": "com.example.other"})


def test_a_broken_file_fails_the_directory(tmp_path):
    dest = tmp_path / "computer" / "aesthetic"
    dest.mkdir(parents=True)
    doc = mood_doc()
    doc["defs"]["main"]["key"] = "uuid"
    (dest / "mood.json").write_text(json.dumps(doc))
    with pytest.raises(LexiconError) as caught:
        load_lexicons(tmp_path)
    assert "mood.json" in str(caught.value) and "uuid" in str(caught.value)


def test_directory_rules(tmp_path):
    (tmp_path / "wrong").mkdir()
    shutil.copy(MOOD_FILE, tmp_path / "wrong" / "place.json")
    with pytest.raises(LexiconError, match="belongs at"):
        load_lexicons(tmp_path)

    bad_json = tmp_path / "bad"
    (bad_json / "com" / "example").mkdir(parents=True)
    (bad_json / "com" / "example" / "thing.json").write_text("{not json")
    with pytest.raises(LexiconError, match="cannot read JSON"):
        load_lexicons(bad_json)

    with pytest.raises(LexiconError, match="not a directory"):
        load_lexicons(tmp_path / "missing")


def test_cross_document_refs_must_resolve(tmp_path):
    (tmp_path / "com" / "example").mkdir(parents=True)
    (tmp_path / "com" / "example" / "defs.json").write_text(
        json.dumps({"lexicon": 1, "id": "com.example.defs", "defs": {"count": {"type": "integer"}}})
    )
    user = {
        "lexicon": 1,
        "id": "com.example.user",
        "defs": {
            "main": {
                "type": "record",
                "key": "any",
                "record": {"type": "object", "properties": {"n": {"type": "ref", "ref": "com.example.defs#cuont"}}},
            }
        },
    }
    (tmp_path / "com" / "example" / "user.json").write_text(json.dumps(user))
    with pytest.raises(LexiconError, match="#cuont"):
        load_lexicons(tmp_path)
    user["defs"]["main"]["record"]["properties"]["n"]["ref"] = "com.example.defs#count"
    (tmp_path / "com" / "example" / "user.json").write_text(json.dumps(user))
    loaded = load_lexicons(tmp_path)
    assert validate_record("com.example.user", {"$type": "com.example.user", "n": 3}, lexicons=loaded) == []
    errors = validate_record("com.example.user", {"$type": "com.example.user", "n": "3"}, lexicons=loaded)
    assert messages(errors) == ["n: must be an integer, not string"]


# --- the mood lexicon --------------------------------------------------------------------------


def test_a_good_mood_is_valid_by_nsid_lexicon_or_document():
    assert validate_record(MOOD_COLLECTION, good_mood()) == []
    assert validate_record(get_lexicon(MOOD_COLLECTION), good_mood()) == []
    assert validate_record(mood_doc(), good_mood()) == []


def test_type_is_required_and_must_match():
    errors = validate_record(MOOD_COLLECTION, {k: v for k, v in good_mood().items() if k != "$type"})
    assert [(e.path, e.rule) for e in errors] == [("$type", "$type")]
    errors = validate_record(MOOD_COLLECTION, good_mood(**{"$type": "computer.aesthetic.mood#main"}))
    assert [(e.path, e.rule) for e in errors] == [("$type", "$type")]
    assert validate_record(MOOD_COLLECTION, good_mood(**{"$type": "app.bsky.feed.post"}))


@pytest.mark.parametrize("value", [None, [], "mood", 3])
def test_a_record_must_be_an_object(value):
    errors = validate_record(MOOD_COLLECTION, value)
    assert [(e.path, e.rule) for e in errors] == [("", "type")]
    assert str(errors[0]).startswith("record: must be an object")


def test_production_history_records_fail_as_they_should():
    # The bulk path that wrote `text` instead of `mood`:
    bulk = good_mood()
    bulk["text"] = bulk.pop("mood")
    assert messages(validate_record(MOOD_COLLECTION, bulk)) == ["mood: required field is missing"]
    # The early records with `mongoId` instead of `ref`:
    legacy = good_mood()
    legacy["mongoId"] = legacy.pop("ref")
    assert messages(validate_record(MOOD_COLLECTION, legacy)) == ["ref: required field is missing"]


def test_every_missing_field_is_reported():
    errors = validate_record(MOOD_COLLECTION, {"$type": MOOD_COLLECTION})
    assert sorted((e.path, e.rule) for e in errors) == [
        ("mood", "required"),
        ("ref", "required"),
        ("when", "required"),
    ]


@pytest.mark.parametrize(
    "field, value, rule",
    [
        ("mood", 42, "type"),
        ("mood", None, "nullable"),
        ("mood", ["a"], "type"),
        ("mood", b"bytes", "type"),
        ("when", 1760036428821, "type"),
        ("when", "2025-10-09 19:00:28.821Z", "format"),
        ("ref", "68e8064c11885fb93a529c8", "minLength"),
        ("ref", "68e8064c11885fb93a529c8d0", "maxLength"),
    ],
)
def test_field_rules(field, value, rule):
    errors = validate_record(MOOD_COLLECTION, good_mood(**{field: value}))
    assert [(e.path, e.rule) for e in errors] == [(field, rule)]


def test_1300_emoji_are_too_long_though_under_5000_characters():
    text = "😀" * 1300
    assert len(text) == 1300 and len(text.encode()) == 5200
    errors = validate_record(MOOD_COLLECTION, good_mood(mood=text))
    assert messages(errors) == ["mood: longer than maxLength 5000 UTF-8 bytes (5200)"]
    assert errors[0].rule == "maxLength" and errors[0].path == "mood"


@pytest.mark.parametrize(
    "text, ok",
    [
        ("a" * 5000, True),
        ("a" * 5001, False),
        ("😀" * 1250, True),  # 5000 bytes, 1250 characters
        ("a" * 4999 + "é", False),  # 5001 bytes, 5000 characters
        ("a" * 4998 + "é", True),
        ("e\u0301" * 1666 + "ab", True),  # combining accents: 3 bytes per visible letter
        ("e\u0301" * 1667, False),  # 5001 bytes
        ("👩‍👩‍👧‍👦" * 200, True),  # a ZWJ family is 25 bytes: 200 of them are exactly 5000
        ("👩‍👩‍👧‍👦" * 200 + "a", False),
        ("\x00" * 5000, True),  # NUL is a character like any other for the lexicon
    ],
)
def test_mood_length_is_counted_in_utf8_bytes(text, ok):
    errors = validate_record(MOOD_COLLECTION, good_mood(mood=text))
    assert (errors == []) is ok, messages(errors)
    if not ok:
        assert errors[0].rule == "maxLength"
        assert f"({len(text.encode())})" in str(errors[0])


@pytest.mark.parametrize("text", ["\ud83d", "ok \udc00 ok", "😀" + "\ud83d"])
def test_lone_surrogates_are_errors_not_crashes(text):
    errors = validate_record(MOOD_COLLECTION, good_mood(mood=text))
    assert [(e.path, e.rule) for e in errors] == [("mood", "utf8")]
    assert "lone surrogate" in str(errors[0])


def test_extra_fields_are_allowed_but_must_be_valid_data():
    assert validate_record(MOOD_COLLECTION, good_mood(note="x", tags=["a"], n=1, flag=None)) == []
    errors = validate_record(MOOD_COLLECTION, good_mood(score=0.5, nested={"bad": "\ud800"}))
    assert sorted((e.path, e.rule) for e in errors) == [("nested.bad", "utf8"), ("score", "data-model")]


def test_messages_never_contain_the_value():
    cases = [
        good_mood(mood=SECRET * 400),
        good_mood(mood=12, when=SECRET, ref=SECRET),
        good_mood(when=SECRET + "T00:00:00Z"),
        good_mood(**{"$type": SECRET}),
        good_mood(extra=SECRET + "\ud800"),
    ]
    for record in cases:
        errors = validate_record(MOOD_COLLECTION, record)
        assert errors
        for error in errors:
            assert SECRET not in str(error) and SECRET not in repr(error)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=1400))
def test_valid_iff_within_5000_bytes(text):
    text = text * 4
    errors = validate_record(MOOD_COLLECTION, good_mood(mood=text))
    assert (errors == []) == (len(text.encode()) <= 5000)


# --- datetime --------------------------------------------------------------------------------

VALID_DATETIMES = [
    "2025-10-09T19:00:28.821Z",
    "1985-04-12T23:20:50Z",
    "1985-04-12T23:20:50.1Z",
    "1985-04-12T23:20:50.123456789012Z",
    "1985-04-12T23:20:50.123+00:00",
    "1985-04-12T23:20:50.123-07:00",
    "1985-04-12T23:20:50.123+05:45",
    "2024-02-29T00:00:00.000Z",
    "2000-02-29T00:00:00.000Z",
    "1970-01-01T00:00:00.000Z",
    "0000-01-01T00:00:00.000Z",
    "9999-12-31T23:59:59.999Z",
    "0000-01-01T00:00:00-01:00",
]
INVALID_DATETIMES = [
    "1985-04-12",
    "1985-04-12T23:20Z",
    "1985-04-12T23:20:5Z",
    "1985-04-12T23:20:50.123",  # timezone required
    "1985-04-12T23:20:50",
    "1985-04-12t23:20:50.123Z",  # lowercase t
    "1985-04-12T23:20:50.123z",  # lowercase z
    "1985-04-12 23:20:50.123Z",
    "1985-04-12T23:20:50.123-00:00",
    "1985-04-12T23:20:50.123+0000",
    "1985-04-12T23:20:50.123+00",
    "1985-04-12T23:20:50.Z",
    "+001985-04-12T23:20:50.123Z",
    "-1985-04-12T23:20:50.123Z",
    "01985-04-12T23:20:50.123Z",
    "1985-4-12T23:20:50.123Z",
    " 1985-04-12T23:20:50.123Z",
    "1985-04-12T23:20:50.123Z ",
    "1985-04-12T23:20:50.123Z\n",
    "1985-00-12T23:20:50.123Z",
    "1985-13-12T23:20:50.123Z",
    "1985-04-00T23:20:50.123Z",
    "1985-04-31T23:20:50.123Z",  # April has 30 days
    "2023-02-29T00:00:00.000Z",  # not a leap year
    "1900-02-29T00:00:00.000Z",  # not a leap year either
    "1985-04-12T24:00:00.000Z",
    "1985-04-12T23:60:00.000Z",
    "1985-12-31T23:59:60.000Z",  # no leap seconds
    "1985-04-12T23:20:50.123+24:00",
    "0000-01-01T00:00:00+01:00",  # before year 0 in UTC
    "9999-12-31T23:59:59-00:01",  # after year 9999 in UTC
    "１９８５-04-12T23:20:50.123Z",  # fullwidth digits
    "1985-04-12T23:20:50." + "1" * 60 + "Z",  # longer than 64 characters
    "",
]


@pytest.mark.parametrize("s", VALID_DATETIMES)
def test_valid_datetimes(s):
    assert datetime_problem(s) is None and is_datetime(s)
    assert validate_record(MOOD_COLLECTION, good_mood(when=s)) == []


@pytest.mark.parametrize("s", INVALID_DATETIMES)
def test_invalid_datetimes(s):
    assert datetime_problem(s) and not is_datetime(s)
    errors = validate_record(MOOD_COLLECTION, good_mood(when=s))
    assert [(e.path, e.rule) for e in errors] == [("when", "format")]
    assert str(errors[0]).startswith("when: not a valid datetime: ")


# --- the general validator, on a lexicon that uses every feature -------------------------------

CATALOG = {
    "lexicon": 1,
    "id": "com.example.catalog",
    "defs": {
        "main": {
            "type": "record",
            "key": "literal:self",
            "record": {
                "type": "object",
                "required": ["count"],
                "nullable": ["maybe"],
                "properties": {
                    "count": {"type": "integer", "minimum": 1, "maximum": 10},
                    "fixed": {"type": "integer", "const": 7},
                    "size": {"type": "integer", "enum": [1, 2, 4]},
                    "flag": {"type": "boolean"},
                    "on": {"type": "boolean", "const": True},
                    "name": {"type": "string", "minLength": 2, "maxLength": 8},
                    "short": {"type": "string", "minGraphemes": 2, "maxGraphemes": 3},
                    "kind": {"type": "string", "enum": ["a", "b"]},
                    "color": {"type": "string", "knownValues": ["red", "green"]},
                    "version": {"type": "string", "const": "v1"},
                    "maybe": {"type": "string"},
                    "did": {"type": "string", "format": "did"},
                    "handle": {"type": "string", "format": "handle"},
                    "uri": {"type": "string", "format": "at-uri"},
                    "lang": {"type": "string", "format": "language"},
                    "rkey": {"type": "string", "format": "tid"},
                    "list": {"type": "array", "minLength": 1, "maxLength": 3, "items": {"type": "integer"}},
                    "points": {"type": "array", "items": {"type": "ref", "ref": "#point"}},
                    "point": {"type": "ref", "ref": "#point"},
                    "label": {"type": "ref", "ref": "#label"},
                    "shape": {"type": "union", "refs": ["#point", "#circle"]},
                    "closedShape": {"type": "union", "refs": ["#point"], "closed": True},
                    "anything": {"type": "unknown"},
                    "data": {"type": "bytes", "maxLength": 4},
                    "link": {"type": "cid-link"},
                    "image": {"type": "blob", "accept": ["image/*"], "maxSize": 1000},
                    "nested": {
                        "type": "object",
                        "required": ["inner"],
                        "properties": {"inner": {"type": "object", "properties": {"x": {"type": "integer"}}}},
                    },
                },
            },
        },
        "point": {
            "type": "object",
            "required": ["x", "y"],
            "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
        },
        "circle": {"type": "object", "required": ["r"], "properties": {"r": {"type": "integer", "minimum": 0}}},
        "label": {"type": "string", "maxLength": 5},
    },
}
CID = "bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq"


def check(**fields) -> list[tuple[str, str]]:
    record = {"$type": "com.example.catalog", "count": 5, **fields}
    return sorted((e.path, e.rule) for e in validate_record(CATALOG, record))


def test_catalog_valid_record():
    assert (
        check(
            fixed=7,
            size=4,
            flag=False,
            on=True,
            name="ab",
            short="ab",
            kind="b",
            color="purple",  # knownValues is an open set
            version="v1",
            maybe=None,
            did="did:plc:z72i7hdynmk6r22z27h6tvur",
            handle="jeffrey.at.aesthetic.computer",
            uri="at://did:plc:z72i7hdynmk6r22z27h6tvur/computer.aesthetic.mood/3m2rtp45gstvp",
            lang="pt-BR",
            rkey="3m2rtp45gstvp",
            list=[1, 2, 3],
            points=[{"x": 1, "y": 2}],
            point={"x": 0, "y": 0},
            label="short",
            shape={"$type": "com.example.catalog#circle", "r": 2},
            closedShape={"$type": "com.example.catalog#point", "x": 1, "y": 1},
            anything={"$type": "com.example.other", "deep": [{"a": 1}]},
            data={"$bytes": "AQID"},
            link={"$link": CID},
            image={"$type": "blob", "ref": {"$link": CID}, "mimeType": "image/png", "size": 10},
            nested={"inner": {"x": 1}},
        )
        == []
    )


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"count": 0}, [("count", "minimum")]),
        ({"count": 11}, [("count", "maximum")]),
        ({"count": True}, [("count", "type")]),  # a bool is not an integer
        ({"count": 5.0}, [("count", "type")]),  # nor is a float
        ({"count": "5"}, [("count", "type")]),
        ({"count": 1 << 63}, [("count", "integer"), ("count", "maximum")]),
        ({"fixed": 8}, [("fixed", "const")]),
        ({"size": 3}, [("size", "enum")]),
        ({"flag": 1}, [("flag", "type")]),
        ({"on": False}, [("on", "const")]),
        ({"name": "a"}, [("name", "minLength")]),
        ({"name": "ééééé"}, [("name", "maxLength")]),  # 5 characters, 10 bytes
        ({"short": "a"}, [("short", "minGraphemes")]),
        ({"short": "abcd"}, [("short", "maxGraphemes")]),
        ({"kind": "c"}, [("kind", "enum")]),
        ({"version": "v2"}, [("version", "const")]),
        ({"did": "did:PLC:x"}, [("did", "format")]),
        ({"handle": "jeffrey"}, [("handle", "format")]),
        ({"uri": "https://example.com"}, [("uri", "format")]),
        ({"lang": "JA"}, [("lang", "format")]),
        ({"rkey": "self"}, [("rkey", "format")]),
        ({"list": []}, [("list", "minLength")]),
        ({"list": [1, 2, 3, 4]}, [("list", "maxLength")]),
        ({"list": [1, "2", None]}, [("list[1]", "type"), ("list[2]", "nullable")]),
        ({"points": [{"x": 1, "y": 2}, {"x": 1}]}, [("points[1].y", "required")]),
        ({"point": "com.example.catalog#point"}, [("point", "type")]),
        ({"label": "toolong"}, [("label", "maxLength")]),
        ({"shape": {"x": 1, "y": 1}}, [("shape.$type", "union")]),
        ({"shape": {"$type": "com.example.catalog#circle", "r": -1}}, [("shape.r", "minimum")]),
        ({"shape": {"$type": "com.example.catalog#point#main"}}, [("shape.$type", "union")]),
        ({"shape": {"$type": "com.example.unknown", "z": 1}}, []),  # open union: unknown variants pass
        ({"closedShape": {"$type": "com.example.catalog#circle", "r": 1}}, [("closedShape.$type", "union")]),
        ({"anything": "text"}, [("anything", "type")]),
        ({"anything": {"$bytes": "AQID"}}, [("anything", "type")]),
        ({"anything": {"a": [1.5]}}, [("anything.a[0]", "data-model")]),
        ({"data": {"$bytes": "AQIDBAU"}}, [("data", "maxLength")]),
        ({"data": {"$bytes": "not base64!"}}, [("data", "bytes")]),
        ({"data": "AQID"}, [("data", "type")]),
        ({"link": CID}, [("link", "type")]),
        ({"image": {"$type": "blob", "ref": {"$link": CID}, "mimeType": "text/plain", "size": 10}}, [("image", "accept")]),
        ({"image": {"$type": "blob", "ref": {"$link": CID}, "mimeType": "image/png", "size": 5000}}, [("image", "maxSize")]),
        ({"image": {"ref": {"$link": CID}, "mimeType": "image/png", "size": 5}}, [("image", "blob")]),
        ({"nested": {}}, [("nested.inner", "required")]),
        ({"nested": {"inner": {"x": "1"}}}, [("nested.inner.x", "type")]),
        ({"maybe": None, "name": None}, [("name", "nullable")]),
    ],
)
def test_catalog_rules(fields, expected):
    assert check(**fields) == sorted(expected)


def test_all_errors_are_reported_at_once():
    record = {"$type": "com.example.other", "name": "x", "kind": "z", "list": []}
    rules = sorted(e.rule for e in validate_record(CATALOG, record))
    assert rules == ["$type", "enum", "minLength", "minLength", "required"]


def test_validate_record_needs_a_record_lexicon():
    with pytest.raises(ValueError):
        validate_record({"lexicon": 1, "id": "com.example.flag", "defs": {"main": {"type": "boolean"}}}, {})
    with pytest.raises(LexiconError):
        validate_record({"lexicon": 1, "id": "bad"}, {})
    with pytest.raises(KeyError):
        validate_record("com.example.nothing", {})


# --- grapheme clusters -------------------------------------------------------------------------

GRAPHEMES = [
    ("abc", 3),
    ("e\u0301", 1),  # e + combining acute
    ("n\u0303\u0301", 1),
    ("👩‍👩‍👧‍👦", 1),  # ZWJ family
    ("🧑🏽‍🚀", 1),  # skin tone + ZWJ
    ("❤️‍🔥", 1),  # variation selector + ZWJ
    ("👍🏽", 1),
    ("🇺🇸🇫🇷", 2),  # two flags
    ("🇺🇸🇫", 2),
    ("🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", 1),  # Scotland (tags)
    ("1️⃣", 1),  # keycap
    ("\r\n", 1),
    ("\n\r", 2),
    ("한국어", 3),
    ("\u1100\u1161\u11a8", 1),  # conjoining jamo
    ("\x00\x00", 2),
    ("a\u200db", 2),  # ZWJ between letters joins nothing
]


@pytest.mark.parametrize("text, count", GRAPHEMES)
def test_grapheme_counts(text, count):
    assert count_graphemes(text) == count


def test_graphemes_in_validation():
    assert check(short="👩‍👩‍👧‍👦👩‍👩‍👧‍👦") == []  # 2 clusters, 50 bytes
    assert check(short="e\u0301e\u0301e\u0301") == []  # 3 clusters, 6 code points
    assert check(short="🇺🇸🇫🇷🇩🇪🇯🇵") == [("short", "maxGraphemes")]
    assert check(short="👍🏽") == [("short", "minGraphemes")]


def test_indic_conjuncts():
    assert count_graphemes("क्षि") == 1


def test_lexicon_type_is_hashable_and_comparable():
    a = check_lexicon(copy.deepcopy(CATALOG))
    b = check_lexicon(copy.deepcopy(CATALOG))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert isinstance(a, Lexicon) and a.record_key == "literal:self"
    assert Path(DEFAULT_LEXICON_DIR).name == "lexicons"


# --- publishing lexicons (moods_pipeline.atproto.lexicon_publish) with a fake session ------------------

AUTHORITY_DID = "did:plc:lexiconauthority000000000"


class FakeSession:
    """The duck type publish() needs: did, get_record, put_record; keeps records in memory."""

    def __init__(self, records=None, fail_on=(), answer_objects=False):
        self.did = AUTHORITY_DID
        self.records = copy.deepcopy(records or {})  # (collection, rkey) -> value
        self.fail_on = set(fail_on)
        self.answer_objects = answer_objects
        self.reads: list[tuple[str, str]] = []
        self.puts: list[tuple[str, str]] = []

    def get_record(self, collection, rkey):
        self.reads.append((collection, rkey))
        value = copy.deepcopy(self.records.get((collection, rkey)))
        if value is not None and self.answer_objects:
            return type("Rec", (), {"value": value, "rkey": rkey})()
        return value

    def put_record(self, collection, rkey, record):
        if rkey in self.fail_on:
            raise RuntimeError("HTTP 500 InternalServerError")
        self.puts.append((collection, rkey))
        self.records[(collection, rkey)] = copy.deepcopy(record)
        return {"uri": f"at://{self.did}/{collection}/{rkey}"}


OTHER = {
    "lexicon": 1,
    "id": "computer.aesthetic.other",
    "defs": {"main": {"type": "record", "key": "tid", "record": {"type": "object", "properties": {}}}},
}


def test_schema_record_is_the_document_with_its_type():
    mood = get_lexicon(MOOD_COLLECTION)
    record = schema_record(mood)
    assert record == {"$type": "com.atproto.lexicon.schema", **mood_doc()}
    assert record["id"] == MOOD_COLLECTION
    assert schema_record(check_lexicon({**mood_doc(), "$type": SCHEMA_COLLECTION})) == record


def test_plan_create_update_up_to_date():
    mood = get_lexicon(MOOD_COLLECTION)
    published_same = {k: v for k, v in schema_record(mood).items() if k != "$type"}  # $type ignored
    changed = copy.deepcopy(schema_record(mood))
    changed["defs"]["main"]["description"] = "an older description"
    other = check_lexicon(OTHER)

    plan = plan_publication([mood, other], {})
    assert [(a.nsid, a.action) for a in plan] == [(MOOD_COLLECTION, "create"), ("computer.aesthetic.other", "create")]
    assert plan[0].record == schema_record(mood)

    plan = plan_publication({MOOD_COLLECTION: mood, other.nsid: other}, {MOOD_COLLECTION: published_same, other.nsid: None})
    assert [(a.nsid, a.action) for a in plan] == [(MOOD_COLLECTION, "up-to-date"), ("computer.aesthetic.other", "create")]

    plan = plan_publication([mood], {MOOD_COLLECTION: changed})
    assert [a.action for a in plan] == ["update"]
    extra_field = {**schema_record(mood), "revision": 2}
    assert [a.action for a in plan_publication([mood], {MOOD_COLLECTION: extra_field})] == ["update"]
    assert plan_publication([mood_doc()], {}) == [PublishAction(MOOD_COLLECTION, "create", {})]


def test_plan_rejects_bad_input():
    with pytest.raises(LexiconError):
        plan_publication([{"lexicon": 1, "id": "bad"}], {})
    with pytest.raises(ValueError):
        plan_publication([mood_doc(), mood_doc()], {})
    with pytest.raises(TypeError):
        plan_publication(mood_doc(), {})


def test_dry_run_writes_nothing():
    session = FakeSession()
    report = publish(session, load_lexicons(), dry_run=True)
    assert session.puts == [] and session.reads == [(SCHEMA_COLLECTION, MOOD_COLLECTION)]
    assert report.dry_run and report.counts == {"create": 1, "update": 0, "up-to-date": 0}
    assert report.pending == [MOOD_COLLECTION] and not report.ok
    assert report.dns_records == {"_lexicon.aesthetic.computer": f"did={AUTHORITY_DID}"}


def test_publish_then_publish_again_is_idempotent():
    session = FakeSession()
    first = publish(session, None, dry_run=False)  # None: the repository's lexicons
    assert session.puts == [(SCHEMA_COLLECTION, MOOD_COLLECTION)]
    assert first.written == [MOOD_COLLECTION] and first.ok
    assert session.records[(SCHEMA_COLLECTION, MOOD_COLLECTION)] == schema_record(get_lexicon(MOOD_COLLECTION))

    second = publish(session, load_lexicons(), dry_run=False)
    assert session.puts == [(SCHEMA_COLLECTION, MOOD_COLLECTION)]  # nothing more written
    assert second.counts == {"create": 0, "update": 0, "up-to-date": 1} and second.ok
    assert json.loads(json.dumps(second.to_dict()))["actions"] == {MOOD_COLLECTION: "up-to-date"}


def test_publish_updates_a_changed_schema():
    stale = schema_record(get_lexicon(MOOD_COLLECTION))
    stale["defs"]["main"]["record"]["properties"]["ref"] = {"type": "string"}
    session = FakeSession({(SCHEMA_COLLECTION, MOOD_COLLECTION): stale}, answer_objects=True)
    report = publish(session, [get_lexicon(MOOD_COLLECTION)], dry_run=False)
    assert [(a.nsid, a.action) for a in report.actions] == [(MOOD_COLLECTION, "update")]
    assert session.records[(SCHEMA_COLLECTION, MOOD_COLLECTION)]["defs"]["main"]["record"]["properties"]["ref"][
        "maxLength"
    ] == 24


def test_a_failed_write_is_reported_and_the_others_still_go():
    session = FakeSession(fail_on={MOOD_COLLECTION})
    report = publish(session, [get_lexicon(MOOD_COLLECTION), OTHER], dry_run=False)
    assert report.written == ["computer.aesthetic.other"]
    assert report.failed == {MOOD_COLLECTION: "RuntimeError: HTTP 500 InternalServerError"}
    assert report.pending == [MOOD_COLLECTION] and not report.ok
    assert report.to_dict()["failed"] == report.failed


def test_authority_domain():
    assert lexicon_publish.authority_domain("computer.aesthetic.mood") == "aesthetic.computer"
    assert lexicon_publish.authority_domain("com.example.sub.thing") == "sub.example.com"
