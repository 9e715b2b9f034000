"""Operations sensors: feed the alert rules of ``moods_pipeline.alerts`` from the Dagster instance.

- ``moods_run_failure_alerts`` (a run-failure sensor): every failed run of this code location, once,
  with the first lines of its step failures (the backfill's failure names the users and why).
- ``moods_health_alerts`` (every 60 s): reads what landed in the instance since its cursor:
  * the latest ``backfill_summary`` materialization -> ``sync_failure_rate`` (failed /
    (created + already_synced + failed) above ``MOODS_ALERT_FAILURE_RATE_PCT``);
  * the latest live-sync latency materialization -> ``latency_p95`` (above
    ``MOODS_ALERT_LATENCY_P95_S``);
  * new asset observations whose ``error`` metadata is a login failure (the backfill records a
    user it could not sync as an observation with its ``error``), and new ``mood_audit``
    materializations whose ``login`` metadata is one (``audit --check-logins``) ->
    ``login_failures``;
  * new asset check evaluations that did not pass -> ``check_failed``.

No duplicate alerts: the health sensor's cursor holds the storage ids it has evaluated (the
summary and latency materializations, and the event-log position for observations and check
evaluations), so each event alerts at most once; the run-failure sensor has Dagster's own cursor.
Several events of one kind in one tick make one alert. Every alert links to its run in the UI
(``MOODS_UI_URL/runs/<run id>``). Alerts go to the log and, when
``MOODS_ALERT_WEBHOOK_URL`` is set, to that webhook. Thresholds and webhook come from the
``pipeline`` resource (``PipelineSettingsResource``), resolved when the sensor runs, in the daemon.

No ``from __future__ import annotations`` here: Dagster reads the annotations at definition time.
"""

import hashlib
import json
import logging
import time
from typing import Callable, Optional

import dagster as dg

from moods_pipeline import alerts, ui_links
from moods_pipeline.defs.dagster_private import AssetCheckExecutionRecordStatus
from moods_pipeline.defs.resources import PipelineSettingsResource

log = logging.getLogger(__name__)

SUMMARY_ASSET = dg.AssetKey("backfill_summary")
# The live-sync latency asset (assets/latency.py) and its metadata keys.
LATENCY_ASSET = dg.AssetKey("sync_latency")
LATENCY_P95_KEY = "p95_s"
LATENCY_SAMPLES_KEY = "samples"
# Assets whose observations are read for login failures when the sensor runs without its code
# location (tests); in the daemon it reads every asset of the code location.
DEFAULT_OBSERVED_ASSETS = (dg.AssetKey("mood_backfill"), dg.AssetKey("mood_audit"))
# Assets whose materializations can carry a failed login (`audit --check-logins`: "login").
LOGIN_MATERIALIZATIONS = (dg.AssetKey("mood_audit"),)
LOGIN_FIELDS = ("error", "login")
EVENT_PAGE = 1000  # observation records read per query
MAX_PAGES = 20  # pages per asset per tick; the rest wait for the next tick
CHECK_HISTORY = 100  # latest executions read per check per tick
PENDING_MAX_AGE_S = 86_400  # a planned check execution older than this is given up on
MAX_PENDING = 50
HEALTH_INTERVAL_S = 60
CURSOR_VERSION = 1


NotifierFactory = Callable[[], alerts.Notifier]
ThresholdsFactory = Callable[[], alerts.AlertThresholds]


def _value(entry):
    return getattr(entry, "value", entry)


def _metadata_of(record) -> dict:
    event = record.event_log_entry.dagster_event
    data = getattr(event, "event_specific_data", None)
    for attr in ("materialization", "asset_observation"):
        inner = getattr(data, attr, None)
        if inner is not None:
            return dict(inner.metadata or {})
    return {}


def _partition_of(record) -> Optional[str]:
    event = record.event_log_entry.dagster_event
    return getattr(event, "partition", None)


def _run_link(ui_url: Optional[str], run_id: Optional[str]) -> str:
    return ui_links.run_url(ui_url, run_id) if ui_url and run_id else ""


def _latest_materialization(instance, key):
    records = instance.fetch_materializations(key, limit=1).records
    return records[0] if records else None


def _load_cursor(raw: Optional[str]) -> dict:
    cursor = {"v": CURSOR_VERSION, "summary": 0, "latency": 0, "observations": {}, "materializations": {},
              "checks": {}, "pending": {}}
    if raw:
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if isinstance(data, dict) and data.get("v") == CURSOR_VERSION:
            for name, default in cursor.items():
                if isinstance(data.get(name), type(default)):
                    cursor[name] = data[name]
        else:
            log.warning("health sensor cursor unreadable; starting over")
    return cursor


def _asset_keys(repository_def) -> list:
    if repository_def is None:
        return list(DEFAULT_OBSERVED_ASSETS)
    return sorted(repository_def.asset_graph.get_all_asset_keys(), key=lambda k: k.to_user_string())


def _check_keys(repository_def) -> list:
    if repository_def is None:
        return []
    return sorted(repository_def.asset_graph.asset_check_keys, key=lambda k: k.to_user_string())


def _events_after(fetch, key, after: int):
    """Records of one asset after a storage id, oldest first, at most MAX_PAGES pages."""
    for _ in range(MAX_PAGES):
        page = fetch(dg.AssetRecordsFilter(asset_key=key, after_storage_id=after or None), limit=EVENT_PAGE,
                     ascending=True).records
        yield from page
        if len(page) < EVENT_PAGE:
            return
        after = page[-1].storage_id


def _login_failure(record, ui_url: Optional[str] = None) -> Optional[alerts.LoginFailure]:
    metadata = _metadata_of(record)
    reason = next((str(_value(metadata[k])) for k in LOGIN_FIELDS
                   if k in metadata and str(_value(metadata[k]) or "").startswith("login failed")), None)
    if reason is None:
        return None
    handle = str(_value(metadata.get("handle")) or "")
    did = str(_value(metadata.get("did")) or "") or _partition_of(record)
    return alerts.LoginFailure(label=handle if handle.startswith("@") else (did or "?"), did=did, reason=reason,
                               url=_run_link(ui_url, record.run_id))


def login_failures_since(instance, cursor: dict, asset_keys, ui_url: Optional[str] = None) -> list:
    """Login failures recorded in asset metadata after the cursor; advances it (per asset).

    Read from the ``error`` or ``login`` metadata of observations of every asset (a user the
    backfill could not sync gets an observation with its ``error``) and of materializations of
    the assets in LOGIN_MATERIALIZATIONS (``mood_audit --check-logins`` records ``login``)."""
    failures = []
    streams = [("observations", instance.fetch_observations, key) for key in asset_keys]
    streams += [("materializations", instance.fetch_materializations, key)
                for key in asset_keys if key in LOGIN_MATERIALIZATIONS]
    for kind, fetch, key in streams:
        name = key.to_user_string()
        seen = cursor[kind].get(name, 0)
        for record in _events_after(fetch, key, seen):
            seen = max(seen, record.storage_id)
            failure = _login_failure(record, ui_url)
            if failure is not None:
                failures.append(failure)
        if seen:
            cursor[kind][name] = seen
    return failures


def _check_failure(record, ui_url: Optional[str] = None):
    evaluation = record.event.dagster_event.event_specific_data if record.event else None
    if evaluation is None or getattr(evaluation, "passed", True):
        return None
    severity = getattr(getattr(evaluation, "severity", None), "value", None) or "ERROR"
    facts = {}
    for name, entry in (evaluation.metadata or {}).items():
        value = _value(entry)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            facts[name] = value  # numbers only: descriptions and tables stay in the UI
    return alerts.CheckFailure(
        asset=record.key.asset_key.to_user_string(),
        check=record.key.name,
        severity=str(severity),
        partition=getattr(record, "partition", None),
        facts=facts,
        url=_run_link(ui_url, getattr(record, "run_id", None)),
    )


def failed_checks_since(instance, cursor: dict, check_keys, now: Optional[float] = None,
                        ui_url: Optional[str] = None) -> list:
    """Check evaluations that did not pass, newer than the cursor (per check); advances it.

    An execution's id is given when it is planned; one still planned is remembered (for a day)
    so that it is read once it completes, even if a later execution completed first."""
    now = time.time() if now is None else now
    failures = []
    for key in check_keys:
        name = key.to_user_string()
        seen = cursor["checks"].get(name, 0)
        pending = set(cursor["pending"].get(name, []))
        records = instance.event_log_storage.get_asset_check_execution_history(key, limit=CHECK_HISTORY)
        still_pending = set()
        for record in sorted(records, key=lambda r: r.id):
            if record.id <= seen and record.id not in pending:
                continue
            if record.status == AssetCheckExecutionRecordStatus.PLANNED:
                if now - record.create_timestamp < PENDING_MAX_AGE_S:
                    still_pending.add(record.id)
                continue
            failure = _check_failure(record, ui_url)
            if failure is not None:
                failures.append(failure)
        completed = [r.id for r in records if r.status != AssetCheckExecutionRecordStatus.PLANNED]
        if completed:
            cursor["checks"][name] = max([seen, *completed])
        if still_pending:
            cursor["pending"][name] = sorted(still_pending)[-MAX_PENDING:]
        else:
            cursor["pending"].pop(name, None)
    return failures


def summary_alert_since(instance, cursor: dict, thresholds: alerts.AlertThresholds, ui_url: Optional[str] = None):
    record = _latest_materialization(instance, SUMMARY_ASSET)
    if record is None or record.storage_id <= cursor["summary"]:
        return None
    cursor["summary"] = record.storage_id
    metadata = record.asset_materialization.metadata or {}
    return alerts.sync_failure_rate_alert(
        metadata, thresholds.failure_rate_pct, key=f"sync_failure_rate:{record.storage_id}",
        url=_run_link(ui_url, record.run_id),
    )


def latency_alert_since(instance, cursor: dict, thresholds: alerts.AlertThresholds, ui_url: Optional[str] = None):
    latest = _latest_materialization(instance, LATENCY_ASSET)
    if latest is None or latest.storage_id <= cursor["latency"]:
        return None
    cursor["latency"] = latest.storage_id
    metadata = latest.asset_materialization.metadata or {}
    p95 = _value(metadata.get(LATENCY_P95_KEY))  # absent while there are no samples
    samples = _value(metadata.get(LATENCY_SAMPLES_KEY))
    if not isinstance(p95, (int, float)) or isinstance(p95, bool):
        return None
    return alerts.latency_alert(
        float(p95), thresholds.latency_p95_s, samples=samples if isinstance(samples, int) else None,
        key=f"latency_p95:{latest.storage_id}", url=_run_link(ui_url, latest.run_id),
    )


def evaluate_health(instance, raw_cursor: Optional[str], thresholds: alerts.AlertThresholds, repository_def=None,
                    ui_url: Optional[str] = None):
    """(alerts, new cursor) for what landed since ``raw_cursor``; only reads the instance.

    ``repository_def`` (the sensor's code location) names the assets whose observations are read
    and the asset checks whose evaluations are read; without it, only ``mood_backfill``. ``ui_url``
    (MOODS_UI_URL): each alert links to the run it is about."""
    cursor = _load_cursor(raw_cursor)
    logins = login_failures_since(instance, cursor, _asset_keys(repository_def), ui_url=ui_url)
    checks = failed_checks_since(instance, cursor, _check_keys(repository_def), ui_url=ui_url)
    position = json.dumps([cursor["observations"], cursor["materializations"], cursor["checks"]], sort_keys=True)
    position = hashlib.sha256(position.encode()).hexdigest()[:12]
    found = [
        summary_alert_since(instance, cursor, thresholds, ui_url),
        latency_alert_since(instance, cursor, thresholds, ui_url),
        alerts.login_failures_alert(logins, key=f"login_failures:{position}"),
        alerts.failed_checks_alert(checks, key=f"check_failed:{position}"),
    ]
    return [a for a in found if a is not None], json.dumps(cursor, sort_keys=True)


def _step_failure_lines(context) -> str:
    lines = []
    try:
        for event in context.get_step_failure_events():
            error = event.step_failure_data.error if event.step_failure_data else None
            message = error.message if error else (event.message or "")
            lines.append(f"step {event.step_key}: {message.strip()}")
    except Exception:  # noqa: BLE001 - the run's own message is still worth sending
        pass
    return "\n".join(lines)


def build_ops_sensors(
    notifier_factory: Optional[NotifierFactory] = None,
    thresholds_factory: Optional[ThresholdsFactory] = None,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> list:
    """The two sensors; factories (tests) are called at each evaluation; without them the
    notifier and thresholds come from the ``pipeline`` resource's settings."""

    def make_notifier(pipeline: PipelineSettingsResource) -> alerts.Notifier:
        if notifier_factory is not None:
            return notifier_factory()
        return alerts.notifier_from_settings(pipeline.settings())

    def make_thresholds(pipeline: PipelineSettingsResource) -> alerts.AlertThresholds:
        if thresholds_factory is not None:
            return thresholds_factory()
        return alerts.AlertThresholds.from_settings(pipeline.settings())

    @dg.run_failure_sensor(
        name="moods_run_failure_alerts",
        default_status=default_status,
        description="Alerts (log + MOODS_ALERT_WEBHOOK_URL) on every failed run of this code location.",
    )
    def moods_run_failure_alerts(context: dg.RunFailureSensorContext, pipeline: PipelineSettingsResource):
        run = context.dagster_run
        message = "\n".join(
            part for part in ((context.failure_event.message or "").strip(), _step_failure_lines(context)) if part
        )
        alert = alerts.run_failed_alert(run.job_name, run.run_id, message, tags=dict(run.tags or {}),
                                        ui_url=pipeline.settings().ui_url)
        delivered = make_notifier(pipeline).notify([alert])
        context.log.info(f"alert {alert.rule} for run {run.run_id}: {delivered[0].sinks if delivered else {}}")

    @dg.sensor(
        name="moods_health_alerts",
        minimum_interval_seconds=HEALTH_INTERVAL_S,
        default_status=default_status,
        description=(
            "Alerts on the sync failure rate (backfill_summary), live-sync latency p95, PDS login "
            "failures and failed asset checks; each event once (cursor)."
        ),
    )
    def moods_health_alerts(context: dg.SensorEvaluationContext, pipeline: PipelineSettingsResource):
        found, cursor = evaluate_health(context.instance, context.cursor, make_thresholds(pipeline),
                                        context.repository_def, ui_url=pipeline.settings().ui_url)
        if found:
            make_notifier(pipeline).notify(found)
            for alert in found:
                context.log.warning(alert.text)
        reason = f"sent {len(found)} alerts: {', '.join(a.rule for a in found)}" if found else "nothing to alert"
        return dg.SensorResult(skip_reason=reason, cursor=cursor)

    return [moods_run_failure_alerts, moods_health_alerts]


ops_sensors = build_ops_sensors()
moods_run_failure_alerts, moods_health_alerts = ops_sensors
