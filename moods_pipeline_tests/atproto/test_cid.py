"""Record CIDs: the published vector (cid_vectors.json) against our encoder, and against the
reference PDS, which reports the CID of every record it stores (applyWrites results,
listRecords items, the record blocks of a getRepo export)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import libipld
import pytest

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.cid import CidError, cid_of_block, cid_problem, dag_cbor, record_cid
from moods_pipeline.atproto.client import written_cids
from moods_pipeline.model import Mood
from moods_pipeline.sync.mood_record import (
    Invalid,
    build_record,
    expected_cid,
    max_mood_bytes,
    mood_lexicon,
    record_key_for,
)

VECTORS = json.loads((Path(__file__).parent / "cid_vectors.json").read_text(encoding="utf-8"))["vectors"]
CREATE = "com.atproto.repo.applyWrites#create"


def mood_of(vector: dict) -> Mood:
    when = datetime.strptime(vector["when"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return Mood(id=vector["ref"], user="auth0|cid-vectors", text=vector["mood"], when=when)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_record_and_cid(vector):
    mood = mood_of(vector)
    record = build_record(mood)
    assert record == {"$type": MOOD_COLLECTION, "mood": vector["mood"], "when": vector["when"], "ref": vector["ref"]}
    assert len(vector["mood"].encode("utf-8")) == vector["utf8_bytes"]
    assert expected_cid(mood) == record_cid(record) == vector["cid"]
    if "dag_cbor_hex" in vector:
        assert dag_cbor(record).hex() == vector["dag_cbor_hex"]


def test_vector_bytes_are_canonical_dag_cbor_hashed_with_sha256():
    """Independent of our encoder's key order: the hand-readable first vector's bytes are a map
    of 4 whose keys come by length, then bytewise (ref, mood, when, $type), and the CID's parts
    are version 1, codec 0x71, sha-256 of exactly those bytes."""
    vector = VECTORS[0]
    raw = bytes.fromhex(vector["dag_cbor_hex"])
    assert raw[0] == 0xA4  # a map of 4
    keys_in_order = [b"ref", b"mood", b"when", b"$type"]
    positions = [raw.index(bytes([0x60 + len(k)]) + k) for k in keys_in_order]
    assert positions == sorted(positions)
    assert libipld.decode_dag_cbor(raw) == build_record(mood_of(vector))
    parts = libipld.decode_cid(vector["cid"])
    assert (parts["version"], parts["codec"], parts["hash"]["code"]) == (1, 0x71, 0x12)
    assert parts["hash"]["digest"] == hashlib.sha256(raw).digest()
    assert vector["cid"].startswith("bafyrei")


def test_the_vector_covers_the_largest_mood_the_lexicon_allows():
    mood_schema = mood_lexicon().main["record"]["properties"]["mood"]
    assert "maxGraphemes" not in mood_schema  # only a byte limit: the largest valid mood is 5,000 bytes
    assert max_mood_bytes() == 5000
    assert max(v["utf8_bytes"] for v in VECTORS) == 5000
    too_big = mood_of(dict(VECTORS[0], mood="x" * 5001))
    assert isinstance(build_record(too_big), Invalid) and isinstance(expected_cid(too_big), Invalid)


def test_key_order_and_json_forms():
    record = build_record(mood_of(VECTORS[0]))
    assert record_cid(dict(reversed(list(record.items())))) == VECTORS[0]["cid"]
    assert record_cid({"a": {"$bytes": "AAEC"}}) == cid_of_block(libipld.encode_dag_cbor({"a": b"\x00\x01\x02"}))
    for bad, words in (
        ({"a": {"$link": VECTORS[0]["cid"]}}, "CID link"),
        ({"a": 1.5}, "float"),
        ({"a": {"$bytes": "!!"}}, "base64"),
        ({"a": object()}, "no DAG-CBOR form"),
        ({"a": "\ud800"}, "no DAG-CBOR form"),
        ([1], "a record is a map"),
    ):
        with pytest.raises(CidError, match=words):
            record_cid(bad)


def test_cid_problem():
    assert cid_problem(VECTORS[0]["cid"]) is None
    assert cid_problem(None) == "is not a string (NoneType)"
    assert cid_problem("bafynot") == "is not a CID"
    raw_codec = libipld.encode_cid(bytes([1, 0x55, 0x12, 0x20]) + hashlib.sha256(b"x").digest())
    assert "codec 0x55" in cid_problem(raw_codec)


def test_written_cids_pairs_results_by_rkey():
    results = [
        {"$type": "com.atproto.repo.applyWrites#createResult", "uri": "at://did:plc:a/c/3k2", "cid": "bafyA"},
        {"$type": "com.atproto.repo.applyWrites#deleteResult"},
        {"uri": "at://did:plc:a/c/3k3"},  # no CID: unknown, left out
        {"uri": "at://did:plc:a/c/3k4", "cid": 7},
        "junk",
    ]
    assert written_cids(results) == {"3k2": "bafyA"}
    assert written_cids([]) == {} and written_cids(None) == {}


@pytest.mark.integration
def test_the_reference_pds_reports_the_vector_cids(local_pds, make_account, pds):
    """Every vector written by applyWrites: the CID in its result, in listRecords and in the
    getRepo export (the record block's CID) equals the vector's (and so our encoder's)."""
    account = make_account("cid")
    session = pds.login(account.did, account.password, expected_did=account.did)
    moods = [mood_of(v) for v in VECTORS]
    writes = [
        {"$type": CREATE, "collection": MOOD_COLLECTION, "rkey": record_key_for(m), "value": build_record(m)}
        for m in moods
    ]
    want = {w["rkey"]: v["cid"] for w, v in zip(writes, VECTORS)}
    results = session.apply_writes(writes)
    assert written_cids(results) == want
    listed = pds.list_records(account.did, MOOD_COLLECTION)
    assert {r.rkey: r.cid for r in listed} == want
    assert {r.rkey: r.value for r in listed} == {w["rkey"]: w["value"] for w in writes}  # stored as sent
    exported = pds.export_records(account.did, MOOD_COLLECTION)
    assert {r.rkey: r.cid for r in exported} == want
