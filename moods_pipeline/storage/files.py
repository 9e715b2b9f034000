"""The pipeline's own files under MOODS_STATE_DIR: where they are (a local directory or an
object-store URL such as ``s3://bucket/prefix``), one naming rule for keys (DIDs, subs, run ids),
and one way to write, read and list them.

Every store takes the state dir through :func:`state_path` and builds paths with ``/``; none
opens, renames or lists a file itself (but for the local appends of journal.py and audits.py),
so the same code runs on a local disk and on S3 (through
fsspec and universal-pathlib; credentials and endpoint come from the standard AWS variables,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``,
read by botocore, never by this project, so they are never logged).

- A write replaces a whole file or object: on a local disk a temporary file beside it, then one
  rename (readers see the old file or the new one; the journal adds its own fsync);
  on an object store one PUT of the whole object, which is atomic there (no rename dance).
- Nothing is appended on an object store (it cannot be): append-style records (the deletion
  journal, a run's per-user lines) are one object per entry there; see journal.py.
- Listings are never cached: another process or host may have written since.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path, PurePath
from typing import Any, Callable, Iterable

from upath import UPath

from moods_pipeline.settings import ConfigError, parse_state_dir

MAX_NAME = 200  # characters of a file name made from a key (file systems allow 255 bytes)
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-%")

__all__ = [
    "MAX_NAME", "safe_name", "state_path", "is_local", "write_atomic", "write_bytes_atomic",
    "write_json_atomic", "read_bytes", "read_json", "list_files", "read_many", "remove", "exists",
    "arrow_paths", "read_parquet",
]


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


class StateDirError(ConfigError):
    """The object store behind MOODS_STATE_DIR cannot be reached or refuses a request (wrong
    endpoint, credentials, bucket, permissions): a configuration problem, named as one (the
    command line exits 2 with it; a run fails with it), never "no such file"."""


def _state_dir_error(path: UPath, verb: str, exc: BaseException) -> StateDirError:
    return StateDirError(
        f"MOODS_STATE_DIR: cannot {verb} {path} ({type(exc).__name__}: {str(exc)[:300]}); check the URL, "
        "the bucket and the AWS_* credentials and endpoint")


def remote_call(path: UPath, verb: str, call: Callable[[], Any]) -> Any:
    """``call()`` (a request to the object store behind ``path``), with every failure but a
    missing file turned into a StateDirError that names the setting and the path."""
    try:
        return call()
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore, aiohttp and fsspec raise many kinds
        raise _state_dir_error(path, verb, exc) from exc


# --- where -------------------------------------------------------------------------------------


def state_path(value: str | os.PathLike | UPath) -> UPath:
    """MOODS_STATE_DIR (or any path under it) as a path: a local path (``file://`` URLs
    included) stays a ``pathlib.Path`` (a local UPath), a URL (``s3://bucket/prefix``) becomes
    the fsspec-backed UPath of its protocol (``settings.parse_state_dir``, the one rule)."""
    if isinstance(value, UPath) and not value.protocol:
        return value
    if isinstance(value, PurePath):
        return UPath(value)
    return parse_state_dir(value)


def is_local(path: str | os.PathLike | UPath) -> bool:
    """Whether ``path`` is on the local file system (tmp+rename works) or on an object store."""
    return isinstance(state_path(path), Path)


# --- writing -----------------------------------------------------------------------------------


def write_atomic(path: str | os.PathLike | UPath, write: Callable[[str], None]) -> None:
    """Create or replace ``path`` whole: ``write(tmp)`` fills a local temporary file, which then
    becomes ``path`` in one step (readers see the old file or the new one, never a part; a
    failed write leaves the old file and no temporary one).

    Local: the temporary file lies beside ``path`` and replaces it in one rename. Object store:
    the temporary file is uploaded as one object (a PUT is atomic and durable there when it
    returns)."""
    path = state_path(path)
    if isinstance(path, Path):
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
        return
    fd, tmp = tempfile.mkstemp(prefix="moods-upload-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        # Whole file, one object: never a streamed upload, which would leave a partial object
        # if ``write`` failed halfway.
        remote_call(path, "write", lambda: path.fs.put_file(tmp, path.path))
    finally:
        os.unlink(tmp)


def write_bytes_atomic(path: str | os.PathLike | UPath, data: bytes) -> None:
    path = state_path(path)
    if isinstance(path, Path):
        write_atomic(path, lambda tmp: Path(tmp).write_bytes(data))
    else:
        remote_call(path, "write", lambda: path.fs.pipe_file(path.path, data))  # one PUT of the whole object


def write_json_atomic(path: str | os.PathLike | UPath, data: Any) -> None:
    write_bytes_atomic(path, json.dumps(data, sort_keys=True).encode())


# --- reading -----------------------------------------------------------------------------------


def read_bytes(path: str | os.PathLike | UPath) -> bytes | None:
    """The file's bytes, or None if there is no such file."""
    path = state_path(path)
    try:
        if isinstance(path, Path):
            return path.read_bytes()
        return remote_call(path, "read", lambda: path.fs.cat_file(path.path))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def read_json(path: str | os.PathLike | UPath) -> Any | None:
    """The parsed JSON file, or None if there is none (a malformed file is an error)."""
    data = read_bytes(path)
    return None if data is None else json.loads(data)


def exists(path: str | os.PathLike | UPath) -> bool:
    path = state_path(path)
    return path.exists()


def list_files(folder: str | os.PathLike | UPath, suffix: str = "") -> list[UPath]:
    """The files directly in ``folder`` whose names end with ``suffix``, sorted by name; [] if
    the folder does not exist. Temporary files of a write in progress are left out."""
    folder = state_path(folder)
    if isinstance(folder, Path):
        if not folder.is_dir():
            return []
        found = [p for p in folder.iterdir() if p.name.endswith(suffix) and not p.name.startswith(".tmp-")
                 and p.is_file()]
        return sorted(found, key=lambda p: p.name)
    try:
        entries = remote_call(folder, "list", lambda: folder.fs.ls(folder.path, detail=True, refresh=True))
    except FileNotFoundError:
        return []
    names = sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "file")
    return [folder / name for name in names if name.endswith(suffix)]


def read_many(paths: Iterable[str | os.PathLike | UPath]) -> dict[str, bytes]:
    """The bytes of each of ``paths`` that exists, by ``str(path)``; concurrent requests on an
    object store (one GET each), so reading a thousand small files is not a thousand round trips
    in a row."""
    paths = [state_path(p) for p in paths]
    out: dict[str, bytes] = {}
    remote: dict[Any, list[UPath]] = {}
    for path in paths:
        if isinstance(path, Path):
            data = read_bytes(path)
            if data is not None:
                out[str(path)] = data
        else:
            remote.setdefault(id(path.fs), []).append(path)
    for group in remote.values():
        fs = group[0].fs
        by_key = {p.path: p for p in group}
        got = remote_call(group[0], "read", lambda: fs.cat(list(by_key), on_error="return"))
        for key, data in got.items():
            if isinstance(data, FileNotFoundError):
                continue  # removed since it was listed
            if isinstance(data, BaseException):
                # Anything else (no permission, the store down) must not look like "no file".
                raise _state_dir_error(by_key.get(key, group[0]), "read", data) from data
            path = by_key.get(key) or by_key.get(key.rstrip("/"))
            if path is not None:
                out[str(path)] = data
    return out


def remove(path: str | os.PathLike | UPath) -> bool:
    """Delete the file; False if there was none."""
    path = state_path(path)
    try:
        if isinstance(path, Path):
            path.unlink()
        else:
            if not remote_call(path, "read", lambda: path.fs.exists(path.path)):
                return False
            remote_call(path, "remove", lambda: path.fs.rm_file(path.path))
    except FileNotFoundError:
        return False
    return True


# --- Parquet through pyarrow -------------------------------------------------------------------


def arrow_paths(paths: Iterable[str | os.PathLike | UPath]):
    """``(names, filesystem)`` for pyarrow (``pq.read_table``, ``ds.dataset``): local paths
    with no filesystem, object-store paths with their fsspec filesystem (all of one store)."""
    paths = [state_path(p) for p in paths]
    remote = [p for p in paths if not isinstance(p, Path)]
    if not remote:
        return [str(p) for p in paths], None
    if len(remote) != len(paths) or len({id(p.fs) for p in remote}) != 1:
        raise ValueError("pyarrow reads one store at a time")
    return [p.path for p in remote], remote[0].fs


def read_parquet(path: str | os.PathLike | UPath, **kwargs):
    """One Parquet file as an Arrow table."""
    import pyarrow.parquet as pq

    [name], filesystem = arrow_paths([path])
    return pq.read_table(name, filesystem=filesystem, **kwargs)
