"""Pointer write-back on the real Mongo-wire server: whatever a mood's `atproto` holds (nothing, a
document, null, a string), the pointer lands in an `atproto` document and other fields stay."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from bson import ObjectId

pytestmark = pytest.mark.timeout(120)


def test_pointers_land_whatever_atproto_held(mongo_db, store):
    shapes = {"absent": None, "document": {"other": "kept"}, "null": "NULL", "string": "not a document",
              "number": 7, "old_rkey": {"rkey": "3kolderrkey22"}}
    ids = {}
    for name, atproto in shapes.items():
        doc = {"user": "sub-ptr", "mood": name, "when": datetime(2025, 1, 1, tzinfo=timezone.utc)}
        if atproto is not None:
            doc["atproto"] = None if atproto == "NULL" else atproto
        ids[name] = str(mongo_db.moods.insert_one(doc).inserted_id)
    missing = str(ObjectId())  # a mood removed meanwhile: nothing matches, nothing is created

    pairs = [(mood_id, f"3kptr{i:08d}") for i, mood_id in enumerate(ids.values())] + [(missing, "3kptrmissing2")]
    assert store.write_pointers(pairs) == len(shapes)

    wanted = dict(pairs)
    for name, mood_id in ids.items():
        atproto = mongo_db.moods.find_one({"_id": ObjectId(mood_id)})["atproto"]
        assert atproto["rkey"] == wanted[mood_id], name
    assert mongo_db.moods.find_one({"_id": ObjectId(ids["document"])})["atproto"]["other"] == "kept"
    assert mongo_db.moods.find_one({"_id": ObjectId(missing)}) is None
    assert store.write_pointers([]) == 0
