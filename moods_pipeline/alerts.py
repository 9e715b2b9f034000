"""Alert rules and a small notifier (checklist phase 6.1, "Set up alerts for sync failures").

Plain Python: the rules look at numbers the Dagster layer already records (asset metadata, check
evaluations, run failures) and return :class:`Alert` objects; :class:`Notifier` hands them to its
sinks. ``moods_pipeline.defs.alerts.sensors`` is the Dagster side that feeds them.

Rules and their thresholds (docs/interface.md settings):

==================  ===================================================  ===============================
rule                fires when                                           threshold
==================  ===================================================  ===============================
``sync_failure_rate``  failed / (created + already_synced + failed) of    ``MOODS_ALERT_FAILURE_RATE_PCT``
                    the latest ``backfill_summary``, in percent, is        (default 5)
                    above the threshold
``latency_p95``     the latest live-sync latency p95 (seconds) is above  ``MOODS_ALERT_LATENCY_P95_S``
                                                                         (default 300)
``login_failures``  one or more users failed to log in to the PDS        any
                    (wrong password, DID of another account, ...)
``check_failed``    an asset check evaluation did not pass               any
``run_failed``      a Dagster run failed                                 any
==================  ===================================================  ===============================

Thresholds and the webhook come from ``moods_pipeline.settings`` (which reads and validates the
variables): :meth:`AlertThresholds.from_settings` and :func:`notifier_from_settings`.

Sinks: the log (always; logger ``moods_pipeline.alerts``, WARNING) and, when
``MOODS_ALERT_WEBHOOK_URL`` is set, a JSON POST to that URL (Slack-compatible: the payload has a
``text`` field). The webhook gets a bounded timeout; a webhook that fails is logged and never
raised, so an alerting outage cannot break a sensor tick or a run.

Links: every alert carries ``url``, the Dagster UI page (``MOODS_UI_URL/runs/<run id>``) of the
run it is about (the failed run, the run that materialized the summary or latency, recorded the
login failure or evaluated the check); the webhook's ``text`` ends with it.

Privacy (docs/interface.md): alerts carry ids, DIDs, handles, counts, rates, check and job names, and
reasons; never mood text, passwords or tokens. Free text that reaches an alert (a run's failure
message, a check description) goes through :func:`redact` and is cut to a bounded length. The
webhook URL itself is a secret (Slack-style URLs embed a token): it is never logged; log lines
name only its host.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

import httpx

from moods_pipeline.secret import Secret
from moods_pipeline.settings import Settings
from moods_pipeline.ui_links import run_url

log = logging.getLogger(__name__)

DEFAULT_FAILURE_RATE_PCT = 5.0
DEFAULT_LATENCY_P95_S = 300.0
WEBHOOK_TIMEOUT_S = 5.0
MAX_TEXT = 1500  # free text in an alert is cut to this many characters
MAX_LISTED = 20  # users / checks named in one alert; the rest are counted

SOURCE = "moods-pipeline"
SEVERITIES = ("info", "warning", "critical")


# --- privacy -------------------------------------------------------------------------------------

_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
_KEYVALUE = re.compile(r"(?i)\b(password|passwd|secret|token|accessJwt|refreshJwt|api[_-]?key)(\"?\s*[:=]\s*\"?)[^\s\",}]+")


def redact(text: str | None, limit: int = MAX_TEXT, secrets: Iterable[Secret | str | None] = ()) -> str:
    """``text`` without credentials it might carry, cut to ``limit`` characters.

    Removes the user:password part of URLs (``mongodb://user:pw@host`` -> ``mongodb://***@host``),
    Bearer/Basic credentials, JWTs, ``password=...``-style pairs, and any of ``secrets`` given.
    It cannot recognise mood text: callers pass only text that never holds it (reasons, errors
    and failure messages of this project, which docs/interface.md keeps free of mood text).
    """
    if not text:
        return ""
    out = str(text)
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value and len(value) >= 4:
            out = out.replace(value, "***")
    out = _URL_USERINFO.sub(lambda m: m.group("scheme") + "***@", out)
    out = _BEARER.sub(lambda m: m.group(1) + " ***", out)
    out = _JWT.sub("***", out)
    out = _KEYVALUE.sub(lambda m: m.group(1) + m.group(2) + "***", out)
    if len(out) > limit:
        out = out[: max(limit - 3, 0)] + "..."
    return out


def _fact(value: Any) -> str | int | float | bool | None:
    """A detail value as a JSON scalar; strings redacted and cut short."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value), limit=300)


# --- alerts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    """One thing an operator should look at. ``key`` identifies it for de-duplication."""

    rule: str
    severity: str
    title: str
    details: Mapping[str, Any] = field(default_factory=dict)
    key: str = ""
    items: Sequence[str] = ()  # one line per user / check / run named (bounded)
    url: str = ""  # the run (in the Dagster UI, MOODS_UI_URL) that this alert is about


    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is not one of {SEVERITIES}")

    @property
    def text(self) -> str:
        """One human line (what the log and Slack show)."""
        return f"[{self.severity.upper()}] {SOURCE}: {self.title}"

    def payload(self) -> dict:
        """The webhook's JSON body: scalars and short strings only (see the module docstring)."""
        lines = [redact(item, limit=300) for item in list(self.items)[:MAX_LISTED]]
        more = len(self.items) - len(lines)
        body_text = self.text + ("\n" + "\n".join(f"- {line}" for line in lines) if lines else "")
        if more > 0:
            body_text += f"\n- ... and {more} more"
        if self.url:
            body_text += f"\nrun: {self.url}"
        return {
            "source": SOURCE,
            "rule": self.rule,
            "severity": self.severity,
            "title": redact(self.title, limit=300),
            "key": self.key or self.rule,
            "details": {str(k): _fact(v) for k, v in self.details.items()},
            "items": lines,
            "items_total": len(self.items),
            "url": self.url,
            "text": body_text,
            "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


@dataclass(frozen=True)
class AlertThresholds:
    failure_rate_pct: float = DEFAULT_FAILURE_RATE_PCT
    latency_p95_s: float = DEFAULT_LATENCY_P95_S

    @classmethod
    def from_settings(cls, settings: Settings) -> "AlertThresholds":
        """MOODS_ALERT_FAILURE_RATE_PCT and MOODS_ALERT_LATENCY_P95_S, as settings.py validated them."""
        return cls(failure_rate_pct=settings.alert_failure_rate_pct, latency_p95_s=settings.alert_latency_p95_s)


def _number(metadata: Mapping[str, Any], name: str) -> float:
    value = metadata.get(name, 0)
    value = getattr(value, "value", value)  # a Dagster MetadataValue or a plain number
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value)


# --- rules ---------------------------------------------------------------------------------------


def failure_rate_pct(summary: Mapping[str, Any]) -> float | None:
    """Failed moods as a percentage of the valid live moods the backfill settled or tried to.

    ``failed / (created + already_synced + failed)`` over the backfill summary's numbers (plain
    numbers or Dagster metadata values). None when nothing was attempted.
    """
    failed = _number(summary, "failed")
    attempted = _number(summary, "created") + _number(summary, "already_synced") + failed
    if attempted <= 0:
        return None
    return round(100.0 * failed / attempted, 2)


def sync_failure_rate_alert(summary: Mapping[str, Any], threshold_pct: float, *, key: str = "",
                            url: str = "") -> Alert | None:
    """``sync_failure_rate``: the backfill summary's failure rate above the threshold."""
    rate = failure_rate_pct(summary)
    if rate is None or rate <= threshold_pct:
        return None
    failed = int(_number(summary, "failed"))
    users_failed = int(_number(summary, "users_failed"))
    return Alert(
        rule="sync_failure_rate",
        severity="critical",
        title=f"sync failure rate {rate:.2f}% is above {threshold_pct:g}% ({failed} moods failed, "
        f"{users_failed} users failed)",
        details={
            "failure_rate_pct": rate,
            "threshold_pct": threshold_pct,
            "failed": failed,
            "created": int(_number(summary, "created")),
            "already_synced": int(_number(summary, "already_synced")),
            "users": int(_number(summary, "users")),
            "users_failed": users_failed,
            "sync_rate_pct": _number(summary, "sync_rate_pct"),
        },
        key=key or "sync_failure_rate",
        url=url,
    )


def latency_alert(p95_s: float | None, threshold_s: float, *, samples: int | None = None, key: str = "",
                  url: str = "") -> Alert | None:
    """``latency_p95``: live-sync latency p95 (seconds) above the threshold."""
    if p95_s is None or p95_s <= threshold_s:
        return None
    details: dict[str, Any] = {"latency_p95_s": round(float(p95_s), 3), "threshold_s": threshold_s}
    if samples is not None:
        details["samples"] = samples
    return Alert(
        rule="latency_p95",
        severity="warning",
        title=f"live-sync latency p95 {p95_s:.1f}s is above {threshold_s:g}s",
        details=details,
        key=key or "latency_p95",
        url=url,
    )


@dataclass(frozen=True)
class LoginFailure:
    label: str  # @handle, or the DID
    did: str | None
    reason: str  # "login failed: ..." as the backfill reports it (no password: the client scrubs it)
    url: str = ""  # the run that recorded it


def login_failures_alert(failures: Sequence[LoginFailure], *, key: str = "") -> Alert | None:
    """``login_failures``: users whose PDS login failed (stored password wrong, DID of another
    account, account taken down). Each needs a person: the stored credentials are wrong."""
    if not failures:
        return None
    mismatches = sum(1 for f in failures if "DidMismatch" in f.reason)
    return Alert(
        rule="login_failures",
        severity="critical",
        title=f"{len(failures)} users failed to log in to the PDS"
        + (f" ({mismatches} with a DID of another account)" if mismatches else ""),
        details={"users": len(failures), "did_mismatch": mismatches},
        items=[f"{f.label} ({f.did or '?'}): {redact(f.reason, limit=240)}" + (f" [run {f.url}]" if f.url else "")
               for f in failures],
        key=key or "login_failures",
        url=next((f.url for f in reversed(failures) if f.url), ""),
    )


@dataclass(frozen=True)
class CheckFailure:
    asset: str  # the asset key as a path string
    check: str
    severity: str = "ERROR"  # Dagster's AssetCheckSeverity name
    partition: str | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)  # numeric metadata of the evaluation
    url: str = ""  # the run that evaluated it


def failed_checks_alert(failures: Sequence[CheckFailure], *, key: str = "") -> Alert | None:
    """``check_failed``: asset check evaluations that did not pass (ERROR checks are critical)."""
    if not failures:
        return None
    critical = any(f.severity.upper() == "ERROR" for f in failures)
    items = []
    for f in failures:
        facts = ", ".join(f"{k}={v}" for k, v in list(f.facts.items())[:6])
        where = f"{f.asset}:{f.check}" + (f" [{f.partition}]" if f.partition else "")
        items.append(f"{where} ({f.severity})" + (f": {facts}" if facts else "") + (f" [run {f.url}]" if f.url else ""))
    names = sorted({f"{f.asset}:{f.check}" for f in failures})
    return Alert(
        rule="check_failed",
        severity="critical" if critical else "warning",
        title=f"{len(failures)} asset check evaluations failed: {', '.join(names[:5])}"
        + (" ..." if len(names) > 5 else ""),
        details={"evaluations": len(failures), "checks": len(names)},
        items=items,
        key=key or "check_failed",
        url=next((f.url for f in reversed(failures) if f.url), ""),
    )


def run_failed_alert(job_name: str, run_id: str, message: str | None, *, tags: Mapping[str, str] | None = None,
                     ui_url: str | None = None) -> Alert:
    """``run_failed``: a Dagster run failed; the first lines of its failure say why."""
    tags = tags or {}
    details: dict[str, Any] = {"job": job_name, "run_id": run_id}
    for tag, name in (
        ("dagster/partition", "partition"),
        ("dagster/asset_partition_range_start", "partition_range_start"),
        ("dagster/asset_partition_range_end", "partition_range_end"),
        ("dagster/backfill", "backfill"),
    ):
        if tags.get(tag):
            details[name] = tags[tag]
    url = run_url(ui_url, run_id) if ui_url else ""
    if url:
        details["url"] = url
    lines = [line for line in redact(message).splitlines() if line.strip()]
    return Alert(
        rule="run_failed",
        severity="critical",
        title=f"run of {job_name} failed ({run_id[:8]})" + (f": {lines[0]}" if lines else ""),
        details=details,
        items=lines[1:],
        key=f"run_failed:{run_id}",
        url=url,
    )


# --- sinks and the notifier ----------------------------------------------------------------------


class LogSink:
    """Writes each alert as WARNING lines on the ``moods_pipeline.alerts`` logger (or ``logger``)."""

    name = "log"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or log

    def send(self, alert: Alert) -> bool:
        payload = alert.payload()
        self.logger.warning("ALERT %s %s details=%s", alert.rule, payload["title"],
                            json.dumps(payload["details"], sort_keys=True))
        for item in payload["items"]:
            self.logger.warning("ALERT %s   %s", alert.rule, item)
        return True


class WebhookSink:
    """POSTs each alert's JSON payload to a URL; never raises, logs failures (host only)."""

    name = "webhook"

    def __init__(self, url: Secret | str, *, timeout_s: float = WEBHOOK_TIMEOUT_S,
                 transport: httpx.BaseTransport | None = None) -> None:
        url = url if isinstance(url, Secret) else Secret(url)
        parts = urlsplit(url.reveal())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # settings.py refuses such a MOODS_ALERT_WEBHOOK_URL; this guards direct use. The URL
            # is a secret, so the message does not show it.
            raise ValueError("a webhook URL must be an http:// or https:// URL")
        self._url = url
        self.host = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.timeout_s = timeout_s
        self._transport = transport

    def __repr__(self) -> str:
        return f"WebhookSink(host={self.host!r})"

    def send(self, alert: Alert) -> bool:
        try:
            with httpx.Client(timeout=httpx.Timeout(self.timeout_s), transport=self._transport,
                              follow_redirects=False) as client:
                response = client.post(self._url.reveal(), json=alert.payload(),
                                       headers={"User-Agent": f"{SOURCE} alerts"})
        except Exception as exc:  # noqa: BLE001 - delivery trouble must never break the caller
            # httpx puts the URL in some messages: only the exception's type and the host go out.
            log.error("alert %s not delivered to webhook at %s: %s", alert.rule, self.host, type(exc).__name__)
            return False
        if response.status_code >= 300:
            log.error("alert %s not delivered to webhook at %s: HTTP %d", alert.rule, self.host,
                      response.status_code)
            return False
        log.info("alert %s delivered to webhook at %s", alert.rule, self.host)
        return True


@dataclass
class Delivery:
    alert: Alert
    sinks: dict[str, bool]  # sink name -> delivered


class Notifier:
    """Sends alerts to every sink; returns what was delivered where. Never raises for a sink."""

    def __init__(self, sinks: Sequence[Any] | None = None) -> None:
        self.sinks = list(sinks) if sinks is not None else [LogSink()]

    def __repr__(self) -> str:
        return f"Notifier({self.sinks!r})"

    def notify(self, alerts: Iterable[Alert | None]) -> list[Delivery]:
        deliveries = []
        for alert in alerts:
            if alert is None:
                continue
            result = {}
            for sink in self.sinks:
                try:
                    result[sink.name] = bool(sink.send(alert))
                except Exception as exc:  # noqa: BLE001 - a broken sink must not stop the others
                    log.error("alert sink %s failed: %s", getattr(sink, "name", sink), type(exc).__name__)
                    result[getattr(sink, "name", repr(sink))] = False
            deliveries.append(Delivery(alert, result))
        return deliveries


def notifier_from_settings(settings: Settings, *, timeout_s: float = WEBHOOK_TIMEOUT_S) -> Notifier:
    """The log sink, plus the webhook of ``MOODS_ALERT_WEBHOOK_URL`` when it is set."""
    sinks: list[Any] = [LogSink()]
    if settings.alert_webhook_url is not None:
        sinks.append(WebhookSink(settings.alert_webhook_url, timeout_s=timeout_s))
    return Notifier(sinks)
