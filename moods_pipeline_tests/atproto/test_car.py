"""CAR and firehose-frame decoding through the atproto SDK (car.py, firehose.py): a real repo export
from the test PDS reads as listRecords does, malformed CARs give CarError, and firehose frames
(commit, error, unknown kinds) come out as before."""

from __future__ import annotations

import hashlib

import httpx
import libipld
import pytest

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.car import CarError, cid_to_str, decode_record, load_car, read_car, records_from_car
from moods_pipeline.atproto.client import PdsClient
from moods_pipeline.atproto.firehose import CommitStream, FirehoseError, Op
from moods_pipeline.atproto.tid import tid_from_parts

CREATE = "com.atproto.repo.applyWrites#create"
OTHER_COLLECTION = "computer.aesthetic.cartest"  # no lexicon on the PDS: links and bytes go through as given
T0_US = 1_760_036_428_821_000


# --- building small CARs by hand ----------------------------------------------------------------


def cid_of(block: bytes) -> bytes:
    """Binary CIDv1, DAG-CBOR, sha-256."""
    return bytes([0x01, 0x71, 0x12, 0x20]) + hashlib.sha256(block).digest()


def varint(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([low])
        out += bytes([low | 0x80])


def link(cid: bytes) -> bytes:
    """A CBOR tag-42 CID link (identity multibase prefix, then the binary CID)."""
    body = b"\x00" + cid
    return b"\xd8\x2a" + bytes([0x58, len(body)]) + body


def text(s: str) -> bytes:
    raw = s.encode()
    assert len(raw) < 24
    return bytes([0x60 | len(raw)]) + raw


def cbor_map(*pairs: tuple[str, bytes]) -> bytes:
    """A DAG-CBOR map from already-encoded values (keys must come in DAG-CBOR order)."""
    assert len(pairs) < 24
    return bytes([0xA0 | len(pairs)]) + b"".join(text(k) + v for k, v in pairs)


def car(root: bytes, blocks: list[bytes]) -> bytes:
    header = cbor_map(("roots", b"\x81" + link(root)), ("version", b"\x01"))
    out = varint(len(header)) + header
    for block in blocks:
        cid = cid_of(block)
        out += varint(len(cid) + len(block)) + cid + block
    return out


def repo_car(records: dict[str, bytes]) -> bytes:
    """A one-node repo: commit -> MST node with ``records`` (key -> record block), keys sorted."""
    entries = []
    previous = b""
    for key in sorted(records):
        raw_key = key.encode()
        prefix = 0
        while prefix < min(len(previous), len(raw_key)) and previous[prefix] == raw_key[prefix]:
            prefix += 1
        suffix = raw_key[prefix:]
        entries.append(
            cbor_map(("k", bytes([0x58, len(suffix)]) + suffix), ("p", bytes([prefix])), ("t", b"\xf6"),
                     ("v", link(cid_of(records[key]))))
        )
        previous = raw_key
    node = cbor_map(("e", bytes([0x80 | len(entries)]) + b"".join(entries)), ("l", b"\xf6"))
    commit = cbor_map(("data", link(cid_of(node))), ("version", b"\x03"))
    return car(cid_of(commit), [commit, node, *records.values()])


MOOD_BLOCK = libipld.encode_dag_cbor({"$type": MOOD_COLLECTION, "mood": "calm", "ref": "68e8064c11885fb93a529c8d"})
BYTES_BLOCK = cbor_map(("b", b"\x42hi"), ("l", link(cid_of(MOOD_BLOCK))))


# --- unit: the new path on hand-made CARs -------------------------------------------------------


def test_a_hand_made_repo_reads_with_links_and_bytes_apart():
    data = repo_car({f"{MOOD_COLLECTION}/a": MOOD_BLOCK, f"{OTHER_COLLECTION}/b": BYTES_BLOCK})
    moods = records_from_car(data, MOOD_COLLECTION)
    assert [(r.rkey, r.value, r.cid) for r in moods] == [
        ("a", libipld.decode_dag_cbor(MOOD_BLOCK), cid_to_str(cid_of(MOOD_BLOCK)))
    ]
    for verify in (True, False):  # unverified, the raw block is split out only when needed
        [other] = records_from_car(data, OTHER_COLLECTION, verify=verify)
        assert other.value == {"b": {"$bytes": "aGk"}, "l": {"$link": cid_to_str(cid_of(MOOD_BLOCK))}}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: b"", "bad CAR"),
        (lambda data: b"\x05abc", "bad CAR"),
        (lambda data: b"\x01\xa0", "not a CAR v1 file"),  # header is an empty map
        (lambda data: data[:-3], "truncated"),  # the last section cut short
        (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "does not match its CID"),
        (lambda data: data + b"\x05", "truncated"),  # a section longer than what is left
    ],
)
def test_malformed_cars_give_car_error(damage, message):
    data = repo_car({f"{MOOD_COLLECTION}/a": MOOD_BLOCK})
    with pytest.raises(CarError, match=message):
        records_from_car(damage(data), MOOD_COLLECTION)


def test_incomplete_or_wrong_repos_give_car_error():
    # The MST names a record whose block is not in the CAR.
    full = repo_car({f"{MOOD_COLLECTION}/a": MOOD_BLOCK})
    _, blocks = read_car(full)
    roots = list(read_car(full)[0])
    without_record = {cid: block for cid, block in blocks.items() if cid != cid_of(MOOD_BLOCK)}
    data = car(roots[0], list(without_record.values()))
    with pytest.raises(CarError, match="missing from the CAR"):
        records_from_car(data, MOOD_COLLECTION)
    # A record block that is not a map.
    not_a_map = libipld.encode_dag_cbor(["a", "list"])
    with pytest.raises(CarError, match="not a map"):
        records_from_car(repo_car({f"{MOOD_COLLECTION}/a": not_a_map}), MOOD_COLLECTION)
    # A root that is no repo commit.
    with pytest.raises(CarError, match="not a repo commit"):
        records_from_car(car(cid_of(MOOD_BLOCK), [MOOD_BLOCK]), MOOD_COLLECTION)
    # A CAR that does not even hold its root.
    with pytest.raises(CarError, match="missing"):
        records_from_car(car(cid_of(b"\xa0"), [MOOD_BLOCK]), MOOD_COLLECTION)
    with pytest.raises(CarError):
        decode_record(b"\xff")
    with pytest.raises(CarError):
        load_car(b"garbage")


# --- unit: firehose frames through the SDK ------------------------------------------------------


def frame(header: dict, body: dict) -> bytes:
    return libipld.encode_dag_cbor(header) + libipld.encode_dag_cbor(body)


def commit_body(seq: int, blocks: bytes, ops: list[dict]) -> dict:
    return {
        "seq": seq, "repo": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "rev": "3m2xkqk3c5k2a", "since": None,
        "time": "2025-10-09T19:00:28.821Z", "commit": cid_of(b"\xa0"), "rebase": False, "tooBig": False,
        "blobs": [], "blocks": blocks, "ops": ops,
    }


def test_firehose_frames_decode_through_the_sdk():
    stream = CommitStream("http://127.0.0.1:9", collection=MOOD_COLLECTION)
    blocks = car(cid_of(b"\xa0"), [b"\xa0", MOOD_BLOCK, BYTES_BLOCK])
    ops = [
        {"action": "create", "path": f"{MOOD_COLLECTION}/a", "cid": cid_of(MOOD_BLOCK)},
        {"action": "update", "path": f"{MOOD_COLLECTION}/b", "cid": cid_of(BYTES_BLOCK)},
        {"action": "delete", "path": f"{MOOD_COLLECTION}/c", "cid": None},
        {"action": "create", "path": f"{OTHER_COLLECTION}/d", "cid": cid_of(MOOD_BLOCK)},
    ]
    commit = stream._handle(frame({"op": 1, "t": "#commit"}, commit_body(7, blocks, ops)))
    assert commit is not None and commit.seq == 7 and commit.did == "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
    assert commit.time is not None and commit.time.year == 2025
    assert commit.ops == [
        Op("create", MOOD_COLLECTION, "a", libipld.decode_dag_cbor(MOOD_BLOCK)),
        Op("update", MOOD_COLLECTION, "b", {"b": {"$bytes": "aGk"}, "l": {"$link": cid_to_str(cid_of(MOOD_BLOCK))}}),
        Op("delete", MOOD_COLLECTION, "c", None),
    ]
    assert stream.last_seq == 7

    # Damaged blocks: the ops still arrive, without their records.
    damaged = blocks[:-1] + bytes([blocks[-1] ^ 1])
    commit = stream._handle(frame({"op": 1, "t": "#commit"}, commit_body(8, damaged, ops[:1])))
    assert commit is not None and commit.ops == [Op("create", MOOD_COLLECTION, "a", None)]

    # Other kinds, kinds the SDK does not know, bodies its model refuses, undecodable frames:
    # skipped, with last_seq advanced whenever the body names a seq.
    assert stream._handle(frame({"op": 1, "t": "#identity"}, {"seq": 9, "did": "did:plc:x", "time": "t"})) is None
    assert stream._handle(frame({"op": 1, "t": "#somethingNew"}, {"seq": 10})) is None
    assert stream._handle(frame({"op": 1, "t": "#commit"}, {"seq": 11, "ops": "not a list"})) is None
    assert stream._handle(frame({"op": 1, "t": "#info"}, {"name": "OutdatedCursor"})) is None
    assert stream._handle(b"\xff\xff") is None
    assert stream.last_seq == 11

    # Only ops of other collections: no commit.
    assert stream._handle(frame({"op": 1, "t": "#commit"}, commit_body(12, blocks, ops[3:]))) is None

    with pytest.raises(FirehoseError) as info:
        stream._handle(frame({"op": -1}, {"error": "FutureCursor", "message": "Cursor in the future."}))
    assert info.value.error == "FutureCursor" and "FutureCursor" in str(info.value)


# --- integration: a real repo export from the test PDS ------------------------------------------


@pytest.mark.integration
def test_a_real_repo_export_reads_as_list_records(make_account, local_pds):
    account = make_account("carsdk")
    with PdsClient(local_pds.url) as client:
        session = client.login(account.did, account.password)
        moods = [
            {"$type": CREATE, "collection": MOOD_COLLECTION, "rkey": tid_from_parts(T0_US + i * 1000, 3),
             "value": {"$type": MOOD_COLLECTION, "mood": f"mood {i}", "when": "2025-10-09T19:00:28.821Z",
                       "ref": f"68e8064c11885fb93a529c{i:02x}"}}
            for i in range(30)
        ]
        session.apply_writes(moods)
        first = client.list_records(account.did, MOOD_COLLECTION)[0]
        # A record holding a link and bytes, so the raw-block reader is used on real PDS output too.
        session.apply_writes([
            {"$type": CREATE, "collection": OTHER_COLLECTION, "rkey": "self",
             "value": {"$type": OTHER_COLLECTION, "b": {"$bytes": "aGVsbG8"}, "l": {"$link": first.cid}}}
        ])
        data = httpx.get(f"{local_pds.url}/xrpc/com.atproto.sync.getRepo", params={"did": account.did}).content

        for collection, expected_count in ((MOOD_COLLECTION, 30), (OTHER_COLLECTION, 1)):
            listed = client.list_records(account.did, collection)
            exported = records_from_car(data, collection)
            assert len(exported) == expected_count
            assert [(r.rkey, r.cid, r.value) for r in exported] == [(r.rkey, r.cid, r.value) for r in listed]
        [other] = records_from_car(data, OTHER_COLLECTION)
        assert other.value["l"] == {"$link": first.cid} and other.value["b"] == {"$bytes": "aGVsbG8"}

        # The SDK's decoding and our splitter agree on the blocks and the root.
        loaded = load_car(data)
        roots, raw_blocks = read_car(data)
        assert loaded.roots == [cid_to_str(roots[0])]
        assert set(loaded.values) == {cid_to_str(cid) for cid in raw_blocks}
        assert client.export_records(account.did, MOOD_COLLECTION) == client.list_records(account.did, MOOD_COLLECTION)
