"""The repair job: fix what a fresh audit of the selected users finds (dry run unless `apply`).

An op-based job (``mood_repair_job``): a repair is an action on the users' repos and Mongo,
not a data set. Per user it reads the moods and every record afresh, reconciles, plans
(``sync.repair_plan.plan_repair``) and, with ``apply``, carries the plan out
(``sync.repair.execute_plan``) and audits the user again. The post-repair audit becomes the
user's latest audit (a ``mood_audit`` materialization and its Parquet file), so the UI and
``audit_summary`` show the result at once.

Which users: the job is partitioned over the users partitions (by DID), so the UI's Launchpad
offers a partition picker (one user, or a backfill over many); or config ``users`` (``@handle``,
DID or sub), ``subs`` (exact subs, as the CLI passes them) or ``all_users``, which win over the
run's partitions. Typed options the Launchpad renders with their defaults: ``apply`` (False: a dry
run), ``delete_orphans`` (records carrying no id of any mood of the user), ``rewrite_legacy``
(``mongoId`` -> ``ref``). The plan is the op output's ``plan`` table (user, action, mood id, rkey)
in the run's metadata: read it in a dry run before launching again with ``apply``. Records of nuked moods are deleted (and the
pointers of nuked moods removed) only when ``MOODS_NUKE_POLICY`` is ``delete``.

Every delete is re-checked against fresh moods right before it is sent (a record that is a
live mood's record by then is kept and reported) and journaled under
``MOODS_STATE_DIR/journal/`` (command ``repair``, this run's id); see ``docs/runbook.md``.

Each user's plan (action, mood id, rkey; never text) goes to the op's output metadata (bounded)
and in full to ``MOODS_STATE_DIR/repair/runs/<run_id>.jsonl``, with the deletes kept.

One user's trouble never stops the others: a DID that is malformed, not a string, held by
several users or unknown to the PDS fails that user alone, with the reason. A DID Dagster cannot
take as a partition key (it forbids ``...`` and control characters; a DID may contain ``...``)
gets no ``mood_audit`` materialization, with the reason logged.

The op holds a slot of the ``moods_pds_writer`` pool and the job carries the ``moods/pds-writer``
tag, so with deploy/dagster.yaml a repair never writes to the PDS beside a backfill or erase.
"""
# No `from __future__ import annotations`: Dagster reads the config and resource annotations.

from typing import List

import dagster as dg

from moods_pipeline import progress
from moods_pipeline.defs.audit.assets import audit_event
from moods_pipeline.defs.partitions import PDS_WRITER_POOL, PDS_WRITER_TAGS, USERS_PARTITION, users_partitions
from moods_pipeline.defs.resources import MongoResource, PdsResource, PipelineSettingsResource
from moods_pipeline.storage.audits import AuditStore
from moods_pipeline.storage.journal import DeletionJournal
from moods_pipeline.storage.mongo import SelectorError
from moods_pipeline.sync import repair as engine
from moods_pipeline.sync.refusal import partition_key_problem
from moods_pipeline.sync.repair_plan import ACTIONS

MAX_PLAN_ROWS = 200  # plan rows in metadata; the run's jsonl file has them all
MAX_KEPT_ROWS = 200  # kept deletes in metadata; the run's jsonl file has them all

class RepairConfig(dg.Config):
    users: List[str] = []
    """Users to repair: @handle, DID or sub. Empty: the run's partitions (picked in the Launchpad)."""
    subs: List[str] = []
    """Users to repair by their exact sub (what the command line passes: a sub names one user
    whatever its DID, so a bad or shared DID fails that user alone)."""
    all_users: bool = False
    """Repair every user with moods (instead of `users`)."""
    apply: bool = False
    """Carry the plan out; without it the job only plans and reports (dry run)."""
    delete_orphans: bool = False
    """Also delete records that carry no id of any mood of the user."""
    rewrite_legacy: bool = False
    """Also rewrite records that carry the legacy mongoId instead of ref."""


def _string_table(rows: list[dict], columns: tuple[str, ...], limit: int) -> dg.TableMetadataValue:
    """A metadata table of string columns, at most ``limit`` rows (the run's files have them all)."""
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: row[c] or "" for c in columns}) for row in rows[:limit]],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns]),
    )


def _kept_table(outcomes: list) -> dg.TableMetadataValue:
    rows = [{"user": o.label, "action": action, "rkey": rkey, "why": why}
            for o in outcomes for action, rkey, why in o.kept]
    return _string_table(rows, ("user", "action", "rkey", "why"), MAX_KEPT_ROWS)


def _plan_table(outcomes: list) -> dg.TableMetadataValue:
    rows = [{"user": o.label, "action": action, "mood_id": mood_id, "rkey": rkey}
            for o in outcomes for action, mood_id, rkey in o.plan_rows]
    return _string_table(rows, ("user", "action", "mood_id", "rkey"), MAX_PLAN_ROWS)




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
    journal = DeletionJournal(settings.state_dir, command="repair", run_id=run_id)
    unknown: list = []  # outcomes of subs with no users document (nothing to repair)
    if config.all_users:
        users = store.users_with_moods()
    elif config.subs:
        users = []
        for sub in dict.fromkeys(config.subs):
            user = store.user_by_sub(sub)
            if user is None:
                unknown.append(engine.RepairOutcome(sub=sub, did=None, handle=None, dry_run=not config.apply,
                                                    error="no users document has this sub (any more)"))
            else:
                users.append(user)
    elif config.users:
        try:
            users = store.resolve(config.users)
        except SelectorError as exc:
            raise dg.Failure(description=f"repair: {exc}") from None
    elif context.has_partition_key or context.has_partition_key_range:
        dids = list(context.partition_keys)
        found = store.users_by_dids(dids)
        users = [found[did] for did in dids if did in found]
        unknown += [engine.RepairOutcome(sub=f"(no user for {did})", did=did, handle=None, dry_run=not config.apply,
                                         error="no Mongo user holds this DID any more")
                    for did in dids if did not in found]
    else:
        raise dg.Failure(description="repair: pick users (partitions) in the Launchpad, name them in `users` or "
                                     "`subs`, or set `all_users`")
    mode = "applying" if config.apply else "dry run: planning"
    context.log.info(
        f"{mode} the repair of {len(users)} users (nuke policy {settings.nuke_policy}, "
        f"delete_orphans={config.delete_orphans}, rewrite_legacy={config.rewrite_legacy})"
    )

    events: dict = {}  # sub -> the post-repair audit's event for `mood_audit`

    def on_user_done(outcome: engine.RepairOutcome) -> None:
        # Each step on its own: what fails is this user's, with the reason, and the run goes on.
        after = outcome.audit_after
        if after is not None and after.user.did:
            try:
                audits.save_latest(after, run_id)
                problem = partition_key_problem(after.user.did)
                if problem:
                    context.log.warning(f"{outcome.label}: no mood_audit materialization: {problem}")
                else:
                    events[outcome.sub] = audit_event(
                        after, dg.AssetKey("mood_audit"),
                        extra={"source": dg.MetadataValue.text(f"repair run {run_id}")},
                    )
            except Exception as exc:  # noqa: BLE001 - this user's report fails, not the run
                context.log.warning(f"{outcome.label}: its post-repair audit was not recorded: {exc}")
                outcome.error = outcome.error or f"post-repair audit not recorded: {type(exc).__name__}: {exc}"
        try:
            audits.record_run_user(run_id, outcome.summary(), kind="repair")
        except Exception as exc:  # noqa: BLE001
            context.log.error(f"{outcome.label}: its repair facts were not recorded: {exc}")
            outcome.error = outcome.error or f"repair facts not recorded: {type(exc).__name__}: {exc}"
        progress.notify("user_done", label=outcome.label, ok=outcome.ok)
        planned = ", ".join(f"{a} {n}" for a, n in outcome.planned.items() if n) or "nothing to do"
        line = f"{outcome.label}: {planned}"
        if not outcome.dry_run:
            applied = ", ".join(f"{a} {n}" for a, n in outcome.applied.items() if n) or "nothing"
            line += f"; applied {applied}; {outcome.remaining_problems} problems left"
        if outcome.kept:
            line += f"; kept {len(outcome.kept)} records the plan meant to delete"
        if outcome.error:
            line += f"; FAILED: {outcome.error}"
        elif outcome.failed:
            line += f"; {len(outcome.failed)} actions failed, first: {outcome.failed[0][2]}"
        context.log.info(line)
        for action, rkey, why in outcome.kept:
            context.log.info(f"{outcome.label}: KEPT rkey {rkey} ({action}): {why}")

    for outcome in unknown:
        on_user_done(outcome)

    outcomes = engine.repair_users(
        users,
        store,
        pds.client(),
        apply=config.apply,
        nuke_policy=settings.nuke_policy,
        when_tolerance_ms=settings.when_tolerance_ms,
        delete_orphans=config.delete_orphans,
        rewrite_legacy=config.rewrite_legacy,
        concurrency=pds.write_concurrency,
        options=pds.write_options(),
        on_user_done=on_user_done,
        journal=journal,
    ) + unknown

    # The post-repair audit is each repaired user's latest audit: show it on `mood_audit`.
    dids = {o.sub: o.audit_after.user.did for o in outcomes if o.sub in events}
    if events:
        try:
            known = set(context.instance.get_dynamic_partitions(USERS_PARTITION))
            new = sorted(set(dids.values()) - known)
            if new:
                context.instance.add_dynamic_partitions(USERS_PARTITION, new)
        except Exception as exc:  # noqa: BLE001 - the repair is done; only its display is lost
            context.log.warning(f"no mood_audit materializations: the users partitions could not be added: {exc}")
            events.clear()
        for outcome in outcomes:
            if outcome.sub in events:
                yield events[outcome.sub]

    total = engine.totals([o.summary() for o in outcomes], dry_run=not config.apply)
    metadata = {
        "dry_run": dg.MetadataValue.bool(not config.apply),
        "users": dg.MetadataValue.int(total["users"]),
        "users_failed": dg.MetadataValue.int(total["users_failed"]),
        "failed": dg.MetadataValue.int(total["failed"]),
        "kept": dg.MetadataValue.int(total["kept"]),
        "remaining_problems": dg.MetadataValue.int(total["remaining_problems"]),
        **{f"planned.{a}": dg.MetadataValue.int(total["planned"][a]) for a in ACTIONS},
        **{f"applied.{a}": dg.MetadataValue.int(total["applied"][a]) for a in ACTIONS},
        "plan": _plan_table([o for o in outcomes if o.plan_rows]),
    }
    if total["kept"]:
        metadata["kept_records"] = _kept_table([o for o in outcomes if o.kept])
    context.log.info(f"repair {'(dry run) ' if not config.apply else ''}totals: {total}")
    yield dg.Output(total, metadata=metadata)
    broken = [o for o in outcomes if o.error or o.failed]
    if broken:
        lines = [f"{o.label} ({o.did}): {o.error or f'{len(o.failed)} actions failed: {o.failed[0][2]}'}"
                 for o in broken[:50]]
        raise dg.Failure(description=f"{len(broken)} of {len(outcomes)} users not fully repaired:\n" + "\n".join(lines))


@dg.job(executor_def=dg.in_process_executor, tags=PDS_WRITER_TAGS, partitions_def=users_partitions,
        description="Repair the selected users (partitions, or config users) from a fresh audit; a dry run "
                    "unless `apply`: its plan is the run's `plan` table.")
def mood_repair_job():
    repair_moods()
