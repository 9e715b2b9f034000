"""Users as dynamic partitions, keyed by DID: one partition per syncable user."""

from __future__ import annotations

import dagster as dg

USERS_PARTITION = "users"
users_partitions = dg.DynamicPartitionsDefinition(name=USERS_PARTITION)

# Users per run in batched (multi-run) backfills: enough to keep the PDS busy with concurrent
# users, few enough that a failed run is cheap to retry.
PARTITIONS_PER_RUN = 50
