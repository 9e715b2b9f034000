"""`moods-pipeline erase` and `moods-pipeline journal`.

    moods-pipeline erase SELECTOR --mode records|account [--apply] [--json]
    moods-pipeline journal [--since YYYY-MM-DD] [--json]

``erase`` removes a user's mood records, or the whole PDS account, and verifies. A dry run
unless ``--apply``: it lists what would be removed and which users would be refused. With
``--apply`` the erase job runs in-process against the configured Dagster instance (so the run
shows in the UI) and verifies on the PDS that no record (mode records) or no account (mode
account: the admin API no longer knows the DID) is left. A user whose deletion cannot be proved
right (a malformed DID or one several users hold, credentials that do not log in to exactly
the stored DID) is refused with the reason and nothing of it is touched. What was removed
(counts and rkeys, never text) is in the run's metadata and ``MOODS_STATE_DIR/erase/<run
id>.json``; every deletion is journaled under ``MOODS_STATE_DIR/journal/``.

Selection: ``--user SEL`` names any user (@handle, DID or sub), with or without moods in
Mongo (the application may have removed them already); ``--all`` and ``--first N`` select as
the other commands do. Exit codes: 0 done and nothing left (a dry run that could read every
repo and would refuse nobody), 1 anything left after erasing or a user that failed or was
refused, 2 bad usage or configuration (e.g. ``--mode account --apply`` without
``PDS_ADMIN_PASSWORD``).

``journal`` prints every deletion this project made or attempted (erase, repair, catch-up...),
one line each: when, command, run, kind, DID and handle, how many records, why, and the
outcome, or "no result recorded" for a deletion whose outcome nobody saw (a crash or a kill:
the next audit tells what is on the PDS). It needs only ``MOODS_STATE_DIR``. With ``--json``,
one object ``{"entries": [every journal line], "deletions": n, "without_result": n}``.

``moods_pipeline.cli.app`` wires both with ``register(sub)``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from datetime import date

from moods_pipeline.cli.common import (
    EXIT_OK,
    EXIT_SOMETHING_LEFT,
    UsageError,
    add_selector,
    dagster_instance,
    open_store,
    quiet_run_config,
    resolve_users,
    run_job,
    say,
    select_users,
    users_without_result,
)
from moods_pipeline.settings import load_settings, read_state_dir

__all__ = ["register", "cmd_erase", "cmd_journal", "journal_lines"]


def _selected(store, args) -> list:
    """Users to erase: --user names anyone (moods or not); --all/--first as elsewhere."""
    if args.user:
        return resolve_users(store, args.user)
    syncable, without_account = select_users(store, args)
    return list(syncable) + list(without_account)


def cmd_erase(args) -> int:
    from moods_pipeline import progress
    from moods_pipeline.defs.erase.jobs import load_report, summarize_erase
    from moods_pipeline.sync.live import FAILED, EraseResult

    settings = load_settings()
    if args.mode == "account" and args.apply and not settings.pds_admin_password:
        raise UsageError("PDS_ADMIN_PASSWORD is not set: --mode account needs the PDS admin API")
    store = open_store(settings)
    users = _selected(store, args)
    verbose = getattr(args, "verbose", False)
    what = "mood records" if args.mode == "records" else "PDS accounts"
    say(f"{'erasing' if args.apply else 'dry run: listing'} {what} of {len(users)} users"
        + ("" if args.apply else " (nothing is written; --apply erases)"))
    started = time.monotonic()
    results: list[EraseResult] = []
    run_id = None
    if users:
        instance = dagster_instance()
        with progress.ProgressBar(len(users), "erase") as bar:
            stop = progress.listen_users_done(bar.user_done)
            try:
                config = {"users": [u.sub for u in users], "mode": args.mode, "apply": bool(args.apply)}
                result = run_job(instance, "erase_job", quiet_run_config({"erase_users": {"config": config}}, verbose))
                run_id = result.run_id
            finally:
                stop()
        report = load_report(settings.state_dir, run_id)
        if report is None:
            # The op writes its report once, at the end: a run that died before it reported nobody.
            missing = users_without_result(users, (), "erase", key=lambda user: user.sub)
            say(f"the erase run {run_id} failed before reporting (see the Dagster UI)")
            summary = summarize_erase([], args.mode, not args.apply, time.monotonic() - started)
            summary["users"] = len(users)
            summary["users_failed"] = len(missing)
        else:
            results = [EraseResult(**r) for r in report["users"]]
            summary = summarize_erase(results, args.mode, not args.apply, time.monotonic() - started)
    else:
        summary = summarize_erase([], args.mode, not args.apply, time.monotonic() - started)
    summary["run_id"] = run_id
    for r in results:
        if r.status == FAILED:
            say(f"FAILED {r.label} ({r.did}): {r.reason}")
        elif r.dry_run:
            say(f"{r.label} ({r.did or 'no DID'}): would remove {len(r.found_rkeys)} records"
                + (" and the account" if args.mode == "account" and r.did and r.left else "")
                + (f" ({r.reason})" if r.reason else ""))
        else:
            say(f"{r.label} ({r.did or 'no DID'}): {r.status}, removed {len(r.removed_rkeys)} records"
                + (", account deleted" if r.account_deleted else "") + (f", {r.left} left" if r.left else "")
                + (f" ({r.reason})" if r.reason else ""))
    if args.json:
        print(json.dumps(summary))
    else:
        say("erase " + ("(dry run) " if not args.apply else "") + "summary:")
        for key, value in summary.items():
            say(f"  {key:>20}: {value}")
    something_left = summary["users_failed"] > 0 or (args.apply and summary["left"] > 0)
    return EXIT_SOMETHING_LEFT if something_left else EXIT_OK


def _since(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since {text!r} is not a date: give it as YYYY-MM-DD (UTC)") from None


def journal_lines(entries: list[dict]) -> tuple[list[str], int, int]:
    """One human line per deletion, its intent and result paired by id: (lines, deletions,
    deletions without a result). A result whose intent is older than ``--since`` gets a line too."""
    results = {e.get("id"): e for e in entries if e.get("phase") == "result"}
    intents = [e for e in entries if e.get("phase") == "intent"]
    intent_ids = {e.get("id") for e in intents}
    lines: list[str] = []
    without_result = 0
    for intent in intents:
        result = results.get(intent.get("id"))
        if result is None:
            without_result += 1
            outcome = "no result recorded"
        else:
            outcome = result.get("outcome") or "?"
            if result.get("error"):
                outcome += f" ({result['error']})"
            if intent.get("kind") == "records" and result.get("outcome") != "kept":
                outcome += f", {len(result.get('deleted') or [])} deleted"
        who = intent.get("did") or "?"
        if intent.get("handle"):
            who += f" (@{str(intent['handle']).lstrip('@')})"
        lines.append(
            f"{intent.get('at', '?')} {intent.get('command') or '?'} run {intent.get('run_id') or '-'} "
            f"{intent.get('kind') or '?'} {who}: {len(intent.get('targets') or [])} rkeys, "
            f"{intent.get('reason') or 'no reason given'} -> {outcome}"
        )
    for result in results.values():
        if result.get("id") not in intent_ids:
            lines.append(f"{result.get('at', '?')} {result.get('command') or '?'} run {result.get('run_id') or '-'} "
                         f"result of deletion {result.get('id')} (its intent is before --since): "
                         f"{result.get('outcome') or '?'}")
    return lines, len(intents), without_result


def cmd_journal(args) -> int:
    from moods_pipeline.storage.journal import read_journal

    since = _since(args.since)
    state_dir = read_state_dir()  # the journal needs nothing else: other settings may be wrong
    entries = read_journal(state_dir, since)
    lines, deletions, without_result = journal_lines(entries)
    if args.json:
        print(json.dumps({"entries": entries, "deletions": deletions, "without_result": without_result}))
        return EXIT_OK
    for line in lines:
        print(line)
    say(f"{deletions} deletions in the journal under {state_dir}"
        + (f" since {since.isoformat()}" if since else "")
        + (f"; {without_result} without a result recorded (run an audit to see what is on the PDS)"
           if without_result else ""))
    return EXIT_OK


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `erase` and `journal` commands to the `moods-pipeline` parser's subparsers;
    returns erase's parser."""
    p = subparsers.add_parser(
        "erase", help="remove a user's mood records (--mode records) or PDS account (--mode account)",
        description="Remove a user's mood records, or the whole PDS account, and verify "
                    "(a dry run unless --apply).",
    )
    add_selector(p)
    p.add_argument("--mode", required=True, choices=["records", "account"],
                   help="records: every mood record, the account stays; account: the whole PDS account")
    p.add_argument("--apply", action="store_true", help="erase (without it: a dry run that writes nothing)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_erase)

    j = subparsers.add_parser(
        "journal", help="every deletion this project made or attempted (the deletion journal)",
        description="Every deletion journaled under MOODS_STATE_DIR/journal/: one line each, with its outcome.",
    )
    j.add_argument("--since", metavar="DATE", help="only deletions from this UTC day on (YYYY-MM-DD)")
    j.add_argument("--json", action="store_true", help="one JSON object on stdout")
    j.set_defaults(func=cmd_journal)
    return p
