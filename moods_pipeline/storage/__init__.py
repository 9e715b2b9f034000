"""Where the pipeline keeps things: the application's MongoDB (``mongo``), and its own files under
MOODS_STATE_DIR: per-user backfill results (``results``), audits (``audits``) and the deletion
journal (``journal``). Plain Python, no Dagster."""
