"""The batch writer's failure handling, on an in-memory repo (pure logic; the real PDS is
exercised by the backfill integration tests)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from moods_pipeline.atproto.cid import record_cid
from moods_pipeline.atproto.client import PdsError, PdsUnavailable
from moods_pipeline.model import Mood, PdsRecord
from moods_pipeline.sync.planner import plan_user
from moods_pipeline.sync.writer import BatchWriter, WriteOptions, make_batches

DID = "did:plc:testtesttesttesttesttest"


def server_error(message="Internal Server Error") -> PdsError:
    return PdsError(500, "InternalServerError", message, retryable=True, method="com.atproto.repo.applyWrites")


class FakeRepo:
    """A repo that applies batches atomically and can fail them as a PDS would."""

    def __init__(self, poison: set[str] = frozenset(), lose_responses: int = 0, down_after: int | None = None):
        self.records: dict[str, dict] = {}
        self.poison = set(poison)
        self.lose_responses = lose_responses
        self.down_after = down_after
        self.calls = 0
        self.did = DID

    def apply_writes(self, ops):
        self.calls += 1
        if self.down_after is not None and self.calls > self.down_after:
            raise PdsUnavailable(None, None, "connection refused", retryable=True, method="com.atproto.repo.applyWrites")
        rkeys = [op["rkey"] for op in ops]
        if any(r in self.records for r in rkeys):
            raise server_error()  # createRecord on an existing rkey: a bare 500
        if self.poison & set(rkeys):
            raise server_error()
        for op in ops:
            self.records[op["rkey"]] = op["value"]
        if self.lose_responses:
            self.lose_responses -= 1
            raise server_error("response lost")
        # As the PDS answers: each create's uri and the CID of the record it stored.
        return [{"uri": f"at://{DID}/x/{op['rkey']}", "cid": record_cid(op["value"])} for op in ops]

    # the PdsClient side, for re-reads
    def list_records(self, did, collection):
        return [PdsRecord(rkey=k, value=v) for k, v in sorted(self.records.items())]


class FakeStore:
    def __init__(self):
        self.pointers: dict[str, str] = {}
        self.bulk_writes = 0

    def write_pointers(self, pairs):
        if pairs:
            self.bulk_writes += 1
        self.pointers.update(pairs)
        return len(pairs)


def moods(n: int) -> list[Mood]:
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    return [Mood(id=f"{i + 1:024x}", user="auth0|u", text=f"mood {i}", when=base + timedelta(minutes=i)) for i in range(n)]


def run(repo: FakeRepo, store: FakeStore, count: int, **options):
    plan = plan_user(moods(count), [])
    writer = BatchWriter(repo, store, repo, WriteOptions(min_batch_interval_s=0, retry_delay_s=0, **options),
                         sleep=lambda s: None)
    return plan, writer.write_all(plan.creates)


def assert_invariant(repo: FakeRepo, store: FakeStore, plan, failed_ids=()):
    by_ref = {}
    for rkey, value in repo.records.items():
        by_ref.setdefault(value["ref"], []).append(rkey)
    for create in plan.creates:
        if create.mood_id in failed_ids:
            assert create.mood_id not in by_ref
            continue
        assert by_ref[create.mood_id] == [store.pointers[create.mood_id]]


def test_batches_respect_count_and_size():
    plan = plan_user(moods(450), [])
    batches = make_batches(plan.creates, WriteOptions(max_batch_writes=200, max_batch_bytes=10**9))
    assert [len(b) for b in batches] == [200, 200, 50]
    small = make_batches(plan.creates, WriteOptions(max_batch_writes=200, max_batch_bytes=5_000))
    assert all(len(b) < 200 for b in small) and sum(map(len, small)) == 450


def test_each_batch_is_followed_by_one_pointer_bulk_write():
    repo, store = FakeRepo(), FakeStore()
    plan, result = run(repo, store, 450)
    assert result.created == 450 and result.failed == [] and result.batches == 3
    assert (result.cids_checked, result.cids_unchecked) == (450, 0)
    assert store.bulk_writes == 3
    assert_invariant(repo, store, plan)


def test_lost_response_is_recovered_by_rereading_not_rewriting():
    repo, store = FakeRepo(lose_responses=1), FakeStore()
    plan, result = run(repo, store, 250)
    assert result.recovered == 200 and result.created == 50 and result.failed == []
    assert len(repo.records) == 250
    assert_invariant(repo, store, plan)


def test_one_poisoned_record_fails_alone_with_the_pds_reason():
    plan = plan_user(moods(200), [])
    bad = plan.creates[137]
    repo, store = FakeRepo(poison={bad.rkey}), FakeStore()
    _, result = run(repo, store, 200)
    assert [mood_id for mood_id, _ in result.failed] == [bad.mood_id]
    assert "500" in result.failed[0][1]
    assert result.created == 199
    assert_invariant(repo, store, plan, failed_ids={bad.mood_id})


def test_pds_going_down_fails_the_rest_without_hammering():
    repo, store = FakeRepo(down_after=1), FakeStore()
    plan, result = run(repo, store, 600)
    assert result.created == 200
    assert len(result.failed) == 400 and all("unreachable" in reason for _, reason in result.failed)
    assert repo.calls == 2
    assert_invariant(repo, store, plan, failed_ids={m for m, _ in result.failed})
