"""From a Mongo mood to its lexicon record: docs/interface.md's validity rules and reasons."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import bson
import pytest
from bson import ObjectId
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from hypothesis import given, settings
from hypothesis import strategies as st

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto import tid
from moods_pipeline.atproto.lexicon import validate_record
from moods_pipeline.model import Mood
from moods_pipeline.sync.mood_record import (
    MAX_WHEN,
    Invalid,
    build_record,
    max_mood_bytes,
    mood_lexicon,
    mood_when_ms,
    record_key_for,
    rkeys_for,
)

UTC = timezone.utc
ID = "68e8064c11885fb93a529c8d"
WHEN = datetime(2025, 10, 9, 19, 0, 28, 821000, tzinfo=UTC)
SECRET = "s3cr3t-mood-text"
AUTO = CodecOptions(tz_aware=True, datetime_conversion=DatetimeConversion.DATETIME_AUTO)


def mood(text="feeling sunny", when=WHEN, id=ID, **kw) -> Mood:
    return Mood(id=id, user="auth0|66db", text=text, when=when, **kw)


def test_a_valid_mood_becomes_the_production_record():
    assert build_record(mood()) == {
        "$type": "computer.aesthetic.mood",
        "mood": "feeling sunny",
        "when": "2025-10-09T19:00:28.821Z",
        "ref": "68e8064c11885fb93a529c8d",
    }
    assert validate_record(MOOD_COLLECTION, build_record(mood())) == []
    assert max_mood_bytes() == 5000
    assert mood_lexicon().nsid == MOOD_COLLECTION


def test_nuked_moods_are_valid_too():
    assert build_record(mood(deleted=True))["ref"] == ID


@pytest.mark.parametrize(
    "when, iso",
    [
        (datetime(2025, 10, 9, 19, 0, 28, 821000), "2025-10-09T19:00:28.821Z"),  # naive is UTC
        (datetime(2025, 10, 9, 21, 0, 28, 821000, tzinfo=timezone(timedelta(hours=2))), "2025-10-09T19:00:28.821Z"),
        (datetime(2025, 10, 9, 19, 0, 28, 821999, tzinfo=UTC), "2025-10-09T19:00:28.821Z"),  # ms precision
        (datetime(2025, 10, 9, 19, 0, 28, tzinfo=UTC), "2025-10-09T19:00:28.000Z"),
        (datetime(1970, 1, 1, tzinfo=UTC), "1970-01-01T00:00:00.000Z"),
        (MAX_WHEN, "2255-06-05T23:47:34.739Z"),
    ],
)
def test_when_is_utc_with_milliseconds(when, iso):
    assert build_record(mood(when=when))["when"] == iso


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"text": ""}, "mood is empty"),
        ({"text": "  \n\t "}, "mood is empty after trimming whitespace"),
        ({"text": "\u3000\u00a0\u2003\ufeff"}, "mood is empty after trimming whitespace"),
        ({"text": None}, "mood is missing"),
        ({"text": 42}, "mood is not a string (int)"),
        ({"text": b"sunny"}, "mood is not a string (bytes)"),
        ({"text": ["sunny"]}, "mood is not a string (list)"),
        ({"text": "😀" * 1300}, "mood is 5,200 UTF-8 bytes; the lexicon allows 5,000"),
        ({"text": "a" * 5000 + "😀"}, "mood is 5,004 UTF-8 bytes; the lexicon allows 5,000"),
        (
            {"text": "abc\ud83d"},
            "mood contains a lone surrogate (U+D83D at index 3); it cannot be encoded as UTF-8",
        ),
        ({"when": None}, "when is missing"),
        ({"when": datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)}, "when 1969-12-31T23:59:59.999Z is before 1970"),
        ({"when": datetime(1, 1, 1)}, "when 0001-01-01T00:00:00.000Z is before 1970"),
        (
            {"when": MAX_WHEN + timedelta(milliseconds=1)},
            "when 2255-06-05T23:47:34.740Z is after 2255-06-05T23:47:34.739Z, the last time a record key (TID) can hold",
        ),
        (
            {"when": datetime(2256, 1, 1, tzinfo=UTC)},
            "when 2256-01-01T00:00:00.000Z is after 2255-06-05T23:47:34.739Z, the last time a record key (TID) can hold",
        ),
        ({"when": "2025-10-09T19:00:28.821Z"}, "when is not a datetime (str)"),
        ({"when": 1760036428821}, "when is not a datetime (int)"),
        ({"when": date(2025, 10, 9)}, "when is not a datetime (a date without a time)"),
        (
            {"when": DatetimeMS(-62198755200001)},
            "when is -62,198,755,200,001 ms from 1970-01-01, before 1970 (outside the dates Python can represent)",
        ),
        (
            {"when": DatetimeMS(253402300800000)},
            "when is 253,402,300,800,000 ms from 1970-01-01, after 2255-06-05T23:47:34.739Z"
            " (outside the dates Python can represent)",
        ),
        ({"id": "68E8064C11885FB93A529C8D"}, "_id is not an ObjectId (24 lowercase hex characters)"),
        ({"id": "'custom-id'"}, "_id is not an ObjectId (24 lowercase hex characters)"),
        ({"id": None}, "_id is not an ObjectId (24 lowercase hex characters)"),
        (
            {"text": "  ", "when": None, "id": "x"},
            "_id is not an ObjectId (24 lowercase hex characters); mood is empty after trimming whitespace;"
            " when is missing",
        ),
    ],
)
def test_invalid_moods_and_their_reasons(changes, reason):
    assert build_record(mood(**changes)) == Invalid(reason)


@pytest.mark.parametrize(
    "text",
    [
        "a" * 5000,  # exactly 5000 bytes
        "😀" * 1250,  # 5000 bytes of 4-byte characters
        "é" * 2500,
        "e\u0301" * 1666 + "ab",  # combining accents
        "👩‍👩‍👧‍👦" * 200,  # ZWJ sequences: 200 × 25 bytes
        "🏳️‍🌈 and 🧑🏽‍🚀",
        " leading and trailing whitespace is kept ",
        "a\x00b",  # NUL is allowed (see mood_record's docstring)
        "\x00",
        "\u200b",  # a zero-width space is not whitespace
    ],
)
def test_valid_texts_are_kept_exactly(text):
    record = build_record(mood(text=text))
    assert not isinstance(record, Invalid), record
    assert record["mood"] == text


def test_an_object_id_instance_is_accepted():
    assert build_record(mood(id=ObjectId(ID)))["ref"] == ID


def test_reasons_never_contain_the_text():
    cases = [
        mood(text=SECRET * 400),
        mood(text=SECRET + "\ud800"),
        mood(text=SECRET, when=SECRET),
        mood(text=SECRET, id="not-an-object-id"),
    ]
    for case in cases:
        built = build_record(case)
        assert isinstance(built, Invalid)
        assert SECRET not in built.reason and SECRET not in repr(built)
        with pytest.raises(ValueError) as caught:
            record_key_for(case)
        assert SECRET not in str(caught.value)  # (the id may appear: ids are not private)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=1800))
def test_validity_matches_the_contract(text):
    built = build_record(mood(text=text))
    blank = all(ch.isspace() or ch == "\ufeff" for ch in text)
    expected_valid = not blank and len(text.encode()) <= 5000
    assert isinstance(built, dict) == expected_valid
    if expected_valid:
        assert built["mood"] == text
        assert validate_record(MOOD_COLLECTION, built) == []


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2255, 6, 5, 23, 47, 34, 739999)))
def test_every_date_in_range_is_valid_and_round_trips(when):
    built = build_record(mood(when=when))
    assert isinstance(built, dict)
    parsed = datetime.fromisoformat(built["when"].replace("Z", "+00:00"))
    assert parsed == when.replace(tzinfo=UTC, microsecond=when.microsecond // 1000 * 1000)
    assert validate_record(MOOD_COLLECTION, built) == []


def test_out_of_range_dates_from_pymongo_are_reported_not_crashes():
    # What pymongo's DATETIME_AUTO decoding gives for a date Python cannot hold (year 10000),
    # for one it can but the pipeline cannot (year 1900), and for an ordinary one.
    raw = bson.encode({"a": DatetimeMS(253402300800000), "b": datetime(1900, 1, 1), "c": WHEN})
    decoded = bson.decode(raw, codec_options=AUTO)
    assert isinstance(decoded["a"], DatetimeMS)
    assert isinstance(build_record(mood(when=decoded["a"])), Invalid)
    assert build_record(mood(when=decoded["b"])) == Invalid("when 1900-01-01T00:00:00.000Z is before 1970")
    assert build_record(mood(when=decoded["c"]))["when"] == "2025-10-09T19:00:28.821Z"


# --- record keys ---------------------------------------------------------------------------------


def test_record_key_of_the_published_vector():
    assert record_key_for(mood()) == "3m2rtp45gstvp"
    assert mood_when_ms(mood()) == 1760036428821
    assert record_key_for(mood(when=datetime(2025, 10, 9, 21, 0, 28, 821000, tzinfo=timezone(timedelta(hours=2))))) == (
        "3m2rtp45gstvp"
    )


def test_record_key_for_an_invalid_mood_raises():
    with pytest.raises(ValueError, match="mood is empty"):
        record_key_for(mood(text=" "))
    with pytest.raises(ValueError, match="when is missing"):
        mood_when_ms(mood(when=None))


def test_rkeys_for_a_users_moods():
    later = mood(id="68e8064c11885fb93a529c8e", when=WHEN + timedelta(seconds=1))
    bad = mood(id="68e8064c11885fb93a529c8f", text="")
    rkeys = rkeys_for([later, bad, mood()])
    assert rkeys == {ID: "3m2rtp45gstvp", later.id: record_key_for(later)}
    assert rkeys[ID] < rkeys[later.id]
    assert rkeys == tid.assign_rkeys([(later.id, mood_when_ms(later)), (ID, mood_when_ms(mood()))])
