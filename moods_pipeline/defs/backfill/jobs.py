"""Jobs over the assets; the CLI runs these in-process so its runs appear in the UI."""

from __future__ import annotations

import dagster as dg

from moods_pipeline.defs.backfill.assets import backfill_summary, mood_backfill
from moods_pipeline.defs.partitions import PDS_WRITER_TAGS

backfill_job = dg.define_asset_job(
    "mood_backfill_job",
    selection=[mood_backfill],
    executor_def=dg.in_process_executor,
    tags=PDS_WRITER_TAGS,
    description="Backfill the selected users (partitions) into their repos.",
)

backfill_summary_job = dg.define_asset_job(
    "backfill_summary_job",
    selection=[backfill_summary],
    executor_def=dg.in_process_executor,
    description="Recompute the migration stats over every user's latest backfill result.",
)
