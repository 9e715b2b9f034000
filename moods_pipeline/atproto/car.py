"""Reading a repo's records from a `com.atproto.sync.getRepo` CAR export (and a firehose commit's CAR).

A repo export is a CAR v1 file: a header naming the signed commit, then (CID, block) sections.
The commit's `data` is the root of the repo's Merkle Search Tree (MST), whose leaves map
`<collection>/<rkey>` to the CID of the record's DAG-CBOR block. :func:`records_from_car`
walks the tree in key order (skipping subtrees outside the collection) and returns the
records as :class:`~moods_pipeline.model.PdsRecord`, with values in the atproto JSON
form that `com.atproto.repo.listRecords` returns (links as ``{"$link": cid}``, bytes as
``{"$bytes": base64}``), so both reads compare equal.

What the ``atproto`` SDK does here: :func:`load_car` parses the file with
``atproto_core.car.CAR.from_bytes`` (``libipld.decode_car``: the CAR framing, the header and its
roots, every CID, and the DAG-CBOR of every block, in one call), keys blocks by the SDK's ``CID``,
and decoding errors of the SDK and ``libipld`` become :class:`CarError`.

What is still ours, because the SDK (0.0.73, ``libipld`` 3.5) lacks it:

- **Checking blocks against their CIDs.** ``CAR.from_bytes`` hands back decoded blocks only and
  never hashes them, so a corrupted or tampered block decodes "fine". :func:`read_car` splits
  the CAR into raw (CID, bytes) sections and checks every sha-256 block against its CID; it runs
  when ``verify`` is on (the default), which reads the file twice (cheap next to the request).
- **Links versus bytes.** ``libipld`` decodes a CID link (CBOR tag 42) and a byte string both as
  ``bytes``, so the SDK cannot give the JSON form. Record values holding neither (mood records
  hold neither) are taken as the SDK decoded them; a record holding ``bytes`` is read again from
  its raw block by the small strict DAG-CBOR reader below, which keeps them apart.
- **The MST walk.** The SDK has no repo-tree reader; :func:`iter_repo_entries` is ours.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any, Iterator

import libipld
from atproto_core.car import CAR
from atproto_core.cbor import decode_dag
from atproto_core.exceptions import AtProtocolError

from moods_pipeline.atproto.repo import PdsRecord

__all__ = [
    "CarError",
    "LoadedCar",
    "cid_to_str",
    "load_car",
    "read_car",
    "decode_record",
    "records_from_car",
    "iter_repo_entries",
]

_SHA256 = 0x12

# What the SDK and libipld raise on input they cannot decode (libipld: ValueError, and
# RecursionError for absurd nesting; the SDK: its AtProtocolError family).
_DECODE_ERRORS = (ValueError, TypeError, RecursionError, AtProtocolError)


class CarError(ValueError):
    """The CAR file (or a block in it) is malformed or incomplete."""


# --- CAR v1: the SDK's decoding, plus our check of each block against its CID ---------------------


class LoadedCar:
    """A CAR file as the SDK decoded it, blocks keyed by CID string, raw bytes at hand on demand."""

    def __init__(self, data: bytes, roots: list[str], values: dict[str, Any], raw: dict[str, bytes] | None) -> None:
        self._data = data
        self.roots = roots
        self.values = values  # CID string -> decoded block (links and bytes both as ``bytes``)
        self._raw = raw

    def value(self, cid: str, what: str) -> Any:
        """The decoded block ``cid``; ``what`` names it in the error if it is missing."""
        try:
            return self.values[cid]
        except KeyError:
            raise CarError(f"{what} block {cid} missing from the CAR") from None

    def raw(self, cid: str) -> bytes:
        if self._raw is None:  # only a record holding bytes or links needs them, and only unverified
            _, blocks = read_car(self._data, verify=False)
            self._raw = {cid_to_str(key): block for key, block in blocks.items()}
        try:
            return self._raw[cid]
        except KeyError:
            raise CarError(f"block {cid} missing from the CAR") from None

    def record(self, cid: str, what: str = "record") -> dict:
        """The record block ``cid`` in the JSON form listRecords gives."""
        value = self.value(cid, what)
        if _has_bytes(value):  # libipld cannot tell a link from bytes: read the raw block ourselves
            return decode_record(self.raw(cid))
        if not isinstance(value, dict):
            raise CarError(f"{what} block {cid} holds a {type(value).__name__}, not a map")
        return value


def load_car(data: bytes, *, verify: bool = True) -> LoadedCar:
    """Decode a CAR v1 file with the SDK; with ``verify``, check every sha-256 block against its CID."""
    raw = None
    if verify:  # before decoding, so a damaged block is reported as such, not as bad CBOR
        _, blocks = read_car(data, verify=True)
        raw = {cid_to_str(key): block for key, block in blocks.items()}
    try:
        car = CAR.from_bytes(data)
    except _DECODE_ERRORS as exc:
        raise CarError(f"bad CAR file: {exc}") from None
    values = {str(cid): value for cid, value in car.blocks.items()}
    return LoadedCar(data, [str(car.root)], values, raw)


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

    The SDK's ``CAR`` keeps no raw blocks, so this splitter is ours. With ``verify`` (the
    default), every sha-256 block is checked against its CID.
    """
    view = memoryview(data)
    try:
        header_len, pos = _varint(view, 0)
        header = decode_dag(bytes(view[pos : pos + header_len]))
    except (*_DECODE_ERRORS, IndexError) as exc:
        raise CarError(f"bad CAR header: {exc or type(exc).__name__}") from None
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
    try:
        return libipld.encode_cid(cid)
    except ValueError as exc:
        raise CarError(f"bad CID: {exc}") from None


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
    """A raw record block as the JSON-like value listRecords would return."""
    try:
        value = decode_dag(block)  # the SDK's decoder; also rejects what is not strict DAG-CBOR
    except _DECODE_ERRORS as exc:
        raise CarError(f"record block is not DAG-CBOR: {exc.__cause__ or exc}") from None
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



# --- the repo's MST (the SDK has no reader for it) -----------------------------------------------


def iter_repo_entries(car: LoadedCar, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(key, record CID) of the repo's MST leaves whose key starts with ``prefix``, in key order."""
    if not car.roots:
        raise CarError("CAR has no root")
    commit = car.value(car.roots[0], "commit")
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
            yield item[1], cid_to_str(item[2])
            continue
        _, cid, lo, hi = item
        cid_str = cid_to_str(cid)
        node = car.value(cid_str, "MST node")
        if not isinstance(node, dict) or not isinstance(node.get("e"), list):
            raise CarError(f"MST node {cid_str} is malformed")
        entries = node["e"]
        keys: list[bytes] = []
        previous = b""
        for entry in entries:
            try:
                key = previous[: entry["p"]] + entry["k"]
            except (KeyError, TypeError):
                raise CarError(f"MST node {cid_str} has a malformed entry") from None
            keys.append(key)
            previous = key
        pending: list[tuple] = []
        if node.get("l") is not None:  # the left subtree ends before the first key
            pending.append(("subtree", node["l"], lo, keys[0] if keys else hi))
        for index, entry in enumerate(entries):
            key = keys[index]
            if not isinstance(entry.get("v"), bytes):
                raise CarError(f"MST node {cid_str} has an entry without a value CID")
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
                if not isinstance(sub, bytes):
                    raise CarError(f"MST node {cid_str} has a malformed subtree link")
                if overlaps(sub_lo, sub_hi):
                    stack.append(("node", sub, sub_lo, sub_hi))


def records_from_car(data: bytes, collection: str, *, verify: bool = True) -> list[PdsRecord]:
    """The records of ``collection`` in a getRepo CAR, in rkey order, valued as listRecords gives them."""
    car = load_car(data, verify=verify)
    prefix = f"{collection}/"
    return [
        PdsRecord(rkey=key[len(prefix) :], value=car.record(cid, f"record {key}"), cid=cid)
        for key, cid in iter_repo_entries(car, prefix)
    ]
