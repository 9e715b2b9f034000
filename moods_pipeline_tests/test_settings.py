"""settings.py: the one reader of the environment. Defaults, parsing and refusals of the variables
of docs/interface.md ("Settings"), the resource overrides, and that no other module reads them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import moods_pipeline
from moods_pipeline.settings import VARIABLES, ConfigError, Settings, load_settings, read_state_dir

PACKAGE = Path(moods_pipeline.__file__).parent


def settings_of(env: dict, **kwargs) -> Settings:
    # stack_dir points nowhere: these tests never see a developer's running stack.
    return load_settings(env, stack_dir=Path("/nonexistent-moods-stack"), connections=False, **kwargs)


def test_defaults_are_docs_interface_md():
    settings = settings_of({})
    assert (settings.catchup_batch, settings.catchup_runs_per_tick, settings.catchup_backoff_s,
            settings.catchup_max_attempts, settings.catchup_max_age_s) == (100, 4, 60.0, 6, None)
    assert (settings.catchup_grace_s, settings.rollout, settings.nuke_policy) == (120.0, "all", "keep")
    assert (settings.alert_failure_rate_pct, settings.alert_latency_p95_s, settings.alert_webhook_url) == (
        5.0, 300.0, None)
    assert settings.when_tolerance_ms == 1000 and settings.state_dir == Path(".moods/state")


def test_catchup_tuning_is_read():
    settings = settings_of({"MOODS_CATCHUP_BATCH": "25", "MOODS_CATCHUP_RUNS_PER_TICK": "2",
                            "MOODS_CATCHUP_BACKOFF_S": "0", "MOODS_CATCHUP_MAX_ATTEMPTS": " 3 ",
                            "MOODS_CATCHUP_MAX_AGE_S": "3600", "MOODS_CATCHUP_GRACE_S": "1.5"})
    assert (settings.catchup_batch, settings.catchup_runs_per_tick, settings.catchup_backoff_s,
            settings.catchup_max_attempts, settings.catchup_max_age_s, settings.catchup_grace_s) == (
        25, 2, 0.0, 3, 3600.0, 1.5)
    assert settings_of({"MOODS_CATCHUP_BATCH": ""}).catchup_batch == 100  # empty: the default


@pytest.mark.parametrize("name, value, message", [
    ("MOODS_CATCHUP_BATCH", "many", "is not a int"),
    ("MOODS_CATCHUP_BATCH", "0", "must be at least 1"),
    ("MOODS_CATCHUP_BATCH", "2.5", "is not a int"),
    ("MOODS_CATCHUP_RUNS_PER_TICK", "0", "must be at least 1"),
    ("MOODS_CATCHUP_MAX_ATTEMPTS", "-1", "must be at least 1"),
    ("MOODS_CATCHUP_BACKOFF_S", "-5", "must not be negative"),
    ("MOODS_CATCHUP_BACKOFF_S", "a minute", "is not a float"),
    ("MOODS_CATCHUP_MAX_AGE_S", "-1", "must not be negative"),
    ("MOODS_CATCHUP_GRACE_S", "soon", "is not a float"),
    ("MOODS_ALERT_FAILURE_RATE_PCT", "five", "is not a float"),
    ("MOODS_ALERT_LATENCY_P95_S", "-1", "must not be negative"),
    ("MOODS_WHEN_TOLERANCE_MS", "1s", "is not a int"),
    ("MOODS_NUKE_POLICY", "sometimes", "must be one of keep, delete"),
    ("MOODS_ROLLOUT", "half", "must be all, off"),
    ("MOODS_ROLLOUT", "101%", "0% to 100%"),
    ("MOODS_ALERT_WEBHOOK_URL", "hooks.example.com/x", "http:// or https://"),
    ("MOODS_ALERT_WEBHOOK_URL", "ftp://hooks.example.com/x", "http:// or https://"),
])
def test_a_bad_value_is_a_config_error_naming_the_variable(name, value, message):
    with pytest.raises(ConfigError, match=re.escape(name)) as refused:
        settings_of({name: value})
    assert message in str(refused.value)


def test_the_webhook_url_is_a_secret():
    url = "https://hooks.example.com/services/T0KEN-SECRET"
    settings = settings_of({"MOODS_ALERT_WEBHOOK_URL": f"  {url} "})
    assert settings.alert_webhook_url.reveal() == url
    assert "T0KEN-SECRET" not in repr(settings) and "T0KEN-SECRET" not in str(settings.alert_webhook_url)
    with pytest.raises(ConfigError) as refused:
        settings_of({"MOODS_ALERT_WEBHOOK_URL": "hooks.example.com/T0KEN-SECRET"})
    assert "T0KEN-SECRET" not in str(refused.value)


def test_overrides_win_and_none_means_not_given():
    env = {"MOODS_CATCHUP_BATCH": "5", "MOODS_ROLLOUT": "off", "MOODS_STATE_DIR": "/from/env"}
    settings = settings_of(env, overrides={"MOODS_CATCHUP_BATCH": "9", "MOODS_ROLLOUT": None, "MOODS_STATE_DIR": None})
    assert (settings.catchup_batch, settings.rollout, settings.state_dir) == (9, "off", Path("/from/env"))
    with pytest.raises(ConfigError, match="MOODS_CATCHUP_BATCH"):  # the same validation for an override
        settings_of({}, overrides={"MOODS_CATCHUP_BATCH": "0"})


def test_connections_names_the_locations_that_must_be_found():
    nowhere = Path("/nonexistent-moods-stack")
    with pytest.raises(ConfigError, match="MONGODB_CONNECTION_STRING"):
        load_settings({"PDS_URL": "http://pds"}, stack_dir=nowhere, connections={"MONGODB_CONNECTION_STRING"})
    only_mongo = load_settings({"MONGODB_CONNECTION_STRING": "mongodb://db"}, stack_dir=nowhere,
                               connections={"MONGODB_CONNECTION_STRING"})
    assert only_mongo.pds_url == "" and only_mongo.mongodb_connection_string.reveal() == "mongodb://db"
    with pytest.raises(ConfigError, match="PDS_URL"):
        load_settings({"MONGODB_CONNECTION_STRING": "mongodb://db"}, stack_dir=nowhere)


def test_read_state_dir_needs_nothing_else():
    assert read_state_dir({"MOODS_STATE_DIR": "/s", "MOODS_ROLLOUT": "not a rollout"}) == Path("/s")
    assert read_state_dir({}) == Path(".moods/state")


ENGINE_FILES = [
    *sorted((PACKAGE / "sync").glob("*.py")),
    *sorted((PACKAGE / "storage").glob("*.py")),
    *sorted((PACKAGE / "defs").rglob("*.py")),
    PACKAGE / "alerts.py",
    PACKAGE / "definitions.py",
]


@pytest.mark.parametrize("path", ENGINE_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_engines_and_the_dagster_layer_do_not_read_the_environment(path):
    """Engines take values (Settings); the resources get theirs from settings.py."""
    source = path.read_text()
    assert "os.environ" not in source and "getenv" not in source, path
    for name in VARIABLES:
        # A variable's name may appear in docs and messages, never as a key read from a mapping.
        assert not re.search(rf"\.get\(\s*[\"']{name}[\"']|\[\s*[\"']{name}[\"']\s*\]", source), (path, name)
