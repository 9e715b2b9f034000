"""The resources as a deployment runs them: every setting is resource config bound to its
variable (the UI's resource page shows the variable names, never secret values), and the
resources build the engines' Settings from those fields with settings.py's parsing."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

# What the UI's resource page is built from (the code location's snapshot); Dagster has no public
# name for it, and this test is about exactly what that page shows.
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

from moods_pipeline.defs.resources import (
    MONGO_VARIABLES,
    PDS_VARIABLES,
    PIPELINE_VARIABLES,
    MongoResource,
    PdsResource,
    PipelineSettingsResource,
)
from moods_pipeline.settings import VARIABLES, ConfigError

SECRETS = {
    "MONGODB_CONNECTION_STRING": "mongodb://moods:mongo-secret-value@127.0.0.1:9/",
    "PDS_ADMIN_PASSWORD": "admin-secret-value",
    "MOODS_LEXICON_PASSWORD": "lexicon-secret-value",
    "MOODS_ALERT_WEBHOOK_URL": "https://hooks.example.com/services/WEBHOOK-SECRET-VALUE",
}
PLAIN = {
    "MONGODB_NAME": "aesthetic",
    "PDS_URL": "http://127.0.0.1:9",
    "MOODS_LEXICON_ACCOUNT": "lexicons.test",
    "MOODS_STATE_DIR": "/srv/moods/state",
    "MOODS_NUKE_POLICY": "delete",
    "MOODS_WHEN_TOLERANCE_MS": "250",
    "MOODS_ROLLOUT": "10%",
    "MOODS_CATCHUP_GRACE_S": "30",
    "MOODS_CATCHUP_BATCH": "50",
    "MOODS_CATCHUP_RUNS_PER_TICK": "2",
    "MOODS_CATCHUP_BACKOFF_S": "15",
    "MOODS_CATCHUP_MAX_ATTEMPTS": "3",
    "MOODS_CATCHUP_MAX_AGE_S": "86400",
    "MOODS_ALERT_FAILURE_RATE_PCT": "2.5",
    "MOODS_ALERT_LATENCY_P95_S": "120",
    "MOODS_UI_URL": "https://dagster.example.org",
}


@pytest.fixture
def deployment_env(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**SECRETS, **PLAIN}.items():
        monkeypatch.setenv(name, value)


def test_every_setting_is_a_resource_field():
    bound = {*MONGO_VARIABLES.values(), *PDS_VARIABLES.values(), *PIPELINE_VARIABLES.values()}
    assert bound == set(VARIABLES)
    for cls, variables in ((MongoResource, MONGO_VARIABLES), (PdsResource, PDS_VARIABLES),
                           (PipelineSettingsResource, PIPELINE_VARIABLES)):
        assert set(variables) <= set(cls.model_fields), cls


def test_resource_page_shows_variable_names_never_values(deployment_env):
    from moods_pipeline.definitions import default_resources

    snap = RepositorySnap.from_def(dg.Definitions(resources=default_resources()).get_repository_def())
    shown = {r.name: r.configured_values for r in snap.resources}
    for key, variables in (("mongo", MONGO_VARIABLES), ("pds", PDS_VARIABLES), ("pipeline", PIPELINE_VARIABLES)):
        for field, variable in variables.items():
            value = shown[key][field]
            assert getattr(value, "name", None) == variable, (key, field, value)
    serialized = serialize_value(snap)
    for name, value in SECRETS.items():
        assert name in serialized
        assert value not in serialized
    assert "mongo-secret-value" not in serialized and "WEBHOOK-SECRET-VALUE" not in serialized


def test_unset_variables_stay_unbound(monkeypatch):
    from moods_pipeline.definitions import default_resources

    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MOODS_CATCHUP_BATCH", "7")
    pipeline = default_resources()["pipeline"]
    assert isinstance(pipeline.catchup_batch, dg.EnvVar) and pipeline.catchup_batch.env_var_name == "MOODS_CATCHUP_BATCH"
    assert pipeline.rollout is None and pipeline.alert_webhook_url is None


def test_a_run_gets_the_settings_of_the_bound_variables(deployment_env):
    from moods_pipeline.definitions import default_resources

    seen = {}

    @dg.op
    def read(pipeline: PipelineSettingsResource, pds: PdsResource, mongo: MongoResource):
        settings = pipeline.settings()
        seen.update(
            state_dir=settings.state_dir, nuke_policy=settings.nuke_policy, tolerance=settings.when_tolerance_ms,
            rollout=settings.rollout, grace=settings.catchup_grace_s, batch=settings.catchup_batch,
            runs=settings.catchup_runs_per_tick, backoff=settings.catchup_backoff_s,
            attempts=settings.catchup_max_attempts, max_age=settings.catchup_max_age_s,
            rate=settings.alert_failure_rate_pct, p95=settings.alert_latency_p95_s,
            webhook=settings.alert_webhook_url.reveal(), pds_url=pds.base_url(),
            admin=pds.admin_secret().reveal(), lexicon=pds.lexicon_credentials()[0],
            mongo_name=mongo.settings().mongodb_name,
        )

    @dg.job
    def settings_job():
        read()

    result = dg.Definitions(jobs=[settings_job], resources=default_resources()).resolve_job_def(
        "settings_job").execute_in_process()
    assert result.success
    assert seen == {
        "state_dir": Path("/srv/moods/state"), "nuke_policy": "delete", "tolerance": 250, "rollout": "10%",
        "grace": 30.0, "batch": 50, "runs": 2, "backoff": 15.0, "attempts": 3, "max_age": 86400.0,
        "rate": 2.5, "p95": 120.0, "webhook": SECRETS["MOODS_ALERT_WEBHOOK_URL"], "pds_url": "http://127.0.0.1:9",
        "admin": SECRETS["PDS_ADMIN_PASSWORD"], "lexicon": "lexicons.test", "mongo_name": "aesthetic",
    }


def test_fields_are_validated_as_settings_py_validates_the_variables(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="MOODS_CATCHUP_MAX_ATTEMPTS"):
        PipelineSettingsResource(catchup_max_attempts="0").settings()
    with pytest.raises(ConfigError, match="MOODS_ROLLOUT"):
        PipelineSettingsResource(rollout="half").settings()
    with pytest.raises(ConfigError, match="PDS_URL"):
        PdsResource(url="ftp://pds").base_url()
    assert PipelineSettingsResource().settings().catchup_batch == 100  # nothing bound: the defaults
