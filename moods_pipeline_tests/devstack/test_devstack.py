"""The local stack: reference PDS + PLC (node), SecantusDB, `stack up|status|down`, Dagster home."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pymongo
import pytest

from moods_pipeline.devstack import DevStackError, LocalMongo, LocalPds, LocalPlc, ensure_dagster_home
from moods_pipeline.devstack.stack import STACK_JSON_KEYS, stack_down, stack_status, stack_up
from moods_pipeline.secret import Secret
from moods_pipeline.settings import load_settings


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:
                found.add(address)
    return found


LOOPBACK_V4 = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it


def login(pds_url: str, identifier: str, password: Secret) -> httpx.Response:
    return httpx.post(
        f"{pds_url}/xrpc/com.atproto.server.createSession",
        json={"identifier": identifier, "password": password.reveal()},
        timeout=30,
    )


def port_of(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


# --- PDS -------------------------------------------------------------------------------------


@pytest.mark.integration
def test_pds_answers_health_and_accepts_accounts(local_pds, make_account):
    health = httpx.get(f"{local_pds.url}/xrpc/_health", timeout=10)
    assert health.status_code == 200
    assert health.json()["version"] == "0.4.217"
    assert local_pds.url.startswith("http://localhost:")
    assert local_pds.plc_url.startswith("http://localhost:")

    account = make_account()
    assert account.handle.endswith(".test")
    assert account.did.startswith("did:plc:")
    assert "***" in repr(account.password) and account.password.reveal() not in repr(account)

    session = login(local_pds.url, account.handle, account.password)
    assert session.status_code == 200, session.text
    assert session.json()["did"] == account.did
    assert login(local_pds.url, account.handle, Secret("wrong-password")).status_code == 401

    # The PLC directory knows the new DID and names this PDS as its service.
    doc = httpx.get(f"{local_pds.plc_url}/{account.did}", timeout=10).json()
    assert doc["service"][0]["serviceEndpoint"] == local_pds.url

    # The admin password works (Basic auth) and is never printed.
    info = httpx.get(
        f"{local_pds.url}/xrpc/com.atproto.admin.getAccountInfo",
        params={"did": account.did},
        auth=("admin", local_pds.admin_password.reveal()),
        timeout=10,
    )
    assert info.status_code == 200 and info.json()["handle"] == account.handle
    assert "***" in repr(local_pds.admin_password)


@pytest.mark.integration
def test_servers_listen_on_loopback_only(local_pds, local_mongo):
    for port in (port_of(local_pds.url), port_of(local_pds.plc_url), local_mongo.port):
        assert listening_addresses(port) == {LOOPBACK_V4}, port


@pytest.mark.integration
def test_pds_killed_and_restarted_keeps_accounts(local_pds, make_account):
    account = make_account(prefix="rst")
    url, pid, admin = local_pds.url, local_pds.pid, local_pds.admin_password

    local_pds.kill()
    assert not local_pds.running
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/xrpc/_health", timeout=2)

    local_pds.restart()
    assert local_pds.running and local_pds.pid != pid
    assert local_pds.url == url  # same port: DID documents name it
    assert local_pds.admin_password == admin  # same secrets file
    session = login(local_pds.url, account.handle, account.password)
    assert session.status_code == 200, session.text
    assert session.json()["did"] == account.did
    # New accounts still work after the restart.
    assert login(local_pds.url, account.handle, account.password).status_code == 200


@pytest.mark.integration
def test_pds_log_holds_no_admin_password(local_pds, make_account):
    make_account()
    log = local_pds.log_path.read_text()
    assert "PDS listening on" in log
    assert local_pds.admin_password.reveal() not in log
    assert local_pds.admin_password.reveal() not in local_pds.plc.log_path.read_text()
    assert stat.S_IMODE(local_pds.secrets_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(local_pds.ready_file.stat().st_mode) == 0o600


# --- SecantusDB ------------------------------------------------------------------------------


@pytest.mark.integration
def test_secantusdb_round_trip(mongo_db):
    when = datetime(2025, 10, 9, 19, 0, 28, 821000, tzinfo=timezone.utc)
    result = mongo_db.moods.insert_one({"user": "auth0|abc", "mood": "feeling sunny", "when": when})
    mongo_db.moods.create_index([("user", pymongo.ASCENDING)])
    mongo_db.moods.update_one({"_id": result.inserted_id}, {"$set": {"atproto": {"rkey": "3l2uygzaf5s2e"}}})
    doc = mongo_db.moods.find_one({"user": "auth0|abc", "deleted": {"$ne": True}})
    assert doc["mood"] == "feeling sunny"
    assert doc["when"] == when
    assert doc["atproto"] == {"rkey": "3l2uygzaf5s2e"}
    assert mongo_db.moods.count_documents({}) == 1


@pytest.mark.integration
@pytest.mark.slow
def test_secantusdb_restart_keeps_data_only_with_a_directory(tmp_path):
    with LocalMongo(storage_path=tmp_path / "data") as mongo:
        client = pymongo.MongoClient(mongo.uri)
        client.aesthetic.moods.insert_one({"mood": "kept"})
        client.close()
        port = mongo.port
        mongo.restart()
        assert mongo.port == port
        client = pymongo.MongoClient(mongo.uri)
        assert client.aesthetic.moods.find_one({}, {"_id": 0}) == {"mood": "kept"}
        client.close()

    with LocalMongo(log_path=tmp_path / "mem.log") as mongo:
        client = pymongo.MongoClient(mongo.uri)
        client.aesthetic.moods.insert_one({"mood": "gone"})
        client.close()
        mongo.kill()
        mongo.restart()
        client = pymongo.MongoClient(mongo.uri)
        assert client.aesthetic.moods.count_documents({}) == 0
        client.close()


# --- stack up / status / down ----------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_stack_up_status_down(tmp_path):
    free = {"plc": 0, "pds": 0, "mongo": 0}  # never the default ports: a developer's stack may use them
    stack_dir = tmp_path / ".moods" / "stack"
    try:
        first = stack_up(tmp_path, ports=free)
        assert not first.already_running
        assert {s.name for s in first.services if s.running and s.healthy} == {"pds", "mongo", "plc"}

        # stack.json: exactly the keys settings.py reads; secrets only in 0600 files.
        stack = json.loads((stack_dir / "stack.json").read_text())
        assert tuple(stack) == STACK_JSON_KEYS
        assert stack["mongodb_name"] == "aesthetic"
        admin = Path(stack["admin_password_file"]).read_text().strip()
        lexicon_password = Path(stack["lexicon_password_file"]).read_text().strip()
        for path in (stack["admin_password_file"], stack["lexicon_password_file"], stack_dir / "pds" / "secrets.json"):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        assert admin not in json.dumps(stack)

        settings = load_settings(env={}, stack_dir=stack_dir)
        assert settings.pds_url == stack["pds_url"] and settings.from_local_stack
        assert settings.pds_admin_password.reveal() == admin
        assert settings.lexicon_account == stack["lexicon_account"]

        # Export lines: every setting, secrets as $(cat FILE), never their values.
        exports = "\n".join(first.export_lines)
        for name in (
            "MONGODB_CONNECTION_STRING",
            "MONGODB_NAME",
            "PDS_URL",
            "PDS_ADMIN_PASSWORD",
            "MOODS_LEXICON_ACCOUNT",
            "MOODS_LEXICON_PASSWORD",
            "DAGSTER_HOME",
            "MOODS_STATE_DIR",
        ):
            assert f"export {name}=" in exports
        assert admin not in exports and lexicon_password not in exports
        assert '"$(cat ' in exports
        shell = subprocess.run(
            ["bash", "-c", exports + '\nprintf "%s\\n" "$PDS_ADMIN_PASSWORD" "$MOODS_LEXICON_PASSWORD" "$DAGSTER_HOME"'],
            capture_output=True,
            text=True,
            check=True,
            env={"PATH": os.environ["PATH"]},
        )
        assert shell.stdout.splitlines() == [admin, lexicon_password, str(tmp_path / ".moods" / "dagster_home")]
        assert (tmp_path / ".moods" / "dagster_home" / "dagster.yaml").exists()
        assert (tmp_path / ".moods" / "state").is_dir()
        assert not any(admin in line for line in first.lines())

        # The lexicon account exists and its password works.
        assert login(stack["pds_url"], "lexicons.test", Secret(lexicon_password)).json()["did"] == stack["lexicon_account"]
        client = pymongo.MongoClient(stack["mongodb_uri"])
        client.aesthetic.moods.insert_one({"mood": "persisted"})
        client.close()

        # Idempotent: a second `up` starts nothing.
        pids = {s.name: s.pid for s in first.services}
        second = stack_up(tmp_path, ports=free)
        assert second.already_running
        assert {s.name: s.pid for s in second.services} == pids
        assert second.export_lines == first.export_lines

        status = stack_status(tmp_path)
        assert status.running
        assert all(s.healthy for s in status.services)

        lines = stack_down(tmp_path)
        assert any("PDS: stopped" in line for line in lines)
        assert not (stack_dir / "stack.json").exists()
        for pid in pids.values():
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        down = stack_status(tmp_path)
        assert not down.running and not down.partly_running

        # Up again: same ports, accounts, DIDs (PLC state replayed) and Mongo data.
        third = stack_up(tmp_path)
        assert not third.already_running
        stack_again = json.loads((stack_dir / "stack.json").read_text())
        assert stack_again == stack
        assert login(stack["pds_url"], "lexicons.test", Secret(lexicon_password)).status_code == 200
        assert httpx.get(f"{stack['plc_url']}/{stack['lexicon_account']}", timeout=10).status_code == 200
        client = pymongo.MongoClient(stack["mongodb_uri"])
        assert client.aesthetic.moods.find_one({}, {"_id": 0}) == {"mood": "persisted"}
        client.close()

        # A stale pid file (process gone) is removed, and the service started again.
        pds_pid = int((stack_dir / "pds.pid").read_text())
        os.kill(pds_pid, 9)
        fourth = stack_up(tmp_path)
        assert any("stale pid file pds.pid" in m for m in fourth.messages)
        assert {s.name for s in fourth.services if s.note == "already running"} == {"mongo", "plc"}
        assert login(stack["pds_url"], "lexicons.test", Secret(lexicon_password)).status_code == 200
    finally:
        stack_down(tmp_path)


# --- clear startup errors --------------------------------------------------------------------


def test_missing_node_modules_gives_setup_message(tmp_path):
    fake = tmp_path / "pds"
    fake.mkdir()
    (fake / "launcher.mjs").write_text("// not a real launcher\n")
    with pytest.raises(DevStackError, match=r"npm packages not installed: run `make setup`"):
        LocalPds(tmp_path / "data", "http://localhost:1", pds_dir=fake).start()
    with pytest.raises(DevStackError, match=r"npm packages not installed: run `make setup`"):
        LocalPlc(tmp_path / "plc", pds_dir=fake).start()


def test_missing_node_gives_clear_message(tmp_path):
    with pytest.raises(DevStackError, match="node not found on PATH"):
        LocalPlc(tmp_path / "plc", node="no-such-node-binary").start()


def test_pds_that_exits_early_reports_its_log(tmp_path):
    broken = tmp_path / "secrets.json"
    broken.write_text("{}")  # a secrets file without its keys: the launcher refuses to start
    pds = LocalPds(tmp_path / "data", "http://localhost:1", secrets_file=broken)
    with pytest.raises(DevStackError, match=r"exited early with code 1[\s\S]*lacks plcRotationKey") as info:
        pds.start()
    assert str(pds.log_path) in str(info.value)
    assert not pds.running


# --- Dagster home and the test environment ---------------------------------------------------


def test_ensure_dagster_home_writes_config_once(tmp_path):
    from dagster import DagsterInstance

    home = ensure_dagster_home(tmp_path / "home")
    config = home / "dagster.yaml"
    assert "telemetry" in config.read_text() and "sqlite" in config.read_text()
    config.write_text(config.read_text() + "# edited\n")
    ensure_dagster_home(home)
    assert config.read_text().endswith("# edited\n")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with DagsterInstance.from_config(str(home)) as instance:
            assert instance.get_runs() == []
            assert "sqlite" in type(instance.run_storage).__module__.lower()
    finally:
        del os.environ["DAGSTER_HOME"]


def test_production_variables_are_hidden_from_tests():
    leaked = [n for n in os.environ if n.startswith(("MONGODB_", "PDS_")) or n in ("PDS_ADMIN_PASSWORD", "DAGSTER_HOME")]
    assert leaked == []
    assert not [n for n in os.environ if n.startswith("MOODS_") and n != "MOODS_TEST_MONGODB_URI"]


@pytest.mark.integration
def test_fixtures_give_settings_and_dagster_instance(test_settings, dagster_instance, mongo_db, local_pds):
    assert test_settings.pds_url == local_pds.url
    assert test_settings.mongodb_name == mongo_db.name
    assert test_settings.state_dir.is_dir()
    assert test_settings.lexicon_account.startswith("did:plc:")
    client = pymongo.MongoClient(test_settings.mongodb_connection_string.reveal())
    assert client.admin.command("ping")["ok"] == 1
    client.close()
    assert dagster_instance.get_runs() == []
