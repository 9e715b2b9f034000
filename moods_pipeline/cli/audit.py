"""`moods-pipeline audit` and `moods-pipeline repair` (docs/interface.md "Command line").

``register(subparsers)`` adds both commands to the parser of ``cli.app``. Each runs the Dagster jobs
in-process against the configured instance (DAGSTER_HOME), so its runs appear in the UI:

- ``audit SELECTOR [--full] [--check-logins] [--json]``: ``mood_audit_job`` over the selected
  users' partitions in batched runs (at most 50 users a run), then ``audit_summary_job``. Without
  ``--full`` (and ``--check-logins``), only users whose repo rev or commit CID or Mongo
  fingerprint moved since their receipt are run (``sync.incremental``); the others count with
  their receipts' figures (``users_unchanged``). Exit 1 when any problem, unreadable user or
  (with ``--check-logins``) broken login is found, unchanged users' included.
- ``repair SELECTOR [--apply] [--delete-orphans] [--rewrite-legacy] [--json]``: ``mood_repair_job``
  in runs of at most 50 users, each from a fresh audit; a dry run unless ``--apply`` (prints the
  plan); after ``--apply`` the users are audited again and ``audit_summary_job`` runs. Exit 1
  for a non-empty plan in a dry run, or anything left after ``--apply``. Deletes the re-check
  right before sending refused are printed as KEPT lines (and counted as ``kept``); a user whose
  DID is malformed, not a string or held by several users fails alone, with the reason.

With ``--json`` stdout carries exactly one JSON object (keys of docs/interface.md plus extras);
everything else goes to stderr. Exit 2 for bad usage or configuration.
"""

from __future__ import annotations

import json
import os
import time

from moods_pipeline.cli.common import (
    EXIT_OK,
    EXIT_SOMETHING_LEFT,
    add_selector,
    dagster_instance,
    open_store,
    quiet_run_config,
    run_job,
    run_job_over_partitions,
    say,
    select_for_run,
    select_users,
    users_without_result,
)
from moods_pipeline.settings import load_settings

AUDIT_JOB = "mood_audit_job"
AUDIT_SUMMARY_JOB = "audit_summary_job"
REPAIR_JOB = "mood_repair_job"
USERS_PER_RUN = 50
MAX_LINES_PER_USER = 20  # plan lines printed per user (all of them are in the run's metadata)


def register(subparsers) -> None:
    p = subparsers.add_parser("audit", help="compare Mongo with every selected user's repo (read-only)")
    add_selector(p)
    p.add_argument("--check-logins", action="store_true",
                   help="also try each user's stored credentials (paced) and report broken ones; checks everyone")
    p.add_argument("--full", action="store_true",
                   help="check every selected user, even those whose repo and moods did not move since their last audit")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)

    p = subparsers.add_parser("repair", help="fix what a fresh audit finds (dry run unless --apply)")
    add_selector(p)
    p.add_argument("--apply", action="store_true", help="carry the plan out (default: print it, write nothing)")
    p.add_argument("--delete-orphans", action="store_true",
                   help="also delete records that carry no id of any mood of the user")
    p.add_argument("--rewrite-legacy", action="store_true", help="also rewrite records carrying mongoId to ref")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_repair)


# -- audit ---------------------------------------------------------------------------------


def _stores_event_batches(instance) -> bool:
    """Whether a run's planned events are written as one batch, which decides how wide a gap an
    incremental run may span. Dagster batches them only when ``DAGSTER_EVENT_BATCH_SIZE`` is set
    above 0 and the event log has a batch write of its own (PostgreSQL has; SQLite inherits the
    base class's one-by-one loop)."""
    from moods_pipeline.defs.dagster_private import EventLogStorage

    try:
        if int(os.environ.get("DAGSTER_EVENT_BATCH_SIZE", "0") or 0) <= 0:
            return False
        return type(instance.event_log_storage).store_event_batch is not EventLogStorage.store_event_batch
    except Exception:  # noqa: BLE001 - unknown storage or setting: assume the slow case
        return False


def run_audit(instance, settings, syncable: list, without_account: list, *, check_logins: bool = False,
              verbose: bool = False, defs=None, summary: bool = True, on_user_done=None,
              refused: list | None = None, store=None, full: bool = False,
              pds=None) -> tuple[dict, list[dict]]:
    """Audit the users through the Dagster jobs (as the CLI does); (totals, per-user facts).

    ``refused``: (user, reason) of users whose stored account is refused (``refusal.py``):
    never partitions, each unreadable with its reason, counted with the others.
    ``full``: run every user; otherwise (and without ``check_logins``) only the users that
    changed since their receipts, the others counted from their receipts.
    The CLI and the benchmark's ``pipeline`` measurement both run this."""
    from moods_pipeline import progress
    from moods_pipeline.storage.audits import AuditStore
    from moods_pipeline.storage.receipts import ReceiptStore
    from moods_pipeline.sync import audit as engine
    from moods_pipeline.sync import incremental

    started = time.monotonic()
    receipts = ReceiptStore(settings.state_dir)
    selection = None
    to_run = list(syncable)
    if not full and not check_logins and syncable:
        from moods_pipeline.atproto.client import PdsClient

        store = store or open_store(settings)
        basis = incremental.audit_basis(nuke_policy=settings.nuke_policy, when_tolerance_ms=settings.when_tolerance_ms)
        client = pds or PdsClient(settings.pds_url)
        try:
            selection = incremental.select_changed(syncable, store, client, receipts, basis)
        finally:
            if pds is None:
                client.close()
        to_run = selection.changed
        receipts.save_pass(dict(selection.facts(), source="moods-pipeline audit"))
    elif syncable:
        receipts.save_pass(dict(incremental.everyone(syncable, "--full" if full else "--check-logins").facts("full"),
                                source="moods-pipeline audit"))
    selected_at = time.monotonic()
    cut, only = None, None
    if selection is not None and to_run:
        # Changed users far apart share runs that leave the unchanged ones between them alone.
        changed = [u.did for u in to_run]
        # Joined across gaps only users readable last time whose repo is active and listed now.
        mergeable = [did for did in changed if selection.reasons.get(did, "").startswith(incremental.READABLE_CHANGES)]

        max_gap = None if _stores_event_batches(instance) else incremental.UNBATCHED_MAX_GAP

        def cut(ordered: list[str]) -> list[list[str]]:
            return incremental.merged_runs(ordered, changed, mergeable, max_gap=max_gap)

        only = changed
    stop = progress.listen_users_done(on_user_done)
    try:
        for summary in selection.unchanged_summaries() if selection else []:
            progress.notify("user_done", label=f"@{summary['handle']}" if summary.get("handle") else summary["did"],
                            ok=not summary.get("problems"))
        run_ids = run_job_over_partitions(
            instance, AUDIT_JOB, [u.did for u in to_run],
            # full: the users were chosen here already (changed, or --full); the asset need not
            # select again.
            quiet_run_config({"mood_audit": {"config": {"check_logins": check_logins, "full": True, "only": only}}},
                             verbose),
            defs=defs, runs=cut,
        ) if to_run else []
    finally:
        stop()
    audits = AuditStore(settings.state_dir)
    summaries = [s for run_id in run_ids for s in audits.load_run(run_id)]
    summaries += [{"did": user.did, "sub": user.sub, "handle": user.handle, "unreadable": reason,
                   "by_status": {}, "problems": 0, "moods_live": 0, "moods_valid_live": 0}
                  for user, reason in users_without_result(to_run, (s.get("did") for s in summaries), "audit")]
    if selection is not None:
        summaries += selection.unchanged_summaries()
    if refused:
        store = store or open_store(settings)
        summaries += [engine.refused_user(user, reason, store).summary() for user, reason in refused]
    summaries += [{"did": u.did, "sub": u.sub, "handle": u.handle, "no_account": True} for u in without_account]
    total = engine.totals(summaries)
    total["users_refused"] = len(refused or [])
    # Refused users are counted apart: neither compared afresh nor vouched for by a receipt.
    total["users_checked"] = max(0, total["users_checked"] - total["users_refused"])
    total["seconds_selection"] = round(selected_at - started, 3)
    audited_at = time.monotonic()
    if summary and (syncable or refused):
        result = run_job(instance, AUDIT_SUMMARY_JOB, quiet_run_config({}, verbose), defs=defs)
        facts = audits.load_summary() if result.success else None
        if facts is not None:
            total["orphan_repos"] = len(facts.get("orphan_repos") or [])
    total["seconds"] = round(time.monotonic() - started, 3)
    total["seconds_summary"] = round(time.monotonic() - audited_at, 3)
    total["runs"] = len(run_ids)
    return total, summaries


def _print_audit(total: dict, summaries: list[dict], lines_only: bool = False) -> None:
    for s in summaries:
        who = f"@{s['handle']} ({s.get('did') or s.get('sub')})" if s.get("handle") else (s.get("did") or s.get("sub"))
        if s.get("no_account"):
            continue
        if s.get("unreadable"):
            say(f"UNREADABLE {who}: {s['unreadable']}")
        elif int(s.get("problems", 0)) > 0:
            counts = ", ".join(f"{n} {k}" for k, n in (s.get("problem_counts") or {}).items())
            say(f"PROBLEMS {who}: {s['problems']} ({counts})")
        if s.get("login") not in (None, "ok"):
            say(f"LOGIN BROKEN {who}: {s['login']}")
    if lines_only:
        return
    say("audit summary:")
    for key, value in total.items():
        if key == "by_status":
            for status, n in value.items():
                say(f"  {'by_status.' + status:>26}: {n}")
        else:
            say(f"  {key:>26}: {value}")


def cmd_audit(args) -> int:
    from moods_pipeline import progress
    from moods_pipeline.sync import audit as engine

    settings = load_settings()
    store = open_store(settings)
    syncable, without_account, refused = select_for_run(store, args)
    instance = dagster_instance()
    say(f"auditing {len(syncable)} users"
        f"{f', {len(without_account)} without a PDS account counted apart' if without_account else ''}"
        f"{f', {len(refused)} refused (their stored DID cannot be used)' if refused else ''}"
        f"{' (checking logins, paced)' if args.check_logins else ''}"
        f"{' (--full: every user, receipts or not)' if args.full else ''}")
    with progress.ProgressBar(len(syncable), "audit") as bar:
        total, summaries = run_audit(
            instance, settings, syncable, without_account, check_logins=args.check_logins,
            verbose=getattr(args, "verbose", False), defs=getattr(args, "defs", None),
            on_user_done=bar.user_done, refused=refused, store=store, full=args.full,
        )
    if total.get("users_unchanged"):
        say(f"{total['users_unchanged']} users unchanged since their last audit (repo rev and Mongo moods):"
            f" counted from their receipts; --full checks them too")
    _print_audit(total, summaries, lines_only=args.json)
    if args.json:
        print(json.dumps(total))
    return EXIT_SOMETHING_LEFT if engine.something_wrong(total) else EXIT_OK


# -- repair --------------------------------------------------------------------------------


def _refused_credentials(user) -> bool:
    """A user with credentials that must not be used (a non-string or malformed DID, a DID
    several users hold): it is repaired like the others, and fails with the reason."""
    return bool(getattr(user, "problem", None)) and bool(user.password)


def run_repair(instance, settings, syncable: list, without_account: list, *, apply: bool = False,
               delete_orphans: bool = False, rewrite_legacy: bool = False, verbose: bool = False,
               defs=None, on_user_done=None) -> tuple[dict, list[dict]]:
    """Repair the users through ``mood_repair_job`` in runs of at most 50; (totals, per-user facts).

    The runs name users by sub, so a DID that is malformed, not a string or held by several
    users fails that user alone (with the reason) instead of the run it is in."""
    from moods_pipeline import progress
    from moods_pipeline.defs.partitions import USERS_PARTITION
    from moods_pipeline.storage.audits import AuditStore
    from moods_pipeline.sync import repair as engine
    from moods_pipeline.sync.refusal import partition_key_problem

    started = time.monotonic()
    refused = [u for u in without_account if _refused_credentials(u)]
    without_account = [u for u in without_account if not _refused_credentials(u)]
    targets = list(syncable) + refused
    summaries: list[dict] = []
    runnable = []
    for user in targets:
        if isinstance(user.sub, str) and user.sub:
            runnable.append(user)
        else:  # a run's config cannot name it: fail it here rather than the run it would be in
            summaries.append({"did": user.did if isinstance(user.did, str) else None, "sub": str(user.sub),
                              "handle": user.handle, "error": "users._id is not a non-empty string"})
    # The post-repair audits become mood_audit materializations of the users' partitions: add
    # the keys Dagster can take (a DID may contain "...", which it cannot).
    keys = sorted({u.did for u in runnable if u.did and not partition_key_problem(u.did)})
    try:
        known = set(instance.get_dynamic_partitions(USERS_PARTITION))
        if [d for d in keys if d not in known]:
            instance.add_dynamic_partitions(USERS_PARTITION, [d for d in keys if d not in known])
    except Exception as exc:  # noqa: BLE001 - the repair does not need them
        say(f"warning: users partitions not added ({exc}); the repair goes on")
    stop = progress.listen_users_done(on_user_done)
    subs = list(dict.fromkeys(u.sub for u in runnable))
    run_ids = []
    try:
        for k in range(0, len(subs), USERS_PER_RUN):
            config = {"subs": subs[k : k + USERS_PER_RUN], "apply": apply, "delete_orphans": delete_orphans,
                      "rewrite_legacy": rewrite_legacy}
            result = run_job(instance, REPAIR_JOB, quiet_run_config({"repair_moods": {"config": config}}, verbose),
                             defs=defs)
            run_ids.append(result.run_id)
    finally:
        stop()
    audits = AuditStore(settings.state_dir)
    summaries += [s for run_id in run_ids for s in audits.load_run(run_id, kind="repair")]
    summaries += [{"did": user.did, "sub": user.sub, "handle": user.handle, "error": reason}
                  for user, reason in users_without_result(runnable, (s.get("sub") for s in summaries), "repair",
                                                           key=lambda user: user.sub)]
    summaries += [{"did": u.did, "sub": u.sub, "handle": u.handle, "no_account": True} for u in without_account]
    total = engine.totals(summaries, dry_run=not apply)
    if apply and syncable:
        run_job(instance, AUDIT_SUMMARY_JOB, quiet_run_config({}, verbose), defs=defs)
    total["seconds"] = round(time.monotonic() - started, 3)
    return total, summaries


def _print_repair(total: dict, summaries: list[dict], verbose: bool) -> None:
    for s in summaries:
        if s.get("no_account"):
            continue
        who = f"@{s['handle']} ({s['did']})" if s.get("handle") else (s.get("did") or s.get("sub"))
        if s.get("error"):
            say(f"FAILED {who}: {s['error']}")
        plan = s.get("plan") or []
        if plan:
            say(f"{who}: {len(plan)} actions" + ("" if total["dry_run"] else " planned"))
            shown = plan if verbose else plan[:MAX_LINES_PER_USER]
            for action, mood_id, rkey in shown:
                say(f"  {action:<17} mood {mood_id or '-':<24} rkey {rkey or '-'}")
            if len(plan) > len(shown):
                say(f"  ... and {len(plan) - len(shown)} more (-v prints all; the run's metadata has them)")
        for action, target, reason in (s.get("failed") or [])[:MAX_LINES_PER_USER]:
            say(f"  FAILED {action} {target}: {reason}")
        for action, rkey, why in (s.get("kept") or [])[:MAX_LINES_PER_USER]:
            say(f"  KEPT {action} rkey {rkey}: {why}")
        if s.get("remaining"):
            say("  left after repair: " + ", ".join(f"{n} {k}" for k, n in s["remaining"].items()))
    say("repair " + ("(dry run: nothing written; --apply carries it out) " if total["dry_run"] else "") + "summary:")
    for key in ("planned", "applied"):
        for action, n in total[key].items():
            say(f"  {key + '.' + action:>26}: {n}")
    for key, value in total.items():
        if key not in ("planned", "applied"):
            say(f"  {key:>26}: {value}")


def cmd_repair(args) -> int:
    from moods_pipeline import progress
    from moods_pipeline.sync import repair as engine

    settings = load_settings()
    store = open_store(settings)
    syncable, without_account = select_users(store, args)
    instance = dagster_instance()
    flags = [f for f, on in (("--delete-orphans", args.delete_orphans), ("--rewrite-legacy", args.rewrite_legacy)) if on]
    refused = sum(1 for u in without_account if _refused_credentials(u))
    skipped = len(without_account) - refused
    say(f"{'repairing' if args.apply else 'dry run: planning the repair of'} {len(syncable) + refused} users"
        f" (nuke policy {settings.nuke_policy}{', ' + ' '.join(flags) if flags else ''})"
        f"{f'; {skipped} without a PDS account skipped' if skipped else ''}")
    with progress.ProgressBar(len(syncable) + refused, "repair") as bar:
        total, summaries = run_repair(
            instance, settings, syncable, without_account, apply=args.apply, delete_orphans=args.delete_orphans,
            rewrite_legacy=args.rewrite_legacy, verbose=getattr(args, "verbose", False),
            defs=getattr(args, "defs", None), on_user_done=bar.user_done,
        )
    _print_repair(total, summaries, getattr(args, "verbose", False))
    if args.json:
        print(json.dumps(total))
    return EXIT_SOMETHING_LEFT if engine.something_left(total) else EXIT_OK
