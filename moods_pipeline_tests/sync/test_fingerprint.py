"""The Mongo fingerprint of a user (sync.fingerprint) and the incremental selection's pure rules
(sync.incremental.why_changed): every change the audit could see flips the fingerprint, nothing
else does; another user's changes never do."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from bson import ObjectId
from bson.datetime_ms import DatetimeMS

from moods_pipeline.atproto.client import RepoHead
from moods_pipeline.model import Mood, UserAccount
from moods_pipeline.sync import fingerprint as fp
from moods_pipeline.sync import incremental

WHEN = datetime(2025, 10, 9, 19, 0, 28, 821000, tzinfo=timezone.utc)


def moods_of(sub: str, n: int = 3) -> list[Mood]:
    return [Mood(id=str(ObjectId()), user=sub, text=f"mood {i}", when=WHEN + timedelta(minutes=i), rkey=f"3k{i}")
            for i in range(n)]


class FakeStore:
    def __init__(self, moods: list[Mood]) -> None:
        self.moods = moods
        self.queries = 0

    def iter_moods_of_users(self, subs):
        self.queries += 1
        wanted = set(subs)
        return (m for m in self.moods if m.user in wanted)


CHANGES = {
    "insert": lambda ms: ms + [Mood(id=str(ObjectId()), user=ms[0].user, text="new", when=WHEN)],
    "remove": lambda ms: ms[1:],
    "edit_text": lambda ms: [replace(ms[0], text="mood 0 edited")] + ms[1:],
    "edit_text_same_length": lambda ms: [replace(ms[0], text="mood X")] + ms[1:],
    "edit_when_1ms": lambda ms: [replace(ms[0], when=ms[0].when + timedelta(milliseconds=1))] + ms[1:],
    "edit_when_1us": lambda ms: [replace(ms[0], when=ms[0].when + timedelta(microseconds=1))] + ms[1:],
    "when_out_of_range": lambda ms: [replace(ms[0], when=DatetimeMS(2**62))] + ms[1:],
    "when_null": lambda ms: [replace(ms[0], when=None)] + ms[1:],
    "text_not_string": lambda ms: [replace(ms[0], text=5)] + ms[1:],
    "nuke": lambda ms: [replace(m, deleted=True) for m in ms],
    "nuke_one": lambda ms: [replace(ms[0], deleted=True)] + ms[1:],
    "pointer_changed": lambda ms: [replace(ms[0], rkey="3kother")] + ms[1:],
    "pointer_removed": lambda ms: [replace(ms[0], rkey=None)] + ms[1:],
    "pointer_written": lambda ms: ms[:-1] + [replace(ms[-1], rkey=None)],
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_each_change_flips_the_fingerprint_of_that_user_only(change):
    mine, theirs = moods_of("auth0|me"), moods_of("auth0|them")
    me, them = UserAccount("auth0|me", "did:plc:me", "me"), UserAccount("auth0|them", "did:plc:them", "them")
    before = fp.fingerprints(FakeStore(mine + theirs), [me, them])
    after = fp.fingerprints(FakeStore(CHANGES[change](mine) + theirs), [me, them])
    assert after[me.sub] != before[me.sub]
    assert after[them.sub] == before[them.sub]
    # and a change to the other user leaves mine alone
    other = fp.fingerprints(FakeStore(mine + CHANGES[change](theirs)), [me, them])
    assert other[me.sub] == before[me.sub] and other[them.sub] != before[them.sub]


def test_un_nuke_restores_the_fingerprint_and_order_never_matters():
    mine = moods_of("auth0|me", 5)
    user = UserAccount("auth0|me", "did:plc:me", "me")
    live = fp.user_fingerprint(user.sub, user.did, mine)
    nuked = fp.user_fingerprint(user.sub, user.did, [replace(m, deleted=True) for m in mine])
    assert nuked != live
    assert fp.user_fingerprint(user.sub, user.did, list(reversed(mine))) == live  # un-nuked, any order
    # the bulk path (one query for many users) equals the per-user one
    store = FakeStore(list(reversed(mine)))
    assert fp.fingerprints(store, [user]) == {user.sub: live} and store.queries == 1


def test_a_new_did_or_another_sub_flips_it_and_no_text_is_in_it():
    mine = moods_of("auth0|me")
    base = fp.user_fingerprint("auth0|me", "did:plc:me", mine)
    assert fp.user_fingerprint("auth0|me", "did:plc:new", mine) != base
    assert fp.user_fingerprint("auth0|me", None, mine) != base
    assert fp.user_fingerprint("auth0|you", "did:plc:me", mine) != base
    assert base.startswith(fp.VERSION + ":") and len(base) == len(fp.VERSION) + 1 + 64
    assert fp.user_fingerprint("auth0|me", "did:plc:me", []) != fp.user_fingerprint("auth0|me", "did:plc:me", mine[:1])
    assert all(m.text not in base for m in mine)


def test_duplicate_digests_are_not_collapsed():
    # Two identical moods (same id read twice) differ from one: a count change is a change.
    mood = moods_of("auth0|me", 1)[0]
    assert fp.user_fingerprint("s", "d", [mood]) != fp.user_fingerprint("s", "d", [mood, mood])


# --- why_changed: the selection's rule --------------------------------------------------------

BASIS = incremental.audit_basis(nuke_policy="keep", when_tolerance_ms=1000)
USER = UserAccount("auth0|me", "did:plc:me", "me")
RECEIPT = {"did": USER.did, "sub": USER.sub, "rev": "3r1", "head": "bafyhead1", "fingerprint": "fp1:abc",
           "basis": BASIS, "summary": {"by_status": {"synced": 2}, "problems": 0}}
HEAD = RepoHead(did=USER.did, rev="3r1", head="bafyhead1")


def test_why_changed_holds_only_when_everything_matches():
    assert incremental.why_changed(USER, RECEIPT, HEAD, "fp1:abc", BASIS) is None
    cases = {
        "no receipt": (None, HEAD, "fp1:abc", BASIS),
        "rev moved": (RECEIPT, replace(HEAD, rev="3r2"), "fp1:abc", BASIS),
        "head moved": (RECEIPT, replace(HEAD, head="bafyhead2"), "fp1:abc", BASIS),
        "inactive": (RECEIPT, replace(HEAD, active=False, status="takendown"), "fp1:abc", BASIS),
        "head unknown": (RECEIPT, "RepoNotFound: gone", "fp1:abc", BASIS),
        "not listed": (RECEIPT, None, "fp1:abc", BASIS),
        "moods": (RECEIPT, HEAD, "fp1:def", BASIS),
        "fingerprint unknown": (RECEIPT, HEAD, None, BASIS),
        "tolerance": (RECEIPT, HEAD, "fp1:abc", incremental.audit_basis(nuke_policy="keep", when_tolerance_ms=5)),
        "policy": (RECEIPT, HEAD, "fp1:abc", incremental.audit_basis(nuke_policy="delete", when_tolerance_ms=1000)),
        "legacy": (RECEIPT, HEAD, "fp1:abc", incremental.audit_basis(nuke_policy="keep", when_tolerance_ms=1000,
                                                                     rewrite_legacy=True)),
        "another sub": (dict(RECEIPT, sub="auth0|else"), HEAD, "fp1:abc", BASIS),
        "older recipe": (dict(RECEIPT, basis=dict(BASIS, version=0)), HEAD, "fp1:abc", BASIS),
    }
    for name, (receipt, head, print_, basis) in cases.items():
        assert incremental.why_changed(USER, receipt, head, print_, basis), name


def test_receipt_summaries_count_like_an_audit_and_facts_carry_no_text():
    selection = incremental.Selection(unchanged=[(USER, dict(RECEIPT, audited_at="2026-01-01T00:00:00Z"))],
                                      changed=[UserAccount("auth0|x", "did:plc:x", None)],
                                      reasons={"did:plc:x": "repo moved: rev a -> b"})
    [summary] = selection.unchanged_summaries()
    assert summary["unchanged"] and summary["by_status"] == {"synced": 2} and summary["handle"] == "me"
    facts = selection.facts()
    assert (facts["users_checked"], facts["users_unchanged"], facts["rev_min"], facts["rev_max"]) == (1, 1, "3r1", "3r1")
    assert facts["changed_reasons"] == {"repo moved": 1}


def test_a_failing_pds_or_mongo_makes_every_user_changed(tmp_path):
    from moods_pipeline.atproto.client import PdsUnavailable
    from moods_pipeline.storage.receipts import ReceiptStore

    receipts = ReceiptStore(tmp_path)
    receipts.save(dict(RECEIPT))

    class DownPds:
        def latest_commit(self, did):
            raise PdsUnavailable(None, "ConnectError", "refused")

    class DownStore:
        def iter_moods_of_users(self, subs):
            raise ConnectionError("mongo down")

    class UpPds:
        def latest_commit(self, did):
            return HEAD

    selection = incremental.select_changed([USER], FakeStore([]), DownPds(), receipts, BASIS)
    assert selection.changed == [USER] and not selection.unchanged
    selection = incremental.select_changed([USER], DownStore(), UpPds(), receipts, BASIS)
    assert selection.changed == [USER] and selection.fallback
    receipts.invalidate(USER.did, "repo unreadable")
    assert receipts.load(USER.did) is None
    (tmp_path / "audit" / "receipts" / "did_plc_me.json").write_text("{not json")
    assert receipts.load_many([USER.did]) == {}


def test_merged_runs_span_unchanged_users_only_between_mergeable_ones():
    ordered = [f"k{i:02d}" for i in range(20)]
    changed = ["k01", "k02", "k05", "k09", "k15"]
    # k09 had no receipt (maybe unreadable): it runs alone; the others join across the gaps.
    runs = incremental.merged_runs(ordered, changed, ["k01", "k02", "k05", "k15"])
    assert runs == [ordered[1:6], ["k09"], ["k15"]]
    assert incremental.merged_runs(ordered, changed, changed, per_run=2) == [["k01", "k02"], ordered[5:10], ["k15"]]
    assert incremental.merged_runs(ordered, changed, changed, max_span=5) == [ordered[1:6], ["k09"], ["k15"]]
    # Nothing mergeable: runs of contiguous changed keys only, as partition_runs cuts them.
    assert incremental.merged_runs(ordered, changed, []) == [["k01", "k02"], ["k05"], ["k09"], ["k15"]]
    # Every changed key is in exactly one run, first and last keys of a run are changed.
    for runs in (incremental.merged_runs(ordered, changed, changed, per_run=p) for p in (1, 2, 3, 50)):
        assert sorted(k for run in runs for k in run if k in changed) == changed
        assert all(run[0] in changed and run[-1] in changed for run in runs)


def test_only_users_readable_last_time_count_as_mergeable():
    readable = [incremental.why_changed(USER, RECEIPT, replace(HEAD, rev="3r2"), "fp1:abc", BASIS),
                incremental.why_changed(USER, RECEIPT, HEAD, "fp1:def", BASIS),
                incremental.why_changed(USER, RECEIPT, HEAD, "fp1:abc", dict(BASIS, when_tolerance_ms=5))]
    doubtful = [incremental.why_changed(USER, None, HEAD, "fp1:abc", BASIS),
                incremental.why_changed(USER, RECEIPT, replace(HEAD, active=False), "fp1:abc", BASIS),
                incremental.why_changed(USER, RECEIPT, "RepoNotFound: x", "fp1:abc", BASIS),
                incremental.why_changed(USER, RECEIPT, None, "fp1:abc", BASIS)]
    assert all(why.startswith(incremental.READABLE_CHANGES) for why in readable)
    assert not any(why.startswith(incremental.READABLE_CHANGES) for why in doubtful)


def test_merged_runs_keep_gaps_small_where_events_are_stored_one_by_one():
    ordered = [f"k{i:02d}" for i in range(40)]
    changed = ["k00", "k03", "k30"]
    assert incremental.merged_runs(ordered, changed, changed, max_gap=2) == [ordered[0:4], ["k30"]]
    assert incremental.merged_runs(ordered, changed, changed, max_gap=1) == [["k00"], ["k03"], ["k30"]]
    assert incremental.merged_runs(ordered, changed, changed) == [ordered[0:31]]
