"""The local Dagster instance directory (``DAGSTER_HOME``, default ``.moods/dagster_home/``)."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

DAGSTER_YAML = """\
# Written once by moods-pipeline (`stack up`, `demo`); edit freely, it is never overwritten.
# Runs, event logs and schedules in SQLite files under $DAGSTER_HOME (storage/, history/,
# schedules/). For a shared deployment use `storage: postgres:` (dagster-postgres is installed).
storage:
  sqlite:
    base_dir:
      env: DAGSTER_HOME
telemetry:
  enabled: false
nux:
  enabled: false
"""


def ensure_dagster_home(path: Path) -> Path:
    """Create ``path`` with a ``dagster.yaml`` (SQLite storage, telemetry off) unless it has one.

    Returns the absolute path, the value for ``DAGSTER_HOME``.
    """
    home = Path(path).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
        logger.info("wrote %s", config)
    return home
