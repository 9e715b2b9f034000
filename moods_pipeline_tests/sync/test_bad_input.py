"""Bad input through a real backfill on the real stack: each case gets its specific reason and
never touches another mood or user; what lands, lands byte for byte.

- A corpus of moods (too long by bytes, at the limits, empty, blank, not text, bad or missing
  dates, dates at and past the TID range, NUL, combining marks, emoji sequences, a non-ObjectId
  _id) beside good moods, backfilled through the Dagster job.
- Users-level bad input (a DID of the wrong form, an ``@handles`` row without a user, moods
  without a user or naming nobody) through the ``moods-pipeline backfill --all`` command.
- What pymongo or SecantusDB cannot even store (a lone surrogate, dates past year 9999): at the
  validator and the reader (``mongo_store`` decodes with DATETIME_AUTO).
- A property: for any mix of moods and records, the backfill planner's writes followed by the
  repair plan converge, and reconcile finds no problem.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import bson
import pytest
from bson import ObjectId
from bson.datetime_ms import DatetimeMS
from hypothesis import HealthCheck, given, settings

from moods_pipeline import cli
from moods_pipeline.cli.common import run_job_over_partitions
from moods_pipeline.model import Mood, PdsRecord, iso_when
from moods_pipeline.storage.mongo import CODEC_OPTIONS, _mood_from_doc
from moods_pipeline.storage.results import ResultsStore
from moods_pipeline.sync.mood_record import MAX_WHEN, Invalid, build_record
from moods_pipeline.sync.planner import plan_user
from moods_pipeline.sync.reconcile import reconcile
from moods_pipeline.sync.repair_plan import apply_plan_in_memory, plan_repair
from moods_pipeline_tests.reliability import reliability_record  # noqa: F401 - fixture
from moods_pipeline_tests.sync.test_repair_plan import USER, scenarios
from moods_pipeline_tests.world import add_user, backfill_json, check_invariant, definitions_for, repo_snapshot

pytestmark = pytest.mark.timeout(120)  # every test bounded

UTC = timezone.utc
WHEN = datetime(2024, 5, 1, 8, 30, 0, 250000, tzinfo=UTC)
MISSING = object()


@dataclass(frozen=True)
class Case:
    kind: str  # the row in the reliability table
    example: str  # what was stored, in words
    mood: Any = "a perfectly good mood"
    when: Any = WHEN
    reason: str | None = None  # a fragment of the expected reason; None: the mood must land
    _id: Any = None

    def doc(self, sub: str, i: int) -> dict:
        doc: dict = {"_id": self._id if self._id is not None else ObjectId(), "user": sub}
        if self.mood is not MISSING:
            doc["mood"] = self.mood
        if self.when is not MISSING:
            doc["when"] = self.when + timedelta(minutes=i) if self.when is WHEN else self.when
        return doc


CASES = [
    Case("over 5000 bytes", "5,001 ASCII characters", "a" * 5001,
         reason="mood is 5,001 UTF-8 bytes; the lexicon allows 5,000"),
    Case("over 5000 bytes, under 5000 characters", "1,300 emoji (1,300 characters, 5,200 bytes)", "😀" * 1300,
         reason="mood is 5,200 UTF-8 bytes; the lexicon allows 5,000"),
    Case("exactly 5000 bytes (ASCII)", "5,000 ASCII characters", "b" * 5000),
    Case("exactly 5000 bytes (emoji)", "1,250 emoji (4 bytes each)", "🌞" * 1250),
    Case("exactly 5000 bytes (2-byte letters)", "2,500 x 'é'", "é" * 2500),
    Case("empty", "mood: ''", "", reason="mood is empty"),
    Case("whitespace only", "spaces, tab, newline, ideographic space", " \t\n\u3000 ",
         reason="mood is empty after trimming"),
    Case("byte-order mark and spaces", "'\\ufeff  '", "\ufeff  ", reason="mood is empty after trimming"),
    Case("mood not a string (number)", "mood: 42", 42, reason="mood is not a string (int)"),
    Case("mood not a string (array)", "mood: ['hi']", ["hi"], reason="mood is not a string (list)"),
    Case("mood not a string (object)", "mood: {text: 'hi'}", {"text": "hi"}, reason="mood is not a string (dict)"),
    Case("mood null", "mood: null", None, reason="mood is missing"),
    Case("mood field missing", "no mood field", MISSING, reason="mood is missing"),
    Case("when missing", "no when field", when=MISSING, reason="when is missing"),
    Case("when null", "when: null", when=None, reason="when is missing"),
    Case("when not a date (string)", "when: '2024-05-01T08:30:00Z' (a string)", when="2024-05-01T08:30:00Z",
         reason="when is not a datetime (str)"),
    Case("when not a date (number)", "when: 1714552200000 (a number)", when=1714552200000,
         reason="when is not a datetime (Int64)"),
    Case("when before 1970", "1969-12-31T23:59:59.999Z", when=datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
         reason="is before 1970"),
    Case("when at 1970-01-01", "1970-01-01T00:00:00.000Z (the first TID time)", when=datetime(1970, 1, 1, tzinfo=UTC)),
    Case("when at the last TID time", "2255-06-05T23:47:34.739Z", when=MAX_WHEN),
    Case("when past the last TID time", "2255-06-05T23:47:34.740Z", when=MAX_WHEN + timedelta(milliseconds=1),
         reason="is after 2255-06-05T23:47:34.739Z, the last time a record key (TID) can hold"),
    Case("when far in the future", "9999-12-31T23:59:59.999Z",
         when=datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
         reason="is after 2255-06-05T23:47:34.739Z"),
    Case("NUL characters", "'a\\x00b\\x00'", "a\x00b\x00"),
    Case("only a NUL", "'\\x00'", "\x00"),
    Case("combining characters", "'e\\u0301te\\u0301' (decomposed, not NFC)", "e\u0301te\u0301 cafe\u0301"),
    Case("emoji sequences", "ZWJ family, flag, skin tone, keycap", "👨‍👩‍👧‍👦 🇺🇦 👍🏽 1️⃣"),
    Case("bidi and zero-width", "RTL override, zero-width space", "\u202eabc\u200b"),
    Case("_id not an ObjectId", "_id: 'mood-1' (a string)", _id="mood-1-" + ObjectId().__str__()[:6],
         reason="_id is not an ObjectId"),
]


def backfill_via_dagster(instance, settings_, users):
    defs = definitions_for(settings_, min_batch_interval_ms=0)
    run_config = {"ops": {"mood_backfill": {"config": {"dry_run": False}}}}
    run_ids = run_job_over_partitions(instance, "mood_backfill_job", [u.did for u in users], run_config, defs=defs)
    results = ResultsStore(settings_.state_dir)
    return {o.did: o for run_id in run_ids for o in results.run_backfill(run_id)}


@pytest.mark.integration
def test_bad_moods_are_skipped_with_their_reason_and_the_rest_land_exactly(
    store, mongo_db, make_account, test_settings, dagster_instance, pds, reliability_record
):
    corpus = add_user(mongo_db, make_account("corpus"), moods=3)  # three good moods first
    docs = [case.doc(corpus.sub, i) for i, case in enumerate(CASES)]
    mongo_db.moods.insert_many(docs)
    neighbour = add_user(mongo_db, make_account("neighb"), moods=4)
    ids = {case.kind: (str(doc["_id"]) if isinstance(doc["_id"], ObjectId) else repr(doc["_id"]))
           for case, doc in zip(CASES, docs)}

    outcomes = backfill_via_dagster(dagster_instance, test_settings, [corpus, neighbour])

    outcome = outcomes[corpus.did]
    landing = [c for c in CASES if c.reason is None]
    invalid = [c for c in CASES if c.reason is not None]
    assert outcome.ok, (outcome.error, outcome.failed)  # invalid moods never fail the user
    assert outcome.created == 3 + len(landing) and outcome.live == 3 + len(CASES)
    reasons = dict(outcome.skipped_invalid)
    assert set(reasons) == {ids[c.kind] for c in invalid}
    assert outcomes[neighbour.did].ok and outcomes[neighbour.did].created == 4

    records = repo_snapshot(pds, corpus.did)
    by_ref = {value.get("ref"): value for value in records.values()}
    moods = {m.id: m for m in store.moods_of(corpus.sub)}
    audit = reconcile(store.user_by_sub(corpus.sub), list(moods.values()),
                      [PdsRecord(rkey, value) for rkey, value in records.items()])
    status = dict(zip(audit["mood_id"], audit["status"]))
    detail = dict(zip(audit["mood_id"], audit["detail"]))
    for case in CASES:
        mood_id = ids[case.kind]
        if case.reason is not None:
            assert case.reason in reasons[mood_id], (case.kind, reasons[mood_id])
            assert mood_id not in by_ref and moods[mood_id].rkey is None, case.kind
            assert status[mood_id] == "invalid" and case.reason in detail[mood_id], case.kind
            action = f"skipped, reason: {reasons[mood_id]}"
        else:
            value = by_ref[mood_id]
            assert value["mood"] == case.mood, case.kind  # byte for byte: no trimming, no normalization
            assert value["when"] == iso_when(moods[mood_id].when), case.kind
            assert records[moods[mood_id].rkey] is value, case.kind
            assert status[mood_id] == "synced", (case.kind, detail[mood_id])
            action = f"synced byte for byte ({len(case.mood.encode('utf-8')):,} bytes)"
        reliability_record(case.kind, case.example, 1, 0, 0, action, section="bad_input")
    # Reasons name the field and the rule, never the text.
    assert not any("😀" in r or "aaaa" in r for r in reasons.values())
    assert check_invariant(store, pds, [corpus, neighbour]) == 3 + len(landing) + 4


# --- users-level bad input through the command line ----------------------------------------------


def raw_user(db, sub: str, atproto: dict | None, handle: str | None = None, moods: int = 2) -> list[str]:
    doc = {"_id": sub, "code": "ac25bad", "when": WHEN}
    if atproto is not None:
        doc["atproto"] = atproto
    db.users.insert_one(doc)
    if handle:
        db["@handles"].insert_one({"_id": sub, "handle": handle})
    docs = [{"_id": ObjectId(), "user": sub, "mood": f"mood {i}", "when": WHEN + timedelta(minutes=i)}
            for i in range(moods)]
    if docs:
        db.moods.insert_many(docs)
    return [str(d["_id"]) for d in docs]


BAD_DIDS = {  # label: (stored DID, what the user's failure says)
    "not a DID": ("not-a-did", "users.atproto.did 'not-a-did' is not a DID"),
    "DID with a path": ("did:plc:abc/../../xrpc", "is not a DID"),
    "DID with upper-case method id": ("did:plc:ABCDEFGHIJKLMNOPQRSTUVWX", "repo unreadable: GET com.atproto.repo."
                                      "listRecords HTTP 400: InvalidRequest: Could not find repo"),
    "DID of another PDS": ("did:web:elsewhere.example", "Could not find repo: did:web:elsewhere.example"),
}


@pytest.mark.integration
def test_bad_users_rows_fail_alone_with_a_reason(store, cli_env, mongo_db, make_account, pds, capsys,
                                                 reliability_record):
    good = add_user(mongo_db, make_account("goodu"), moods=3)
    bad_subs = {}
    for label, (did, _) in BAD_DIDS.items():
        sub = f"auth0|baddid{len(bad_subs)}"
        raw_user(mongo_db, sub, {"did": did, "password": "x" * 32, "handle": "h.test"}, handle=f"baddid{len(bad_subs)}")
        bad_subs[label] = sub
    # a DID that is not even a string
    raw_user(mongo_db, "auth0|intdid", {"did": 12345, "password": "x" * 32}, handle="intdid")
    # an @handles row whose user does not exist
    mongo_db["@handles"].insert_one({"_id": "auth0|ghost", "handle": "ghost"})
    # moods without a user, and naming a user that does not exist
    mongo_db.moods.insert_many([
        {"_id": ObjectId(), "mood": "no user field", "when": WHEN},
        {"_id": ObjectId(), "user": None, "mood": "user null", "when": WHEN},
        {"_id": ObjectId(), "user": "auth0|nobody", "mood": "names nobody", "when": WHEN},
    ])
    repos_before = {r["did"]: r.get("rev") for r in pds.list_repos()}

    code, summary, err = backfill_json(capsys, "--all")

    assert code == 1  # something was left: the bad users
    outcomes = {o.sub: o for o in ResultsStore(cli_env.state_dir).latest_backfill()}
    assert outcomes[good.sub].ok and outcomes[good.sub].created == 3
    failed_lines = [line for line in err.splitlines() if line.startswith("FAILED ")]
    for n, (label, sub) in enumerate(bad_subs.items()):
        did, reason = BAD_DIDS[label]
        # Each bad user fails alone, with its reason, on stderr (malformed DIDs are refused
        # before any partition exists; well-formed ones fail in the run).
        line = next((l for l in failed_lines if l.startswith(f"FAILED @baddid{n} ")), None)
        assert line is not None and reason in line, (label, line, failed_lines)
        reliability_record(f"users.atproto.did: {label}", repr(did), 2, 0, 0,
                           f"user failed: {line.split(': ', 1)[1]}", section="bad_input")
    # The DID that is not a string cannot name a repo (nor a partition): it has a password, so it
    # is a broken account, failed with its reason (not a user without an account).
    assert "FAILED @intdid (auth0|intdid): users.atproto.did is not a DID: a int, not a string" in err
    assert summary["users_failed"] == len(BAD_DIDS) + 1 and summary["users_refused"] == 3
    reliability_record("users.atproto.did not a string", "did: 12345", 2, 0, 0,
                       "user failed (counted in users_failed) with the reason: users.atproto.did is not a DID",
                       section="bad_input")
    # auth0|nobody (moods naming no users document).
    assert summary["skipped_no_account"] == 1
    assert "SKIPPED auth0|nobody: moods name this sub, but no users document has it" in err
    reliability_record("mood.user names no user", "user: 'auth0|nobody'", 1, 0, 0,
                       "counted in skipped_no_account with the reason; nothing written", section="bad_input")
    assert summary["moods_without_user"] == 2
    reliability_record("mood without user", "no user field / user: null", 2, 0, 0,
                       "counted in moods_without_user; nothing written", section="bad_input")
    assert cli.main(["backfill", "--user", "@ghost"]) == 2
    assert "@ghost names sub auth0|ghost, which has no users document" in capsys.readouterr().err
    reliability_record("@handles row without a user", "{_id: 'auth0|ghost', handle: 'ghost'}", 0, 0, 0,
                       "--all ignores it; --user @ghost exits 2 naming the missing users document",
                       section="bad_input")
    repos_after = {r["did"]: r.get("rev") for r in pds.list_repos()}
    changed = {did for did in repos_after if repos_before.get(did) != repos_after[did]}
    assert changed == {good.did}
    assert check_invariant(store, pds, [good]) == 3


@pytest.mark.integration
def test_the_store_never_hands_out_a_did_that_is_not_a_string(store, mongo_db):
    raw_user(mongo_db, "auth0|intdid2", {"did": 12345, "password": "x" * 32}, handle="intdid2")
    dids = [u.did for u in store.users_with_moods()]
    assert all(isinstance(did, str) or did is None for did in dids), dids


# --- what cannot even be stored: validator and reader --------------------------------------------


def test_lone_surrogate_cannot_be_stored_and_is_refused_by_the_validator(reliability_record):
    text = "feeling \ud83d broken"  # half of an emoji's surrogate pair
    with pytest.raises((UnicodeEncodeError, bson.errors.InvalidStringData)):
        bson.encode({"mood": text})  # pymongo cannot send it to MongoDB at all
    mood = Mood(id=str(ObjectId()), user="auth0|x", text=text, when=WHEN)
    built = build_record(mood)
    assert isinstance(built, Invalid)
    assert built.reason == "mood contains a lone surrogate (U+D83D at index 8); it cannot be encoded as UTF-8"
    plan = plan_user([mood, Mood(id=str(ObjectId()), user="auth0|x", text="fine", when=WHEN)], [])
    assert plan.invalid == [(mood.id, built.reason)] and len(plan.creates) == 1
    reliability_record("lone surrogate", "'\\ud83d' alone (validator level: BSON cannot carry it)", 1, 0, 0,
                       f"skipped, reason: {built.reason}", section="bad_input")


@pytest.mark.integration
def test_dates_past_year_9999_refused_by_secantusdb_and_reported_by_the_reader(mongo_db, reliability_record):
    past_9999 = DatetimeMS(253402300800000)  # 10000-01-01T00:00:00Z
    with pytest.raises(Exception, match="year 10000 is out of range"):
        mongo_db.moods.insert_one({"user": "auth0|x", "mood": "far", "when": past_9999})
    # MongoDB itself stores such dates: the reader must turn them into a reason, not a crash.
    for raw_when, fragment in [
        (past_9999, "after 2255-06-05T23:47:34.739Z (outside the dates Python can represent)"),
        (DatetimeMS(-62135596800001), "before 1970 (outside the dates Python can represent)"),
    ]:
        raw = bson.encode({"_id": ObjectId(), "user": "auth0|x", "mood": "far", "when": raw_when})
        doc = bson.decode(raw, codec_options=CODEC_OPTIONS)
        mood = _mood_from_doc(doc)
        built = build_record(mood)
        assert isinstance(built, Invalid) and fragment in built.reason, built
        reliability_record(
            "when outside Python's dates", f"{int(raw_when):,} ms (reader level: SecantusDB refuses to store it)",
            1, 0, 0, f"skipped, reason: {built.reason}", section="bad_input",
        )


# --- property: the backfill's plan, then the repair, converge ------------------------------------


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_backfill_plan_then_repair_converges(scenario):
    moods, records, nuke_policy, tolerance = scenario
    kw = dict(nuke_policy=nuke_policy, when_tolerance_ms=tolerance)
    plan = plan_user(moods, records)

    by_rkey = {r.rkey: r for r in records}
    for create in plan.creates:
        assert create.rkey not in by_rkey, "the planner would create at an rkey the repo holds"
        by_rkey[create.rkey] = PdsRecord(create.rkey, dict(create.record))
    pointers = dict(plan.pointer_writes) | {c.mood_id: c.rkey for c in plan.creates}
    moods2 = [replace(m, rkey=pointers.get(m.id, m.rkey)) for m in moods]
    records2 = sorted(by_rkey.values(), key=lambda r: r.rkey)

    # The backfill alone: every valid live mood has a record carrying its id and a pointer at it.
    after_backfill = reconcile(USER, moods2, records2, **kw)
    assert not {"missing_on_pds", "stale_pointer", "pointer_missing"} & set(after_backfill["status"])
    assert plan_user(moods2, records2).is_empty  # idempotent: a second run writes nothing
    for create in plan.creates:
        assert create.record == build_record(next(m for m in moods if m.id == create.mood_id))

    repair = plan_repair(USER, moods2, records2, delete_orphans=True, rewrite_legacy=True, **kw)
    assert not repair.of("create_record"), "the repair had to create what the backfill should have"
    moods3, records3 = apply_plan_in_memory(moods2, records2, repair)  # raises where the PDS would refuse
    after = reconcile(USER, moods3, records3, rewrite_legacy=True, **kw)
    assert not after["problem"].any(), after[after["problem"]][["mood_id", "rkey", "status", "detail"]]
