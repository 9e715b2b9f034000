"""Alert rules, the notifier (log + webhook) and the operations sensors, without the local stack.

The webhook goes to a real http.server on 127.0.0.1; the sensors run against a real (SQLite)
Dagster instance with events reported into it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from moods_pipeline import alerts
from moods_pipeline.alerts import (
    Alert,
    AlertThresholds,
    CheckFailure,
    LoginFailure,
    LogSink,
    Notifier,
    WebhookSink,
)
from moods_pipeline.defs.alerts.sensors import build_ops_sensors, evaluate_health
from moods_pipeline.defs.resources import PipelineSettingsResource
from moods_pipeline.defs.backfill.assets import outcome_metadata
from moods_pipeline.model import UserOutcome
from moods_pipeline.settings import ConfigError, load_settings

PASSWORD = "hunter2-correct-horse-battery"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkaWQ6cGxjOmFiYyJ9.c2lnbmF0dXJlLXNlY3JldA"
MOOD_TEXT = "my very private mood about the weather"


# --- a webhook receiver ----------------------------------------------------------------------


class Receiver:
    """An http.server on 127.0.0.1 that records POSTed JSON; answers ``status`` after ``delay``."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.bodies: list[dict] = []
        self.raw: list[bytes] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.raw.append(body)
                receiver.paths.append(self.path)
                receiver.bodies.append(json.loads(body))
                time.sleep(receiver.delay)
                try:
                    self.send_response(receiver.status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, *args):  # keep pytest's output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0KEN-IN-PATH"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def webhook_notifier(url: str, **kwargs) -> Notifier:
    return Notifier([LogSink(), WebhookSink(url, **kwargs)])


# --- rules -----------------------------------------------------------------------------------


def test_failure_rate_is_failed_over_created_synced_and_failed():
    assert alerts.failure_rate_pct({"created": 90, "already_synced": 0, "failed": 10}) == 10.0
    assert alerts.failure_rate_pct({"created": 0, "already_synced": 95, "failed": 5}) == 5.0
    assert alerts.failure_rate_pct({"created": 0, "already_synced": 0, "failed": 0}) is None
    # Dagster metadata values work as well as plain numbers.
    metadata = {"created": dg.MetadataValue.int(1), "already_synced": dg.MetadataValue.int(2),
                "failed": dg.MetadataValue.int(1)}
    assert alerts.failure_rate_pct(metadata) == 25.0


def test_failure_rate_alert_fires_only_above_the_threshold():
    at_threshold = {"created": 95, "already_synced": 0, "failed": 5, "users": 3, "users_failed": 1}
    assert alerts.sync_failure_rate_alert(at_threshold, 5.0) is None
    above = {"created": 94, "already_synced": 0, "failed": 6, "users": 3, "users_failed": 1}
    alert = alerts.sync_failure_rate_alert(above, 5.0)
    assert alert is not None and alert.rule == "sync_failure_rate" and alert.severity == "critical"
    assert alert.details["failure_rate_pct"] == 6.0 and alert.details["users_failed"] == 1
    assert "6.00% is above 5%" in alert.title


def test_latency_alert():
    assert alerts.latency_alert(None, 300) is None
    assert alerts.latency_alert(300.0, 300) is None
    alert = alerts.latency_alert(420.5, 300, samples=12)
    assert alert.rule == "latency_p95" and alert.details == {"latency_p95_s": 420.5, "threshold_s": 300, "samples": 12}


def test_login_failures_and_failed_checks_alerts():
    assert alerts.login_failures_alert([]) is None
    alert = alerts.login_failures_alert([
        LoginFailure("@alice", "did:plc:aaa", "login failed: POST com.atproto.server.createSession HTTP 401: "
                                              "AuthenticationRequired: Invalid identifier or password"),
        LoginFailure("@mallory", "did:plc:bbb", "login failed: DidMismatch: stored DID did:plc:bbb names another account"),
    ])
    assert alert.details == {"users": 2, "did_mismatch": 1}
    assert "(1 with a DID of another account)" in alert.title
    assert alert.items[0].startswith("@alice (did:plc:aaa): login failed")

    assert alerts.failed_checks_alert([]) is None
    alert = alerts.failed_checks_alert([CheckFailure("mood_audit", "no_problems", "ERROR", None, {"problems": 3})])
    assert alert.severity == "critical" and alert.items == ["mood_audit:no_problems (ERROR): problems=3"]
    warn = alerts.failed_checks_alert([CheckFailure("mood_audit", "few_invalid", "WARN")])
    assert warn.severity == "warning"


def settings_of(env: dict):
    return load_settings(env, connections=False)


def test_thresholds_from_settings():
    assert AlertThresholds.from_settings(settings_of({})) == AlertThresholds(5.0, 300.0)
    assert AlertThresholds.from_settings(settings_of(
        {"MOODS_ALERT_FAILURE_RATE_PCT": "0.5", "MOODS_ALERT_LATENCY_P95_S": "60"})) == AlertThresholds(0.5, 60.0)
    with pytest.raises(ConfigError, match="MOODS_ALERT_FAILURE_RATE_PCT"):
        settings_of({"MOODS_ALERT_FAILURE_RATE_PCT": "five"})
    with pytest.raises(ConfigError, match="MOODS_ALERT_LATENCY_P95_S"):
        settings_of({"MOODS_ALERT_LATENCY_P95_S": "-1"})


def test_redact_removes_credentials():
    text = (f"mongodb://moods:{PASSWORD}@db.example.com/aesthetic failed; Authorization: Bearer {TOKEN}; "
            f"password={PASSWORD} and {TOKEN}")
    out = alerts.redact(text)
    assert PASSWORD not in out and TOKEN not in out
    assert "mongodb://***@db.example.com" in out
    assert len(alerts.redact("x" * 5000)) == alerts.MAX_TEXT
    assert alerts.redact("stored value abcd1234", secrets=["abcd1234"]) == "stored value ***"


# --- notifier --------------------------------------------------------------------------------


def test_notifier_from_settings():
    assert [s.name for s in alerts.notifier_from_settings(settings_of({})).sinks] == ["log"]
    settings = settings_of({"MOODS_ALERT_WEBHOOK_URL": "https://hooks.example.com/services/SECRET"})
    notifier = alerts.notifier_from_settings(settings)
    assert [s.name for s in notifier.sinks] == ["log", "webhook"]
    assert "SECRET" not in repr(notifier) and "SECRET" not in repr(settings)
    with pytest.raises(ConfigError, match="MOODS_ALERT_WEBHOOK_URL") as refused:
        settings_of({"MOODS_ALERT_WEBHOOK_URL": "hooks.example.com/SECRET"})
    assert "SECRET" not in str(refused.value)  # the URL is a secret: the message names the variable only


def test_webhook_gets_json_without_secrets(receiver, caplog):
    message = (f"Execution failed: could not connect to mongodb://moods:{PASSWORD}@db:27017 "
               f"(Authorization: Bearer {TOKEN})\n@alice (did:plc:aaa): login failed")
    alert = alerts.run_failed_alert("mood_backfill_job", "0123456789abcdef", message,
                                    tags={"dagster/asset_partition_range_start": "did:plc:aaa"})
    with caplog.at_level(logging.DEBUG, logger="moods_pipeline.alerts"):
        deliveries = webhook_notifier(receiver.url).notify([alert])
    assert deliveries[0].sinks == {"log": True, "webhook": True}
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["source"] == "moods-pipeline" and body["rule"] == "run_failed"
    assert body["details"]["job"] == "mood_backfill_job" and body["details"]["partition_range_start"] == "did:plc:aaa"
    assert body["text"].startswith("[CRITICAL] moods-pipeline: run of mood_backfill_job failed")
    assert body["items"] == ["@alice (did:plc:aaa): login failed"]
    raw = receiver.raw[0].decode()
    assert PASSWORD not in raw and TOKEN not in raw
    # The URL is a secret too: logs name the host only.
    assert "T0KEN-IN-PATH" not in caplog.text and "127.0.0.1" in caplog.text
    assert PASSWORD not in caplog.text and TOKEN not in caplog.text


def test_webhook_failures_are_logged_never_raised(caplog):
    failing = Receiver(status=500)
    slow = Receiver(delay=3.0)
    try:
        alert = alerts.latency_alert(999.0, 300)
        with caplog.at_level(logging.ERROR, logger="moods_pipeline.alerts"):
            assert webhook_notifier(failing.url).notify([alert])[0].sinks == {"log": True, "webhook": False}
            started = time.monotonic()
            assert webhook_notifier(slow.url, timeout_s=0.5).notify([alert])[0].sinks["webhook"] is False
            assert time.monotonic() - started < 2.5  # bounded by the timeout, not the server
            dead = "http://127.0.0.1:9/hooks/T0KEN-IN-PATH"  # discard port: nothing listens
            assert webhook_notifier(dead).notify([alert])[0].sinks["webhook"] is False
        assert "HTTP 500" in caplog.text and "ReadTimeout" in caplog.text and "ConnectError" in caplog.text
        assert "T0KEN-IN-PATH" not in caplog.text
    finally:
        failing.close()
        slow.close()


def test_a_broken_sink_does_not_stop_the_others():
    class Broken:
        name = "broken"

        def send(self, alert):
            raise RuntimeError("boom")

    seen = []

    class Good:
        name = "good"

        def send(self, alert):
            seen.append(alert.rule)
            return True

    deliveries = Notifier([Broken(), Good()]).notify([Alert("x", "info", "t"), None])
    assert deliveries[0].sinks == {"broken": False, "good": True} and seen == ["x"]


# --- sensors ---------------------------------------------------------------------------------


def summary_event(created: int, already_synced: int, failed: int) -> dg.AssetMaterialization:
    return dg.AssetMaterialization(
        asset_key="backfill_summary",
        metadata={"users": 10, "users_failed": 1 if failed else 0, "created": created,
                  "already_synced": already_synced, "failed": failed, "sync_rate_pct": 90.0},
    )


def test_health_sensor_alerts_once_per_summary(dagster_instance, receiver):
    thresholds = AlertThresholds(5.0, 300.0)
    alerts_found, cursor = evaluate_health(dagster_instance, None, thresholds)
    assert alerts_found == []

    dagster_instance.report_runless_asset_event(summary_event(created=90, already_synced=0, failed=10))
    found, cursor = evaluate_health(dagster_instance, cursor, thresholds)
    assert [a.rule for a in found] == ["sync_failure_rate"] and found[0].details["failure_rate_pct"] == 10.0
    # The same materialization never alerts twice.
    assert evaluate_health(dagster_instance, cursor, thresholds)[0] == []
    # A new, healthy summary: nothing.
    dagster_instance.report_runless_asset_event(summary_event(created=0, already_synced=100, failed=1))
    found, cursor = evaluate_health(dagster_instance, cursor, thresholds)
    assert found == []


def test_health_sensor_alerts_on_latency_p95(dagster_instance):
    thresholds = AlertThresholds(5.0, 300.0)
    latency = {"samples": 40, "p50_s": 2.0, "p95_s": 420.0}
    dagster_instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="sync_latency", metadata=latency))
    found, cursor = evaluate_health(dagster_instance, None, thresholds)
    assert [a.rule for a in found] == ["latency_p95"]
    assert found[0].details == {"latency_p95_s": 420.0, "threshold_s": 300.0, "samples": 40}
    assert evaluate_health(dagster_instance, cursor, thresholds)[0] == []
    # No samples yet (no p95_s key) or within the threshold: nothing.
    dagster_instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="sync_latency",
                                                                        metadata={"samples": 0}))
    dagster_instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key="sync_latency", metadata={"samples": 10, "p95_s": 12.5}))
    assert evaluate_health(dagster_instance, cursor, thresholds)[0] == []


RESOURCES = {"pipeline": PipelineSettingsResource()}


def stub_definitions(*sensors) -> dg.Definitions:
    """A code location shaped like ours: mood_backfill (users partitions), mood_audit and checks."""

    @dg.asset(name="mood_backfill", partitions_def=dg.DynamicPartitionsDefinition(name="users"))
    def mood_backfill():
        return None

    @dg.asset(name="mood_audit")
    def mood_audit():
        return None

    @dg.asset_check(asset=mood_audit, name="no_problems")
    def no_problems():
        return dg.AssetCheckResult(passed=True)

    @dg.asset_check(asset=mood_audit, name="all_readable")
    def all_readable():
        return dg.AssetCheckResult(passed=True)

    return dg.Definitions(assets=[mood_backfill, mood_audit], asset_checks=[no_problems, all_readable],
                          sensors=list(sensors), resources=RESOURCES)


def test_health_sensor_reports_login_failures_and_failed_checks(dagster_instance, receiver):
    bad = UserOutcome(sub="auth0|1", did="did:plc:badpw", handle="alice", live=3,
                      error="login failed: POST com.atproto.server.createSession HTTP 401: AuthenticationRequired: "
                            "Invalid identifier or password",
                      failed=[("66db0000000000000000000%d" % i, "login failed") for i in range(3)])
    dagster_instance.add_dynamic_partitions("users", ["did:plc:badpw"])
    dagster_instance.report_runless_asset_event(
        dg.AssetObservation(asset_key="mood_backfill", partition="did:plc:badpw", metadata=outcome_metadata(bad))
    )
    ok = UserOutcome(sub="auth0|2", did="did:plc:ok", handle="bob", live=2, created=2)
    dagster_instance.report_runless_asset_event(
        dg.AssetObservation(asset_key="mood_backfill", metadata=outcome_metadata(ok))
    )
    # `audit --check-logins` records a broken login as the user's `login` metadata.
    dagster_instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key="mood_audit", metadata={"did": "did:plc:audited", "handle": "@carol", "problems": 0,
                                          "login": "login failed: POST com.atproto.server.createSession HTTP 401"}))
    dagster_instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key="mood_audit", metadata={"did": "did:plc:fine", "handle": "@dan", "login": "ok"}))
    dagster_instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=dg.AssetKey("mood_audit"), check_name="no_problems", passed=False,
                                metadata={"problems": 4, "note": dg.MetadataValue.text("free text stays out")},
                                severity=dg.AssetCheckSeverity.ERROR)
    )
    dagster_instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=dg.AssetKey("mood_audit"), check_name="all_readable", passed=True)
    )

    # The sensor itself, as the daemon runs it (in its code location), the webhook as its notifier.
    _, health = build_ops_sensors(notifier_factory=lambda: webhook_notifier(receiver.url),
                                  thresholds_factory=lambda: AlertThresholds(5.0, 300.0))
    defs = stub_definitions(health)
    result = health(dg.build_sensor_context(instance=dagster_instance, definitions=defs, resources=RESOURCES))
    assert "sent 2 alerts: login_failures, check_failed" in str(result.skip_reason)
    by_rule = {b["rule"]: b for b in receiver.bodies}
    assert set(by_rule) == {"login_failures", "check_failed"}
    items = by_rule["login_failures"]["items"]
    assert len(items) == 2 and by_rule["login_failures"]["details"]["users"] == 2
    assert items[0].startswith("@alice (did:plc:badpw): login failed")
    assert items[1].startswith("@carol (did:plc:audited): login failed")
    assert by_rule["check_failed"]["details"] == {"evaluations": 1, "checks": 1}
    assert by_rule["check_failed"]["items"] == ["mood_audit:no_problems (ERROR): problems=4"]
    assert "free text stays out" not in json.dumps(receiver.bodies)

    # Next tick with the cursor: no duplicate.
    again = health(dg.build_sensor_context(instance=dagster_instance, cursor=result.cursor, definitions=defs,
                                           resources=RESOURCES))
    assert again.skip_reason.skip_message == "nothing to alert" and len(receiver.bodies) == 2


def test_health_sensor_takes_thresholds_and_webhook_from_the_pipeline_resource(dagster_instance, receiver):
    dagster_instance.report_runless_asset_event(summary_event(created=90, already_synced=0, failed=10))
    _, health = build_ops_sensors()  # no factories: as in the project's definitions
    lenient = {"pipeline": PipelineSettingsResource(alert_failure_rate_pct="50", alert_webhook_url=receiver.url)}
    result = health(dg.build_sensor_context(instance=dagster_instance, resources=lenient))
    assert result.skip_reason.skip_message == "nothing to alert" and receiver.bodies == []
    strict = {"pipeline": PipelineSettingsResource(alert_failure_rate_pct="5", alert_webhook_url=receiver.url)}
    result = health(dg.build_sensor_context(instance=dagster_instance, resources=strict))
    assert [b["rule"] for b in receiver.bodies] == ["sync_failure_rate"]
    assert receiver.bodies[0]["details"]["threshold_pct"] == 5.0
    broken = {"pipeline": PipelineSettingsResource(alert_latency_p95_s="soon")}
    with pytest.raises(Exception, match="MOODS_ALERT_LATENCY_P95_S"):
        health(dg.build_sensor_context(instance=dagster_instance, resources=broken))


def test_run_failure_sensor_sends_the_failure(dagster_instance, receiver):
    @dg.op
    def explode():
        raise dg.Failure(description="2 of 5 users did not fully sync:\n@alice (did:plc:aaa): login failed: "
                                     f"HTTP 401\nmongodb://moods:{PASSWORD}@db")

    @dg.job(name="mood_backfill_job")
    def failing_job():
        explode()

    result = failing_job.execute_in_process(instance=dagster_instance, raise_on_error=False)
    assert not result.success
    run = dagster_instance.get_run_by_id(result.run_id)
    failure = next(e.dagster_event for e in dagster_instance.all_logs(result.run_id)
                   if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE)
    run_sensor, _ = build_ops_sensors(notifier_factory=lambda: webhook_notifier(receiver.url))
    context = dg.build_run_status_sensor_context(
        sensor_name=run_sensor.name, dagster_event=failure, dagster_instance=dagster_instance, dagster_run=run,
        resources=RESOURCES,
    ).for_run_failure()
    run_sensor(context)
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["rule"] == "run_failed" and body["key"] == f"run_failed:{result.run_id}"
    assert body["details"]["job"] == "mood_backfill_job" and body["details"]["run_id"] == result.run_id
    assert any("@alice (did:plc:aaa): login failed" in item for item in body["items"])
    assert PASSWORD not in receiver.raw[0].decode()
    # The alert links to the failed run in the UI (MOODS_UI_URL, the local default here).
    assert body["url"] == f"http://127.0.0.1:3000/runs/{result.run_id}" and body["text"].endswith(body["url"])


def test_every_health_alert_links_to_the_run_it_is_about(dagster_instance, receiver):
    """Summary, latency, login failure and failed check, each recorded by a real run: each alert's
    url is MOODS_UI_URL/runs/<that run's id>."""

    @dg.op
    def record_everything():
        yield dg.AssetMaterialization(asset_key="backfill_summary",
                                      metadata={"created": 90, "already_synced": 0, "failed": 10})
        yield dg.AssetMaterialization(asset_key="sync_latency", metadata={"samples": 3, "p95_s": 900.0})
        yield dg.AssetObservation(asset_key="mood_backfill", metadata={
            "did": "did:plc:badpw", "handle": "@alice", "error": "login failed: HTTP 401"})
        yield dg.AssetCheckEvaluation(asset_key=dg.AssetKey("mood_audit"), check_name="no_problems", passed=False,
                                      metadata={"problems": 2}, severity=dg.AssetCheckSeverity.ERROR)
        yield dg.Output(None)

    @dg.job
    def recorder():
        record_everything()

    run_id = recorder.execute_in_process(instance=dagster_instance).run_id
    _, health = build_ops_sensors(notifier_factory=lambda: webhook_notifier(receiver.url))
    ui = {"pipeline": PipelineSettingsResource(ui_url="https://dagster.example.org/")}
    health(dg.build_sensor_context(instance=dagster_instance, definitions=stub_definitions(health), resources=ui))
    by_rule = {b["rule"]: b for b in receiver.bodies}
    assert set(by_rule) == {"sync_failure_rate", "latency_p95", "login_failures", "check_failed"}
    for body in by_rule.values():
        assert body["url"] == f"https://dagster.example.org/runs/{run_id}", body["rule"]
        assert body["text"].endswith(body["url"])
    assert by_rule["login_failures"]["items"][0].endswith(f"[run https://dagster.example.org/runs/{run_id}]")


def test_a_bad_ui_url_is_refused_naming_the_variable():
    with pytest.raises(ConfigError, match="MOODS_UI_URL"):
        load_settings(env={"MOODS_UI_URL": "dagster.example.org"}, connections=False)
    assert load_settings(env={}, connections=False).ui_url == "http://127.0.0.1:3000"


def test_ops_sensors_load_in_definitions():
    from moods_pipeline.defs.alerts.sensors import ops_sensors

    defs = dg.Definitions(sensors=ops_sensors, resources=RESOURCES)
    names = {s.name for s in defs.get_repository_def().sensor_defs}
    assert names == {"moods_run_failure_alerts", "moods_health_alerts"}
