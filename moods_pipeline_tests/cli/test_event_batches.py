"""When the incremental audit may join changed users across wide gaps: only where Dagster writes
a run's planned events as one batch (its DAGSTER_EVENT_BATCH_SIZE set, and an event log with a
batch write of its own)."""

from __future__ import annotations

from types import SimpleNamespace

from moods_pipeline.cli.audit import _stores_event_batches
from moods_pipeline.defs.dagster_private import EventLogStorage, sqlite_event_log_module


class BatchingLog(sqlite_event_log_module.SqliteEventLogStorage):
    def store_event_batch(self, events):  # as PostgreSQL's storage overrides it
        raise AssertionError("not called here")


def instance_with(storage_class):
    return SimpleNamespace(event_log_storage=storage_class.__new__(storage_class))


def test_a_batch_write_counts_only_when_dagster_batches(monkeypatch):
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    assert not _stores_event_batches(instance_with(BatchingLog))
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "0")
    assert not _stores_event_batches(instance_with(BatchingLog))
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "100")
    assert _stores_event_batches(instance_with(BatchingLog))


def test_sqlite_writes_one_by_one_whatever_the_setting(monkeypatch):
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "100")
    sqlite = sqlite_event_log_module.SqliteEventLogStorage
    assert sqlite.store_event_batch is EventLogStorage.store_event_batch
    assert not _stores_event_batches(instance_with(sqlite))
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "not a number")
    assert not _stores_event_batches(instance_with(BatchingLog))
