"""One bad user never stops the others: a backfill and an audit over users with every kind of
odd stored DID, on the real stack through the real entry point.

Odd DIDs: malformed, not a string, held by two users, well formed but unknown to the PDS, legal
but refused by Dagster as a partition key (``...``), shaped like a path (``..%2F``), and 1,500
characters long. Each such user fails (backfill) or is unreadable (audit) alone, with its reason;
the good users of the same run complete; the command exits 1; users refused for their DID never
become partitions; every file the run writes stays in the state dir under a name of its own.
"""

from __future__ import annotations

import json

import dagster as dg
import pytest

from moods_pipeline import cli
from moods_pipeline.model import UserAccount
from moods_pipeline.secret import Secret
from moods_pipeline.storage.files import MAX_NAME, safe_name
from moods_pipeline.storage.results import ResultsStore
from moods_pipeline.sync.backfill import sync_user
from moods_pipeline.sync.refusal import INVALID_PARTITION_SUBSTRINGS, partition_key_problem, refusal, split_refused
from moods_pipeline_tests.reliability import reliability_record, tally  # noqa: F401 - fixture
from moods_pipeline_tests.sync.test_bad_input import raw_user
from moods_pipeline_tests.world import add_user, backfill_json, repo_snapshot

pytestmark = pytest.mark.timeout(300)


# --- pure parts ----------------------------------------------------------------------------------


def test_the_partition_key_rule_is_dagsters():
    from dagster._core.definitions.partitions.utils.base import INVALID_PARTITION_SUBSTRINGS as DAGSTER

    assert list(INVALID_PARTITION_SUBSTRINGS) == list(DAGSTER)
    assert partition_key_problem("did:plc:abcdefghijklmnopqrstuvwx") is None
    assert "'...'" in partition_key_problem("did:web:a...b")
    with pytest.raises(dg.DagsterInvalidDefinitionError):
        dg.StaticPartitionsDefinition(["did:web:a...b"])


def test_safe_names_are_one_per_key_and_never_a_path():
    keys = [
        "did:plc:abcdefghijklmnopqrstuvwx", "did:web:a_b", "did:web:a:b", "did_web_a_b", "did:web:a%5Fb",
        "did:web:..%2F..%2Fescape", "../../escape", "did:plc:abc/../../xrpc", ".", "..", "", "+", "+2E",
        ".hidden", "auth0|x", "auth0+7Cx", "é", "did:web:" + "a" * 1500, "did:web:" + "a" * 1500 + "b",
        "did:web:" + "a" * 2000, "x" * 166 + "+~" + "0" * 32, "9f8e7d6c-5b4a-3f2e-1d0c-b9a8f7e6d5c4",
    ]
    names = [safe_name(k) for k in keys]
    assert len(set(names)) == len(keys), [n for n in names if names.count(n) > 1]
    for key, name in zip(keys, names):
        assert "/" not in name and "\\" not in name and not name.startswith(".") and name, (key, name)
        assert len(name) <= MAX_NAME, key
    # Plain DIDs and run ids keep the names they always had.
    assert safe_name("did:plc:abcdefghijklmnopqrstuvwx") == "did_plc_abcdefghijklmnopqrstuvwx"
    assert safe_name("did:web:example.com") == "did_web_example.com"
    assert safe_name(keys[-1]) == keys[-1]


def test_refusal_takes_only_users_with_a_password():
    pw = Secret("x" * 32)
    ok = UserAccount("auth0|ok", "did:plc:abcdefghijklmnopqrstuvwx", "ok", password=pw)
    dots = UserAccount("auth0|dots", "did:web:a...b", "dots", password=pw)
    broken = UserAccount("auth0|int", None, "int", password=pw, problem="users.atproto.did is not a DID: a int")
    accountless = UserAccount("auth0|none", None, None, problem="moods name this sub, but no users document has it")
    twin = UserAccount("auth0|twin", ok.did, "twin", password=pw)
    assert [refusal(u) is None for u in (ok, dots, broken, accountless)] == [True, False, False, True]
    runnable, refused = split_refused([ok, dots, twin])
    assert runnable == [ok] and [u.sub for u, _ in refused] == ["auth0|dots", "auth0|twin"]
    assert "also selected for auth0|ok" in refused[1][1]


# --- a backfill and an audit over every odd DID --------------------------------------------------

UNKNOWN = "did:plc:" + "q" * 24  # well formed, unknown to the PDS
DOTS = "did:web:moods...example"  # a legal DID, refused by Dagster as a partition key
PATHLIKE = "did:web:..%2F..%2Fescape"  # a legal DID shaped like a path
LONG = "did:web:" + "l" * 1500  # a legal DID longer than any file name


def odd_world(mongo_db, make_account, pds, store):
    good = [add_user(mongo_db, make_account("goodd"), moods=3) for _ in range(2)]
    shared = make_account("sharedd")
    first = add_user(mongo_db, shared, moods=2)
    sync_user(store.user_by_sub(first.sub), store, pds)  # before the copy: the repo has records
    add_user(mongo_db, shared, moods=1)  # the copy
    odd = {  # label: (stored DID, handle, the reason's fragment for backfill, for audit)
        "malformed DID": ("not-a-did", "oddmal", "users.atproto.did 'not-a-did' is not a DID"),
        "DID not a string": (12345, "oddint", "users.atproto.did is not a DID: a int, not a string"),
        "unknown DID": (UNKNOWN, "oddunk", "Could not find repo"),
        "DID Dagster refuses as a partition key": (DOTS, "odddots", "which Dagster does not allow in a partition key"),
        "path-like DID": (PATHLIKE, "oddpath", "Could not find repo"),
        "1,500-character DID": (LONG, "oddlong", "Could not find repo"),
    }
    for n, (label, (did, handle, _)) in enumerate(odd.items()):
        raw_user(mongo_db, f"auth0|odd{n}", {"did": did, "password": "x" * 32, "handle": "h.test"}, handle=handle)
    odd["DID held by two users"] = (shared.did, None, "is held by 2 users")
    return good, shared, odd


@pytest.mark.integration
def test_backfill_and_audit_run_every_good_user_and_fail_each_odd_did_alone(
    cli_env, store, mongo_db, make_account, pds, capsys, tmp_path, reliability_record
):
    good, shared, odd = odd_world(mongo_db, make_account, pds, store)
    shared_before = repo_snapshot(pds, shared.did)
    repos_before = {r["did"]: r.get("rev") for r in pds.list_repos()}

    code, summary, err = backfill_json(capsys, "--all")

    assert code == 1
    after = tally(store, pds, good)
    assert after.clean and after.at_stake == 6  # every good user fully synced
    failed = [line for line in err.splitlines() if line.startswith("FAILED ")]
    for label, (did, handle, reason) in odd.items():
        who = f"FAILED @{handle} " if handle else f"FAILED @{shared.handle.split('.')[0]}"
        lines = [line for line in failed if line.startswith(who) or (not handle and shared.did in line)]
        assert lines and all(reason in line for line in lines), (label, lines, failed)
    assert summary["users"] == 2 + 7 + 1 and summary["users_failed"] == 8  # the shared DID: two users
    assert summary["users_refused"] == 5 and summary["created"] == 6 and summary["failed"] == 0
    assert repo_snapshot(pds, shared.did) == shared_before  # a shared DID is never written
    changed = {did for did, rev in ((r["did"], r.get("rev")) for r in pds.list_repos()) if repos_before.get(did) != rev}
    assert changed == {u.did for u in good}

    # Refused DIDs never became partitions; the others did, each under its own key.
    with dg.DagsterInstance.get() as instance:
        partitions = set(instance.get_dynamic_partitions("users"))
    assert partitions == {u.did for u in good} | {UNKNOWN, PATHLIKE, LONG}
    # Every result file is in the state dir, one per user, whatever its DID looks like.
    latest = cli_env.state_dir / "backfill" / "latest"
    files = sorted(latest.iterdir())
    assert all(f.resolve().parent == latest.resolve() for f in files)
    assert {o.did for o in ResultsStore(cli_env.state_dir).latest_backfill()} == partitions
    assert not [p for p in tmp_path.rglob("*escape*") if cli_env.state_dir not in p.parents]

    code = cli.main(["audit", "--all", "--json"])
    out, err = capsys.readouterr()
    total = json.loads(out)
    assert code == 1
    assert total["users_audited"] == 10 and total["users_unreadable"] == 8 and total["users_refused"] == 5
    assert total["problems"] == 0 and total["by_status"]["synced"] == 6  # the good users, in step
    unreadable = [line for line in err.splitlines() if line.startswith("UNREADABLE ")]
    assert len(unreadable) == 8, unreadable
    for label, (did, handle, reason) in odd.items():
        if handle:
            line = next((l for l in unreadable if l.startswith(f"UNREADABLE @{handle} ")), None)
            audit_reason = "not found" if reason == "Could not find repo" else reason
            assert line is not None and audit_reason in line, (label, line)
    assert sum(shared.did in line and "is held by 2 users" in line for line in unreadable) == 2
    audit_files = sorted((cli_env.state_dir / "audit" / "latest").iterdir())
    assert {f.name for f in audit_files} == {f"{safe_name(d)}.parquet" for d in partitions}
    assert all(f.resolve().parent == (cli_env.state_dir / "audit" / "latest").resolve() for f in audit_files)
    assert repo_snapshot(pds, shared.did) == shared_before
    # The audit summary over everyone's latest audit counts the refused users as unreadable too.
    with dg.DagsterInstance.get() as instance:
        meta = instance.get_latest_materialization_event(dg.AssetKey("audit_summary")).asset_materialization.metadata
    assert (meta["users_audited"].value, meta["users_unreadable"].value, meta["users_not_audited"].value) == (10, 8, 0)
    assert meta["moods_unverified"].value == 2 * 6 + 3  # six refused or unknown users of 2, the shared 2 + 1

    for label, (did, _, _) in odd.items():
        reliability_record(
            f"one odd DID among good users: {label}", repr(did if len(str(did)) < 40 else f"{str(did)[:30]}..."),
            after.at_stake + len(shared_before), after.lost, after.duplicated,
            "backfill and audit --all: that user fails alone with its reason (refused DIDs never become "
            "partitions); the good users sync and audit clean; exit 1; shared repo untouched",
            section="destructive",
        )

