"""The Dagster names this project needs that Dagster does not export publicly, in one place to
check after a Dagster upgrade, each with why it is needed."""

# A run over a range of partitions carries these two tags; Dagster's backfill daemon sets them
# on the runs it launches. The command line (runs it launches in-process) and the nightly audit
# schedule (its run requests) set them the same way, so their runs look like the UI's. Dagster
# exports no public constant for them.
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

# The health sensor alerts on asset checks whose latest evaluation failed; the status of an
# evaluation record is this enum, which is not exported publicly.
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

# The incremental audit's runs span unchanged partitions only where a run's planned events are
# stored as one batch: Dagster batches them when DAGSTER_EVENT_BATCH_SIZE is above 0 and the event
# log has its own batch write (PostgreSQL); SQLite inherits the base class's one-by-one loop, which
# is how the command line tells them apart. The base class is not exported publicly.
from dagster._core.storage.event_log.base import EventLogStorage

# The local SQLite instance (defs/local_instance.py) reuses one pooled SQLAlchemy engine per
# database: Dagster's SQLite run and event-log storages build a new engine (and open and close a
# connection) for every stored event, so every event compiled its statements afresh. These are the modules whose `create_engine` they
# call; no public hook chooses the engine.
from dagster._core.storage.event_log.sqlite import sqlite_event_log as sqlite_event_log_module
from dagster._core.storage.runs.sqlite import sqlite_run_storage as sqlite_run_storage_module

__all__ = ["ASSET_PARTITION_RANGE_END_TAG", "ASSET_PARTITION_RANGE_START_TAG", "AssetCheckExecutionRecordStatus",
           "EventLogStorage", "sqlite_event_log_module", "sqlite_run_storage_module"]
