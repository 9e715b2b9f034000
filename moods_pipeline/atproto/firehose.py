"""A small, time-bounded follower of the PDS firehose (`com.atproto.sync.subscribeRepos`).

    stream = iter_commits(pds_url, cursor=last_seq, collection=MOOD_COLLECTION, stop_after_s=10)
    for commit in stream:             # Commit(seq, did, ops, time)
        for op in commit.ops:         # Op(action, collection, rkey, record or None)
            ...
    next_cursor = stream.last_seq     # every event read, matching or not

The stream ends after ``stop_after_s`` seconds, after ``idle_s`` seconds without a frame (the
backlog since the cursor has been drained), after ``max_events`` frames, or when the caller
stops iterating; so a sensor can drain what happened since its cursor and return. Each
frame is two DAG-CBOR objects (header ``{op, t}`` and body); a ``#commit`` body carries its
ops and a CAR of the blocks they touched, from which created and updated records are read
(in the JSON form listRecords gives). Other event kinds (``#identity``, ``#account``,
``#sync``, ``#info``) advance ``last_seq`` and are otherwise skipped. An error frame (e.g.
``FutureCursor``) raises :class:`FirehoseError`.

What the ``atproto`` SDK does here: ``atproto_subscription.frames.Frame.from_bytes`` splits and
decodes a frame into its header and body (an ``ErrorFrame`` for ``op == -1``), and
``atproto_firehose.parse_subscribe_repos_message`` turns a message body into its typed model
(``ComAtprotoSyncSubscribeRepos.Commit`` and its ``RepoOp`` with SDK ``CID`` values, ``Info``, ...).
The commit's CAR is read by :func:`~moods_pipeline.atproto.car.load_car` (the SDK's ``CAR``).
(``atproto_firehose.models`` still names the frame classes but is a deprecated alias of
``atproto_subscription.frames``, which is imported directly.)

What is still ours, because the SDK lacks it: the websocket loop. The SDK's
``FirehoseSubscribeReposClient.start`` runs a callback until someone calls ``stop()``, reconnects
forever on any network error (an unreachable PDS is retried, not reported), treats
``recv_timeout`` as a reason to reconnect rather than to stop, turns an error frame into a
generic ``SubscriptionError`` and caps messages at 5 MB. A sensor needs the opposite: a hard
deadline, an idle stop once the backlog is drained, ``max_events``, ``FutureCursor`` and
"unreachable" as :class:`FirehoseError`, ``last_seq`` and ``stopped_because``. So frames are
read here with ``websockets`` and only decoded by the SDK. Message kinds the SDK does not know
(a newer PDS) and bodies its models refuse are logged and skipped, still advancing ``last_seq``.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Iterator, NamedTuple
from urllib.parse import urlencode

from atproto_core.exceptions import AtProtocolError
from pydantic import ValidationError
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.sync.client import connect

from moods_pipeline.atproto.car import CarError, LoadedCar, load_car

if TYPE_CHECKING:
    from atproto_client import models

__all__ = ["Op", "Commit", "CommitStream", "FirehoseError", "iter_commits", "subscribe_url"]

log = logging.getLogger(__name__)


class Op(NamedTuple):
    action: str  # "create" | "update" | "delete"
    collection: str
    rkey: str
    record: dict | None  # None for deletes (and when a too-big commit omits its blocks)


class Commit(NamedTuple):
    seq: int
    did: str
    ops: list[Op]
    time: datetime | None  # when the PDS committed (aware, UTC)


class FirehoseError(Exception):
    """The firehose could not be read, or sent an error frame (``error``: its name)."""

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


def subscribe_url(base_url: str, cursor: int | None = None) -> str:
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    url = f"{base}/xrpc/com.atproto.sync.subscribeRepos"
    if cursor is not None:
        url += "?" + urlencode({"cursor": int(cursor)})
    return url


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _commit_of(message: models.ComAtprotoSyncSubscribeRepos.Commit, collection: str | None) -> Commit | None:
    car: LoadedCar | None = None
    if isinstance(message.blocks, bytes) and message.blocks:  # empty when a too-big commit omits them
        try:
            car = load_car(message.blocks)
        except CarError as exc:
            log.warning("firehose commit seq %s: unreadable blocks (%s)", message.seq, exc)
    ops: list[Op] = []
    for op in message.ops:
        coll, _, rkey = op.path.partition("/")
        if collection is not None and coll != collection:
            continue
        record = None
        if op.action in ("create", "update") and op.cid is not None and car is not None:
            cid = str(op.cid)
            if cid in car.values:
                try:
                    record = car.record(cid)
                except CarError as exc:
                    log.warning("firehose seq %s %s: record unreadable (%s)", message.seq, op.path, exc)
        ops.append(Op(op.action, coll, rkey, record))
    if collection is not None and not ops:
        return None
    return Commit(message.seq, message.repo, ops, _parse_time(message.time))


@functools.cache
def _sdk() -> SimpleNamespace:
    """The SDK's frame decoding, imported on first use: importing it (every generated model and
    client namespace) takes most of a second, which every command and code location would
    otherwise pay at start-up, though only the firehose follower decodes frames."""
    from atproto_client import models
    from atproto_firehose import parse_subscribe_repos_message
    from atproto_subscription.frames import ErrorFrame, Frame

    return SimpleNamespace(models=models, parse=parse_subscribe_repos_message, ErrorFrame=ErrorFrame, Frame=Frame)


# Frame.from_bytes lets libipld's ValueError through and ErrorFrameBody(**body) raises TypeError
# on unexpected keys; the SDK's own errors are AtProtocolError (FrameDecodingError, ...).
_FRAME_ERRORS = (ValueError, TypeError, RecursionError, AtProtocolError)


class CommitStream:
    """Iterable of :class:`Commit`; ``last_seq`` is the seq of the last event read (any kind)."""

    def __init__(
        self,
        base_url: str,
        cursor: int | None = None,
        collection: str | None = None,
        stop_after_s: float = 10.0,
        idle_s: float | None = 2.0,
        max_events: int | None = None,
        open_timeout_s: float = 10.0,
    ) -> None:
        self.url = subscribe_url(base_url, cursor)
        self.cursor = cursor
        self.collection = collection
        self.stop_after_s = stop_after_s
        self.idle_s = idle_s
        self.max_events = max_events
        self.open_timeout_s = open_timeout_s
        self.last_seq: int | None = cursor
        self.events = 0  # frames read
        self.commits = 0  # commits yielded
        self.stopped_because: str | None = None
        self.connected = threading.Event()  # set once the websocket is open (for followers in threads)
        self._ws = None
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> "CommitStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        stack, self._stack = self._stack, None
        self._ws = None
        if stack is not None:
            try:
                stack.close()
            except Exception:  # noqa: BLE001 - closing a dead socket
                pass

    def __iter__(self) -> Iterator[Commit]:
        deadline = time.monotonic() + self.stop_after_s
        self._stack = contextlib.ExitStack()
        try:
            self._ws = self._stack.enter_context(
                connect(
                    self.url, open_timeout=min(self.open_timeout_s, self.stop_after_s), max_size=None,
                    close_timeout=2, user_agent_header="moods-pipeline",
                )
            )
        except (OSError, WebSocketException, TimeoutError) as exc:
            self.close()
            raise FirehoseError(f"firehose at {self.url} unreachable: {type(exc).__name__} {exc}") from None
        self.connected.set()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stopped_because = "time"
                    return
                wait = left if self.idle_s is None else min(left, self.idle_s)
                try:
                    frame = self._ws.recv(timeout=wait)
                except TimeoutError:
                    self.stopped_because = "time" if wait >= left else "idle"
                    return
                except ConnectionClosed as exc:
                    self.stopped_because = "closed"
                    if exc.rcvd is not None and exc.rcvd.code not in (1000, 1001):
                        raise FirehoseError(f"firehose closed: {exc.rcvd.code} {exc.rcvd.reason}") from None
                    return
                if isinstance(frame, str):
                    continue
                self.events += 1
                commit = self._handle(frame)
                if commit is not None:
                    self.commits += 1
                    yield commit
                if self.max_events is not None and self.events >= self.max_events:
                    self.stopped_because = "max_events"
                    return
        finally:
            self.close()

    def _handle(self, data: bytes) -> Commit | None:
        sdk = _sdk()
        try:
            frame = sdk.Frame.from_bytes(data)
        except _FRAME_ERRORS as exc:
            log.warning("firehose: undecodable frame (%s)", exc)
            return None
        if isinstance(frame, sdk.ErrorFrame):
            error = frame.body.error
            raise FirehoseError(f"firehose error frame: {error}: {frame.body.message}", error=error)
        body = frame.body
        seq = body.get("seq") if isinstance(body, dict) else None
        if isinstance(seq, int) and not isinstance(seq, bool):
            self.last_seq = seq if self.last_seq is None else max(self.last_seq, seq)
        kind = frame.type
        if kind not in ("#commit", "#info"):  # identity, account, sync: nothing for us
            return None
        try:
            message = sdk.parse(frame)
        except (ValidationError, *_FRAME_ERRORS) as exc:
            log.warning("firehose seq %s: %s event the SDK could not read (%s)", seq, kind, type(exc).__name__)
            return None
        if isinstance(message, sdk.models.ComAtprotoSyncSubscribeRepos.Info):
            log.info("firehose info: %s %s", message.name, message.message)
            return None
        return _commit_of(message, self.collection)


def iter_commits(
    base_url: str,
    cursor: int | None = None,
    collection: str | None = None,
    stop_after_s: float = 10.0,
    *,
    idle_s: float | None = 2.0,
    max_events: int | None = None,
) -> CommitStream:
    """Commits from the firehose since ``cursor`` (None: from now on; 0: replay all).

    Only ops on ``collection`` are kept (commits with none are skipped). Ends after
    ``stop_after_s``, or ``idle_s`` without any frame (None: wait the whole time), or
    ``max_events`` frames. ``stream.last_seq`` is the cursor to resume from.
    """
    return CommitStream(
        base_url, cursor=cursor, collection=collection, stop_after_s=stop_after_s, idle_s=idle_s, max_events=max_events
    )
