"""Every read and write this project makes to the application's MongoDB, through pymongo only.

Collections and fields are the production ones of DOMAIN.md: `moods`, `@handles`, `users`.
Dates are decoded with ``DATETIME_AUTO`` so that a date outside Python's range comes back as a
``DatetimeMS`` the validator reports, instead of crashing the read.
"""

from __future__ import annotations

import logging
from typing import Iterable

import pymongo
from bson import ObjectId
from bson.codec_options import CodecOptions, DatetimeConversion
from pymongo import UpdateOne

from moods_pipeline.secret import Secret
from moods_pipeline.sync.model import Mood, UserAccount

log = logging.getLogger(__name__)

CODEC_OPTIONS = CodecOptions(tz_aware=True, datetime_conversion=DatetimeConversion.DATETIME_AUTO)
HANDLES = "@handles"
LIVE = {"deleted": {"$ne": True}}


class SelectorError(ValueError):
    """A --user selector names nobody."""


def connect(uri: Secret | str, **client_options) -> pymongo.MongoClient:
    uri = uri.reveal() if isinstance(uri, Secret) else uri
    client_options.setdefault("serverSelectionTimeoutMS", 10_000)
    client_options.setdefault("appname", "moods-pipeline")
    return pymongo.MongoClient(uri, **client_options)


def _mood_from_doc(doc: dict) -> Mood:
    raw_id = doc.get("_id")
    pointer = doc.get("atproto")
    rkey = pointer.get("rkey") if isinstance(pointer, dict) else None
    return Mood(
        id=str(raw_id) if isinstance(raw_id, ObjectId) else repr(raw_id),
        user=doc.get("user"),
        text=doc.get("mood"),
        when=doc.get("when"),
        deleted=doc.get("deleted") is True,
        rkey=rkey if isinstance(rkey, str) else None,
    )


class MongoStore:
    def __init__(self, client: pymongo.MongoClient, db_name: str) -> None:
        self.client = client
        self.db = client.get_database(db_name, codec_options=CODEC_OPTIONS)

    # -- users -----------------------------------------------------------------------------
    def _accounts(self, users: Iterable[dict]) -> list[UserAccount]:
        users = list(users)
        handles = {
            row["_id"]: row.get("handle")
            for row in self.db[HANDLES].find({"_id": {"$in": [u["_id"] for u in users]}})
        }
        accounts = []
        for user in users:
            atproto = user.get("atproto") if isinstance(user.get("atproto"), dict) else {}
            password = atproto.get("password")
            accounts.append(
                UserAccount(
                    sub=user["_id"],
                    did=atproto.get("did") or None,
                    handle=handles.get(user["_id"]),
                    password=Secret(password) if isinstance(password, str) and password else None,
                    pds_handle=atproto.get("handle"),
                )
            )
        return sorted(accounts, key=lambda a: a.sub)

    def subs_with_moods(self) -> set[str]:
        return {sub for sub in self.db.moods.distinct("user") if isinstance(sub, str)}

    def users_with_moods(self) -> list[UserAccount]:
        """Every user who has at least one mood (live or nuked), with or without an account."""
        subs = self.subs_with_moods()
        found = self._accounts(self.db.users.find({"_id": {"$in": sorted(subs)}}))
        missing = subs - {a.sub for a in found}
        # Moods whose `user` names no users document: counted as users without an account.
        found.extend(UserAccount(sub=sub, did=None, handle=None) for sub in sorted(missing))
        return sorted(found, key=lambda a: a.sub)

    def syncable_users(self) -> list[UserAccount]:
        """Users with atproto.did, atproto.password and at least one mood, ordered by sub."""
        return [u for u in self.users_with_moods() if u.has_account]

    def user_by_did(self, did: str) -> UserAccount | None:
        found = self._accounts(self.db.users.find({"atproto.did": did}))
        return found[0] if found else None

    def user_by_sub(self, sub: str) -> UserAccount | None:
        found = self._accounts(self.db.users.find({"_id": sub}))
        return found[0] if found else None

    def resolve(self, selectors: list[str]) -> list[UserAccount]:
        """Users named by `@handle`, DID or sub, in the order given, without repeats."""
        resolved: dict[str, UserAccount] = {}
        for selector in selectors:
            selector = selector.strip()
            if selector.startswith("@"):
                row = self.db[HANDLES].find_one({"handle": selector[1:]})
                if row is None:
                    raise SelectorError(f"no user has the handle {selector}")
                user = self.user_by_sub(row["_id"])
                if user is None:
                    raise SelectorError(f"{selector} names sub {row['_id']}, which has no users document")
            elif selector.startswith("did:"):
                user = self.user_by_did(selector)
                if user is None:
                    raise SelectorError(f"no user has the DID {selector}")
            else:
                user = self.user_by_sub(selector)
                if user is None:
                    raise SelectorError(f"no user has the sub {selector!r}")
            resolved.setdefault(user.sub, user)
        return list(resolved.values())

    # -- moods -----------------------------------------------------------------------------
    def moods_of(self, sub: str) -> list[Mood]:
        """All of a user's moods, nuked included, in ObjectId order."""
        cursor = self.db.moods.find(
            {"user": sub}, {"mood": 1, "when": 1, "deleted": 1, "atproto": 1, "user": 1}
        ).sort("_id", 1)
        return [_mood_from_doc(doc) for doc in cursor]

    def mood(self, mood_id: str) -> Mood | None:
        doc = self.db.moods.find_one({"_id": ObjectId(mood_id)})
        return _mood_from_doc(doc) if doc else None

    def write_pointers(self, pairs: list[tuple[str, str]]) -> int:
        """Set atproto.rkey on each (mood_id, rkey) in one unordered bulk write."""
        if not pairs:
            return 0
        result = self.db.moods.bulk_write(
            [UpdateOne({"_id": ObjectId(mood_id)}, {"$set": {"atproto.rkey": rkey}}) for mood_id, rkey in pairs],
            ordered=False,
        )
        return result.matched_count

    def unset_pointers(self, mood_ids: list[str]) -> int:
        if not mood_ids:
            return 0
        result = self.db.moods.update_many(
            {"_id": {"$in": [ObjectId(m) for m in mood_ids]}}, {"$unset": {"atproto": ""}}
        )
        return result.modified_count
