"""`moods-pipeline ui` end to end: the webserver and the daemon on the local stack, driven over GraphQL.

The test starts `moods-pipeline ui` (which becomes `dg dev`: webserver + daemon + code server) on a
free port of 127.0.0.1 with
the settings of docs/interface.md pointing at the test's PDS and MongoDB database, adds the users'
partitions with `addDynamicPartition`, launches an asset backfill over them with
`launchPartitionBackfill`, waits for the backfill daemon to finish it (its loop ticks every 30 s,
so this takes a minute or two), and reads partition status and materialization metadata back
over GraphQL, as the UI does; then waits for the automation sensor to bring ``backfill_summary``
up to date by itself, and stops it all with Ctrl-C (SIGINT to the process group). ``MOODS_ROLLOUT=off`` keeps the live catch-up sensor from writing
the same moods first (and exercises the rollback switch of the runbook).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from moods_pipeline.atproto.client import PdsClient
from moods_pipeline_tests.world import add_user, check_invariant, store_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MOODS_PIPELINE = str(Path(sys.executable).parent / "moods-pipeline")
REPO_ROOT = Path(__file__).resolve().parents[2]  # dg dev reads the project's pyproject.toml
SUMMARY_TIMEOUT_S = 120  # the automation sensor ticks every 30 s, then the summary run
STARTUP_TIMEOUT_S = 90
BACKFILL_TIMEOUT_S = 150  # two backfill-daemon ticks (30 s each) plus the runs
DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DagsterDev:
    """`moods-pipeline ui` in its own process group; its output goes to a log file."""

    def __init__(self, cwd: Path, env: dict, port: int) -> None:
        self.port = port
        self.log_path = cwd / "dagster-dev.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [MOODS_PIPELINE, "ui", "--port", str(port)],
            cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = self.http.post("/graphql", json={"query": query, "variables": variables or {}})
        assert response.status_code == 200, response.text[:2000]
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def wait_ready(self) -> str:
        """Wait for the webserver and the code location; returns the location's name."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert self.proc.poll() is None, f"dagster dev exited:\n{self.tail()}"
            assert time.monotonic() < deadline, f"dagster dev not ready in {STARTUP_TIMEOUT_S}s:\n{self.tail()}"
            try:
                data = self.graphql(WORKSPACE)
                entries = data["workspaceOrError"]["locationEntries"]
                loaded = [e for e in entries if e["loadStatus"] == "LOADED"]
                if loaded:
                    location = loaded[0]["locationOrLoadError"]
                    assert location["__typename"] == "RepositoryLocation", location
                    return location["name"]
            except (httpx.TransportError, AssertionError) as exc:
                if isinstance(exc, AssertionError) and "RepositoryLocation" in str(exc):
                    raise
            time.sleep(1)

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            # Ctrl-C, as a terminal sends it: dg dev shuts its webserver, daemon and code server down.
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        self.stopped_cleanly = self.proc.poll() == 0
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of its own group is left
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self._log.close()


WORKSPACE = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on RepositoryLocation { name repositories { name } }
                          ... on PythonError { message } } } } } }
"""

ADD_PARTITION = """
mutation($selector: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $selector, partitionsDefName: $name, partitionKey: $key) {
    __typename ... on AddDynamicPartitionSuccess { partitionKey }
    ... on PythonError { message } ... on UnauthorizedError { message } ... on DuplicateDynamicPartitionError { message }
  }
}
"""

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack } ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message } ... on InvalidSubsetError { message }
  }
}
"""

BACKFILL = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename ... on PartitionBackfill { id status numPartitions partitionNames }
    ... on PythonError { message }
  }
}
"""

ASSET = """
query($path: [String!]!, $partitions: [String!]) {
  assetNodeOrError(assetKey: {path: $path}) {
    __typename ... on AssetNode { partitionStats { numMaterialized numPartitions numFailed numMaterializing } }
  }
  assetOrError(assetKey: {path: $path}) {
    __typename ... on Asset {
      assetMaterializations(partitions: $partitions) {
        partition runId
        metadataEntries { label __typename
          ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } ... on FloatMetadataEntry { floatValue } }
      }
    }
  }
}
"""


@pytest.fixture
def users(mongo_db, make_account):
    return [add_user(mongo_db, make_account(f"dev{i}"), moods=4 + i) for i in range(3)]


@pytest.fixture
def dagster_dev(tmp_path, local_pds, mongo_uri, mongo_db, test_settings, users):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "PDS_", "MOODS_", "DAGSTER_"))}
    env.update(
        MONGODB_CONNECTION_STRING=mongo_uri,
        MONGODB_NAME=mongo_db.name,
        PDS_URL=local_pds.url,
        PDS_ADMIN_PASSWORD=local_pds.admin_password.reveal(),
        MOODS_STATE_DIR=str(test_settings.state_dir),
        MOODS_ROLLOUT="off",
        DAGSTER_HOME=str(home),
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    dev = DagsterDev(workdir, env, _free_port())
    try:
        yield dev
    finally:
        dev.stop()


def metadata_of(materialization: dict) -> dict:
    out = {}
    for entry in materialization["metadataEntries"]:
        for field in ("intValue", "text", "floatValue"):
            if field in entry:
                out[entry["label"]] = entry[field]
    return out


def test_partition_backfill_over_graphql_with_the_daemon(dagster_dev, users, test_settings, local_pds):
    dev = dagster_dev
    location = dev.wait_ready()
    selector = {"repositoryLocationName": location, "repositoryName": "__repository__"}
    dids = [u.did for u in users]

    for did in dids:
        added = dev.graphql(ADD_PARTITION, {"selector": selector, "name": "users", "key": did})["addDynamicPartition"]
        # The users_partition_sensor may have added it first: both are fine.
        assert added["__typename"] in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"), added

    launched = dev.graphql(LAUNCH_BACKFILL, {"params": {
        "assetSelection": [{"path": ["mood_backfill"]}], "partitionNames": dids, "fromFailure": False,
    }})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    while True:
        backfill = dev.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        if backfill["status"] in DONE:
            break
        assert time.monotonic() < deadline, f"backfill still {backfill['status']}:\n{dev.tail()}"
        time.sleep(2)
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), f"{backfill}\n{dev.tail()}"
    assert sorted(backfill["partitionNames"]) == sorted(dids)

    data = dev.graphql(ASSET, {"path": ["mood_backfill"], "partitions": dids})
    stats = data["assetNodeOrError"]["partitionStats"]
    assert stats["numMaterialized"] == len(dids) and stats["numFailed"] == 0, stats
    materializations = data["assetOrError"]["assetMaterializations"]
    by_partition = {m["partition"]: metadata_of(m) for m in materializations}
    assert set(by_partition) == set(dids)
    for user in users:
        metadata = by_partition[user.did]
        assert metadata["live_moods"] == len(user.mood_ids) == metadata["created"]
        assert metadata["failed"] == 0 and metadata["handle"] == f"@{user.handle}"

    # And the data really moved: the invariant holds on the PDS and in Mongo.
    with PdsClient(local_pds.url) as pds:
        assert check_invariant(store_for(test_settings), pds, users) == sum(len(u.mood_ids) for u in users)

    # Nobody materialized backfill_summary: the automation sensor does, after the backfill's runs.
    deadline = time.monotonic() + SUMMARY_TIMEOUT_S
    while True:
        found = dev.graphql(ASSET, {"path": ["backfill_summary"], "partitions": None})["assetOrError"]
        summaries = found.get("assetMaterializations") or [] if found["__typename"] == "Asset" else []
        if summaries:
            break
        assert time.monotonic() < deadline, f"backfill_summary not updated by itself:\n{dev.tail()}"
        time.sleep(3)
    assert metadata_of(summaries[0])["created"] == sum(len(u.mood_ids) for u in users)

    dev.stop()
    log = dev.log_path.read_text(errors="replace")
    assert dev.stopped_cleanly, log[-3000:]
    assert "superseded" not in log.lower() and "deprecat" not in log.lower(), log[-3000:]
