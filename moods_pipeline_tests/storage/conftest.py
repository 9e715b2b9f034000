"""Fixtures of the state-dir tests: a real S3 endpoint once per session, and a state dir that
is a local tmp dir or an ``s3://bucket/prefix`` URL on it.

- ``local_s3``      LocalS3 (SeaweedFS in a child process, ``s3_server.py``), started
                    once, with the standard AWS variables pointing at it for the whole session
                    (other tests never read them).
- ``s3_bucket``     one bucket on it for the session.
- ``s3_state_dir``  (function) ``s3://<bucket>/<unique prefix>`` as the state dir's UPath.
- ``any_state_dir`` (function, parametrized ``local`` / ``s3``) either; the ``s3`` variant is
                    marked ``integration`` (it starts a server).
"""

from __future__ import annotations

import os
import uuid

import pytest

from moods_pipeline.storage.files import state_path
from moods_pipeline_tests.storage.s3_server import LocalS3, apply_env


_STARTUP: list[float] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    if _STARTUP:
        terminalreporter.write_line(f"S3 server (SeaweedFS) startup: {_STARTUP[0]:.1f}s")


@pytest.fixture(scope="session")
def local_s3(tmp_path_factory: pytest.TempPathFactory):
    server = LocalS3(log_path=tmp_path_factory.mktemp("s3") / "s3.log")
    server.start()
    _STARTUP.append(server.startup_seconds or 0.0)
    previous = apply_env(server)
    try:
        yield server
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


@pytest.fixture(scope="session")
def s3_bucket(local_s3: LocalS3) -> str:
    return local_s3.make_bucket()


@pytest.fixture
def s3_state_dir(s3_bucket: str):
    return state_path(f"s3://{s3_bucket}/state-{uuid.uuid4().hex[:10]}")


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def any_state_dir(request: pytest.FixtureRequest, tmp_path):
    if request.param == "local":
        return state_path(tmp_path / "state")
    return request.getfixturevalue("s3_state_dir")
