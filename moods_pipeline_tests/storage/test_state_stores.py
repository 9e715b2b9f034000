"""The state dir's stores (results, audits, the deletion journal, the file helpers) on a local
tmp dir and on ``s3://bucket/prefix`` of a real S3 endpoint (``any_state_dir``): the same calls,
the same answers, and nothing lost under concurrent writers."""

from __future__ import annotations

import json
import threading
from datetime import date, datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest

from moods_pipeline.model import RECONCILIATION_COLUMNS, UserOutcome
from moods_pipeline.settings import ConfigError, parse_state_dir
from moods_pipeline.storage import files
from moods_pipeline.storage.audits import AuditStore
from moods_pipeline.storage.journal import ACCOUNT, DELETED, RECORDS, DeletionJournal, journal_dir, read_journal
from moods_pipeline.storage.results import ResultsStore

# --- the helpers -------------------------------------------------------------------------------


def test_state_dir_values():
    assert isinstance(parse_state_dir(".moods/state"), Path)
    assert isinstance(parse_state_dir("file:///tmp/moods-state"), Path)
    assert str(parse_state_dir("file:///tmp/moods-state")) == "/tmp/moods-state"
    remote = parse_state_dir("s3://bucket/some/prefix/")
    assert not isinstance(remote, Path)
    assert str(remote) == "s3://bucket/some/prefix"
    assert str(remote / "journal" / "x.json") == "s3://bucket/some/prefix/journal/x.json"
    with pytest.raises(ConfigError, match="MOODS_STATE_DIR"):
        parse_state_dir("s3:///no-bucket")
    with pytest.raises(ConfigError, match="MOODS_STATE_DIR"):
        parse_state_dir("nosuchprotocol://x/y")
    with pytest.raises(ConfigError, match="credentials") as refused:
        parse_state_dir("s3://AKIAEXAMPLE:hunter2secret@bucket/prefix")
    assert "hunter2secret" not in str(refused.value) and "AKIAEXAMPLE" not in str(refused.value)


def test_write_read_list_remove(any_state_dir):
    folder = any_state_dir / "things"
    assert files.list_files(folder, ".json") == []
    assert files.read_json(folder / "a.json") is None
    files.write_json_atomic(folder / "b.json", {"n": 1})
    files.write_json_atomic(folder / "a.json", {"n": 2})
    files.write_bytes_atomic(folder / "c.txt", b"text")
    files.write_json_atomic(folder / "a.json", {"n": 3})  # replaced whole
    assert [p.name for p in files.list_files(folder, ".json")] == ["a.json", "b.json"]
    assert files.read_json(folder / "a.json") == {"n": 3}
    assert files.read_bytes(folder / "c.txt") == b"text"
    many = files.read_many([folder / "a.json", folder / "b.json", folder / "gone.json"])
    assert {k.rsplit("/", 1)[-1]: json.loads(v) for k, v in many.items()} == {"a.json": {"n": 3}, "b.json": {"n": 1}}
    assert files.remove(folder / "b.json") is True
    assert files.remove(folder / "b.json") is False
    assert [p.name for p in files.list_files(folder)] == ["a.json", "c.txt"]


def test_a_failed_write_leaves_the_old_file(any_state_dir):
    path = any_state_dir / "x" / "state.json"
    files.write_json_atomic(path, {"v": "old"})

    def broken(tmp: str) -> None:
        Path(tmp).write_text('{"v": "ne')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.write_atomic(path, broken)
    assert files.read_json(path) == {"v": "old"}
    assert [p.name for p in files.list_files(any_state_dir / "x")] == ["state.json"]


def test_another_writer_is_seen_at_once(any_state_dir):
    """Listings are never cached: a file another writer (another process: a second path object
    here, and a fresh listing) adds shows up in the next listing."""
    folder = any_state_dir / "seen"
    files.write_json_atomic(folder / "1.json", {})
    assert len(files.list_files(folder, ".json")) == 1
    other = files.state_path(str(any_state_dir)) / "seen"
    files.write_json_atomic(other / "2.json", {})
    assert [p.name for p in files.list_files(folder, ".json")] == ["1.json", "2.json"]


# --- results -----------------------------------------------------------------------------------


def test_results_store(any_state_dir):
    store = ResultsStore(str(any_state_dir))
    real = UserOutcome(sub="auth0|a", did="did:plc:aaa", handle="a", live=3, created=3)
    dry = UserOutcome(sub="auth0|b", did="did:plc:bbb", handle="b", dry_run=True, would_create=2)
    odd = UserOutcome(sub="auth0|c", did="did:web:x_y:z", handle=None, error="login failed")
    store.save_backfill(real, "run-1")
    store.save_backfill(dry, "run-1")
    store.save_backfill(odd, "run-2")
    assert sorted(o.did for o in store.latest_backfill()) == ["did:plc:aaa", "did:web:x_y:z"]
    assert {o.did: o.created for o in store.run_backfill("run-1")} == {"did:plc:aaa": 3, "did:plc:bbb": 0}
    assert [o.error for o in store.run_backfill("run-2")] == ["login failed"]
    assert store.run_backfill("no-such-run") == []
    again = UserOutcome(sub="auth0|a", did="did:plc:aaa", handle="a", live=3, already_synced=3)
    store.save_backfill(again, "run-3")
    assert {o.did: o.already_synced for o in store.latest_backfill()}["did:plc:aaa"] == 3


# --- audits ------------------------------------------------------------------------------------


def fake_audit(did: str, statuses: list[str]):
    n = len(statuses)
    columns = {name: [None] * n for name in RECONCILIATION_COLUMNS}
    columns.update(did=[did] * n, status=statuses, problem=[s != "synced" for s in statuses],
                   mood_id=[f"{i:024x}" for i in range(n)], mood_len=list(range(n)))
    summary = {"did": did, "by_status": {s: statuses.count(s) for s in set(statuses)},
               "problems": sum(s != "synced" for s in statuses)}
    return SimpleNamespace(user=SimpleNamespace(did=did), summary=lambda: summary, columns=lambda: columns)


def test_audit_store(any_state_dir):
    store = AuditStore(any_state_dir)
    assert store.load_latest() == [] and store.load_summary() is None
    store.save_latest(fake_audit("did:plc:one", ["synced", "synced", "missing_on_pds"]), run_id="r1")
    store.save_latest(fake_audit("did:plc:two", ["synced"]), run_id="r1")
    store.save_latest(fake_audit("did:plc:one", ["synced", "synced", "synced"]), run_id="r2")  # replaces
    stored = store.load_latest()
    assert [s.did for s in stored] == ["did:plc:one", "did:plc:two"]
    assert stored[0].summary["run_id"] == "r2" and stored[0].summary["problems"] == 0
    assert list(stored[0].frame()["status"]) == ["synced"] * 3
    assert [s.did for s in store.load_latest(["did:plc:two"])] == ["did:plc:two"]
    table = store.latest_table(stored)
    assert table.num_rows == 4
    assert store.latest_frame(stored)["mood_len"].tolist() == [0, 1, 2, 0]

    export = store.export(table, {"users": 2, "problems": 0}, {"orphan_repos": []})
    assert str(export).startswith(str(any_state_dir))
    assert store.load_summary()["users"] == 2
    assert files.read_parquet(export).num_rows == 4

    for user in ("did:plc:one", "did:plc:two"):
        store.record_run_user("r2", {"did": user})
    store.record_run_user("rep", {"did": "did:plc:one", "applied": 1}, kind="repair")
    assert sorted(e["did"] for e in store.load_run("r2")) == ["did:plc:one", "did:plc:two"]
    assert store.load_run("rep", kind="repair") == [{"did": "did:plc:one", "applied": 1}]
    assert store.load_run("none") == []


def test_audit_run_lines_from_both_layouts(any_state_dir):
    """A run written as JSON Lines (the local layout) and as one object per line (the object
    store's) reads back whole, wherever it lies."""
    store = AuditStore(any_state_dir)
    files.write_bytes_atomic(store.runs_dir / "r9.jsonl", b'{"did": "a"}\n{"did": "b"}\n')
    files.write_json_atomic(store.runs_dir / "r9" / "20260101T000000.000000Z-x.json", {"did": "c"})
    assert sorted(e["did"] for e in store.load_run("r9")) == ["a", "b", "c"]


# --- the journal -------------------------------------------------------------------------------


def test_journal_round_trip(any_state_dir):
    journal = DeletionJournal(any_state_dir, command="repair", run_id="run-7")
    assert read_journal(any_state_dir) == []
    with journal.deleting(kind=RECORDS, did="did:plc:j", sub="auth0|j", handle="j", reason="orphan",
                          targets=[{"rkey": "3k2a", "mood_id": None, "why": "orphan"}]):
        pass
    entry = journal.intent(kind=ACCOUNT, did="did:plc:gone", sub="auth0|g", handle="g", reason="erase")
    entries = read_journal(any_state_dir)
    assert [(e["phase"], e.get("outcome")) for e in entries] == [("intent", None), ("result", DELETED), ("intent", None)]
    assert entries[0]["id"] == entries[1]["id"] and entries[2]["id"] == entry
    assert all(e["command"] == "repair" and e["run_id"] == "run-7" for e in entries)
    assert journal.sent_account_deletion("did:plc:gone")
    assert not journal.sent_account_deletion("did:plc:j")
    assert read_journal(any_state_dir, since=date(2999, 1, 1)) == []
    if isinstance(any_state_dir, Path):
        assert [p.name for p in files.list_files(journal_dir(any_state_dir), ".jsonl")]  # appended lines
    else:
        assert files.list_files(journal_dir(any_state_dir), ".jsonl") == []  # one object per line


def test_journal_reads_both_layouts_in_time_order(any_state_dir):
    folder = journal_dir(any_state_dir)
    old = [{"at": "2026-01-01T10:00:00.000Z", "phase": "intent", "id": "a"},
           {"at": "2026-01-01T10:00:02.000Z", "phase": "result", "id": "a"}]
    files.write_bytes_atomic(folder / "2026-01-01.jsonl",
                             "".join(json.dumps(e) + "\n" for e in old).encode() + b'{"torn')
    files.write_bytes_atomic(folder / "2026-01-01" / "20260101T100001.000000Z-b.json",
                             json.dumps({"at": "2026-01-01T10:00:01.000Z", "phase": "intent", "id": "b"}).encode())
    files.write_bytes_atomic(folder / "2026-01-03" / "20260103T000000.000000Z-c.json",
                             json.dumps({"at": "2026-01-03T00:00:00.000Z", "phase": "intent", "id": "c"}).encode())
    files.write_bytes_atomic(folder / "notes.txt", b"not a journal")
    assert [(e["id"], e["phase"]) for e in read_journal(any_state_dir)] == [
        ("a", "intent"), ("b", "intent"), ("a", "result"), ("c", "intent")]
    assert [e["id"] for e in read_journal(any_state_dir, since=date(2026, 1, 2))] == ["c"]


def test_concurrent_journal_writers_lose_nothing(any_state_dir):
    """Four journals (as four processes would have) and eight threads write at once; every
    intent and result is read back, each exactly once."""
    journals = [DeletionJournal(any_state_dir, command="repair", run_id=f"run-{n}") for n in range(4)]
    per_thread = 6
    ids: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(n: int) -> None:
        try:
            start.wait()
            journal = journals[n % 4]
            for i in range(per_thread):
                with journal.deleting(kind=RECORDS, did=f"did:plc:t{n}", sub=f"s{n}", handle=None,
                                      reason="test", targets=[{"rkey": f"k{n}-{i}", "mood_id": None, "why": "x"}]) as eid:
                    with lock:
                        ids.append(eid)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    entries = read_journal(any_state_dir)
    assert len(entries) == 2 * 8 * per_thread
    assert sorted(e["id"] for e in entries if e["phase"] == "intent") == sorted(ids)
    assert sorted(e["id"] for e in entries if e["phase"] == "result") == sorted(ids)
    assert len({json.dumps(e, sort_keys=True) for e in entries}) == len(entries)
    at = [e["at"] for e in entries]
    assert at == sorted(at)
    assert all(datetime.fromisoformat(a.replace("Z", "+00:00")).tzinfo == timezone.utc for a in at)


def test_arrow_paths_refuses_mixed_stores(tmp_path, any_state_dir):
    names, filesystem = files.arrow_paths([tmp_path / "a.parquet"])
    assert filesystem is None and names == [str(tmp_path / "a.parquet")]
    if not isinstance(any_state_dir, Path):
        with pytest.raises(ValueError):
            files.arrow_paths([tmp_path / "a.parquet", any_state_dir / "b.parquet"])
    table = pa.table({"x": [1, 2]})
    import pyarrow.parquet as pq

    files.write_atomic(any_state_dir / "t.parquet", lambda tmp: pq.write_table(table, tmp))
    assert files.read_parquet(any_state_dir / "t.parquet").to_pydict() == {"x": [1, 2]}


def test_an_unreadable_store_is_an_error_not_an_empty_one(local_s3, s3_state_dir, monkeypatch):
    """Wrong credentials must fail loudly: a journal that reads as empty would hide deletions."""
    DeletionJournal(s3_state_dir, command="test").intent(kind=RECORDS, did="did:plc:z", sub="s", handle=None,
                                                         reason="test")
    assert len(read_journal(s3_state_dir)) == 1
    fs = s3_state_dir.fs

    def refuse(paths, recursive=False, on_error="raise", **kwargs):
        error = PermissionError("Access Denied")
        if on_error == "raise":
            raise error
        return {p: error for p in paths}

    monkeypatch.setattr(fs, "cat", refuse)
    with pytest.raises(files.StateDirError, match="MOODS_STATE_DIR: cannot read .*PermissionError"):
        read_journal(s3_state_dir)


@pytest.mark.integration  # a child process, not pure logic
def test_an_unreachable_store_is_a_configuration_error(tmp_path, monkeypatch):
    """Nothing listens at the endpoint: the journal command exits 2 naming the setting."""
    import socket
    import subprocess

    from moods_pipeline_tests.cli.test_entry_point import entry_point

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MOODS_STATE_DIR": "s3://nobucket/x",
           "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "not-a-real-secret", "AWS_MAX_ATTEMPTS": "1",
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    proc = subprocess.run([*entry_point(), "journal", "--json"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "MOODS_STATE_DIR: cannot list s3://nobucket/x/journal" in proc.stderr
    assert "Traceback" not in proc.stderr and "not-a-real-secret" not in proc.stderr


def test_receipt_store(any_state_dir):
    """The audit receipts (storage/receipts.py) on either kind of state dir."""
    from moods_pipeline.storage.receipts import ReceiptStore

    store = ReceiptStore(any_state_dir)
    assert store.load("did:plc:r1") is None and store.load_pass() is None
    store.save({"did": "did:plc:r1", "rev": "3kabc", "problems": 0})
    store.save({"did": "did:web:r_2:x", "rev": "3kdef", "problems": 1})
    store.invalidate("did:plc:r3", "repo unreadable")
    assert store.load("did:plc:r1")["rev"] == "3kabc"
    assert store.load("did:plc:r3") is None  # invalidated counts as none
    many = store.load_many(["did:plc:r1", "did:web:r_2:x", "did:plc:r3", "did:plc:none"])
    assert {did: r["rev"] for did, r in many.items()} == {"did:plc:r1": "3kabc", "did:web:r_2:x": "3kdef"}
    files.write_bytes_atomic(store.path_of("did:plc:r1"), b"{damaged")
    assert store.load("did:plc:r1") is None
    store.save_pass({"unchanged": 2})
    assert store.load_pass()["unchanged"] == 2
