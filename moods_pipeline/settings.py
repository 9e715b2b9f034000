"""The settings of docs/interface.md, read from the environment, with the local stack as the default.

This is the only module that reads ``os.environ`` for these names, and the only place each is
parsed and validated. Every other module takes a ``Settings``; the Dagster resources
(``moods_pipeline.defs.resources``) hand their fields to :func:`load_settings` as ``overrides``,
so a value bound in the resource config goes through the same parsing, defaults and errors.
"""

from __future__ import annotations

import json
import os
import re
from collections import ChainMap
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from upath import UPath

from moods_pipeline.secret import Secret

STACK_DIR = Path(".moods/stack")
STACK_STATE_FILE = "stack.json"
DEFAULT_STATE_DIR = Path(".moods/state")
DEFAULT_DAGSTER_HOME = Path(".moods/dagster_home")

NUKE_POLICIES = ("keep", "delete")

MONGODB_CONNECTION_STRING = "MONGODB_CONNECTION_STRING"
PDS_URL = "PDS_URL"
# The variables this module reads (docs/interface.md, "Settings"; DAGSTER_HOME is Dagster's own,
# and MOODS_TEST_MONGODB_URI belongs to the tests).
VARIABLES = (
    MONGODB_CONNECTION_STRING, "MONGODB_NAME", PDS_URL, "PDS_ADMIN_PASSWORD",
    "MOODS_NUKE_POLICY", "MOODS_WHEN_TOLERANCE_MS", "MOODS_STATE_DIR", "MOODS_CATCHUP_GRACE_S",
    "MOODS_CATCHUP_BATCH", "MOODS_CATCHUP_RUNS_PER_TICK", "MOODS_CATCHUP_BACKOFF_S",
    "MOODS_CATCHUP_MAX_ATTEMPTS", "MOODS_CATCHUP_MAX_AGE_S", "MOODS_ROLLOUT",
    "MOODS_ALERT_FAILURE_RATE_PCT", "MOODS_ALERT_LATENCY_P95_S", "MOODS_ALERT_WEBHOOK_URL",
    "MOODS_LEXICON_ACCOUNT", "MOODS_LEXICON_PASSWORD", "MOODS_UI_URL",
)
DEFAULT_UI_URL = "http://127.0.0.1:3000"


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    mongodb_connection_string: Secret
    mongodb_name: str
    pds_url: str
    pds_admin_password: Secret | None
    nuke_policy: str = "keep"
    when_tolerance_ms: int = 1000
    state_dir: UPath = DEFAULT_STATE_DIR  # a local path or an object-store URL: parse_state_dir
    catchup_grace_s: float = 120.0
    catchup_batch: int = 100
    catchup_runs_per_tick: int = 4
    catchup_backoff_s: float = 60.0
    catchup_max_attempts: int = 6
    catchup_max_age_s: float | None = None  # None: an unsynced mood of any age is caught up
    rollout: str = "all"
    alert_failure_rate_pct: float = 5.0
    alert_latency_p95_s: float = 300.0
    alert_webhook_url: Secret | None = field(default=None, repr=False)  # Slack-style URLs embed a token
    lexicon_account: str | None = None
    lexicon_password: Secret | None = field(default=None, repr=False)
    ui_url: str = DEFAULT_UI_URL  # the Dagster UI that links in alerts and CLI output point to
    from_local_stack: bool = False


def read_local_stack(stack_dir: Path = STACK_DIR) -> dict | None:
    """The local stack's connection facts as ``stack up`` wrote them, or None if it is not up."""
    path = stack_dir / STACK_STATE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _secret_from_file(path: str) -> Secret:
    return Secret(Path(path).read_text().strip())


def is_set(name: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether the variable has a value (definitions.py binds only those to the resources)."""
    env = os.environ if env is None else env
    return bool(env.get(name))


def parse_state_dir(value: str | os.PathLike) -> UPath:
    """A state dir as a path: a local path (or ``file://`` URL) stays a ``pathlib.Path`` (a local
    UPath); a URL (``s3://bucket/prefix``) becomes the fsspec-backed UPath of its protocol, with
    listings never cached (other processes and hosts write there too). Credentials and endpoint
    are the object store's own variables (for S3 those botocore reads), never read here."""
    if isinstance(value, UPath):
        if value.protocol in ("file", "local"):
            return UPath(value.path)
        return value
    text = os.fspath(value)
    if "://" not in text:
        return UPath(text)
    if text.startswith(("file://", "local://")):
        return UPath(UPath(text).path)
    protocol, parts = text.split("://", 1)[0], urlsplit(text)
    if "@" in parts.netloc:
        # The value is printed (journal, metadata): credentials belong in their own variables.
        raise ConfigError(f"MOODS_STATE_DIR={protocol}://...: credentials in the URL are refused; "
                          "use the object store's variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
    if protocol in ("s3", "s3a") and not parts.netloc:
        raise ConfigError(f"MOODS_STATE_DIR={text!r} names no bucket (s3://bucket/prefix)")
    try:
        # Another process may add objects at any time: a cached listing would hide them.
        return UPath(text.rstrip("/"), use_listings_cache=False)
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"MOODS_STATE_DIR={text!r}: {exc}") from None


def read_state_dir(env: Mapping[str, str] | None = None) -> UPath:
    """``MOODS_STATE_DIR`` alone, for commands that need nothing else (the journal): another
    setting that is wrong, or a missing MongoDB or PDS, does not stop them."""
    env = os.environ if env is None else env
    return parse_state_dir(env.get("MOODS_STATE_DIR") or DEFAULT_STATE_DIR)


def _number(env: Mapping[str, str], name: str, default, kind=float, minimum: int = 0):
    raw = env.get(name)
    if raw is None or str(raw).strip() == "":
        return default
    raw = str(raw).strip()
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {kind.__name__}") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}" if minimum else
                          f"{name}={raw!r} must not be negative")
    return value


_PERCENT_RE = re.compile(r"^(\d{1,3})%$")
_HANDLE_RE = re.compile(r"^@[^,\s@]+$")


def rollout_parts(spec: str | None) -> tuple[str, int, frozenset[str]]:
    """``MOODS_ROLLOUT`` parsed: (mode, percent, bare lower-case handles); the one grammar.

    ``mode`` is all | off | handles | percent. ``sync.rollout.Rollout`` is built from these
    parts; anything else is a ConfigError naming the variable.
    """
    text = (spec or "all").strip()
    lowered = text.lower()
    if lowered == "all":
        return "all", 100, frozenset()
    if lowered == "off":
        return "off", 0, frozenset()
    match = _PERCENT_RE.match(text)
    if match:
        percent = int(match.group(1))
        if percent > 100:
            raise ConfigError(f"MOODS_ROLLOUT={spec!r}: a percentage must be 0% to 100%")
        return "percent", percent, frozenset()
    parts = [p.strip() for p in text.split(",")]
    if parts and all(_HANDLE_RE.match(p) for p in parts):
        return "handles", 100, frozenset(p[1:].lower() for p in parts)
    raise ConfigError(f"MOODS_ROLLOUT={spec!r} must be all, off, @a,@b or a percentage like 10%")


def _webhook_url(env: Mapping[str, str]) -> Secret | None:
    raw = (env.get("MOODS_ALERT_WEBHOOK_URL") or "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The value is a secret (Slack-style URLs embed a token): the message names the variable only.
        raise ConfigError("MOODS_ALERT_WEBHOOK_URL must be an http:// or https:// URL")
    return Secret(raw)


def _ui_url(env: Mapping[str, str]) -> str:
    raw = (env.get("MOODS_UI_URL") or "").strip() or DEFAULT_UI_URL
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"MOODS_UI_URL={raw!r} must be an http:// or https:// URL")
    return raw.rstrip("/")


def load_settings(
    env: Mapping[str, str] | None = None,
    stack_dir: Path = STACK_DIR,
    connections: bool | Collection[str] = True,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Read docs/interface.md's variables; fall back to the running local stack for connection facts.

    ``connections`` says which locations must be found: True both MongoDB and the PDS, False
    neither (a missing one is left empty, for callers that are handed their clients some other
    way), or the variable names of those that must (``{"MONGODB_CONNECTION_STRING"}``).
    ``overrides`` (variable name -> value; None meaning "not given") win over ``env``: the
    Dagster resources pass their fields so, parsed exactly as the environment would be.
    """
    env = os.environ if env is None else env
    given = {name: str(value) for name, value in (overrides or {}).items() if value is not None}
    if given:
        env = ChainMap(given, env)
    if isinstance(connections, bool):
        required = {MONGODB_CONNECTION_STRING, PDS_URL} if connections else set()
    else:
        required = set(connections)
    stack = None
    if not env.get("MONGODB_CONNECTION_STRING") or not env.get("PDS_URL"):
        stack = read_local_stack(stack_dir)

    def from_env_or_stack(name: str, stack_key: str) -> str:
        if env.get(name):
            return env[name]
        if stack and stack.get(stack_key):
            return stack[stack_key]
        if name not in required:
            return ""
        raise ConfigError(
            f"{name} is not set and the local stack is not running "
            f"(start it with `moods-pipeline stack up`, or set {name})"
        )

    mongo_uri = from_env_or_stack("MONGODB_CONNECTION_STRING", "mongodb_uri")
    pds_url = from_env_or_stack("PDS_URL", "pds_url").rstrip("/")
    if pds_url and not pds_url.startswith(("http://", "https://")):
        raise ConfigError(f"PDS_URL={pds_url!r} must start with http:// or https://")
    mongo_name = env.get("MONGODB_NAME") or (stack or {}).get("mongodb_name") or "aesthetic"

    admin_password: Secret | None = None
    if env.get("PDS_ADMIN_PASSWORD"):
        admin_password = Secret(env["PDS_ADMIN_PASSWORD"])
    elif stack and stack.get("admin_password_file"):
        admin_password = _secret_from_file(stack["admin_password_file"])

    lexicon_account = env.get("MOODS_LEXICON_ACCOUNT") or (stack or {}).get("lexicon_account")
    lexicon_password: Secret | None = None
    if env.get("MOODS_LEXICON_PASSWORD"):
        lexicon_password = Secret(env["MOODS_LEXICON_PASSWORD"])
    elif stack and stack.get("lexicon_password_file"):
        lexicon_password = _secret_from_file(stack["lexicon_password_file"])

    nuke_policy = env.get("MOODS_NUKE_POLICY") or "keep"
    if nuke_policy not in NUKE_POLICIES:
        raise ConfigError(f"MOODS_NUKE_POLICY={nuke_policy!r} must be one of {', '.join(NUKE_POLICIES)}")
    rollout = (env.get("MOODS_ROLLOUT") or "all").strip()
    rollout_parts(rollout)  # refused here, once, naming the variable

    return Settings(
        mongodb_connection_string=Secret(mongo_uri),
        mongodb_name=mongo_name,
        pds_url=pds_url,
        pds_admin_password=admin_password,
        nuke_policy=nuke_policy,
        when_tolerance_ms=int(_number(env, "MOODS_WHEN_TOLERANCE_MS", 1000, int)),
        state_dir=read_state_dir(env),
        catchup_grace_s=_number(env, "MOODS_CATCHUP_GRACE_S", 120.0),
        catchup_batch=_number(env, "MOODS_CATCHUP_BATCH", 100, int, minimum=1),
        catchup_runs_per_tick=_number(env, "MOODS_CATCHUP_RUNS_PER_TICK", 4, int, minimum=1),
        catchup_backoff_s=_number(env, "MOODS_CATCHUP_BACKOFF_S", 60.0),
        catchup_max_attempts=_number(env, "MOODS_CATCHUP_MAX_ATTEMPTS", 6, int, minimum=1),
        catchup_max_age_s=_number(env, "MOODS_CATCHUP_MAX_AGE_S", None),
        rollout=rollout,
        alert_failure_rate_pct=_number(env, "MOODS_ALERT_FAILURE_RATE_PCT", 5.0),
        alert_latency_p95_s=_number(env, "MOODS_ALERT_LATENCY_P95_S", 300.0),
        alert_webhook_url=_webhook_url(env),
        lexicon_account=lexicon_account,
        lexicon_password=lexicon_password,
        ui_url=_ui_url(env),
        from_local_stack=stack is not None and not env.get("MONGODB_CONNECTION_STRING"),
    )
