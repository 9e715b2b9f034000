"""Sensors: keep the users partitions in step with Mongo."""


import hashlib

import dagster as dg

from moods_pipeline.defs.partitions import USERS_PARTITION, users_partitions
from moods_pipeline.defs.resources import MongoResource
from moods_pipeline.sync.refusal import refusal


def new_partition_keys(syncable_dids: list[str], existing: list[str]) -> list[str]:
    known = set(existing)
    return sorted({did for did in syncable_dids if did not in known})


@dg.sensor(minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING)
def users_partition_sensor(context: dg.SensorEvaluationContext, mongo: MongoResource):
    """Adds a partition for every syncable user (DID) that has none yet. Idempotent: it adds
    only what is missing; the cursor (a digest of the syncable set) lets unchanged ticks skip."""
    users = mongo.store().syncable_users()
    # A refused DID (malformed, held by several users, or with "..." that Dagster keeps for key
    # ranges) is no partition: runs report such users as failed, with the reason.
    dids = sorted({u.did for u in users if u.did and not refusal(u)})
    digest = hashlib.sha256("\n".join(dids).encode()).hexdigest()[:16]
    if context.cursor == digest:
        return dg.SkipReason(f"{len(dids)} syncable users, unchanged since the last tick")
    new = new_partition_keys(dids, context.instance.get_dynamic_partitions(USERS_PARTITION))
    context.log.info(f"{len(dids)} syncable users; adding {len(new)} partitions")
    return dg.SensorResult(
        dynamic_partitions_requests=[users_partitions.build_add_request(new)] if new else [],
        cursor=digest,
    )
