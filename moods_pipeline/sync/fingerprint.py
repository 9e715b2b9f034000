"""A user's Mongo fingerprint: one SHA-256 that changes whenever anything the audit reads from
Mongo for that user changes.

The audit's verdict on a user depends on the user's DID (whose repo is read), and on each of the
user's moods as ``MongoStore`` reads them (``model.Mood``: id, text, ``when``, nuked or not,
the ``atproto.rkey`` pointer). The fingerprint covers exactly those: per mood a digest of (id,
SHA-256 of the text, ``when`` to the microsecond with its type, the nuke flag, the pointer),
the digests sorted (so the query needs no sort and the order of documents never matters), then
one SHA-256 over the sub, the DID and the sorted digests. So an insert, a removal, an edit of
the text or of ``when``, a nuke or un-nuke, a pointer written, changed or removed, and a new
DID each give another fingerprint; another user's moods never enter it.

Only hashes leave this module: the text is hashed as it streams past, never kept.

:func:`fingerprints` computes them for many users from one query per thousand users
(``MongoStore.iter_moods_of_users``), never one round trip per user.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Iterable

from moods_pipeline.model import Mood

VERSION = "fp1"  # part of every fingerprint: a change of the recipe changes every fingerprint


def _text_part(text: object) -> bytes:
    if isinstance(text, str):
        return b"s" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    # A non-string text (an odd document) is judged invalid by the audit; its value still counts.
    return b"o" + hashlib.sha256(f"{type(text).__name__}:{text!r}".encode("utf-8", "backslashreplace")).digest()


def _when_part(when: object) -> bytes:
    if isinstance(when, datetime):
        return b"d" + when.isoformat(timespec="microseconds").encode()
    # DatetimeMS (a date out of Python's range), None, or anything else a document may hold.
    return b"o" + f"{type(when).__name__}:{when!r}".encode("utf-8", "backslashreplace")


def mood_digest(mood: Mood) -> bytes:
    """The digest of one mood's audited facts (32 bytes)."""
    pointer = mood.rkey.encode("utf-8", "surrogatepass") if mood.rkey is not None else b"\x00none"
    parts = [
        str(mood.id).encode("utf-8", "surrogatepass"),
        _text_part(mood.text),
        _when_part(mood.when),
        b"nuked" if mood.deleted else b"live",
        pointer,
    ]
    # Length-prefixed, so no two different tuples give the same bytes.
    return hashlib.sha256(b"".join(len(p).to_bytes(4, "big") + p for p in parts)).digest()


def combine(sub: str, did: str | None, digests: Iterable[bytes]) -> str:
    """The user's fingerprint from its moods' digests (in any order)."""
    outer = hashlib.sha256(VERSION.encode())
    for part in (str(sub).encode("utf-8", "surrogatepass"), (did or "").encode("utf-8", "surrogatepass")):
        outer.update(len(part).to_bytes(4, "big") + part)
    ordered = sorted(digests)
    outer.update(len(ordered).to_bytes(8, "big"))
    for digest in ordered:
        outer.update(digest)
    return f"{VERSION}:{outer.hexdigest()}"


def user_fingerprint(sub: str, did: str | None, moods: Iterable[Mood]) -> str:
    """The fingerprint of one user whose moods are at hand (the audit's own read)."""
    return combine(sub, did, (mood_digest(m) for m in moods))


def fingerprints(store, users: Iterable) -> dict[str, str]:
    """sub -> fingerprint for these users (``UserAccount``s: sub and DID), all of them from
    ``store.iter_moods_of_users`` (one query per thousand users). A user without moods gets
    the fingerprint of none."""
    users = list(users)
    digests: dict[str, list[bytes]] = {u.sub: [] for u in users}
    for mood in store.iter_moods_of_users([u.sub for u in users]):
        bucket = digests.get(mood.user)
        if bucket is not None:
            bucket.append(mood_digest(mood))
    return {u.sub: combine(u.sub, u.did, digests[u.sub]) for u in users}
