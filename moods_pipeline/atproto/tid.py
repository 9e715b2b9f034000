"""Deterministic record keys: TIDs per the atproto spec and docs/interface.md "Record keys".

A TID is a 64-bit integer: the top bit 0, then 53 bits of microseconds since the Unix epoch, then
a 10-bit clock id. It is written as 13 characters of base32-sortable
(`234567abcdefghijklmnopqrstuvwxyz`), most significant first, so string order is number order.

A mood's TID is derived from the mood alone, so a re-run writes the same rkey (idempotent writes):

    h        = first 8 bytes of SHA-256(the ObjectId's 24-character lowercase hex string), big-endian
    micros   = when_ms * 1000 + (h mod 1000)
    clock_id = (h div 1000) mod 1024

Two moods of one user that land on the same TID (same millisecond and the same 20 hash bits) are
resolved by `assign_rkeys`: in ObjectId order, a mood whose TID is taken moves to the next free
microsecond with the same clock id.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
TID_LENGTH = 13
MICROS_BITS = 53
CLOCK_ID_BITS = 10
MAX_MICROS = (1 << MICROS_BITS) - 1  # 2255-06-05T23:47:34.740991Z
MAX_CLOCK_ID = (1 << CLOCK_ID_BITS) - 1
# The last millisecond every mood of which gets a TID whatever its hash (micro part up to 999):
# 9007199254739 ms = 2255-06-05T23:47:34.739Z. Moods after it are invalid (docs/interface.md "Words").
MAX_WHEN_MS = (MAX_MICROS - 999) // 1000

_INDEX = {ch: i for i, ch in enumerate(ALPHABET)}
# The spec's syntax allows a first character up to "j" (16 values, 64 bits); the spec also says
# the top bit is always 0, which leaves "2".."b". We accept only TIDs with the top bit 0.
_TID_RE = re.compile(r"[234567ab][234567abcdefghijklmnopqrstuvwxyz]{12}")
_OBJECT_ID_RE = re.compile(r"[0-9a-f]{24}")


def _require_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value


def tid_from_parts(micros: int, clock_id: int) -> str:
    """The 13-character TID of `micros` (0 .. 2**53-1) and `clock_id` (0 .. 1023)."""
    _require_int("micros", micros)
    _require_int("clock_id", clock_id)
    if not 0 <= micros <= MAX_MICROS:
        raise ValueError(f"micros {micros} is outside 0..{MAX_MICROS} (53 bits)")
    if not 0 <= clock_id <= MAX_CLOCK_ID:
        raise ValueError(f"clock_id {clock_id} is outside 0..{MAX_CLOCK_ID} (10 bits)")
    n = (micros << CLOCK_ID_BITS) | clock_id
    chars = []
    for _ in range(TID_LENGTH):
        chars.append(ALPHABET[n & 31])
        n >>= 5
    return "".join(reversed(chars))


def is_valid_tid(s: object) -> bool:
    """True for a 13-character base32-sortable TID whose top bit is 0."""
    return isinstance(s, str) and _TID_RE.fullmatch(s) is not None


def parse_tid(s: str) -> tuple[int, int]:
    """(micros, clock_id) of a TID; ValueError if `s` is not one."""
    if not is_valid_tid(s):
        raise ValueError("not a valid TID (13 characters of 234567a-z, top bit 0)")
    n = 0
    for ch in s:
        n = (n << 5) | _INDEX[ch]
    return n >> CLOCK_ID_BITS, n & MAX_CLOCK_ID


def _check_mood_id(mood_id_hex: object) -> str:
    if not isinstance(mood_id_hex, str) or _OBJECT_ID_RE.fullmatch(mood_id_hex) is None:
        raise ValueError("mood id must be an ObjectId as 24 lowercase hex characters")
    return mood_id_hex


def _check_when_ms(when_ms: object) -> int:
    _require_int("when_ms", when_ms)
    if not 0 <= when_ms <= MAX_WHEN_MS:  # type: ignore[operator]
        raise ValueError(
            f"when_ms {when_ms} is outside 0..{MAX_WHEN_MS} (1970-01-01 .. 2255-06-05T23:47:34.739Z)"
        )
    return when_ms  # type: ignore[return-value]


def mood_hash(mood_id_hex: str) -> int:
    """The first 8 bytes of SHA-256 of the 24-character hex id, as a big-endian integer."""
    _check_mood_id(mood_id_hex)
    return int.from_bytes(hashlib.sha256(mood_id_hex.encode("ascii")).digest()[:8], "big")


def mood_tid_parts(mood_id_hex: str, when_ms: int) -> tuple[int, int]:
    """(micros, clock_id) of a mood's TID before collision resolution."""
    when_ms = _check_when_ms(when_ms)
    h = mood_hash(mood_id_hex)
    return when_ms * 1000 + h % 1000, (h // 1000) % 1024


def mood_tid(mood_id_hex: str, when_ms: int) -> str:
    """A mood's TID before collision resolution (use `assign_rkeys` for a user's moods)."""
    return tid_from_parts(*mood_tid_parts(mood_id_hex, when_ms))


def assign_rkeys(moods: Iterable[tuple[str, int]]) -> dict[str, str]:
    """The rkeys for one user's moods, given as (ObjectId hex, when in ms since the epoch).

    Moods are taken in ObjectId order (for 24 lowercase hex characters, string order is the
    ObjectId's byte order); a mood whose TID an earlier mood already holds takes the next free
    microsecond with the same clock id. The result depends only on the set of moods, not on
    their order. A mood id given twice must carry the same `when_ms` (ValueError otherwise).
    Returns {mood id: rkey}, in ObjectId order.

    Note: a collision needs two moods in the same millisecond sharing 20 hash bits (about one
    in a million such pairs). Callers still match moods to records by `ref` first, so an rkey
    shifted by a later-arriving mood never orphans a record.
    """
    when_by_id: dict[str, int] = {}
    for mood_id, when_ms in moods:
        _check_mood_id(mood_id)
        _check_when_ms(when_ms)
        known = when_by_id.setdefault(mood_id, when_ms)
        if known != when_ms:
            raise ValueError(f"mood {mood_id} is given twice with different when_ms")
    taken: set[tuple[int, int]] = set()
    rkeys: dict[str, str] = {}
    for mood_id in sorted(when_by_id):
        micros, clock_id = mood_tid_parts(mood_id, when_by_id[mood_id])
        while (micros, clock_id) in taken:
            micros += 1
        if micros > MAX_MICROS:  # only reachable at the very end of the TID range
            raise ValueError(f"no free TID left for mood {mood_id}")
        taken.add((micros, clock_id))
        rkeys[mood_id] = tid_from_parts(micros, clock_id)
    return rkeys
