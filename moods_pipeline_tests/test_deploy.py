"""deploy/k8s: the Helm values and the settings Secret parse as YAML, name only settings the code
reads, and keep the limits deploy/dagster.yaml sets (fast: files only, no cluster)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from moods_pipeline import settings
from moods_pipeline.defs.partitions import PDS_WRITER_POOL, PDS_WRITER_TAGS

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
# Variables the object store's client reads (botocore), not the project: allowed beside the settings.
OBJECT_STORE_VARIABLES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                          "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"}
# Dagster's own variables the deployment sets (deploy/README.md, Environment)
DAGSTER_VARIABLES = {"DAGSTER_EVENT_BATCH_SIZE"}
REQUIRED = {"MONGODB_CONNECTION_STRING", "MONGODB_NAME", "PDS_URL", "PDS_ADMIN_PASSWORD", "MOODS_STATE_DIR"}


def load(name: str):
    return yaml.safe_load((K8S / name).read_text())


@pytest.fixture(scope="module")
def values() -> dict:
    return load("values.yaml")


@pytest.fixture(scope="module")
def secret() -> dict:
    return load("secret.example.yaml")


def test_every_yaml_file_parses():
    files = sorted(K8S.glob("*.yaml"))
    assert {f.name for f in files} >= {"values.yaml", "secret.example.yaml"}
    for path in files:
        assert isinstance(yaml.safe_load(path.read_text()), dict), path


def test_secret_names_only_settings_the_code_reads(secret):
    assert secret["kind"] == "Secret"
    names = set(secret["stringData"])
    unknown = names - set(settings.VARIABLES) - OBJECT_STORE_VARIABLES - DAGSTER_VARIABLES
    assert not unknown, f"not settings of moods_pipeline/settings.py: {sorted(unknown)}"
    assert REQUIRED <= names
    # every setting of settings.py has its line (set, or commented out where unset is the
    # default), so a deployment sees what it can set
    text = (K8S / "secret.example.yaml").read_text()
    assert not [v for v in settings.VARIABLES if not re.search(rf"(?m)^\s*#?\s*{v}:", text)]
    assert all(isinstance(v, str) for v in secret["stringData"].values()), "Secret values must be strings"


def test_state_dir_is_shared_object_storage_the_settings_accept(secret):
    state_dir = secret["stringData"]["MOODS_STATE_DIR"]
    assert state_dir.startswith("s3://")
    # the one parser accepts it (no credentials in the URL, a bucket named)
    assert str(settings.parse_state_dir(state_dir)).startswith("s3://")


def test_code_server_and_runs_use_this_project_and_the_secret(values, secret):
    deployments = values["dagster-user-deployments"]["deployments"]
    assert len(deployments) == 1
    code = deployments[0]
    args = code["codeServerArgs"]
    assert args[args.index("--module-name") + 1] == "moods_pipeline.definitions"
    secret_name = secret["metadata"]["name"]
    assert {"name": secret_name} in code["envSecrets"]
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    assert {"name": secret_name} in launcher["config"]["k8sRunLauncher"]["envSecrets"]
    # any plain env entries also name settings only
    for entry in code.get("env") or []:
        assert entry["name"] in settings.VARIABLES or entry["name"] in OBJECT_STORE_VARIABLES


def test_limits_match_the_production_instance(values):
    instance = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    chart = values["concurrency"]
    assert chart["enabled"] is True
    assert chart["pools"]["granularity"] == instance["concurrency"]["pools"]["granularity"]
    assert chart["pools"]["defaultLimit"] == instance["concurrency"]["pools"]["default_limit"]
    assert chart["runs"]["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]
    (tag_key, _), = PDS_WRITER_TAGS.items()
    chart_limits = {t["key"]: t["limit"] for t in chart["runs"]["tagConcurrencyLimits"]}
    instance_limits = {t["key"]: t["limit"] for t in instance["concurrency"]["runs"]["tag_concurrency_limits"]}
    assert chart_limits[tag_key] == instance_limits[tag_key] == 1
    # the chart refuses run limits in both the run coordinator and `concurrency.runs`
    assert not values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    readme = (K8S / "README.md").read_text()
    assert f"dagster instance concurrency set {PDS_WRITER_POOL} 1" in readme


def test_no_secret_value_in_the_values_file():
    text = (K8S / "values.yaml").read_text()
    assert not re.search(r"(?im)^\s*(postgresqlPassword|password|PDS_ADMIN_PASSWORD)\s*:", text)


def test_dockerfile_installs_this_project_with_the_k8s_launcher():
    text = (K8S / "Dockerfile").read_text()
    assert "pip install -e ." in text and "COPY lexicons" in text
    pyproject = (REPO / "pyproject.toml").read_text()
    dagster_pin = re.search(r'"dagster==(\d+\.\d+)\.(\d+)"', pyproject)
    k8s_pin = re.search(r'"dagster-k8s==0\.(\d+)\.(\d+)"', text)
    assert dagster_pin and k8s_pin
    # Dagster 1.N.P pairs with its libraries at 0.(N+16).P
    assert int(k8s_pin.group(1)) == int(dagster_pin.group(1).split(".")[1]) + 16
    assert k8s_pin.group(2) == dagster_pin.group(2)
