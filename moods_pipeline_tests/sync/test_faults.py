"""Real faults injected into the real local stack: nothing lost, duplicated or leaked.

Each test injects one fault (a SIGKILLed PDS, MongoDB failpoints and a MongoDB restart, 429s
and 500s from the fault proxy, wrong credentials, two runs at once, a lost answer, a write that
lands after the client gave up), proves that the fault really fired, lets the run fail cleanly
or recover, runs the backfill again and ends with docs/interface.md's invariant
(``world.check_invariant``). Each records a row for the reliability table
(``moods_pipeline_tests.reliability``; ``bench/reliability.py`` prints it).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pymongo
import pytest
from pymongo import monitoring

from moods_pipeline import MOOD_COLLECTION
from moods_pipeline.atproto.client import PdsClient
from moods_pipeline.cli.common import run_job_over_partitions
from moods_pipeline.storage.mongo import MongoStore, connect
from moods_pipeline.storage.results import ResultsStore
from moods_pipeline.sync.backfill import backfill_users, sync_user
from moods_pipeline.sync.planner import plan_user
from moods_pipeline.sync.writer import WriteOptions
from moods_pipeline_tests.conftest import create_account
from moods_pipeline_tests.reliability import reliability_record, tally  # noqa: F401 - fixture
from moods_pipeline_tests.support.fault_proxy import FaultProxy
from moods_pipeline_tests.world import (
    add_user,
    check_invariant,
    definitions_for,
    repo_snapshot,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]  # every test bounded

APPLY_WRITES = "com.atproto.repo.applyWrites"
# Fast failure handling: the faults are real, the waiting need not be long.
FAST = WriteOptions(min_batch_interval_s=0.0, retry_delay_s=0.05)


def fast_client(url: str, **options) -> PdsClient:
    options = {"max_retries": 2, "backoff_base_s": 0.05, "backoff_max_s": 0.2, "timeout": 20, **options}
    return PdsClient(url, **options)


def accounts(stack_url: str, prefix: str, n: int) -> list:
    """n accounts on a PDS, created a few at a time (each createAccount is a PLC operation)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda _: create_account(stack_url, prefix=prefix), range(n)))


def accounts_of(store: MongoStore, users) -> list:
    return [store.user_by_sub(u.sub) for u in users]


@pytest.fixture
def proxy(local_pds):
    with FaultProxy(local_pds.url) as running:
        yield running


# --- (a) the PDS SIGKILLed in the middle of a backfill -------------------------------------------


@pytest.fixture
def own_pds(tmp_path: Path):
    """A PDS of this test's own (it gets killed), on its own PLC directory."""
    from moods_pipeline.devstack import LocalPds, LocalPlc

    plc = LocalPlc(tmp_path / "plc")
    server = LocalPds(tmp_path / "pds", plc, log_level="warn")
    plc.start()
    try:
        server.start()
        yield server
    finally:
        server.stop()
        plc.stop()


def test_pds_sigkill_mid_backfill_then_restart_and_rerun(store, own_pds, mongo_db, test_settings, reliability_record):
    n_users, per_user, kill_after = 8, 60, 6
    users = [add_user(mongo_db, account, moods=per_user) for account in accounts(own_pds.url, "kill", n_users)]
    total = n_users * per_user
    batches_done = threading.Semaphore(0)
    killed = threading.Event()
    port = own_pds.port

    def killer() -> None:
        # Once a few batches have landed, with other users' batches in flight.
        if all(batches_done.acquire(timeout=60) for _ in range(kill_after)):
            own_pds.kill()  # SIGKILL: no goodbye, an in-flight request just loses its connection
            killed.set()

    thread = threading.Thread(target=killer, name="pds-killer", daemon=True)
    thread.start()
    client = fast_client(own_pds.url)
    options = WriteOptions(max_batch_writes=10, min_batch_interval_s=0.02, retry_delay_s=0.05)
    try:
        outcomes = backfill_users(
            accounts_of(store, users), store, client, concurrency=4, options=options,
            on_batch=lambda outcome, done, n: batches_done.release(),
        )
    finally:
        client.close()
        thread.join(10)
    assert killed.is_set(), "the PDS was never killed: the fault did not happen"
    assert not own_pds.running
    failed_users = [o for o in outcomes if not o.ok]
    assert failed_users, "every user finished although the PDS died mid-run"
    for outcome in failed_users:  # each failure is clean and says why
        reasons = [outcome.error] if outcome.error else [reason for _, reason in outcome.failed]
        assert all(r and ("unreachable" in r or "PdsUnavailable" in r or "Connect" in r) for r in reasons), reasons
    pointers_at_kill = sum(1 for u in users for m in store.moods_of(u.sub) if m.rkey)

    own_pds.restart()  # same port, data and secrets; its PLC stayed up
    assert own_pds.port == port
    client = fast_client(own_pds.url)
    try:
        on_pds = sum(len(repo_snapshot(client, u.did)) for u in users)
        assert 0 < on_pds < total, f"{on_pds} of {total} records were on the PDS when it died"
        assert pointers_at_kill <= on_pds
        before = tally(store, client, users)
        assert before.duplicated == 0 and before.leaked == 0

        outcomes = backfill_users(accounts_of(store, users), store, client, concurrency=4, options=FAST)
        assert all(o.ok for o in outcomes), [(o.label, o.error, o.failed[:1]) for o in outcomes if not o.ok]
        assert sum(o.created for o in outcomes) == total - on_pds
        after = tally(store, client, users)
        reliability_record(
            "PDS SIGKILL mid-backfill",
            f"SIGKILL of the PDS once {kill_after} batches had landed ({n_users} users x {per_user} moods, "
            f"4 users at once, batches of 10); restart on the same port, data and secrets",
            total, after.lost, after.duplicated,
            f"{len(failed_users)} users failed cleanly (PDS unreachable); {on_pds} records and "
            f"{pointers_at_kill} pointers had been written; the re-run created {total - on_pds} and pointed "
            f"{on_pds - pointers_at_kill} records that had landed without a pointer",
        )
        assert after.clean, after
        assert check_invariant(store, client, users) == total
    finally:
        client.close()


# --- (b) MongoDB failing commands, dropping connections, restarting -----------------------------


class CommandLog(monitoring.CommandListener, monitoring.ConnectionPoolListener):
    """Every command the client sent and how it ended (SecantusDB reports no failpoint hits)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []  # (started|succeeded|failed, command, detail)
        self._lock = threading.Lock()
        self.on_success = None

    def started(self, event) -> None:
        with self._lock:
            self.events.append(("started", event.command_name, ""))

    def succeeded(self, event) -> None:
        with self._lock:
            self.events.append(("succeeded", event.command_name, ""))
        if self.on_success:
            self.on_success(event)

    def failed(self, event) -> None:
        with self._lock:
            self.events.append(("failed", event.command_name, str(event.failure)[:300]))

    # ConnectionPoolListener: the pool is cleared when the client sees the server go away.
    def pool_cleared(self, event) -> None:
        with self._lock:
            self.events.append(("pool_cleared", "", ""))

    def pool_created(self, event) -> None: ...
    def pool_ready(self, event) -> None: ...
    def pool_closed(self, event) -> None: ...
    def connection_created(self, event) -> None: ...
    def connection_ready(self, event) -> None: ...
    def connection_closed(self, event) -> None: ...
    def connection_check_out_started(self, event) -> None: ...
    def connection_check_out_failed(self, event) -> None: ...
    def connection_checked_out(self, event) -> None: ...
    def connection_checked_in(self, event) -> None: ...

    def count(self, outcome: str, command: str = "") -> int:
        with self._lock:
            return sum(1 for o, c, _ in self.events if o == outcome and c == command)

    def failures(self, command: str) -> list[str]:
        with self._lock:
            return [d for o, c, d in self.events if o == "failed" and c == command]


@pytest.fixture(scope="module")
def own_mongo(tmp_path_factory):
    """SecantusDB of this module's own: failpoints on, data kept in a directory across restarts."""
    from moods_pipeline.devstack import LocalMongo

    base = tmp_path_factory.mktemp("own-mongo")
    server = LocalMongo(storage_path=base / "data", enable_test_commands=True, log_path=base / "mongo.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mongo_world(own_mongo, request):
    """A fresh database on ``own_mongo``: (raw db, MongoStore whose client has a CommandLog)."""
    if not own_mongo.running:
        own_mongo.start()
    name = f"faults_{request.node.name[:20]}_{int(time.time() * 1000) % 10**8}".replace("[", "_").replace("]", "_")
    plain = pymongo.MongoClient(own_mongo.uri, tz_aware=True, serverSelectionTimeoutMS=20_000)
    listener = CommandLog()
    store = MongoStore(connect(own_mongo.uri, event_listeners=[listener], serverSelectionTimeoutMS=20_000), name)
    yield plain[name], store, listener, plain
    plain.admin.command("configureFailPoint", "failCommand", mode="off")
    store.client.close()
    plain.drop_database(name)
    plain.close()


FAILPOINTS = {
    # id: (failpoint data, times, what the run does)
    "update_connection_closed_once": ({"failCommands": ["update"], "closeConnection": True}, 1, "recovers"),
    "update_connection_closed_twice": ({"failCommands": ["update"], "closeConnection": True}, 2, "fails_cleanly"),
    "update_error_code": ({"failCommands": ["update"], "errorCode": 50, "errmsg": "injected"}, 1, "fails_cleanly"),
    "find_connection_closed_twice": ({"failCommands": ["find"], "closeConnection": True}, 2, "fails_cleanly"),
}


@pytest.mark.parametrize("case", list(FAILPOINTS))
def test_mongo_failpoint_mid_run_fails_cleanly_or_recovers(case, mongo_world, make_account, pds, reliability_record):
    db, store, listener, plain = mongo_world
    data, times, expected = FAILPOINTS[case]
    command = data["failCommands"][0]
    users = [add_user(db, make_account("mfp"), moods=12) for _ in range(3)]
    total = 36
    accounts = accounts_of(store, users)
    listener.events.clear()
    plain.admin.command("configureFailPoint", "failCommand", mode={"times": times}, data=data)
    client = fast_client(pds.base_url)
    try:
        # One user at a time: pymongo's single retry of a command meets the failpoint's second hit.
        outcomes = backfill_users(accounts, store, client, concurrency=1, options=FAST)
    finally:
        client.close()
    failed = listener.failures(command)
    # The failpoint fired (pymongo retried a dropped connection once, by itself).
    assert len(failed) == times, (case, failed)
    assert all(("failCommand" in f or "closed" in f or "injected" in f) for f in failed), failed
    broken = [o for o in outcomes if not o.ok]
    if expected == "recovers":
        assert broken == [], [(o.label, o.error) for o in broken]
        assert listener.count("succeeded", command) >= 1
    else:
        assert len(broken) == 1, [(o.label, o.error) for o in outcomes]
        assert broken[0].error, broken[0]  # the user as a whole failed, with the Mongo error as reason
        assert any(word in broken[0].error for word in ("AutoReconnect", "ExecutionTimeout", "OperationFailure",
                                                        "NetworkTimeout", "ConnectionFailure")), broken[0].error
    first = tally(store, pds, users)
    assert first.duplicated == 0 and first.leaked == 0
    rerun = backfill_users(accounts_of(store, users), store, pds, concurrency=3, options=FAST)
    assert all(o.ok for o in rerun)
    after = tally(store, pds, users)
    reliability_record(
        f"MongoDB failpoint: {case.replace('_', ' ')}",
        f"configureFailPoint failCommand on `{command}` "
        + ("closing the connection" if data.get("closeConnection") else f"with errorCode {data.get('errorCode')}")
        + f", {times} time(s); {len(failed)} failed `{command}` seen by a CommandListener",
        total, after.lost, after.duplicated,
        ("pymongo's retryable write absorbed it; nothing failed" if expected == "recovers"
         else f"1 user failed cleanly ({broken[0].error.split(':')[0]}); the re-run created "
              f"{sum(o.created for o in rerun)} and pointed {sum(o.pointers_written - o.created for o in rerun)} "
              "records that had landed without a pointer"),
    )
    assert after.clean, after
    assert check_invariant(store, pds, users) == total


def test_mongo_sigkill_and_restart_mid_run(own_mongo, mongo_world, make_account, pds, reliability_record):
    db, store, listener, plain = mongo_world
    users = [add_user(db, make_account("mkill"), moods=40) for _ in range(6)]
    total = 240
    store.moods_of(users[0].sub)  # warm up the connection pool
    first_pointer = threading.Event()
    listener.on_success = lambda event: first_pointer.set() if event.command_name == "update" else None
    outcomes: list = []
    errors: list = []
    client = fast_client(pds.base_url)
    options = WriteOptions(max_batch_writes=10, min_batch_interval_s=0.05, retry_delay_s=0.05)

    def run() -> None:
        try:
            outcomes.extend(backfill_users(accounts, store, client, concurrency=3, options=options))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    accounts = accounts_of(store, users)
    worker = threading.Thread(target=run, name="backfill", daemon=True)
    worker.start()
    try:
        assert first_pointer.wait(60), "no pointer was ever written"
        acked_before = listener.count("succeeded", "update")
        old_pid = own_mongo.pid
        own_mongo.kill()  # SIGKILL; restarted from this (long-lived) thread so it is not reaped with a helper
        killed_at = time.monotonic()
        own_mongo.start()
        down_s = time.monotonic() - killed_at
        worker.join(120)
        assert not worker.is_alive(), "the backfill hung after the MongoDB restart"
    finally:
        client.close()
        listener.on_success = None
    assert errors == [], errors  # the engine never raises for a user's trouble
    assert own_mongo.pid != old_pid
    # The client saw the server go away (its pool was cleared) and wrote more pointers after.
    assert listener.count("pool_cleared") >= 1, "the client never noticed the restart"
    assert listener.count("succeeded", "update") > acked_before
    mongo_failures = sum(len(listener.failures(c)) for c in ("update", "find"))
    broken = [o for o in outcomes if not o.ok]
    for outcome in broken:
        assert outcome.error or outcome.failed
    first = tally(store, pds, users)
    assert first.duplicated == 0 and first.leaked == 0
    rerun = backfill_users(accounts_of(store, users), store, pds, concurrency=3, options=FAST)
    assert all(o.ok for o in rerun), [(o.label, o.error) for o in rerun if not o.ok]
    after = tally(store, pds, users)
    # No user failed, yet records lack pointers: pointer writes acknowledged before the kill were lost.
    lost_acks = ""
    if first.bad_pointers and not broken:
        lost_acks = " (SecantusDB lost acknowledged pointer writes to the SIGKILL)"
    reliability_record(
        "MongoDB SIGKILL + restart mid-run",
        f"SIGKILL of SecantusDB after {acked_before} pointer bulk write(s), restart on the same port and "
        f"storage dir ({down_s:.1f} s down)",
        total, after.lost, after.duplicated,
        f"{len(broken)} users failed cleanly ({mongo_failures} Mongo commands failed), the rest waited for the "
        f"server; after the run {first.lost} moods had no record and {first.bad_pointers} had a record but "
        f"no pointer{lost_acks}; the re-run created {sum(o.created for o in rerun)} and pointed "
        f"{sum(o.pointers_written - o.created for o in rerun)}",
    )
    assert after.clean, after
    assert check_invariant(store, pds, users) == total


# --- (c) 429s with RateLimit-* headers ---------------------------------------------------------------


def test_429s_are_waited_out_until_the_reset_the_headers_name(store, proxy, mongo_db, make_account, pds,
                                                              reliability_record):
    users = [add_user(mongo_db, make_account("rl"), moods=30) for _ in range(3)]
    arrivals: list[float] = []  # when each applyWrites reached the proxy

    def note_arrival(request) -> bool:  # a rule that never acts, tried before the 429s
        if request.nsid == APPLY_WRITES:
            arrivals.append(time.time())
        return False

    proxy.fail(match=note_arrival)
    reset_at = math.ceil(time.time()) + 2
    rule = proxy.rate_limit(nsid=APPLY_WRITES, count=3, reset_at=reset_at, limit=5000, window_s=3600)
    client = PdsClient(proxy.url)
    try:
        outcomes = backfill_users(accounts_of(store, users), store, client, concurrency=3, options=FAST)
        counters = client.counters
    finally:
        client.close()
    assert all(o.ok for o in outcomes), [(o.label, o.error, o.failed[:1]) for o in outcomes if not o.ok]
    assert rule.fired == 3 and proxy.count(nsid=APPLY_WRITES, status=429) == 3
    assert counters.rate_limited == 3 and counters.rate_limited_waits == 3
    # The first three writes got the 429s; not one write reached the PDS before the reset they named.
    arrivals.sort()
    assert len(arrivals) == 3 + sum(o.batches for o in outcomes)
    assert arrivals[2] < reset_at <= arrivals[3], (
        f"a write arrived {reset_at - arrivals[3]:.2f} s before RateLimit-Reset")
    # The client slept at least from each 429 until the reset it named.
    owed = sum(reset_at - at for at in arrivals[:3])
    assert counters.seconds_waited >= owed - 0.3, (counters.seconds_waited, owed)
    assert sum(o.created for o in outcomes) == 90
    after = tally(store, pds, users)
    reliability_record(
        "429 RateLimitExceeded",
        "3 x HTTP 429 on applyWrites with RateLimit-Limit/Remaining: 0/Reset (Unix s)/Policy, no Retry-After",
        90, after.lost, after.duplicated,
        f"nothing failed; {counters.rate_limited_waits} waits until RateLimit-Reset; the first write after the "
        f"429s arrived {arrivals[3] - arrivals[0]:.2f} s after the first 429, {arrivals[3] - reset_at:.2f} s "
        "after the reset",
    )
    assert after.clean, after


def test_a_429_resetting_in_an_hour_fails_the_moods_without_hammering(store, proxy, mongo_db, make_account,
                                                                       pds, reliability_record):
    user = add_user(mongo_db, make_account("rlh"), moods=40)
    rule = proxy.rate_limit(nsid=APPLY_WRITES, reset_in_s=3600, limit=5000, window_s=3600)
    client = PdsClient(proxy.url, max_rate_limit_wait_s=5)
    try:
        outcome = sync_user(accounts_of(store, [user])[0], store, client, options=replace(FAST, max_batch_writes=10))
    finally:
        client.close()
    assert rule.fired >= 1
    assert outcome.created == 0 and len(outcome.failed) == 40
    assert all("429" in reason or "RateLimit" in reason for _, reason in outcome.failed), outcome.failed[:2]
    attempts = proxy.count(nsid=APPLY_WRITES)
    proxy.remove(rule)
    rerun = sync_user(accounts_of(store, [user])[0], store, pds, options=FAST)
    assert rerun.ok and rerun.created == 40
    after = tally(store, pds, [user])
    reliability_record(
        "429 with a reset an hour away",
        "every applyWrites answered 429 with RateLimit-Reset one hour ahead (client waits at most 5 s)",
        40, after.lost, after.duplicated,
        f"the user's 40 moods failed with the 429 as reason after {attempts} applyWrites attempts; "
        "the re-run without the limit created all 40",
    )
    assert after.clean, after
    # A PDS that said "come back in an hour" gets no storm of split batches.
    assert attempts <= 2, f"{attempts} applyWrites sent to a PDS that is rate limiting for an hour"


# --- (d) a 500 for one particular record's batch ------------------------------------------------------


def dagster_backfill(instance, settings, users):
    defs = definitions_for(settings, min_batch_interval_ms=0)
    run_config = {"ops": {"mood_backfill": {"config": {"dry_run": False}}}}
    run_ids = run_job_over_partitions(instance, "mood_backfill_job", [u.did for u in users], run_config, defs=defs)
    results = ResultsStore(settings.state_dir)
    return run_ids, {o.did: o for run_id in run_ids for o in results.run_backfill(run_id)}


def test_a_500_for_one_records_batch_fails_that_mood_alone(store, proxy, mongo_db, make_account, test_settings,
                                                          dagster_instance, pds, reliability_record):
    target_user = add_user(mongo_db, make_account("poison"), texts=[f"SECRET-MOOD-{i} ☔" for i in range(25)])
    other = add_user(mongo_db, make_account("bystand"), moods=10)
    plan = plan_user(store.moods_of(target_user.sub), [])
    target = plan.creates[12]
    rule = proxy.fail(500, nsid=APPLY_WRITES, body_contains=f'"rkey":"{target.rkey}"')
    settings = replace(test_settings, pds_url=proxy.url)

    run_ids, outcomes = dagster_backfill(dagster_instance, settings, [target_user, other])

    poisoned = outcomes[target_user.did]
    assert [mood_id for mood_id, _ in poisoned.failed] == [target.mood_id]
    reason = poisoned.failed[0][1]
    assert "HTTP 500" in reason and "applyWrites" in reason, reason
    assert poisoned.created == 24 and poisoned.error is None
    assert outcomes[other.did].ok and outcomes[other.did].created == 10
    assert rule.fired >= 2  # the batch, its retry after re-reading the repo, then the halves holding it
    assert proxy.count(outcome="fail") == rule.fired
    on_pds = repo_snapshot(pds, target_user.did)
    assert target.rkey not in on_pds and len(on_pds) == 24
    # Dagster: the poisoned user's partition failed with the mood's id and reason in its metadata.
    status = dagster_instance.get_status_by_partition(
        dg.AssetKey("mood_backfill"), [target_user.did, other.did], dg.DynamicPartitionsDefinition(name="users"))
    assert status == {target_user.did: dg.AssetPartitionStatus.FAILED, other.did: dg.AssetPartitionStatus.MATERIALIZED}
    observations = [
        e for e in dagster_instance.all_logs(run_ids[0])
        if e.dagster_event and e.dagster_event.event_type_value == "ASSET_OBSERVATION"
    ]
    metadata = observations[0].dagster_event.event_specific_data.asset_observation.metadata
    rows = metadata["failure_reasons"].value.records
    assert [(r.data["mood_id"], r.data["reason"]) for r in rows] == [(target.mood_id, reason)]
    assert "SECRET-MOOD" not in str([e.message for e in dagster_instance.all_logs(run_ids[0])])

    proxy.remove(rule)
    _, again = dagster_backfill(dagster_instance, settings, [target_user, other])
    assert again[target_user.did].ok and again[target_user.did].created == 1
    after = tally(store, pds, [target_user, other])
    reliability_record(
        "HTTP 500 for one record's batch",
        f"the proxy answered 500 to every applyWrites whose body held one rkey ({rule.fired} times)",
        35, after.lost, after.duplicated,
        "only that mood failed, with the PDS's reason (HTTP 500); its 24 siblings and the other user landed; "
        "the re-run created the one",
    )
    assert after.clean, after
    assert check_invariant(store, pds, [target_user, other]) == 35


# --- (e) wrong password, DID of another user's account: nothing written anywhere ---------------------


def repo_revs(client: PdsClient) -> dict[str, str]:
    """Every repo on the PDS with its revision: any write anywhere changes one."""
    return {repo["did"]: repo.get("rev") for repo in client.list_repos()}


def test_wrong_credentials_fail_that_user_and_change_no_repo(store, proxy, mongo_db, make_account, test_settings, pds,
                                                             reliability_record):
    good = add_user(mongo_db, make_account("credok"), moods=5)
    wrong = add_user(mongo_db, make_account("credpw"), moods=5, password="definitely-not-the-password")
    victim = make_account("victim")
    mallory = make_account("mallory")
    # Mallory's row names the victim's DID, with Mallory's own (working) password.
    other_did = add_user(mongo_db, victim, moods=5, password=mallory.password.reveal())
    before = repo_revs(pds)
    snapshots = {did: repo_snapshot(pds, did) for did in (wrong.did, victim.did, mallory.did)}
    client = PdsClient(proxy.url)
    try:
        outcomes = backfill_users(accounts_of(store, [good, wrong, other_did]), store, client, options=FAST)
    finally:
        client.close()
    by_sub = {o.sub: o for o in outcomes}
    assert by_sub[good.sub].ok and by_sub[good.sub].created == 5
    for user in (wrong, other_did):
        outcome = by_sub[user.sub]
        assert outcome.error.startswith("login failed:") and "createSession" in outcome.error, outcome.error
        assert "Invalid identifier or password" in outcome.error
        assert len(outcome.failed) == 5 and outcome.created == 0
    after = repo_revs(pds)
    changed = {did for did in before.keys() | after.keys() if before.get(did) != after.get(did)}
    assert changed == {good.did}, f"repos changed besides the good user's: {changed - {good.did}}"
    assert {did: repo_snapshot(pds, did) for did in snapshots} == snapshots
    assert proxy.count(nsid=APPLY_WRITES) == 1  # the good user's one batch, nothing else was written
    assert all(m.rkey is None for u in (wrong, other_did) for m in store.moods_of(u.sub))
    # Measured: the bad users' moods must all still be in Mongo, unsynced and without a record
    # anywhere (nothing written for them), so a fixed password syncs them later.
    bad_moods = [m for u in (wrong, other_did) for m in store.moods_of(u.sub) if m.live]
    bad_ids = {m.id for m in bad_moods}
    written_for_them = sum(1 for did in snapshots for r in pds.list_records(did, MOOD_COLLECTION)
                           if r.mood_ref in bad_ids)
    reliability_record(
        "wrong password / DID of another account",
        "one user's stored password wrong; another's stored DID names a third person's account",
        len(wrong.mood_ids) + len(other_did.mood_ids),
        len(wrong.mood_ids) + len(other_did.mood_ids) - len(bad_moods),
        written_for_them,
        f"both failed with 'login failed: ... Invalid identifier or password'; {len(before)} repos on the PDS "
        "unchanged (listRepos revs), only the good user's repo got its 5 records",
        section="fault",
    )
    assert check_invariant(store, pds, [good]) == 5


def test_credentials_copied_from_another_user_write_nothing(store, mongo_db, make_account, test_settings, pds):
    owner_account = make_account("owner")
    owner = add_user(mongo_db, owner_account, moods=3)
    copycat = add_user(mongo_db, owner_account, moods=3)  # the whole atproto block copied
    outcome = sync_user(store.user_by_sub(copycat.sub), store, pds, options=FAST)
    on_pds = repo_snapshot(pds, owner.did)
    assert not any(value.get("ref") in copycat.mood_ids for value in on_pds.values()), (
        "the copycat's moods were written into the owner's repo")
    assert outcome.error


# --- (f) two backfills of the same user at once --------------------------------------------------------


def test_two_backfills_of_the_same_user_at_once(store, mongo_db, make_account, test_settings, local_pds, pds,
                                                reliability_record):
    n = 300
    user = add_user(mongo_db, make_account("race"), moods=n)
    account = store.user_by_sub(user.sub)
    barrier = threading.Barrier(2)
    outcomes: list = [None, None]
    options = replace(FAST, max_batch_writes=25)

    def run(i: int) -> None:
        client = PdsClient(local_pds.url)
        try:
            barrier.wait(10)
            outcomes[i] = sync_user(account, store, client, options=options)
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(i,), name=f"race-{i}") for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(o is not None for o in outcomes)
    assert all(o.ok for o in outcomes), [(o.error, o.failed[:1]) for o in outcomes]
    # Both runs planned all 300 creates; every record was created by exactly one of them and the
    # other found it there after its colliding batch failed: the race really happened.
    assert all(o.batches > 0 for o in outcomes)
    assert sum(o.created for o in outcomes) == n
    collisions = sum(o.already_synced for o in outcomes)
    assert collisions > 0
    after = tally(store, pds, [user])
    reliability_record(
        "two backfills of one user at once",
        "two threads, each with its own client and session, sync the same user (300 moods, batches of 25)",
        n, after.lost, after.duplicated,
        f"created {outcomes[0].created} + {outcomes[1].created}; {collisions} records found already written "
        "by the other run after a colliding batch (same deterministic rkeys) and only pointed at",
    )
    assert after.clean, after
    assert check_invariant(store, pds, [user]) == n


# --- (g) a lost response: the batch landed, the client never heard -----------------------------------


def test_a_lost_response_is_matched_not_rewritten(store, proxy, mongo_db, make_account, pds, reliability_record):
    user = add_user(mongo_db, make_account("lost"), moods=60)
    rule = proxy.drop(nsid=APPLY_WRITES, count=1, after_forward=True)  # the first batch lands; its answer is lost
    client = fast_client(proxy.url)
    try:
        outcome = sync_user(store.user_by_sub(user.sub), store, client, options=replace(FAST, max_batch_writes=20))
    finally:
        client.close()
    assert rule.fired == 1 and proxy.count(outcome="drop_after_forward") == 1
    first = tally(store, pds, [user])
    assert first.duplicated == 0
    rerun = sync_user(store.user_by_sub(user.sub), store, pds, options=FAST)
    assert rerun.ok
    after = tally(store, pds, [user])
    reliability_record(
        "lost response (connection dropped after the PDS wrote)",
        "the proxy forwarded the first applyWrites batch of 20, then closed the connection unanswered",
        60, after.lost, after.duplicated,
        f"first run: created {outcome.created}, found {outcome.already_synced} already there, "
        f"failed {len(outcome.failed)}; the re-run created {rerun.created} and pointed "
        f"{rerun.pointers_written - rerun.created}",
    )
    assert after.clean, after
    assert check_invariant(store, pds, [user]) == 60
    assert outcome.ok, (outcome.error, outcome.failed[:1], len(outcome.failed))


# --- (h) a write that lands after the client gave up on it ------------------------------------------


def test_a_write_landing_after_the_client_timed_out_is_matched_not_duplicated(store, proxy, mongo_db, make_account,
                                                                              pds, reliability_record):
    user = add_user(mongo_db, make_account("late"), moods=30)
    rule = proxy.delay(2.5, nsid=APPLY_WRITES, count=1)  # held back, then forwarded all the same
    client = fast_client(proxy.url, timeout=1)
    try:
        outcome = sync_user(store.user_by_sub(user.sub), store, client, options=replace(FAST, max_batch_writes=10))
    finally:
        client.close()
    assert rule.fired == 1
    # The client timed out, re-read the repo (nothing there yet) and failed the rest of the user.
    assert not outcome.ok and outcome.created == 0
    assert all("ReadTimeout" in reason for _, reason in outcome.failed), outcome.failed[:1]
    deadline = time.monotonic() + 10
    while proxy.count(outcome="delay") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    landed_late = len(repo_snapshot(pds, user.did))
    assert landed_late == 10, "the held-back batch should have landed after the client gave up"
    rerun = sync_user(store.user_by_sub(user.sub), store, pds, options=FAST)
    assert rerun.ok and rerun.created == 20 and rerun.pointers_written == 30
    after = tally(store, pds, [user])
    reliability_record(
        "write landing after the client timed out",
        "the proxy held the first applyWrites (10 records) 2.5 s, past the client's 1 s timeout, then forwarded it",
        30, after.lost, after.duplicated,
        f"the run failed the user's {len(outcome.failed)} moods (ReadTimeout; the re-read found nothing yet); the "
        f"held batch's {landed_late} records landed afterwards; the re-run matched them by ref (pointed 10) "
        "and created 20",
    )
    assert after.clean, after
    assert check_invariant(store, pds, [user]) == 30
