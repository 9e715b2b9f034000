"""Seeded demo data in the production shape (docs/architecture.md, "The data").

``generate()`` is pure: the same arguments give the same users, handles and moods (ObjectIds,
dates, passwords and all); nothing here writes anywhere. ``devstack.seed`` writes a ``DemoData``
into a MongoDB database and creates the PDS accounts of the users that hold one.

Shapes generated (exactly the production ones):

- ``moods``: ``{_id: ObjectId, user: sub, mood: str, when: Date}`` plus ``deleted: true|false``
  on every mood of a nuked / un-nuked user (most documents carry no ``deleted`` field).
- ``@handles``: ``{_id: sub, handle: "name"}`` (bare, no "@"); users without a handle have no row.
- ``users``: ``{_id: sub, code: "ac25xxxxx", when: Date, atproto: {did, handle, password,
  createdAt}}``; older users carry ``atproto.created`` (Date) instead of ``createdAt`` (ISO
  string); users without a PDS account have no ``atproto``; some have one without ``password``.

The odd cases every pipeline stage must survive are present by default and listed by name in
``DemoData.cases`` (see ``USER_CASES`` and ``MOOD_CASES``), so tests can find them.

Privacy: nothing here logs a password or a mood's text.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from bson import ObjectId

from moods_pipeline.secret import Secret

__all__ = [
    "DemoData",
    "DemoUser",
    "HANDLES",
    "MOOD_CASES",
    "SCALES",
    "USER_CASES",
    "generate",
]

HANDLES = "@handles"
HEAVY_HANDLE = "jeffrey"
MAX_MOOD_BYTES = 5000


@dataclass(frozen=True)
class Scale:
    users: int  # users with moods
    total_moods: float  # moods per user with moods, on average (heavy user included)
    users_without_moods: int  # extra accounts, mostly with a PDS account, without moods


SCALES: dict[str, Scale] = {
    # about 150 users and 1,000 moods
    "quick": Scale(users=150, total_moods=1000 / 150, users_without_moods=5),
    # about 1,000 users with moods and 2,700 moods (production today); production has about
    # 4,200 accounts in all: pass users_without_moods=3200 for that (about 0.5 s of PDS time each)
    "production": Scale(users=1000, total_moods=2.7, users_without_moods=300),
}

# Names of DemoData.cases entries that list subs.
USER_CASES = (
    "heavy",  # the heavy user (@jeffrey, 226 moods by default)
    "no_atproto",  # users document without `atproto`: no PDS account (some with moods)
    "atproto_without_password",  # PDS account exists, Mongo has atproto without `password`
    "no_handle",  # no `@handles` row (one with a PDS account, one without)
    "nuked",  # every mood `deleted: true`
    "unnuked",  # every mood `deleted: false` explicitly
    "unnuked_then_posted",  # older moods `deleted: false`, newer ones without the field
    "legacy_created",  # atproto.created (Date) instead of atproto.createdAt (ISO string)
    "no_moods",  # users without any mood (most with a PDS account)
)
# Names of DemoData.cases entries that list mood ids (24 hex).
MOOD_CASES = (
    "emoji",  # emoji, incl. ZWJ sequences and variation selectors
    "multiline",  # "\n" (one with "\r\n")
    "untrimmed",  # leading/trailing whitespace that must be kept as is
    "repeated_text",  # the same text as moods of other users ("feeling sunny")
    "max_bytes",  # exactly 5000 UTF-8 bytes (fewer characters): valid
    "over_max_bytes",  # 5001 UTF-8 bytes but fewer than 5000 characters: invalid
    "empty",  # "": invalid
    "whitespace_only",  # spaces, tabs, newlines only: invalid
)

_START = datetime(2023, 1, 2, tzinfo=timezone.utc)
_END = datetime(2025, 10, 31, tzinfo=timezone.utc)  # never in the future of the demo's "now"
_LEGACY_BEFORE = datetime(2024, 6, 1, tzinfo=timezone.utc)  # accounts older: atproto.created
_HANDLE_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,16})[a-z0-9]$")
_PASSWORD_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

# Handle material, checked against the reference PDS's reserved subdomains.
_NAMES = (
    "ida fifi maya reas niki lola otto iris juno kai mika nora theo zoe leon ava milo luna ezra "
    "sage remy finn cleo arlo nova hugo ines yuki omar lena rafa tove sol vera pia ulla yara wren "
    "ziggy enzo hana kofi lior mateo noor priya rosa sami tara umi vik wes xena yoko zara ash bea "
    "cyd dov eli gus hal ivy kit"
).split()
_WORDS = (
    "moth paint loop glyph fern noise byte tone cloud spark drift bloom echo frost ember lotus "
    "orbit prism quartz ripple shadow tide velvet willow zephyr dusk dawn brush ink canvas sketch "
    "synth beat pulse glow haze mist moss petal pebble comet lunar solar neon vapor fuzz doodle "
    "scribble crayon marker chalk tape reel"
).split()

# Mood material.
_FEELINGS = (
    "happy sad tired sleepy excited calm anxious hungry bored curious grateful cozy restless "
    "inspired meh okay great lost focused sunny gloomy hopeful chill stressed proud silly weird "
    "nostalgic lonely loved"
).split()
_THINGS = (
    "rain coffee tea music painting pixels the ocean my cat a new brush old photos synths "
    "the sunset homework the bus cookies code"
).split(" ")
_TEMPLATES = (
    "{f}",
    "{f}",
    "feeling {f}",
    "feeling {f}",
    "so {f}",
    "{f} today",
    "very {f}",
    "kinda {f}",
    "{f} and {g}",
    "{f}!!",
    "not {f}",
    "{f}...",
    "thinking about {t}",
    "listening to {t}",
    "missing {t}",
    "{t} makes me {f}",
    "a bit {f} tbh",
    "{F}",
)
_EMOJI = (
    "\U0001f31e",  # sun with face
    "\U0001f3a8",  # artist palette
    "\U0001f972",  # smiling face with tear
    "\U0001f634",  # sleeping face
    "\U0001f525",  # fire
    "\u2728",  # sparkles (BMP)
    "\U0001f327\ufe0f",  # cloud with rain + VS16
    "\U0001f469\u200d\U0001f4bb",  # woman technologist (ZWJ)
    "\U0001f3f3\ufe0f\u200d\U0001f308",  # rainbow flag (VS16 + ZWJ)
    "\u2764\ufe0f",  # red heart + VS16
    "\U0001fae0",  # melting face
    "\U0001f44b\U0001f3fd",  # waving hand, skin tone
)
_MULTILINE = (
    "roses are red\nviolets are blue\ni am {f}\nand so are you",
    "line one\nline two",
    "{f}\n\n{g}",
    "todo:\n- paint\n- sleep\n- {t}",
    "{f}\r\nwindows line ending",
)
_SHARED_TEXT = "feeling sunny"  # the example record text of the lexicon's docs, repeated across users


# -- the data set ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoUser:
    """One demo user: what its `users`, `@handles` documents and PDS account are made of."""

    sub: str
    code: str
    when: datetime
    handle: str | None  # bare handle of the `@handles` row; None: no row
    pds_label: str | None  # first label of the PDS handle; None: no PDS account at all
    password: Secret | None = field(repr=False)  # the PDS account's password (None: no account)
    password_in_mongo: bool  # False: users.atproto lacks `password` (the account exists)
    account_created: datetime | None
    legacy_created: bool  # atproto.created (Date) instead of atproto.createdAt (ISO string)
    mood_count: int

    @property
    def has_account(self) -> bool:
        """Whether the user gets a PDS account (and a users.atproto) when seeded."""
        return self.pds_label is not None

    @property
    def syncable(self) -> bool:
        """docs/interface.md's syncable: DID and password in Mongo and at least one mood."""
        return self.has_account and self.password_in_mongo and self.mood_count > 0

    def pds_handle(self, handle_domain: str = ".test", label_suffix: str = "") -> str | None:
        """The PDS handle: ``<label><label_suffix><handle_domain>`` (``jeffrey.test``)."""
        if self.pds_label is None:
            return None
        return _fit_label(self.pds_label, label_suffix) + handle_domain

    def users_doc(self, did: str | None, handle_domain: str = ".test", label_suffix: str = "") -> dict:
        """The `users` document, with the account's DID (None for users without an account)."""
        doc: dict[str, Any] = {"_id": self.sub, "code": self.code, "when": self.when}
        if self.has_account:
            if not did:
                raise ValueError(f"user {self.sub} holds a PDS account: its users doc needs a DID")
            atproto: dict[str, Any] = {
                "did": did,
                "handle": self.pds_handle(handle_domain, label_suffix),
            }
            if self.password_in_mongo:
                assert self.password is not None
                atproto["password"] = self.password.reveal()
            assert self.account_created is not None
            if self.legacy_created:
                atproto["created"] = self.account_created
            else:
                atproto["createdAt"] = _iso(self.account_created)
            doc["atproto"] = atproto
        return doc


@dataclass(frozen=True)
class DemoData:
    """A generated data set. ``moods`` and ``handles`` are the documents as inserted."""

    seed: int
    scale: str
    users: tuple[DemoUser, ...]  # ordered by `when` (sign-up)
    moods: tuple[dict, ...]  # ordered by `when` (the order the app inserted them)
    handles: tuple[dict, ...]
    cases: Mapping[str, tuple[str, ...]]  # USER_CASES -> subs, MOOD_CASES -> mood ids (hex)

    def __repr__(self) -> str:  # counts only: no texts, no passwords, no 1,000-line reprs
        return f"DemoData(seed={self.seed}, scale={self.scale!r}, {self.summary()})"

    def user(self, sub: str) -> DemoUser:
        for user in self.users:
            if user.sub == sub:
                return user
        raise KeyError(sub)

    def by_handle(self, handle: str) -> DemoUser:
        handle = handle.lstrip("@")
        for user in self.users:
            if user.handle == handle:
                return user
        raise KeyError(handle)

    def moods_of(self, sub: str) -> list[dict]:
        return [m for m in self.moods if m["user"] == sub]

    def mood(self, mood_id: str) -> dict:
        for mood in self.moods:
            if str(mood["_id"]) == mood_id:
                return mood
        raise KeyError(mood_id)

    @property
    def account_users(self) -> list[DemoUser]:
        return [u for u in self.users if u.has_account]

    def summary(self) -> dict[str, int]:
        """Counts only (never texts or passwords)."""
        return {
            "users": len(self.users),
            "users_with_moods": sum(1 for u in self.users if u.mood_count),
            "accounts": sum(1 for u in self.users if u.has_account),
            "syncable_users": sum(1 for u in self.users if u.syncable),
            "handles": len(self.handles),
            "moods": len(self.moods),
            "moods_live": sum(1 for m in self.moods if m.get("deleted") is not True),
            "max_moods_per_user": max((u.mood_count for u in self.users), default=0),
        }


# -- generation ------------------------------------------------------------------------------


def generate(
    users: int | None = None,
    moods_per_user: int | None = None,
    scale: str = "quick",
    seed: int = 7,
    *,
    users_without_moods: int | None = None,
    heavy_user_moods: int = 226,
    total_moods: int | None = None,
    odd_cases: bool = True,
) -> DemoData:
    """Generate a production-shaped data set; pure (no I/O) and deterministic for its arguments.

    users: users with moods (default: the scale's, 150 quick / 1,000 production).
    moods_per_user: every user gets exactly this many moods (the heavy user too); default: a
        skewed distribution (most users 1-5 moods, @jeffrey ``heavy_user_moods``) summing to
        ``total_moods`` (default: about 1,000 quick / 2,700 production, pro rata for ``users``).
    users_without_moods: extra users without moods (default 5 quick / 300 production).
    odd_cases: include the cases of USER_CASES / MOOD_CASES (needs at least 10 users).
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, not {scale!r}")
    profile = SCALES[scale]
    n = profile.users if users is None else users
    extra = profile.users_without_moods if users_without_moods is None else users_without_moods
    if n < 1:
        raise ValueError("users must be at least 1")
    if extra < 0:
        raise ValueError("users_without_moods must be >= 0")
    if moods_per_user is not None and moods_per_user < 1:
        raise ValueError("moods_per_user must be at least 1")
    if heavy_user_moods < 1:
        raise ValueError("heavy_user_moods must be at least 1")
    if odd_cases and n < 10:
        raise ValueError("odd cases need at least 10 users with moods (or odd_cases=False)")
    return _Generator(random.Random(seed), seed, scale).run(
        n, extra, moods_per_user, heavy_user_moods, total_moods, profile, odd_cases
    )


class _Generator:
    def __init__(self, rng: random.Random, seed: int, scale: str) -> None:
        self.rng = rng
        self.seed = seed
        self.scale = scale
        self.handles_used: set[str] = set()
        self.codes_used: set[str] = set()
        self.subs_used: set[str] = set()
        self.oids_used: set[ObjectId] = set()
        # ObjectIds come from a few "processes" (serverless instances), each with a counter
        self.processes = [rng.randbytes(5) for _ in range(16)]
        self.counters = [rng.randrange(1 << 24) for _ in range(16)]

    # ---- ids and names
    def _sub(self, when: datetime) -> str:
        while True:
            hex24 = f"{int(when.timestamp()):08x}" + self.rng.randbytes(8).hex()
            sub = "auth0|" + hex24
            if sub not in self.subs_used:
                self.subs_used.add(sub)
                return sub

    def _code(self) -> str:
        while True:
            code = "ac25" + "".join(self.rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5))
            if code not in self.codes_used:
                self.codes_used.add(code)
                return code

    def _password(self) -> Secret:
        return Secret("".join(self.rng.choice(_PASSWORD_ALPHABET) for _ in range(32)))

    def _take_handle(self, handle: str) -> bool:
        if handle in self.handles_used or not _HANDLE_RE.match(handle) or "--" in handle:
            return False
        self.handles_used.add(handle)
        return True

    def _handle(self) -> str:
        rng = self.rng
        for attempt in range(1000):
            form = rng.randrange(6)
            name, word, word2 = rng.choice(_NAMES), rng.choice(_WORDS), rng.choice(_WORDS)
            if form == 0 and attempt < 50:
                handle = name
            elif form == 1:
                handle = name + str(rng.randrange(1, 10_000))
            elif form == 2:
                handle = word + word2
            elif form == 3:
                handle = f"{name}-{word}"
            elif form == 4:
                handle = word + name
            else:
                handle = f"{name}{rng.choice(('23', '24', '25', '2023', '2024', 'x', 'xo'))}"
            handle = handle[:18].rstrip("-")
            if self._take_handle(handle):
                return handle
        while True:  # never reached in practice
            handle = f"user{rng.randrange(10**9):09d}"
            if self._take_handle(handle):
                return handle

    def _oid(self, when: datetime) -> ObjectId:
        while True:
            p = self.rng.randrange(len(self.processes))
            self.counters[p] = (self.counters[p] + 1) % (1 << 24)
            raw = (
                int(when.timestamp()).to_bytes(4, "big")
                + self.processes[p]
                + self.counters[p].to_bytes(3, "big")
            )
            oid = ObjectId(raw)
            if oid not in self.oids_used:
                self.oids_used.add(oid)
                return oid

    def _date(self, lo: datetime, hi: datetime) -> datetime:
        lo_ms, hi_ms = _ms(lo), _ms(hi)
        return _from_ms(self.rng.randint(lo_ms, max(lo_ms, hi_ms)))

    # ---- texts
    def _text(self) -> tuple[str, str | None]:
        """A normal mood text and its case name (``emoji``/``multiline``) if it is one."""
        rng = self.rng
        f, g = rng.sample(_FEELINGS, 2)
        fill = {"f": f, "g": g, "F": f.upper(), "t": rng.choice(_THINGS)}
        roll = rng.random()
        if roll < 0.015:
            return rng.choice(_MULTILINE).format(**fill), "multiline"
        text = rng.choice(_TEMPLATES).format(**fill)
        if roll < 0.06:
            emoji = rng.choice(_EMOJI)
            return (emoji if rng.random() < 0.25 else f"{text} {emoji}"), "emoji"
        return text, None

    # ---- the whole set
    def run(
        self,
        n: int,
        extra: int,
        moods_per_user: int | None,
        heavy: int,
        total_moods: int | None,
        profile: Scale,
        odd: bool,
    ) -> DemoData:
        rng = self.rng
        counts = self._mood_counts(n, moods_per_user, heavy, total_moods, profile)

        # sign-up dates: the heavy user first (the founder), then everyone spread over the range
        joins = sorted(self._date(_START, _END - timedelta(days=30)) for _ in range(n - 1 + extra))
        slots = [_START + timedelta(hours=9, minutes=41, milliseconds=rng.randrange(60_000))]
        slots += joins
        with_moods = [True] + [False] * (n - 1 + extra)
        for i in rng.sample(range(1, n + extra), n - 1):
            with_moods[i] = True

        # roles (disjoint odd cases) among users with moods, the heavy user (index 0) excluded
        mood_idx = [i for i in range(len(slots)) if with_moods[i]]
        count_of = dict(zip(mood_idx, counts))
        roles: dict[str, list[int]] = {}
        if odd:
            pool = mood_idx[1:]
            rng.shuffle(pool)
            multi = [i for i in pool if count_of[i] >= 2]
            take: dict[str, int] = {
                "no_atproto": max(2, round(0.04 * n)),
                "atproto_without_password": max(1, round(0.02 * n)),
                "nuked": max(2, round(0.02 * n)),
                "unnuked": max(1, round(0.01 * n)),
                "no_handle_account": max(1, round(0.03 * n)),
            }
            if multi:
                roles["unnuked_then_posted"] = [multi[0]]
                pool.remove(multi[0])
            for role, k in take.items():
                roles[role], pool = pool[:k], pool[k:]
            # one user without a PDS account has no handle either
            roles["no_handle_no_account"] = roles["no_atproto"][:1]
            roles["odd_text_hosts"] = pool  # the rest: normal syncable users
        no_atproto = set(roles.get("no_atproto", []))
        no_password = set(roles.get("atproto_without_password", []))
        no_handle = set(roles.get("no_handle_account", [])) | set(roles.get("no_handle_no_account", []))
        if odd:
            # users without moods: most with an account, some never verified, some without handle
            idle = [i for i in range(len(slots)) if not with_moods[i]]
            rng.shuffle(idle)
            no_atproto |= set(idle[: len(idle) // 10])
            no_handle |= set(idle[len(idle) // 10 : len(idle) // 10 + len(idle) // 20])

        # users
        users: list[DemoUser] = []
        for i, when in enumerate(slots):
            sub = self._sub(when)
            handle = HEAVY_HANDLE if i == 0 else self._handle()
            if i == 0:
                self.handles_used.add(HEAVY_HANDLE)
            account = i not in no_atproto
            label = None
            if account:
                label = handle if i not in no_handle else self._no_handle_label(sub)
            created = (
                when + timedelta(milliseconds=rng.randrange(60_000, 3 * 86_400_000))
                if account
                else None
            )
            users.append(
                DemoUser(
                    sub=sub,
                    code=self._code(),
                    when=when,
                    handle=None if i in no_handle else handle,
                    pds_label=label,
                    password=self._password() if account else None,
                    password_in_mongo=account and i not in no_password,
                    account_created=created,
                    legacy_created=bool(created and created < _LEGACY_BEFORE),
                    mood_count=count_of.get(i, 0),
                )
            )

        # moods, per user, in time order, no text equal to the user's previous one
        cases: dict[str, list[str]] = {name: [] for name in USER_CASES + MOOD_CASES}
        per_user: dict[int, list[dict]] = {}
        for i, user in enumerate(users):
            if not user.mood_count:
                continue
            hi = _END
            whens = sorted(self._date(user.when, hi) for _ in range(user.mood_count))
            docs = []
            previous = None
            for when in whens:
                text, case = self._text()
                while text == previous:
                    text, case = self._text()
                previous = text
                doc = {"_id": self._oid(when), "user": user.sub, "mood": text, "when": when}
                docs.append(doc)
                if case:
                    cases[case].append(str(doc["_id"]))
            per_user[i] = docs

        if odd:
            self._odd_moods(roles, per_user, cases)
            for i in roles["nuked"]:
                for doc in per_user[i]:
                    doc["deleted"] = True
            for i in roles["unnuked"]:
                for doc in per_user[i]:
                    doc["deleted"] = False
            for i in roles.get("unnuked_then_posted", []):
                docs = per_user[i]
                for doc in docs[: max(1, len(docs) // 2)]:
                    doc["deleted"] = False
            for name, key in (
                ("no_atproto", "no_atproto"),
                ("atproto_without_password", "atproto_without_password"),
                ("nuked", "nuked"),
                ("unnuked", "unnuked"),
                ("unnuked_then_posted", "unnuked_then_posted"),
            ):
                cases[name] = [users[i].sub for i in roles.get(key, [])]
        cases["heavy"] = [users[0].sub]
        cases["no_handle"] = [u.sub for u in users if u.handle is None]
        cases["legacy_created"] = [u.sub for u in users if u.legacy_created]
        cases["no_moods"] = [u.sub for u in users if not u.mood_count]
        cases["no_atproto"] = [u.sub for u in users if not u.has_account]
        cases["atproto_without_password"] = [
            u.sub for u in users if u.has_account and not u.password_in_mongo
        ]

        moods = sorted(
            (d for docs in per_user.values() for d in docs), key=lambda d: (d["when"], d["_id"])
        )
        if odd:  # every mood with the shared text (some users also wrote it on their own)
            cases["repeated_text"] = [str(m["_id"]) for m in moods if m["mood"] == _SHARED_TEXT]
        handles = tuple({"_id": u.sub, "handle": u.handle} for u in users if u.handle is not None)
        return DemoData(
            seed=self.seed,
            scale=self.scale,
            users=tuple(users),
            moods=tuple(moods),
            handles=handles,
            cases={k: tuple(v) for k, v in cases.items()},
        )

    def _no_handle_label(self, sub: str) -> str:
        label = "user" + sub[-8:]
        while not self._take_handle(label):
            label = "user" + self.rng.randbytes(4).hex()
        return label

    def _mood_counts(
        self,
        n: int,
        moods_per_user: int | None,
        heavy: int,
        total_moods: int | None,
        profile: Scale,
    ) -> list[int]:
        if moods_per_user is not None:
            return [moods_per_user] * n
        if n == 1:
            return [heavy]
        total = round(profile.total_moods * n) if total_moods is None else total_moods
        total = max(total, heavy + n - 1)
        extras = total - heavy - (n - 1)
        cap = max(1, heavy - 2)  # nobody but the heavy user exceeds its count
        weights = [self.rng.paretovariate(1.16) - 1.0 for _ in range(n - 1)]
        counts = [0] * (n - 1)
        remaining = extras
        active = list(range(n - 1))
        while remaining > 0 and active:
            wsum = sum(weights[i] for i in active) or float(len(active))
            shares = {
                i: remaining * ((weights[i] if wsum else 1.0) / wsum) for i in active
            }
            given = 0
            for i in active:
                add = min(int(shares[i]), cap - counts[i])
                counts[i] += add
                given += add
            # largest remainders for what floor() left
            left = remaining - given
            order = sorted(active, key=lambda i: shares[i] - int(shares[i]), reverse=True)
            for i in order:
                if left <= 0:
                    break
                if counts[i] < cap:
                    counts[i] += 1
                    left -= 1
            remaining = left
            active = [i for i in active if counts[i] < cap]
            if remaining and all(weights[i] == 0 for i in active):
                for i in active:
                    weights[i] = 1.0
        if remaining:  # everyone else is at the cap: the heavy user takes the rest
            heavy += remaining
        return [heavy] + [1 + c for c in counts]

    def _odd_moods(
        self,
        roles: dict[str, list[int]],
        per_user: dict[int, list[dict]],
        cases: dict[str, list[str]],
    ) -> None:
        """Overwrite texts of normal syncable users' moods with the odd texts."""
        rng = self.rng
        hosts = list(roles["odd_text_hosts"])
        slots = [(i, k) for i in hosts for k in range(len(per_user[i]))]
        rng.shuffle(slots)
        slots += [(0, k) for k in rng.sample(range(len(per_user[0])), len(per_user[0]))]
        # small data sets: the shared text may also go to users of the other cases
        others = [(i, k) for i in sorted(per_user) if i not in hosts and i != 0
                  for k in range(len(per_user[i]))]
        rng.shuffle(others)
        slots += others
        used: set[tuple[int, int]] = set()

        def put(text: str, case: str, not_users: set[int] = frozenset()) -> int:
            for i, k in slots:
                if (i, k) in used or i in not_users:
                    continue
                docs = per_user[i]
                neighbours = [docs[j]["mood"] for j in (k - 1, k + 1) if 0 <= j < len(docs)]
                if text in neighbours:  # the app never stores a repeat of the previous mood
                    continue
                used.add((i, k))
                mood_id = str(docs[k]["_id"])
                for name in ("emoji", "multiline"):
                    if mood_id in cases[name]:
                        cases[name].remove(mood_id)
                docs[k]["mood"] = text
                cases[case].append(mood_id)
                return i
            raise ValueError("not enough moods for the odd cases: use more users or moods")

        put(_text_of_bytes(MAX_MOOD_BYTES, rng), "max_bytes")
        put(_text_of_bytes(MAX_MOOD_BYTES + 1, rng), "over_max_bytes")
        put("", "empty")
        put(rng.choice((" ", "   ", "\t", " \n ", "\n\n", " \t\r\n ")), "whitespace_only")
        put("  " + rng.choice(_FEELINGS) + " ", "untrimmed")
        put(rng.choice(_EMOJI) + rng.choice(_EMOJI), "emoji")
        put("two lines\nof mood", "multiline")
        put("crlf line\r\nending", "multiline")
        owners: set[int] = set()
        for _ in range(3):  # three users (at least two) write the same text
            try:
                owners.add(put(_SHARED_TEXT, "repeated_text", owners))
            except ValueError:
                if len(owners) < 2:
                    raise


def _text_of_bytes(size: int, rng: random.Random) -> str:
    """A mood of exactly ``size`` UTF-8 bytes, with multi-byte characters (fewer characters)."""
    chunks = ("long mood ", "\U0001f30a ", "caf\u00e9 ", "\u65e5\u672c ", "\u2728", "ok ", "\n")
    parts: list[str] = []
    used = 0
    while True:
        chunk = rng.choice(chunks)
        n = len(chunk.encode())
        if used + n > size - 1:
            break
        parts.append(chunk)
        used += n
    parts.append("." * (size - used))
    text = "".join(parts)
    assert len(text.encode()) == size and len(text) < size
    return text


def _fit_label(label: str, suffix: str) -> str:
    """``label + suffix`` within the PDS's 18 characters (the label is cut, never the suffix)."""
    if not suffix:
        return label
    return (label[: 18 - len(suffix)].rstrip("-") + suffix).lower()


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _from_ms(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)


def _iso(when: datetime) -> str:
    """JavaScript's Date.toISOString(): milliseconds and Z."""
    when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
