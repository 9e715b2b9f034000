"""``users``: the user directory the UI shows, to find a user by handle.

One row per user with moods (``sync.directory``): handle, sub, DID, live moods, the latest
backfill outcome, the latest audit's problems; users with trouble first. Two views of it:

- ``directory``: markdown with links straight to the user's ``mood_backfill`` and ``mood_audit``
  partition pages (``MOODS_UI_URL/assets/<asset>?view=partitions&partition=<did>``), at most
  ``MAX_LINKED`` rows (the UI's table cells cannot hold links);
- ``users_table``: the same as typed table metadata (with the page URLs as text), at most
  ``MAX_ROWS`` rows.

For any one user, ``moods-pipeline whois SEL`` prints the same row and links. Re-materialized by
itself after any backfill or audit (``defs/automation.py``).
"""
# No `from __future__ import annotations`: Dagster reads the annotations at definition time.

import dagster as dg

from moods_pipeline import ui_links
from moods_pipeline.defs.audit.assets import mood_audit
from moods_pipeline.defs.automation import SUMMARY_CONDITION
from moods_pipeline.defs.backfill.assets import mood_backfill
from moods_pipeline.defs.resources import MongoResource, PipelineSettingsResource
from moods_pipeline.sync import directory as engine
from moods_pipeline.sync.refusal import partition_key_problem

MAX_ROWS = 1000
MAX_LINKED = 300

COLUMNS = dg.TableSchema(columns=[
    dg.TableColumn("handle", "string"),
    dg.TableColumn("sub", "string"),
    dg.TableColumn("did", "string"),
    dg.TableColumn("live_moods", "int"),
    dg.TableColumn("status", "string", description="syncable, no account, or refused with the reason"),
    dg.TableColumn("backfill", "string", description="the latest backfill outcome"),
    dg.TableColumn("audit", "string", description="the latest audit: in step, N problems, unreadable"),
    dg.TableColumn("audit_problems", "int"),
    dg.TableColumn("backfill_page", "string", description="the user's mood_backfill partition in the UI"),
    dg.TableColumn("audit_page", "string", description="the user's mood_audit partition in the UI"),
])


def partition_links(ui_url: str, did) -> dict:
    """The user's partition pages, when the DID is a partition key."""
    if not isinstance(did, str) or not did or partition_key_problem(did):
        return {}
    return {
        "backfill_page": ui_links.asset_partition_url(ui_url, "mood_backfill", did),
        "audit_page": ui_links.asset_partition_url(ui_url, "mood_audit", did),
    }


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def directory_markdown(rows: list, ui_url: str, limit: int = MAX_LINKED) -> str:
    lines = ["| user | sub | DID | live moods | latest backfill | latest audit | pages |", "|---|---|---|---|---|---|---|"]
    for row in rows[:limit]:
        links = partition_links(ui_url, row.did)
        pages = " · ".join(f"[{name}]({url})" for name, url in
                           (("backfill", links.get("backfill_page")), ("audit", links.get("audit_page"))) if url)
        lines.append(f"| {_cell(row.label)} | `{_cell(row.sub)}` | `{_cell(row.did or '-')}` | {row.live_moods} | "
                     f"{_cell(row.backfill)} | {_cell(row.audit)} | {pages or '-'} |")
    if len(rows) > limit:
        lines.append(f"\n{len(rows) - limit} more users (trouble first above); `moods-pipeline whois SEL` for anyone.")
    return "\n".join(lines)


def users_metadata(rows: list, ui_url: str) -> dict:
    records = []
    for row in rows[:MAX_ROWS]:
        record = {"handle": f"@{row.handle}" if row.handle else "", "sub": row.sub, "did": row.did or "",
                  "live_moods": row.live_moods, "status": row.status, "backfill": row.backfill,
                  "audit": row.audit, "audit_problems": row.audit_problems,  # None: no audit to count from
                  "backfill_page": None, "audit_page": None, **partition_links(ui_url, row.did)}
        records.append(dg.TableRecord(record))
    return {
        "users": dg.MetadataValue.int(len(rows)),
        "users_with_trouble": dg.MetadataValue.int(sum(1 for r in rows if r.trouble)),
        "users_never_backfilled": dg.MetadataValue.int(sum(1 for r in rows if r.backfill == engine.NEVER
                                                           and r.status == "syncable")),
        "users_never_audited": dg.MetadataValue.int(sum(1 for r in rows if r.audit == engine.NEVER
                                                        and r.status == "syncable")),
        "users_listed": dg.MetadataValue.int(min(len(rows), MAX_ROWS)),
        "directory": dg.MetadataValue.md(directory_markdown(rows, ui_url)),
        "users_table": dg.MetadataValue.table(records=records, schema=COLUMNS),
    }


@dg.asset(
    deps=[mood_backfill, mood_audit],
    group_name="users",
    kinds={"mongodb"},
    automation_condition=SUMMARY_CONDITION,
)
def users(context: dg.AssetExecutionContext, mongo: MongoResource, pipeline: PipelineSettingsResource):
    """The user directory: handle, sub, DID, live moods, latest backfill outcome, latest audit
    problems, with links to each user's partition pages; users with trouble first."""
    settings = pipeline.settings()
    rows = engine.directory(mongo.store(), settings.state_dir)
    context.log.info(f"user directory: {len(rows)} users, {sum(1 for r in rows if r.trouble)} with trouble")
    return dg.MaterializeResult(metadata=users_metadata(rows, settings.ui_url))


users_job = dg.define_asset_job(
    "users_job",
    selection=[users],
    executor_def=dg.in_process_executor,
    description="Rebuild the user directory.",
)
