"""The Dagster layer, one folder per concern (backfill, audit, repair, erase, live, lexicons,
alerts), each with its assets, jobs, sensors, schedules and checks; ``resources`` and
``partitions`` are shared. It stays thin: every decision is made by the engines in
``moods_pipeline.sync``. ``moods_pipeline.definitions`` puts it together."""
