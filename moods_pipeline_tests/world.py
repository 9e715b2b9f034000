"""Building blocks for integration tests: production-shaped users and moods on the real stack,
the Dagster resources pointed at it, and the invariant of docs/interface.md as one check."""

from __future__ import annotations

import itertools
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from bson import ObjectId

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.client import PdsClient
from moods_pipeline.definitions import build_definitions
from moods_pipeline.defs.resources import MongoResource, PdsResource, PipelineSettingsResource
from moods_pipeline.settings import Settings
from moods_pipeline.storage.mongo import MongoStore, open_store
from moods_pipeline.sync.mood_record import Invalid, build_record

_subs = itertools.count(1)
BASE_WHEN = datetime(2024, 3, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)


@dataclass
class WorldUser:
    sub: str
    did: str | None
    handle: str
    password: str | None
    mood_ids: list[str]


def add_user(db, account=None, *, moods=5, texts=None, handle=None, nuked=False, password=None) -> WorldUser:
    """A `users` + `@handles` row and moods, in production shape. ``account`` is a PDS account
    (did, handle, password) or None for a user without one; ``password`` overrides the stored one."""
    sub = f"auth0|{next(_subs):08x}{secrets.token_hex(8)}"
    handle = handle or (account.handle.split(".")[0] if account else f"nouser{secrets.token_hex(3)}")
    user_doc = {"_id": sub, "code": "ac25" + secrets.token_hex(3), "when": BASE_WHEN}
    stored_password = password if password is not None else (account.password.reveal() if account else None)
    if account:
        user_doc["atproto"] = {"did": account.did, "handle": account.handle, "password": stored_password,
                               "createdAt": "2024-01-01T00:00:00.000Z"}
    db.users.insert_one(user_doc)
    db["@handles"].insert_one({"_id": sub, "handle": handle})
    texts = texts if texts is not None else [f"mood number {i} 🌞" for i in range(moods)]
    docs = []
    for i, text in enumerate(texts):
        doc = {"_id": ObjectId(), "user": sub, "mood": text, "when": BASE_WHEN + timedelta(minutes=17 * i)}
        if nuked:
            doc["deleted"] = True
        docs.append(doc)
    if docs:
        db.moods.insert_many(docs)
    return WorldUser(sub, account.did if account else None, handle, stored_password, [str(d["_id"]) for d in docs])


def resources_for(settings: Settings, **pds_options) -> dict:
    return {
        "mongo": MongoResource(connection_string=settings.mongodb_connection_string.reveal(),
                               database=settings.mongodb_name),
        "pds": PdsResource(
            url=settings.pds_url,
            admin_password=settings.pds_admin_password.reveal() if settings.pds_admin_password else None,
            lexicon_account=settings.lexicon_account,
            lexicon_password=settings.lexicon_password.reveal() if settings.lexicon_password else None,
            **pds_options,
        ),
        "pipeline": PipelineSettingsResource(state_dir=str(settings.state_dir)),
    }


def definitions_for(settings: Settings, **pds_options):
    return build_definitions(resources_for(settings, **pds_options))


def store_for(settings: Settings) -> MongoStore:
    return open_store(settings)


def dead_url() -> str:
    """A URL on which nothing listens (a port bound and released just now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def repo_snapshot(pds: PdsClient, did: str) -> dict[str, dict]:
    return {r.rkey: r.value for r in pds.list_records(did, MOOD_COLLECTION)}


def records_by_mood_id(records: dict[str, dict]) -> dict[str | None, list[str]]:
    """The rkeys of a repo snapshot grouped by the mood id they carry (``ref``, or legacy ``mongoId``)."""
    carrying: dict[str | None, list[str]] = {}
    for rkey, value in records.items():
        carrying.setdefault(value.get("ref") or value.get("mongoId"), []).append(rkey)
    return carrying


def check_invariant(store: MongoStore, pds: PdsClient, users: list[WorldUser]) -> int:
    """docs/interface.md's invariant for these users: every valid live mood has exactly one record
    carrying its id, with its content, and Mongo's pointer names it. Returns the moods checked."""
    checked = 0
    for user in users:
        records = repo_snapshot(pds, user.did)
        carrying = records_by_mood_id(records)
        for mood in store.moods_of(user.sub):
            built = build_record(mood)
            if not mood.live or isinstance(built, Invalid):
                continue
            rkeys = carrying.get(mood.id, [])
            assert len(rkeys) == 1, f"mood {mood.id} of {user.handle} has {len(rkeys)} records: {rkeys}"
            assert mood.rkey == rkeys[0], f"mood {mood.id}: pointer {mood.rkey!r}, record at {rkeys[0]}"
            value = records[rkeys[0]]
            assert value["mood"] == built["mood"] and value["when"] == built["when"], f"mood {mood.id} content differs"
            checked += 1
    return checked


def backfill_json(capsys, *argv: str) -> tuple[int, dict, str]:
    """``moods-pipeline backfill ARGV --json`` in-process: (exit code, the one JSON object, stderr)."""
    import json

    from moods_pipeline import cli

    code = cli.main(["backfill", *argv, "--json"])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1, f"stdout must be one JSON object, got {captured.out!r}"
    return code, json.loads(lines[0]), captured.err
