"""Shared fixtures: the local stack, started lazily and once per session, and test settings.

Tests never see the production settings: the variables of docs/interface.md (``MONGODB_*``,
``PDS_*``, ``MOODS_*`` except ``MOODS_TEST_MONGODB_URI``, ``DAGSTER_HOME``) are removed from
``os.environ`` before any test module is imported. Settings for a test come from the
``test_settings`` fixture, built from the test's own servers.

Fixtures (session-scoped servers start only when a test asks for them):

- ``local_pds``      LocalPds on its own LocalPlc (``local_pds.plc``), tmp dir, open sign-up,
                     rate limits off. Shared by the session: a test that kills or restarts it
                     must leave it running.
- ``local_mongo``    LocalMongo (SecantusDB, ``:memory:``, ``--enable-test-commands``).
- ``mongo_uri``      ``MOODS_TEST_MONGODB_URI`` if set, else ``local_mongo.uri``.
- ``mongo_client``   a pymongo MongoClient on ``mongo_uri`` (tz_aware, DATETIME_AUTO).
- ``mongo_db``       (function) a Database with a unique name, dropped afterwards.
- ``make_account``   (function) factory ``make_account(prefix="u", password=None,
                     invite_code=None) -> LocalAccount(did, handle, email, password: Secret)``.
- ``lexicon_account`` a LocalAccount on ``local_pds`` for publishing lexicons.
- ``test_settings``  (function) Settings on these servers; ``state_dir`` in ``tmp_path``.
- ``dagster_instance`` (function) a DagsterInstance on a tmp DAGSTER_HOME (SQLite).

Tests that use the stack are marked ``integration`` automatically (``-m "not integration"``
runs the rest); mark them explicitly as well for readers.
"""

from __future__ import annotations

import itertools
import os
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

from moods_pipeline.secret import Secret

# --- keep production settings out of every test ----------------------------------------------

KEEP_VARIABLES = {"MOODS_TEST_MONGODB_URI"}
SCRUBBED_PREFIXES = ("MONGODB_", "PDS_", "MOODS_")
SCRUBBED_NAMES = {"DAGSTER_HOME"}


def _scrub_environment() -> list[str]:
    removed = [
        name
        for name in list(os.environ)
        if name not in KEEP_VARIABLES and (name.startswith(SCRUBBED_PREFIXES) or name in SCRUBBED_NAMES)
    ]
    for name in removed:
        del os.environ[name]
    return removed


# At import (before test modules are imported) and again when the session starts.
_SCRUBBED = _scrub_environment()
_TEST_MONGODB_URI = os.environ.get("MOODS_TEST_MONGODB_URI") or None


def pytest_sessionstart(session: pytest.Session) -> None:
    _SCRUBBED.extend(_scrub_environment())


STACK_FIXTURES = {
    "local_pds",
    "local_mongo",
    "mongo_uri",
    "mongo_client",
    "mongo_db",
    "make_account",
    "lexicon_account",
    "test_settings",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        # What bench/reliability.py runs: every test that records a row of the reliability table.
        if "reliability_record" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.reliability)


_STARTUP: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    if _STARTUP:
        parts = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in _STARTUP.items())
        terminalreporter.write_line(f"local stack startup: {parts}")
    if _SCRUBBED:
        terminalreporter.write_line(f"production variables hidden from tests: {', '.join(sorted(set(_SCRUBBED)))}")


# --- servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def local_pds(tmp_path_factory: pytest.TempPathFactory):
    from moods_pipeline.devstack import LocalPds, LocalPlc

    base = tmp_path_factory.mktemp("pds-stack")
    plc = LocalPlc(base / "plc")
    pds = LocalPds(base / "pds", plc, invite_required=False, rate_limits=False)
    try:
        plc.start()
        _STARTUP["PLC"] = plc.startup_seconds or 0.0
        pds.start()
        _STARTUP["PDS"] = pds.startup_seconds or 0.0
        yield pds
    finally:
        pds.stop()
        plc.stop()


@pytest.fixture(scope="session")
def local_mongo(tmp_path_factory: pytest.TempPathFactory):
    from moods_pipeline.devstack import LocalMongo

    base = tmp_path_factory.mktemp("mongo")
    mongo = LocalMongo(log_path=base / "mongo.log", enable_test_commands=True)
    try:
        mongo.start()
        _STARTUP["SecantusDB"] = mongo.startup_seconds or 0.0
        yield mongo
    finally:
        mongo.stop()


@pytest.fixture(scope="session")
def mongo_uri(request: pytest.FixtureRequest) -> str:
    if _TEST_MONGODB_URI:
        return _TEST_MONGODB_URI
    return request.getfixturevalue("local_mongo").uri


@pytest.fixture(scope="session")
def mongo_client(mongo_uri: str):
    import pymongo

    client: pymongo.MongoClient = pymongo.MongoClient(
        mongo_uri, tz_aware=True, datetime_conversion="DATETIME_AUTO", serverSelectionTimeoutMS=10_000
    )
    yield client
    client.close()


@pytest.fixture
def mongo_db(mongo_client) -> Iterator:
    name = f"test_{uuid.uuid4().hex[:16]}"
    db = mongo_client[name]
    yield db
    mongo_client.drop_database(name)


# --- PDS accounts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalAccount:
    """An account on the test PDS."""

    did: str
    handle: str
    email: str
    password: Secret = field(repr=False)


_counter = itertools.count(1)


def create_account(
    pds_url: str, prefix: str = "u", password: str | None = None, invite_code: str | None = None
) -> LocalAccount:
    """A fresh account with a unique ``.test`` handle, by the project's PDS client
    (``PdsClient.create_account``, the one way accounts are created)."""
    from moods_pipeline.atproto.client import PdsClient, PdsError

    # The part before ".test" must be 3..18 characters, a letter first.
    front = (prefix[:5] or "u") + f"{next(_counter):x}{secrets.token_hex(4)}"
    front = front[:18].lower()
    handle = f"{front}.test"
    email = f"{front}@example.com"
    secret = Secret(password or secrets.token_urlsafe(24))
    with PdsClient(pds_url, timeout=60) as client:
        try:
            did, created_handle = client.create_account(handle, email, secret, invite_code=invite_code)
        except PdsError as exc:  # its text never holds the password
            raise AssertionError(f"createAccount {handle} failed: {exc}") from None
    return LocalAccount(did=did, handle=created_handle, email=email, password=secret)


@pytest.fixture
def make_account(local_pds) -> Callable[..., LocalAccount]:
    def make(prefix: str = "u", password: str | None = None, invite_code: str | None = None) -> LocalAccount:
        return create_account(local_pds.url, prefix=prefix, password=password, invite_code=invite_code)

    return make


@pytest.fixture(scope="session")
def lexicon_account(local_pds) -> LocalAccount:
    return create_account(local_pds.url, prefix="lex")


# --- settings and Dagster --------------------------------------------------------------------


@pytest.fixture(name="test_settings")
def _test_settings(local_pds, mongo_uri: str, mongo_db, lexicon_account: LocalAccount, tmp_path: Path):
    from moods_pipeline.settings import Settings

    state_dir = tmp_path / "state"
    state_dir.mkdir()
    return Settings(
        mongodb_connection_string=Secret(mongo_uri),
        mongodb_name=mongo_db.name,
        pds_url=local_pds.url,
        pds_admin_password=local_pds.admin_password,
        state_dir=state_dir,
        lexicon_account=lexicon_account.did,
        lexicon_password=lexicon_account.password,
    )


@pytest.fixture
def dagster_instance(tmp_path: Path):
    from dagster import instance_for_test

    home = tmp_path / "dagster_home"
    home.mkdir()
    with instance_for_test(temp_dir=str(home)) as instance:
        yield instance


# --- the project's clients on the test stack ------------------------------------------------


@pytest.fixture
def pds(local_pds):
    """A PdsClient on the test PDS (closed afterwards)."""
    from moods_pipeline.atproto.client import PdsClient

    client = PdsClient(local_pds.url)
    yield client
    client.close()


@pytest.fixture
def store(test_settings):
    """The pipeline's MongoStore on the test database (its client closed afterwards)."""
    from moods_pipeline_tests.world import store_for

    opened = store_for(test_settings)
    yield opened
    opened.client.close()


@pytest.fixture
def cli_env(test_settings, tmp_path: Path, monkeypatch):
    """docs/interface.md's variables pointing at the test stack, as an operator would export them, and
    a fresh DAGSTER_HOME; returns the settings."""
    monkeypatch.setenv("MONGODB_CONNECTION_STRING", test_settings.mongodb_connection_string.reveal())
    monkeypatch.setenv("MONGODB_NAME", test_settings.mongodb_name)
    monkeypatch.setenv("PDS_URL", test_settings.pds_url)
    monkeypatch.setenv("MOODS_STATE_DIR", str(test_settings.state_dir))
    home = tmp_path / "cli_dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return test_settings
