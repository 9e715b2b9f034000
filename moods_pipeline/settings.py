"""The settings of docs/interface.md, read from the environment, with the local stack as the default.

Every other module takes a ``Settings`` (or the Dagster resources built from the same
variables); nothing else reads ``os.environ`` for these names.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from moods_pipeline.secret import Secret

STACK_DIR = Path(".moods/stack")
STACK_STATE_FILE = "stack.json"
DEFAULT_STATE_DIR = Path(".moods/state")
DEFAULT_DAGSTER_HOME = Path(".moods/dagster_home")

NUKE_POLICIES = ("keep", "delete")


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
    state_dir: Path = DEFAULT_STATE_DIR
    catchup_grace_s: float = 120.0
    rollout: str = "all"
    alert_failure_rate_pct: float = 5.0
    alert_latency_p95_s: float = 300.0
    lexicon_account: str | None = None
    lexicon_password: Secret | None = field(default=None, repr=False)
    from_local_stack: bool = False


def read_local_stack(stack_dir: Path = STACK_DIR) -> dict | None:
    """The local stack's connection facts as ``stack up`` wrote them, or None if it is not up."""
    path = stack_dir / STACK_STATE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _secret_from_file(path: str) -> Secret:
    return Secret(Path(path).read_text().strip())


def _number(env: Mapping[str, str], name: str, default: float, kind=float):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {kind.__name__}") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative")
    return value


_ROLLOUT_RE = re.compile(r"^(all|off|\d{1,3}%|@[^,\s]+(,@[^,\s]+)*)$")


def load_settings(
    env: Mapping[str, str] | None = None, stack_dir: Path = STACK_DIR, connections: bool = True
) -> Settings:
    """Read docs/interface.md's variables; fall back to the running local stack for connection facts.

    With ``connections=False`` a missing MongoDB or PDS location is left empty instead of
    being an error (for callers that are handed their clients some other way).
    """
    env = os.environ if env is None else env
    stack = None
    if not env.get("MONGODB_CONNECTION_STRING") or not env.get("PDS_URL"):
        stack = read_local_stack(stack_dir)

    def from_env_or_stack(name: str, stack_key: str) -> str:
        if env.get(name):
            return env[name]
        if stack and stack.get(stack_key):
            return stack[stack_key]
        if not connections:
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
    if not _ROLLOUT_RE.match(rollout) or (rollout.endswith("%") and int(rollout[:-1]) > 100):
        raise ConfigError(f"MOODS_ROLLOUT={rollout!r} must be all, off, @a,@b or a percentage like 10%")

    return Settings(
        mongodb_connection_string=Secret(mongo_uri),
        mongodb_name=mongo_name,
        pds_url=pds_url,
        pds_admin_password=admin_password,
        nuke_policy=nuke_policy,
        when_tolerance_ms=int(_number(env, "MOODS_WHEN_TOLERANCE_MS", 1000, int)),
        state_dir=Path(env.get("MOODS_STATE_DIR") or DEFAULT_STATE_DIR),
        catchup_grace_s=_number(env, "MOODS_CATCHUP_GRACE_S", 120.0),
        rollout=rollout,
        alert_failure_rate_pct=_number(env, "MOODS_ALERT_FAILURE_RATE_PCT", 5.0),
        alert_latency_p95_s=_number(env, "MOODS_ALERT_LATENCY_P95_S", 300.0),
        lexicon_account=lexicon_account,
        lexicon_password=lexicon_password,
        from_local_stack=stack is not None and not env.get("MONGODB_CONNECTION_STRING"),
    )
