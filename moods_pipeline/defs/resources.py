"""Dagster resources: thin, typed wrappers that hand the plain modules their clients.

Every field defaults to None, meaning "the environment variable of docs/interface.md, else the local stack"
(`moods_pipeline.settings.load_settings`); definitions.py wires the variables with EnvVar
when they are set, so secrets show in the UI only as variable names.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import PrivateAttr

from moods_pipeline.atproto.client import PdsClient
from moods_pipeline.secret import Secret
from moods_pipeline.settings import Settings, load_settings
from moods_pipeline.storage.mongo import MongoStore, connect
from moods_pipeline.storage.results import ResultsStore
from moods_pipeline.sync.writer import WriteOptions


class MongoResource(dg.ConfigurableResource):
    """The application's MongoDB, the source of truth (MONGODB_CONNECTION_STRING, MONGODB_NAME)."""

    connection_string: Optional[str] = None
    database: Optional[str] = None

    _store: Optional[MongoStore] = PrivateAttr(default=None)

    def store(self) -> MongoStore:
        if self._store is None:
            if self.connection_string:
                uri, name = Secret(self.connection_string), self.database or "aesthetic"
            else:
                settings = load_settings()
                uri, name = settings.mongodb_connection_string, self.database or settings.mongodb_name
            self._store = MongoStore(connect(uri), name)
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
    user_concurrency: int = 8  # users synced at once within a run
    min_batch_interval_ms: int = 100  # the checklist's delay between batches, per user
    max_batch_writes: int = 200
    max_batch_bytes: int = 100_000
    max_retries: int = 5
    timeout_s: float = 30.0

    _client: Optional[PdsClient] = PrivateAttr(default=None)

    def base_url(self) -> str:
        return (self.url or load_settings().pds_url).rstrip("/")

    def client(self) -> PdsClient:
        if self._client is None:
            self._client = PdsClient(self.base_url(), timeout=self.timeout_s, max_retries=self.max_retries)
        return self._client

    def admin_secret(self) -> Secret | None:
        if self.admin_password:
            return Secret(self.admin_password)
        return load_settings().pds_admin_password

    def lexicon_credentials(self) -> tuple[str | None, Secret | None]:
        """The account that publishes lexicons (MOODS_LEXICON_ACCOUNT / MOODS_LEXICON_PASSWORD)."""
        if self.lexicon_account and self.lexicon_password:
            return self.lexicon_account, Secret(self.lexicon_password)
        settings = load_settings(connections=False)
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
    """The pipeline's own settings: MOODS_STATE_DIR, MOODS_NUKE_POLICY, MOODS_WHEN_TOLERANCE_MS, ..."""

    state_dir: Optional[str] = None
    nuke_policy: Optional[str] = None
    when_tolerance_ms: Optional[int] = None

    def settings(self) -> Settings:
        overrides = {
            "state_dir": Path(self.state_dir) if self.state_dir else None,
            "nuke_policy": self.nuke_policy,
            "when_tolerance_ms": self.when_tolerance_ms,
        }
        return replace(load_settings(connections=False), **{k: v for k, v in overrides.items() if v is not None})

    def results(self) -> ResultsStore:
        return ResultsStore(self.settings().state_dir)
