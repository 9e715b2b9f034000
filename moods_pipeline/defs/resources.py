"""Dagster resources: thin, typed wrappers that hand the plain modules their settings and clients.

Each setting field holds the text of one variable of docs/interface.md ("Settings"), named in
the ``*_VARIABLES`` tables below; None means "not bound here: the environment, else the
default or the local stack". definitions.py binds every variable that is set with
``dg.EnvVar``, so the UI's resource page shows what a deployment runs with, and secrets only
as variable names. The fields become a ``Settings`` in one way: ``load_settings(overrides=...)``,
the parsing, defaults and errors (a ConfigError naming the variable) of ``moods_pipeline.settings``.
Nothing connects before a resource is used: pymongo connects lazily, the PDS client on its
first request.
"""

from __future__ import annotations

from typing import Optional

import dagster as dg
from pydantic import PrivateAttr

from moods_pipeline.atproto.client import PdsClient
from moods_pipeline.secret import Secret
from moods_pipeline.settings import MONGODB_CONNECTION_STRING, PDS_URL, Settings, load_settings
from moods_pipeline.storage.mongo import MongoStore, open_store
from moods_pipeline.storage.results import ResultsStore
from moods_pipeline.sync.writer import WriteOptions

# resource field -> the variable it holds (docs/interface.md, "Settings")
MONGO_VARIABLES = {
    "connection_string": MONGODB_CONNECTION_STRING,
    "database": "MONGODB_NAME",
}
PDS_VARIABLES = {
    "url": PDS_URL,
    "admin_password": "PDS_ADMIN_PASSWORD",
    "lexicon_account": "MOODS_LEXICON_ACCOUNT",
    "lexicon_password": "MOODS_LEXICON_PASSWORD",
}
PIPELINE_VARIABLES = {
    "state_dir": "MOODS_STATE_DIR",
    "nuke_policy": "MOODS_NUKE_POLICY",
    "when_tolerance_ms": "MOODS_WHEN_TOLERANCE_MS",
    "rollout": "MOODS_ROLLOUT",
    "catchup_grace_s": "MOODS_CATCHUP_GRACE_S",
    "catchup_batch": "MOODS_CATCHUP_BATCH",
    "catchup_runs_per_tick": "MOODS_CATCHUP_RUNS_PER_TICK",
    "catchup_backoff_s": "MOODS_CATCHUP_BACKOFF_S",
    "catchup_max_attempts": "MOODS_CATCHUP_MAX_ATTEMPTS",
    "catchup_max_age_s": "MOODS_CATCHUP_MAX_AGE_S",
    "alert_failure_rate_pct": "MOODS_ALERT_FAILURE_RATE_PCT",
    "alert_latency_p95_s": "MOODS_ALERT_LATENCY_P95_S",
    "alert_webhook_url": "MOODS_ALERT_WEBHOOK_URL",
    "ui_url": "MOODS_UI_URL",
}


def _settings_of(resource: dg.ConfigurableResource, variables: dict[str, str], connections) -> Settings:
    """The Settings with this resource's fields in place of the variables they hold."""
    overrides = {variable: getattr(resource, name) for name, variable in variables.items()}
    return load_settings(connections=connections, overrides=overrides)


class MongoResource(dg.ConfigurableResource):
    """The application's MongoDB, the source of truth (MONGODB_CONNECTION_STRING, MONGODB_NAME)."""

    connection_string: Optional[str] = None
    database: Optional[str] = None

    _store: Optional[MongoStore] = PrivateAttr(default=None)

    def settings(self) -> Settings:
        return _settings_of(self, MONGO_VARIABLES, connections={MONGODB_CONNECTION_STRING})

    def store(self) -> MongoStore:
        if self._store is None:
            self._store = open_store(self.settings())
        return self._store

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._store is not None:
            self._store.client.close()
            self._store = None


class PdsResource(dg.ConfigurableResource):
    """The platform's PDS (PDS_URL), reached over XRPC; one client and its sessions per run."""

    url: Optional[str] = None
    admin_password: Optional[str] = None
    lexicon_account: Optional[str] = None
    lexicon_password: Optional[str] = None
    user_concurrency: int = 16  # users in flight within a run (reading, logging in, writing)
    # Of those, users writing at once (backfill), and users a repair or catch-up run syncs at
    # once: the platform's PDS gave HTTP 500s at 50 concurrent creates, while 10 worked.
    write_concurrency: int = 8
    min_batch_interval_ms: int = 100  # the checklist's delay between batches, per user
    max_batch_writes: int = 200
    max_batch_bytes: int = 100_000
    max_retries: int = 5
    timeout_s: float = 30.0

    _client: Optional[PdsClient] = PrivateAttr(default=None)

    def settings(self, need_url: bool = True) -> Settings:
        return _settings_of(self, PDS_VARIABLES, connections={PDS_URL} if need_url else False)

    def base_url(self) -> str:
        return self.settings().pds_url

    def client(self) -> PdsClient:
        if self._client is None:
            self._client = PdsClient(self.base_url(), timeout=self.timeout_s, max_retries=self.max_retries)
        return self._client

    def admin_secret(self) -> Secret | None:
        return self.settings().pds_admin_password

    def lexicon_credentials(self) -> tuple[str | None, Secret | None]:
        """The account that publishes lexicons (MOODS_LEXICON_ACCOUNT / MOODS_LEXICON_PASSWORD)."""
        settings = self.settings(need_url=False)
        return settings.lexicon_account, settings.lexicon_password

    def write_options(self) -> WriteOptions:
        return WriteOptions(
            max_batch_writes=self.max_batch_writes,
            max_batch_bytes=self.max_batch_bytes,
            min_batch_interval_s=self.min_batch_interval_ms / 1000,
        )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class PipelineSettingsResource(dg.ConfigurableResource):
    """The pipeline's own settings (MOODS_STATE_DIR, MOODS_NUKE_POLICY, MOODS_ROLLOUT, the catch-up
    tuning, the alert thresholds and webhook, ...): each field the variable's text, parsed by
    ``moods_pipeline.settings``."""

    state_dir: Optional[str] = None
    nuke_policy: Optional[str] = None
    when_tolerance_ms: Optional[str] = None
    rollout: Optional[str] = None
    catchup_grace_s: Optional[str] = None
    catchup_batch: Optional[str] = None
    catchup_runs_per_tick: Optional[str] = None
    catchup_backoff_s: Optional[str] = None
    catchup_max_attempts: Optional[str] = None
    catchup_max_age_s: Optional[str] = None
    alert_failure_rate_pct: Optional[str] = None
    alert_latency_p95_s: Optional[str] = None
    alert_webhook_url: Optional[str] = None  # a secret: bind it with EnvVar, never a literal
    ui_url: Optional[str] = None  # the Dagster UI's base URL, for links in metadata and alerts

    def settings(self) -> Settings:
        return _settings_of(self, PIPELINE_VARIABLES, connections=False)

    def results(self) -> ResultsStore:
        return ResultsStore(self.settings().state_dir)
