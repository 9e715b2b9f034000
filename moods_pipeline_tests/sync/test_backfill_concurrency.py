"""How many users a backfill keeps in flight and how many of them write at once (pure logic, an
in-memory PDS whose logins wait as the real one's do)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

from moods_pipeline.atproto.cid import record_cid
from moods_pipeline.model import Mood, UserAccount
from moods_pipeline.secret import Secret
from moods_pipeline.sync.backfill import backfill_users
from moods_pipeline.sync.writer import WriteOptions

LOGIN_WAIT_S = 0.05
WRITE_WAIT_S = 0.02


class Gauge:
    """The most calls seen inside at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = self.most = 0

    def __enter__(self):
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc):
        with self._lock:
            self.now -= 1


class Pds:
    def __init__(self) -> None:
        self.logins, self.writes = Gauge(), Gauge()
        self.repos: dict[str, dict] = {}
        self._lock = threading.Lock()

    def list_records(self, did, collection):
        return []

    def login(self, did, password, expected_did=None):
        with self.logins:
            time.sleep(LOGIN_WAIT_S)  # the PDS pads every password login
        return Session(self, did)


class Session:
    def __init__(self, pds: Pds, did: str) -> None:
        self.pds, self.did = pds, did

    def apply_writes(self, ops):
        with self.pds.writes:
            time.sleep(WRITE_WAIT_S)
            with self.pds._lock:
                repo = self.pds.repos.setdefault(self.did, {})
                for op in ops:
                    repo[op["rkey"]] = op["value"]
        return [{"uri": f"at://{self.did}/c/{op['rkey']}", "cid": record_cid(op["value"])} for op in ops]


class Store:
    def __init__(self, moods_by_sub: dict[str, list[Mood]]) -> None:
        self.moods_by_sub = moods_by_sub
        self.pointers: dict[str, str] = {}
        self._lock = threading.Lock()

    def moods_of(self, sub):
        return self.moods_by_sub[sub]

    def write_pointers(self, pairs):
        with self._lock:
            self.pointers.update(pairs)
        return len(pairs)


def world(n_users: int, per_user: int):
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    users, moods = [], {}
    for u in range(n_users):
        sub = f"auth0|{u:04d}"
        users.append(UserAccount(sub=sub, did=f"did:plc:{u:024d}", handle=f"u{u}.test", password=Secret("pw")))
        moods[sub] = [Mood(id=f"{u:012x}{i:012x}", user=sub, text=f"mood {i}", when=base + timedelta(minutes=i))
                      for i in range(per_user)]
    return users, Store(moods)


def test_more_users_log_in_at_once_than_write_at_once():
    users, store = world(24, 3)
    pds = Pds()
    outcomes = backfill_users(users, store, pds, concurrency=12, write_concurrency=3,
                              options=WriteOptions(min_batch_interval_s=0))

    assert all(o.ok and o.created == 3 for o in outcomes), [(o.label, o.error) for o in outcomes if not o.ok]
    assert len(store.pointers) == 24 * 3
    assert sum(len(repo) for repo in pds.repos.values()) == 24 * 3
    assert pds.writes.most <= 3, f"{pds.writes.most} users wrote at once"
    # Logins went on beside the writers: more users waited on a login at once than may write.
    assert pds.logins.most > 3, f"at most {pds.logins.most} logins at once"


def test_write_concurrency_above_concurrency_is_bounded_by_it():
    users, store = world(8, 2)
    pds = Pds()
    backfill_users(users, store, pds, concurrency=2, write_concurrency=8, options=WriteOptions(min_batch_interval_s=0))
    assert pds.logins.most <= 2 and pds.writes.most <= 2
    assert len(store.pointers) == 16
