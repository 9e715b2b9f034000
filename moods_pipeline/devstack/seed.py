"""Seeding: a generated ``DemoData`` into a MongoDB database, with its users' PDS accounts.

``seed()`` creates the PDS account of each user that holds one (``concurrency`` at a time, each
`users` document written as soon as its account exists), then writes the users without
accounts, the `@handles` rows, the moods and the production indexes of `moods`. The data itself
comes from ``devstack.demo_data.generate`` (pure); this module is the writer.

Accounts are created with the project's one PDS client (``atproto.client.PdsClient.
create_account``: a createAccount that may have landed is never resent, and the password is
scrubbed from every error) through ``pds_account_creator``; a PDS that requires invite codes,
as production does, gets one per account from the admin API (``PdsAdmin.create_invite_code``).

Privacy: nothing here logs a password or a mood's text; progress callbacks get counts only.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable

from pymongo.errors import BulkWriteError

from moods_pipeline.atproto.client import PdsAdmin, PdsClient
from moods_pipeline.devstack.demo_data import HANDLES, DemoData, DemoUser
from moods_pipeline.secret import Secret

log = logging.getLogger(__name__)

__all__ = [
    "AccountCreator",
    "DemoDataExists",
    "PdsAccountCreator",
    "SeedReport",
    "offline_did",
    "pds_account_creator",
    "seed",
]

# handle, email, password -> DID. The handle is the full PDS handle ("<label>.test" locally).
# Errors carry ``retryable`` (as PdsError does) when trying again may work.
AccountCreator = Callable[[str, str, Secret], str]
# stage ("accounts" | "users" | "handles" | "moods" | "indexes"), done, total
Progress = Callable[[str, int, int], None]


# -- PDS accounts ----------------------------------------------------------------------------


class PdsAccountCreator:
    """An ``AccountCreator`` on a ``PdsClient``: ``client.create_account`` and its DID.

    Invite codes: ``invite_code`` is one code for every account (it needs as many uses);
    ``admin`` mints a single-use code per account instead (a PDS that requires invites). With
    neither, sign-up must be open. Errors are the client's ``PdsError`` (``retryable`` for an
    outage or a 5xx), their text free of the password.
    """

    def __init__(
        self,
        client: PdsClient,
        *,
        invite_code: str | Secret | None = None,
        admin: PdsAdmin | None = None,
        owns_client: bool = False,
    ) -> None:
        self.client = client
        self._invite = Secret(invite_code) if invite_code else None
        self._admin = admin
        self._owns_client = owns_client

    def __repr__(self) -> str:
        return f"PdsAccountCreator({self.client.base_url!r})"

    def __call__(self, handle: str, email: str, password: Secret) -> str:
        code: str | None = None
        if self._invite is not None:
            code = self._invite.reveal()
        elif self._admin is not None:
            code = self._admin.create_invite_code(1)
        did, _ = self.client.create_account(handle, email, Secret(password), invite_code=code)
        return did

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> PdsAccountCreator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pds_account_creator(
    pds_url: str,
    *,
    invite_code: str | Secret | None = None,
    admin_password: Secret | None = None,
    timeout: float = 60.0,
) -> PdsAccountCreator:
    """An ``AccountCreator`` for the PDS at ``pds_url``, on a client of its own (closed with it).

    ``admin_password``: mint an invite code per account (for a PDS that requires invites);
    ``invite_code``: use this one code for all."""
    client = PdsClient(pds_url, timeout=timeout)
    admin = client.admin(admin_password) if admin_password is not None else None
    return PdsAccountCreator(client, invite_code=invite_code, admin=admin, owns_client=True)


def offline_did(sub: str) -> str:
    """The made-up DID ``seed(account_creator=None)`` stores: a did:plc that resolves nowhere."""
    digest = hashlib.sha256(("moods-demo:" + sub).encode()).digest()
    return "did:plc:" + base64.b32encode(digest).decode().lower()[:24]


# -- seeding ---------------------------------------------------------------------------------


class DemoDataExists(RuntimeError):
    """The database already holds data: seeding would duplicate or mix data sets."""


@dataclass
class SeedReport:
    users_written: int = 0
    users_existing: int = 0  # already in the database (resume)
    accounts_created: int = 0
    accounts_failed: list[tuple[str, str]] = field(default_factory=list)  # (sub, reason)
    handles_written: int = 0
    handles_existing: int = 0
    moods_written: int = 0
    moods_existing: int = 0
    indexes: list[str] = field(default_factory=list)
    offline: bool = False  # no PDS: made-up DIDs
    seconds_accounts: float = 0.0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.accounts_failed

    @property
    def accounts_per_second(self) -> float:
        return self.accounts_created / self.seconds_accounts if self.seconds_accounts else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "users_written": self.users_written,
            "users_existing": self.users_existing,
            "accounts_created": self.accounts_created,
            "accounts_failed": len(self.accounts_failed),
            "handles_written": self.handles_written,
            "handles_existing": self.handles_existing,
            "moods_written": self.moods_written,
            "moods_existing": self.moods_existing,
            "indexes": list(self.indexes),
            "offline": self.offline,
            "seconds_accounts": round(self.seconds_accounts, 3),
            "accounts_per_second": round(self.accounts_per_second, 3),
            "seconds": round(self.seconds, 3),
        }


def seed(
    db: Any,
    data: DemoData,
    account_creator: AccountCreator | None,
    concurrency: int = 8,
    progress: Progress | None = None,
    *,
    handle_domain: str = ".test",
    label_suffix: str = "",
    email_domain: str = "example.com",
    if_exists: str = "refuse",
    retries: int = 2,
) -> SeedReport:
    """Write ``data`` into ``db`` (a pymongo Database), creating PDS accounts first.

    Each user with a PDS account gets one through ``account_creator(handle, email, password)``
    (the full handle ``<label><label_suffix><handle_domain>``, e.g. ``jeffrey.test``; email
    ``<that label>@<email_domain>``), ``concurrency`` at a
    time; its `users` document is written as soon as its account exists, so an interruption
    leaves no account unrecorded but the few in flight. ``account_creator=None``: no PDS,
    made-up DIDs (``offline_did``): for Mongo-only tests; logins with them fail.

    Then the users without accounts, the `@handles` rows and the moods (``insert_many``) and the
    production indexes of `moods` (``{user: 1}``, ``{when: 1}``).

    Refuses (``DemoDataExists``, nothing written) when the collections hold documents that are
    not part of ``data``, and, unless ``if_exists="resume"``, when they already hold part of it.
    ``resume`` writes what is missing (retrying failed accounts; an account created earlier but
    never recorded fails with "handle taken"). A failed account is reported in
    ``accounts_failed`` and its `users` document is not written.

    ``label_suffix`` (e.g. ``"-a1b2"``) makes the PDS handles unique on a PDS shared with other
    seedings (tests); the bare `@handles` handles stay as generated.

    ``progress(stage, done, total)`` gets counts only; passwords and texts are never logged.
    """
    if if_exists not in ("refuse", "resume"):
        raise ValueError("if_exists must be 'refuse' or 'resume'")
    if label_suffix and not re.fullmatch(r"[a-z0-9-]{1,8}", label_suffix):
        raise ValueError("label_suffix: up to 8 lowercase letters, digits or hyphens")
    labels = [u.pds_handle(handle_domain, label_suffix) for u in data.users if u.has_account]
    if len(set(labels)) != len(labels):
        raise ValueError("label_suffix makes PDS handles collide: use a shorter suffix")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    started = time.monotonic()
    report = SeedReport(offline=account_creator is None)
    users_coll, moods_coll, handles_coll = db["users"], db["moods"], db[HANDLES]

    def tell(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(stage, done, total)

    existing_users = _existing_ids(users_coll, [u.sub for u in data.users])
    existing_handles = _existing_ids(handles_coll, [h["_id"] for h in data.handles])
    existing_moods = _existing_ids(moods_coll, [m["_id"] for m in data.moods])
    foreign = {
        name: coll.count_documents({}) - len(mine)
        for name, coll, mine in (
            ("users", users_coll, existing_users),
            (HANDLES, handles_coll, existing_handles),
            ("moods", moods_coll, existing_moods),
        )
    }
    foreign = {k: v for k, v in foreign.items() if v > 0}
    if foreign:
        detail = ", ".join(f"{v} in {k}" for k, v in foreign.items())
        raise DemoDataExists(
            f"database {db.name!r} holds documents that are not this demo data set ({detail}); "
            "seed-demo only seeds an empty database: choose another MONGODB_NAME. Nothing was written."
        )
    present = len(existing_users) + len(existing_handles) + len(existing_moods)
    if present and if_exists == "refuse":
        raise DemoDataExists(
            f"database {db.name!r} already holds this demo data set ({len(existing_users)} of "
            f"{len(data.users)} users, {len(existing_moods)} of {len(data.moods)} moods); "
            "nothing was written. Drop the database (or choose another MONGODB_NAME) to seed "
            "afresh, or resume to write what is missing."
        )
    report.users_existing = len(existing_users)
    report.handles_existing = len(existing_handles)
    report.moods_existing = len(existing_moods)

    todo = [u for u in data.users if u.sub not in existing_users]
    with_account = [u for u in todo if u.has_account]
    without = [u for u in todo if not u.has_account]
    log.info(
        "seeding %s: %d users (%d PDS accounts), %d handles, %d moods; %d users already there",
        db.name, len(todo), len(with_account), len(data.handles) - len(existing_handles),
        len(data.moods) - len(existing_moods), len(existing_users),
    )

    # 1. PDS accounts, each users document written as its account appears
    t0 = time.monotonic()
    if account_creator is None:
        docs = [u.users_doc(offline_did(u.sub), handle_domain, label_suffix) for u in with_account]
        if docs:
            users_coll.insert_many(docs, ordered=False)
        report.accounts_created = len(docs)
        report.users_written += len(docs)
        tell("accounts", len(docs), len(docs))
    else:
        _create_accounts(
            users_coll, with_account, account_creator, concurrency, handle_domain,
            label_suffix, email_domain, retries, report, tell,
        )
    report.seconds_accounts = time.monotonic() - t0

    # 2. users without accounts
    if without:
        users_coll.insert_many([u.users_doc(None) for u in without], ordered=False)
        report.users_written += len(without)
    tell("users", report.users_written, len(todo))

    # 3. handles and moods
    handles = [dict(h) for h in data.handles if h["_id"] not in existing_handles]
    report.handles_written = _insert_all(handles_coll, handles, "handles", tell)
    moods = [dict(m) for m in data.moods if m["_id"] not in existing_moods]
    report.moods_written = _insert_all(moods_coll, moods, "moods", tell)

    # 4. the production indexes
    report.indexes = [
        moods_coll.create_index([("user", 1)]),
        moods_coll.create_index([("when", 1)]),
    ]
    tell("indexes", 2, 2)
    report.seconds = time.monotonic() - started
    log.info(
        "seeded %s: %d users, %d accounts (%d failed, %.2f accounts/s), %d handles, %d moods in %.1fs",
        db.name, report.users_written, report.accounts_created, len(report.accounts_failed),
        report.accounts_per_second, report.handles_written, report.moods_written, report.seconds,
    )
    return report


def _existing_ids(coll: Any, ids: list[Any], chunk: int = 5000) -> set[Any]:
    found: set[Any] = set()
    for k in range(0, len(ids), chunk):
        part = ids[k : k + chunk]
        found.update(d["_id"] for d in coll.find({"_id": {"$in": part}}, {"_id": 1}))
    return found


def _insert_all(coll: Any, docs: list[dict], stage: str, tell: Callable[[str, int, int], None],
                chunk: int = 5000) -> int:
    written = 0
    for k in range(0, len(docs), chunk):
        part = docs[k : k + chunk]
        try:
            written += len(coll.insert_many(part, ordered=False).inserted_ids)
        except BulkWriteError as exc:  # a concurrent seed wrote some: keep going, count ours
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors):
                raise
            written += exc.details.get("nInserted", 0)
        tell(stage, written, len(docs))
    return written


def _create_accounts(
    users_coll: Any,
    todo: list[DemoUser],
    creator: AccountCreator,
    concurrency: int,
    handle_domain: str,
    label_suffix: str,
    email_domain: str,
    retries: int,
    report: SeedReport,
    tell: Callable[[str, int, int], None],
) -> None:
    total = len(todo)
    stop = threading.Event()

    def create(user: DemoUser) -> str:
        handle = user.pds_handle(handle_domain, label_suffix)
        assert handle is not None and user.password is not None
        email = f"{handle[: -len(handle_domain) or None]}@{email_domain}"
        for attempt in range(retries + 1):
            try:
                return creator(handle, email, user.password)
            except Exception as exc:  # noqa: BLE001 - reported per user
                # PdsError says whether trying again may work (an outage, a 5xx); a
                # createAccount that may have landed comes back as "handle taken" on resume.
                if not getattr(exc, "retryable", False) or attempt == retries or stop.is_set():
                    raise
                time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def record(user: DemoUser, future: Future) -> None:
        exc = future.exception()
        if exc is None:
            users_coll.insert_one(user.users_doc(future.result(), handle_domain, label_suffix))
            report.accounts_created += 1
            report.users_written += 1
        else:
            reason = str(exc) or type(exc).__name__
            report.accounts_failed.append((user.sub, reason[:300]))
            log.warning("account of %s not created: %s", user.sub, reason[:300])
        tell("accounts", report.accounts_created + len(report.accounts_failed), total)

    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="demo-accounts")
    pending: dict[Future, DemoUser] = {}
    try:
        for user in todo:
            pending[pool.submit(create, user)] = user
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                record(pending.pop(future), future)
    except BaseException:
        # interrupted: cancel what has not started, record what finished (accounts exist)
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        for future, user in list(pending.items()):
            if future.done() and not future.cancelled():
                try:
                    record(user, future)
                except Exception:  # noqa: BLE001 - best effort while unwinding
                    log.exception("could not record the account of %s", user.sub)
        raise
    finally:
        pool.shutdown(wait=True)
