"""The pipeline's own files under MOODS_STATE_DIR: one naming rule for keys (DIDs, subs, run ids)
and one atomic writer."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

MAX_NAME = 200  # characters of a file name made from a key (file systems allow 255 bytes)
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-%")


def safe_name(key: str) -> str:
    """A file name (without suffix) for a DID, sub or run id: one name per key, one key per
    name, and never a path.

    ":" becomes "_" (so "did:plc:x" is "did_plc_x", as it always was); every other character
    outside letters, digits and ``.-%`` (the DID characters), "_" included, becomes "+XX" per
    UTF-8 byte, so no two keys share a name (before, "did:web:a_b" and "did:web:a:b" did) and
    no key makes a separator or a hidden file ("/", a leading "."). A key whose name would be
    longer than ``MAX_NAME`` (a DID may have 2,048 characters) is cut and ends with "+~" and a
    hash of the whole key ("+~" never occurs otherwise)."""
    out = []
    for position, char in enumerate(key):
        if char == ":":
            out.append("_")
        elif char in _PLAIN and not (position == 0 and char == "."):
            out.append(char)
        else:
            out.append("".join(f"+{byte:02X}" for byte in char.encode("utf-8", "surrogatepass")))
    name = "".join(out) or "+"
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        name = name[: MAX_NAME - 34] + "+~" + digest
    return name



def write_atomic(path: Path, write: Callable[[str], None]) -> None:
    """Create or replace ``path`` whole: ``write(tmp)`` fills a temporary file beside it, which
    then replaces ``path`` in one rename (readers see the old file or the new one, never a part;
    a failed write leaves the old file and no temporary one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, data: dict) -> None:
    def dump(tmp: str) -> None:
        with open(tmp, "w") as handle:
            json.dump(data, handle, sort_keys=True)

    write_atomic(path, dump)
