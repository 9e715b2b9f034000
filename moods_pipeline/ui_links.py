"""Links into the Dagster UI (base ``MOODS_UI_URL``), for asset metadata, alerts and CLI output.

The shapes are the UI's own, read from its source (dagster-webserver 1.13): an asset partition is
``/assets/<key path>?view=partitions&partition=<key>``; a run is ``/runs/<run id>``; runs with a
tag are ``/runs?q[]=tag:<key>=<value>`` (the filter tokens, ``qs`` bracket format); a backfill is
``/runs/b/<backfill id>``. Imports nothing of the project.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

BATCH_TAG = "moods/batch"  # every run of one command-line invocation carries it


def _base(ui_url: str) -> str:
    return ui_url.rstrip("/")


def asset_url(ui_url: str, asset: str) -> str:
    return f"{_base(ui_url)}/assets/{quote(asset)}"


def asset_partition_url(ui_url: str, asset: str, partition: str) -> str:
    return f"{asset_url(ui_url, asset)}?{urlencode({'view': 'partitions', 'partition': partition})}"


def run_url(ui_url: str, run_id: str) -> str:
    return f"{_base(ui_url)}/runs/{quote(run_id)}"


def runs_with_tag_url(ui_url: str, key: str, value: str) -> str:
    return f"{_base(ui_url)}/runs?{urlencode({'q[]': f'tag:{key}={value}'})}"


def backfill_url(ui_url: str, backfill_id: str) -> str:
    return f"{_base(ui_url)}/runs/b/{quote(backfill_id)}"
