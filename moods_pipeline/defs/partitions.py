"""Users as dynamic partitions, keyed by DID (one partition per syncable user), how runs cut them,
and the pool and tag that keep PDS writers one at a time."""

from __future__ import annotations

import dagster as dg

USERS_PARTITION = "users"
users_partitions = dg.DynamicPartitionsDefinition(name=USERS_PARTITION)

# deploy/dagster.yaml gives this pool one slot: one PDS-writing step at a time, whichever job it
# belongs to (a backfill, a repair, an erase) ...
PDS_WRITER_POOL = "moods_pds_writer"
# ... and lets one queued run with this tag write to the PDS at a time.
PDS_WRITER_TAGS = {"moods/pds-writer": "true"}

# Users per run in batched (multi-run) backfills: enough to keep the PDS busy with concurrent
# users, few enough that a failed run is cheap to retry.
PARTITIONS_PER_RUN = 50


def partition_runs(ordered_keys: list[str], selected: set[str], per_run: int = PARTITIONS_PER_RUN) -> list[list[str]]:
    """The selected keys cut into runs of at most ``per_run`` keys that are contiguous in
    ``ordered_keys`` (the partitions' own order), since a run names its partitions as a key range."""
    if per_run < 1:
        raise ValueError("per_run must be at least 1")
    runs: list[list[str]] = []
    current: list[str] = []
    for key in ordered_keys:
        if key in selected and len(current) < per_run:
            current.append(key)
            continue
        if current:
            runs.append(current)
        current = [key] if key in selected else []
    if current:
        runs.append(current)
    return runs
