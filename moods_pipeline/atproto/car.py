"""Reading a repo's records from a `com.atproto.sync.getRepo` CAR export.

A repo export is a CAR v1 file: a header naming the signed commit, then (CID, block) sections.
The commit's `data` is the root of the repo's Merkle Search Tree (MST), whose leaves map
`<collection>/<rkey>` to the CID of the record's DAG-CBOR block. :func:`records_from_car`
walks the tree in key order (skipping subtrees outside the collection) and returns the
records as :class:`~moods_pipeline.model.PdsRecord`, with values in the atproto JSON
form that `com.atproto.repo.listRecords` returns (links as ``{"$link": cid}``, bytes as
``{"$bytes": base64}``), so both reads compare equal.

Blocks are split out of the CAR here (so each record's raw bytes are at hand and every
sha-256 block is checked against its CID) and decoded with ``libipld`` (the decoder behind
``atproto_core``'s CAR and CBOR). ``libipld`` returns CID links and byte strings both as
``bytes``; a record holding either is decoded again by the small strict DAG-CBOR reader
below, which keeps them apart. Mood records hold neither.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any, Iterator

import libipld

from moods_pipeline.atproto.repo import PdsRecord

__all__ = [
    "CarError",
    "cid_to_str",
    "read_car",
    "decode_record",
    "records_from_car",
    "iter_repo_entries",
]

_SHA256 = 0x12
_DAG_CBOR = 0x71


class CarError(ValueError):
    """The CAR file (or a block in it) is malformed or incomplete."""


# --- CAR v1 ------------------------------------------------------------------------------------


def _varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise CarError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise CarError("varint too long")


def _cid_length(data: bytes | memoryview, pos: int) -> tuple[int, int, bytes]:
    """Length of the binary CID at ``pos``; also its multihash code and digest."""
    start = pos
    if data[pos] == 0x12 and pos + 1 < len(data) and data[pos + 1] == 0x20:  # CIDv0: bare sha-256 multihash
        return 34, _SHA256, bytes(data[pos + 2 : pos + 34])
    version, pos = _varint(data, pos)
    if version != 1:
        raise CarError(f"unsupported CID version {version}")
    _codec, pos = _varint(data, pos)
    mh_code, pos = _varint(data, pos)
    mh_len, pos = _varint(data, pos)
    digest = bytes(data[pos : pos + mh_len])
    if len(digest) != mh_len:
        raise CarError("truncated CID")
    return pos + mh_len - start, mh_code, digest


def read_car(data: bytes, *, verify: bool = True) -> tuple[list[bytes], dict[bytes, bytes]]:
    """Split a CAR v1 file into its roots and a map binary CID -> raw block bytes.

    With ``verify`` (the default), every sha-256 block is checked against its CID.
    """
    view = memoryview(data)
    try:
        header_len, pos = _varint(view, 0)
        header = libipld.decode_dag_cbor(bytes(view[pos : pos + header_len]))
    except (ValueError, IndexError) as exc:
        raise CarError(f"bad CAR header: {exc}") from None
    pos += header_len
    if not isinstance(header, dict) or header.get("version") != 1:
        raise CarError("not a CAR v1 file")
    roots = header.get("roots") or []
    if not isinstance(roots, list) or not all(isinstance(r, bytes) for r in roots):
        raise CarError("CAR header has no valid roots")
    blocks: dict[bytes, bytes] = {}
    end = len(view)
    while pos < end:
        section_len, pos = _varint(view, pos)
        section_end = pos + section_len
        if section_end > end or section_len == 0:
            raise CarError("truncated CAR section")
        cid_len, mh_code, digest = _cid_length(view, pos)
        cid = bytes(view[pos : pos + cid_len])
        block = bytes(view[pos + cid_len : section_end])
        if verify and mh_code == _SHA256 and hashlib.sha256(block).digest() != digest:
            raise CarError(f"block {cid_to_str(cid)} does not match its CID")
        blocks[cid] = block
        pos = section_end
    return list(roots), blocks


def cid_to_str(cid: bytes) -> str:
    """A binary CID as its string form (base32 ``bafy...`` for CIDv1)."""
    return libipld.encode_cid(cid)


# --- DAG-CBOR -> atproto JSON form --------------------------------------------------------------


def _has_bytes(value: Any) -> bool:
    if isinstance(value, bytes):
        return True
    if isinstance(value, dict):
        return any(_has_bytes(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_bytes(v) for v in value)
    return False


def decode_record(block: bytes) -> dict:
    """A record block as the JSON-like value listRecords would return."""
    try:
        value = libipld.decode_dag_cbor(block)
    except ValueError as exc:
        raise CarError(f"record block is not DAG-CBOR: {exc}") from None
    if _has_bytes(value):
        value, pos = _Reader(block).read(0)
        if pos != len(block):
            raise CarError("trailing bytes after record")
    if not isinstance(value, dict):
        raise CarError(f"record block holds a {type(value).__name__}, not a map")
    return value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


class _Reader:
    """Strict-enough DAG-CBOR reader that keeps CID links (tag 42) apart from byte strings."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def _arg(self, info: int, pos: int) -> tuple[int, int]:
        data = self.data
        if info < 24:
            return info, pos
        size = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
        if size is None or pos + size > len(data):
            raise CarError("bad or indefinite CBOR length")
        return int.from_bytes(data[pos : pos + size], "big"), pos + size

    def read(self, pos: int) -> tuple[Any, int]:
        data = self.data
        if pos >= len(data):
            raise CarError("truncated CBOR")
        initial = data[pos]
        major, info = initial >> 5, initial & 0x1F
        pos += 1
        if major == 7:
            if info == 20:
                return False, pos
            if info == 21:
                return True, pos
            if info == 22:
                return None, pos
            if info == 27:
                return struct.unpack(">d", data[pos : pos + 8])[0], pos + 8
            raise CarError(f"unsupported CBOR simple value {info}")
        arg, pos = self._arg(info, pos)
        if major == 0:
            return arg, pos
        if major == 1:
            return -1 - arg, pos
        if major == 2:
            return {"$bytes": _b64(data[pos : pos + arg])}, pos + arg
        if major == 3:
            return data[pos : pos + arg].decode("utf-8"), pos + arg
        if major == 4:
            items = []
            for _ in range(arg):
                item, pos = self.read(pos)
                items.append(item)
            return items, pos
        if major == 5:
            out: dict[str, Any] = {}
            for _ in range(arg):
                key, pos = self.read(pos)
                if not isinstance(key, str):
                    raise CarError("non-string map key")
                out[key], pos = self.read(pos)
            return out, pos
        if major == 6:
            if arg != 42:
                raise CarError(f"unsupported CBOR tag {arg}")
            if data[pos] >> 5 != 2:
                raise CarError("CID link is not a byte string")
            length, start = self._arg(data[pos] & 0x1F, pos + 1)
            raw = data[start : start + length]
            if not raw or raw[0] != 0:
                raise CarError("CID link lacks the identity multibase prefix")
            return {"$link": cid_to_str(bytes(raw[1:]))}, start + length
        raise CarError(f"bad CBOR major type {major}")


# --- the repo's MST -----------------------------------------------------------------------------


def _block(blocks: dict[bytes, bytes], cid: bytes, what: str) -> Any:
    raw = blocks.get(cid)
    if raw is None:
        raise CarError(f"{what} block {cid_to_str(cid)} missing from the CAR")
    try:
        return libipld.decode_dag_cbor(raw)
    except ValueError as exc:
        raise CarError(f"{what} block {cid_to_str(cid)} is not DAG-CBOR: {exc}") from None


def iter_repo_entries(
    roots: list[bytes], blocks: dict[bytes, bytes], prefix: str = ""
) -> Iterator[tuple[str, bytes]]:
    """(key, record CID) of the repo's MST leaves whose key starts with ``prefix``, in key order."""
    if not roots:
        raise CarError("CAR has no root")
    commit = _block(blocks, roots[0], "commit")
    if not isinstance(commit, dict) or not isinstance(commit.get("data"), bytes):
        raise CarError("CAR root is not a repo commit")
    lo_bound = prefix.encode()
    hi_bound = lo_bound + b"\xff"  # keys are ASCII, so no key with the prefix reaches this

    def overlaps(lo: bytes | None, hi: bytes | None) -> bool:
        # Keys in a subtree lie strictly between lo and hi (None: unbounded).
        return (hi is None or hi > lo_bound) and (lo is None or lo < hi_bound)

    # An explicit stack of ("node", cid, lo, hi) and ("leaf", key, cid) items, in key order.
    stack: list[tuple] = [("node", commit["data"], None, None)]
    while stack:
        item = stack.pop()
        if item[0] == "leaf":
            yield item[1], item[2]
            continue
        _, cid, lo, hi = item
        node = _block(blocks, cid, "MST node")
        if not isinstance(node, dict) or not isinstance(node.get("e"), list):
            raise CarError(f"MST node {cid_to_str(cid)} is malformed")
        entries = node["e"]
        keys: list[bytes] = []
        previous = b""
        for entry in entries:
            try:
                key = previous[: entry["p"]] + entry["k"]
            except (KeyError, TypeError):
                raise CarError(f"MST node {cid_to_str(cid)} has a malformed entry") from None
            keys.append(key)
            previous = key
        pending: list[tuple] = []
        if node.get("l") is not None:  # the left subtree ends before the first key
            pending.append(("subtree", node["l"], lo, keys[0] if keys else hi))
        for index, entry in enumerate(entries):
            key = keys[index]
            pending.append(("leaf", key, entry["v"]))
            if entry.get("t") is not None:
                nxt = keys[index + 1] if index + 1 < len(keys) else hi
                pending.append(("subtree", entry["t"], key, nxt))
        for kind, *rest in reversed(pending):
            if kind == "leaf":
                key, value = rest
                if key.startswith(lo_bound):
                    stack.append(("leaf", key.decode("ascii", "replace"), value))
            else:
                sub, sub_lo, sub_hi = rest
                if overlaps(sub_lo, sub_hi):
                    stack.append(("node", sub, sub_lo, sub_hi))


def records_from_car(data: bytes, collection: str, *, verify: bool = True) -> list[PdsRecord]:
    """The records of ``collection`` in a getRepo CAR, in rkey order, valued as listRecords gives them."""
    roots, blocks = read_car(data, verify=verify)
    records: list[PdsRecord] = []
    prefix = f"{collection}/"
    for key, cid in iter_repo_entries(roots, blocks, prefix):
        raw = blocks.get(cid)
        if raw is None:
            raise CarError(f"record {key} ({cid_to_str(cid)}) missing from the CAR")
        records.append(PdsRecord(rkey=key[len(prefix) :], value=decode_record(raw), cid=cid_to_str(cid)))
    return records
