"""The CID of a record: CIDv1, dag-cbor codec (0x71), sha-256 multihash of the record's
canonical DAG-CBOR bytes, as a PDS computes it when it stores the record (and reports it in
``applyWrites`` results, ``listRecords`` items and as the record block's CID in a repo export).

What this uses: the atproto SDK's own DAG-CBOR/CID library, ``libipld`` (Rust):
``libipld.encode_dag_cbor`` for the canonical bytes (map keys sorted by length, then bytewise;
shortest integer forms) and ``libipld.encode_cid`` for the base32 string of the binary CID. Only
the sha-256 and the four prefix bytes are ours: ``libipld`` has no "CID of these bytes" call
(``atproto_jetstream.archive.events.compute_record_cid`` does the same in two lines, but importing
it loads the SDK's whole model package).

Records are taken in the JSON form the XRPC API uses. ``{"$bytes": base64}`` becomes a byte
string; a ``{"$link": cid}`` map (a CID link, CBOR tag 42) is refused: ``libipld`` cannot encode
tag 42, and no record of this project holds one. Floats are refused too: the atproto data model
has none.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import libipld

DAG_CBOR = 0x71
SHA2_256 = 0x12
# CIDv1, dag-cbor, sha2-256, 32-byte digest: the binary CID is these bytes, then the digest.
_CID_PREFIX = bytes([0x01, DAG_CBOR, SHA2_256, 0x20])


class CidError(ValueError):
    """A value that has no DAG-CBOR form in the atproto data model (says which part, never the text)."""


def _ipld(value: Any, path: str) -> Any:
    """The JSON-form ``value`` as the Python values ``libipld`` encodes."""
    if isinstance(value, dict):
        if "$link" in value and len(value) == 1:
            raise CidError(f"{path or 'record'} is a CID link ($link), which this encoder does not support")
        if "$bytes" in value and len(value) == 1:
            raw = value["$bytes"]
            if not isinstance(raw, str):
                raise CidError(f"{path}.$bytes is not a string")
            try:
                return base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
            except ValueError:
                raise CidError(f"{path}.$bytes is not base64") from None
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CidError(f"{path or 'record'} has a key that is not a string ({type(key).__name__})")
            out[key] = _ipld(item, f"{path}.{key}" if path else key)
        return out
    if isinstance(value, (list, tuple)):
        return [_ipld(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, float):
        raise CidError(f"{path or 'record'} is a float; the atproto data model has none")
    if value is None or isinstance(value, (str, bool, int, bytes)):
        return value
    raise CidError(f"{path or 'record'} is a {type(value).__name__}, which has no DAG-CBOR form")


def dag_cbor(record: dict) -> bytes:
    """The canonical DAG-CBOR bytes of a record in JSON form; ``CidError`` if it has none."""
    if not isinstance(record, dict):
        raise CidError(f"a record is a map, not a {type(record).__name__}")
    value = _ipld(record, "")
    try:
        return libipld.encode_dag_cbor(value)
    except ValueError as exc:
        # A lone surrogate in a string, an integer beyond 64 bits: libipld's message names the
        # type of problem; it may quote a character but never the whole text.
        raise CidError(f"record has no DAG-CBOR form: {str(exc)[:200]}") from None


def cid_of_block(block: bytes) -> str:
    """The CIDv1 string (base32, ``bafyrei...``) of DAG-CBOR bytes, hashed with sha-256."""
    return libipld.encode_cid(_CID_PREFIX + hashlib.sha256(block).digest())


def record_cid(record: dict) -> str:
    """The CID a PDS gives ``record`` (JSON form, ``$type`` included as stored)."""
    return cid_of_block(dag_cbor(record))


def cid_problem(value: Any) -> str | None:
    """Why ``value`` is not a CIDv1 dag-cbor sha-256 string, or None."""
    if not isinstance(value, str):
        return f"is not a string ({type(value).__name__})"
    try:
        parts = libipld.decode_cid(value)
    except ValueError:
        return "is not a CID"
    if parts["version"] != 1 or parts["codec"] != DAG_CBOR or parts["hash"]["code"] != SHA2_256:
        return f"is not a CIDv1 dag-cbor sha-256 CID (version {parts['version']}, codec {parts['codec']:#x})"
    return None
