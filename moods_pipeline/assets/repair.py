"""The repair job: fix what a fresh audit of the selected users finds (dry run unless `apply`).

An op-based job (``mood_repair_job``): a repair is an action on the users' repos and Mongo,
not a data set. Per user it reads the moods and every record afresh, reconciles, plans
(``sync.repair_plan.plan_repair``) and, with ``apply``, carries the plan out
(``sync.repair.execute_plan``) and audits the user again. The post-repair audit becomes the
user's latest audit (a ``mood_audit`` materialization and its Parquet file), so the UI and
``audit_summary`` show the result at once.

Config: ``users`` (``@handle``, DID or sub) or ``all_users``; ``apply``; ``delete_orphans``
(records carrying no id of any mood of the user); ``rewrite_legacy`` (``mongoId`` -> ``ref``).
Records of nuked moods are deleted only when ``MOOD_NUKE_POLICY`` is ``delete``.

Each user's plan (action, mood id, rkey; never text) goes to the op's output metadata (bounded)
and in full to ``MOODS_STATE_DIR/repair/runs/<run_id>.jsonl``.

The op holds a slot of the ``moods_pds_writer`` pool and the job carries the ``moods/pds-writer``
tag, so with deploy/dagster.yaml a repair never writes to the PDS beside a backfill or erase.
"""
# No `from __future__ import annotations`: Dagster reads the config and resource annotations.

from typing import List

import dagster as dg

from moods_pipeline import progress
from moods_pipeline.assets.audit import audit_event
from moods_pipeline.audit_store import AuditStore
from moods_pipeline.mongo_store import SelectorError
from moods_pipeline.partitions import USERS_PARTITION
from moods_pipeline.resources import MongoResource, PdsResource, PipelineSettingsResource
from moods_pipeline.sync import repair as engine
from moods_pipeline.sync.repair_plan import ACTIONS

MAX_PLAN_ROWS = 200  # plan rows in metadata; the run's jsonl file has them all


class RepairConfig(dg.Config):
    users: List[str] = []
    """Users to repair: @handle, DID or sub."""
    all_users: bool = False
    """Repair every user with moods (instead of `users`)."""
    apply: bool = False
    """Carry the plan out; without it the job only plans and reports (dry run)."""
    delete_orphans: bool = False
    """Also delete records that carry no id of any mood of the user."""
    rewrite_legacy: bool = False
    """Also rewrite records that carry the legacy mongoId instead of ref."""


def _plan_table(outcomes: list) -> dg.TableMetadataValue:
    rows = [
        dg.TableRecord({"user": o.label, "action": action, "mood_id": mood_id or "", "rkey": rkey or ""})
        for o in outcomes
        for action, mood_id, rkey in o.plan_rows
    ][:MAX_PLAN_ROWS]
    return dg.MetadataValue.table(
        records=rows,
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in ("user", "action", "mood_id", "rkey")]),
    )


PDS_WRITER_POOL = "moods_pds_writer"  # deploy/dagster.yaml: one PDS-writing step at a time
PDS_WRITER_TAG = {"moods/pds-writer": "true"}  # and one such queued run at a time


@dg.op(tags={"kind": "atproto"}, pool=PDS_WRITER_POOL)
def repair_moods(
    context: dg.OpExecutionContext,
    config: RepairConfig,
    mongo: MongoResource,
    pds: PdsResource,
    pipeline: PipelineSettingsResource,
):
    """Plan (and with `apply` carry out) the repair of the selected users from a fresh audit."""
    settings = pipeline.settings()
    store = mongo.store()
    audits = AuditStore(settings.state_dir)
    run_id = context.run.run_id
    if config.all_users:
        users = store.users_with_moods()
    else:
        if not config.users:
            raise dg.Failure(description="repair: name users in `users`, or set `all_users`")
        try:
            users = store.resolve(config.users)
        except SelectorError as exc:
            raise dg.Failure(description=f"repair: {exc}") from None
    mode = "applying" if config.apply else "dry run: planning"
    context.log.info(
        f"{mode} the repair of {len(users)} users (nuke policy {settings.nuke_policy}, "
        f"delete_orphans={config.delete_orphans}, rewrite_legacy={config.rewrite_legacy})"
    )

    def on_user_done(outcome: engine.RepairOutcome) -> None:
        audits.record_run_user(run_id, outcome.summary(), kind="repair")
        if outcome.audit_after is not None and outcome.audit_after.user.did:
            audits.save_latest(outcome.audit_after, run_id)
        progress.notify("user_done", label=outcome.label, ok=outcome.ok)
        planned = ", ".join(f"{a} {n}" for a, n in outcome.planned.items() if n) or "nothing to do"
        line = f"{outcome.label}: {planned}"
        if not outcome.dry_run:
            applied = ", ".join(f"{a} {n}" for a, n in outcome.applied.items() if n) or "nothing"
            line += f"; applied {applied}; {outcome.remaining_problems} problems left"
        if outcome.error:
            line += f"; FAILED: {outcome.error}"
        elif outcome.failed:
            line += f"; {len(outcome.failed)} actions failed, first: {outcome.failed[0][2]}"
        context.log.info(line)

    outcomes = engine.repair_users(
        users,
        store,
        pds.client(),
        apply=config.apply,
        nuke_policy=settings.nuke_policy,
        when_tolerance_ms=settings.when_tolerance_ms,
        delete_orphans=config.delete_orphans,
        rewrite_legacy=config.rewrite_legacy,
        concurrency=pds.user_concurrency,
        options=pds.write_options(),
        on_user_done=on_user_done,
    )

    # The post-repair audit is each repaired user's latest audit: show it on `mood_audit`.
    after = [o.audit_after for o in outcomes if o.audit_after is not None and o.audit_after.user.did]
    if after:
        known = set(context.instance.get_dynamic_partitions(USERS_PARTITION))
        new = sorted({a.user.did for a in after} - known)
        if new:
            context.instance.add_dynamic_partitions(USERS_PARTITION, new)
        for audit in after:
            yield audit_event(audit, dg.AssetKey("mood_audit"), extra={"source": dg.MetadataValue.text(f"repair run {run_id}")})

    total = engine.totals([o.summary() for o in outcomes], dry_run=not config.apply)
    metadata = {
        "dry_run": dg.MetadataValue.bool(not config.apply),
        "users": dg.MetadataValue.int(total["users"]),
        "users_failed": dg.MetadataValue.int(total["users_failed"]),
        "failed": dg.MetadataValue.int(total["failed"]),
        "remaining_problems": dg.MetadataValue.int(total["remaining_problems"]),
        **{f"planned.{a}": dg.MetadataValue.int(total["planned"][a]) for a in ACTIONS},
        **{f"applied.{a}": dg.MetadataValue.int(total["applied"][a]) for a in ACTIONS},
        "plan": _plan_table([o for o in outcomes if o.plan_rows]),
    }
    context.log.info(f"repair {'(dry run) ' if not config.apply else ''}totals: {total}")
    yield dg.Output(total, metadata=metadata)
    broken = [o for o in outcomes if o.error or o.failed]
    if broken:
        lines = [f"{o.label} ({o.did}): {o.error or f'{len(o.failed)} actions failed: {o.failed[0][2]}'}"
                 for o in broken[:50]]
        raise dg.Failure(description=f"{len(broken)} of {len(outcomes)} users not fully repaired:\n" + "\n".join(lines))


@dg.job(executor_def=dg.in_process_executor, tags=PDS_WRITER_TAG,
        description="Repair the selected users from a fresh audit (dry run unless `apply`).")
def mood_repair_job():
    repair_moods()
