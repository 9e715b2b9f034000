"""Audit: the per-user ``mood_audit`` asset, ``audit_summary``, their checks and nightly schedules."""
