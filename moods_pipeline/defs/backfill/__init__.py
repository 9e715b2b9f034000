"""Backfill: the per-user ``mood_backfill`` asset, ``backfill_summary``, their jobs, and the sensor
that adds a partition per syncable user."""
