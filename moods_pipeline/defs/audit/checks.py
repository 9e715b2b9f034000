"""Asset checks of the audit: they fail on any problem and on any unreadable user.

- ``audited_users_in_step`` on ``mood_audit``: evaluated by the asset itself at the end of each
  run (a check spec of the asset), over the users of that run. A user whose repo could not be
  read fails it too: an outage must never look green.
- ``everyone_in_step`` on ``audit_summary``: over the latest audit of every syncable user (what
  ``audit_summary`` wrote to ``MOODS_STATE_DIR/audit/summary.json``). Problems or unreadable
  users: ERROR. Otherwise, syncable users never audited yet or repos on the PDS that no Mongo
  user owns any more: WARN (failed, but not an error).

Descriptions name the users (``@handle`` and DID, at most ``MAX_NAMED`` of them) and the counts;
never mood text.
"""
# No `from __future__ import annotations`: Dagster reads the annotations at definition time.

from typing import Iterable

import dagster as dg

from moods_pipeline.defs.resources import PipelineSettingsResource
from moods_pipeline.storage.audits import AuditStore
from moods_pipeline.sync.reconcile import STATUSES

MAX_NAMED = 20
RUN_CHECK_NAME = "audited_users_in_step"
SUMMARY_CHECK_NAME = "everyone_in_step"

audit_run_check_spec = dg.AssetCheckSpec(
    RUN_CHECK_NAME,
    asset="mood_audit",
    description="Every user audited in the run is readable and has no problem (docs/interface.md's problem statuses).",
)


def _label(summary: dict) -> str:
    handle = summary.get("handle")
    did = summary.get("did") or summary.get("sub")
    return f"@{handle} ({did})" if handle else str(did)


def _problem_text(summary: dict, problem_statuses: Iterable[str] | None = None) -> str:
    counts = summary.get("problem_counts")
    if counts is None:
        by_status = summary.get("by_status") or {}
        wanted = set(problem_statuses) if problem_statuses is not None else None
        counts = {s: n for s, n in by_status.items() if n and (wanted is None or s in wanted)}
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: STATUSES.index(kv[0])
                                                      if kv[0] in STATUSES else 99))
    return f"{summary.get('problems', 0)} problems" + (f" ({parts})" if parts else "")


def _named(lines: list[str]) -> str:
    shown = lines[:MAX_NAMED]
    more = len(lines) - len(shown)
    return "\n".join(f"- {line}" for line in shown) + (f"\n- ... and {more} more" if more > 0 else "")


def evaluate(summaries: list[dict], *, problem_statuses: Iterable[str], scope: str) -> tuple[bool, str, dict]:
    """(passed, description, numeric metadata) over per-user audit summaries."""
    problem_statuses = set(problem_statuses)
    accounts = [s for s in summaries if not s.get("no_account")]
    unreadable = [s for s in accounts if s.get("unreadable")]
    with_problems = [s for s in accounts if not s.get("unreadable") and int(s.get("problems", 0)) > 0]
    problems = sum(int(s.get("problems", 0)) for s in with_problems)
    by_status = {status: 0 for status in sorted(problem_statuses)}
    for s in with_problems:
        for status, n in (s.get("by_status") or {}).items():
            if status in problem_statuses:
                by_status[status] = by_status.get(status, 0) + int(n)
    metadata = {
        "users": len(accounts),
        "users_with_problems": len(with_problems),
        "users_unreadable": len(unreadable),
        "problems": problems,
        **{f"problems.{status}": n for status, n in by_status.items()},
    }
    passed = not unreadable and not with_problems
    if passed:
        return True, f"all {len(accounts)} users {scope} are readable and in step", metadata
    parts = []
    if with_problems:
        parts.append(
            f"{len(with_problems)} of {len(accounts)} users {scope} have {problems} problems:\n"
            + _named([f"{_label(s)}: {_problem_text(s, problem_statuses)}" for s in with_problems])
        )
    if unreadable:
        parts.append(
            f"{len(unreadable)} of {len(accounts)} users {scope} could not be audited (unreadable):\n"
            + _named([f"{_label(s)}: {s['unreadable']}" for s in unreadable])
        )
    return False, "\n".join(parts), metadata


def run_check_result(summaries: list[dict], problem_statuses: Iterable[str]) -> dg.AssetCheckResult:
    """The ``audited_users_in_step`` result for the users of one run (yielded by ``mood_audit``)."""
    passed, description, metadata = evaluate(summaries, problem_statuses=problem_statuses, scope="in this run")
    return dg.AssetCheckResult(
        check_name=RUN_CHECK_NAME,
        asset_key=dg.AssetKey("mood_audit"),
        passed=passed,
        description=description,
        metadata=metadata,
    )


@dg.asset_check(
    asset="audit_summary",
    name=SUMMARY_CHECK_NAME,
    description="Every syncable user's latest audit is readable and has no problem.",
)
def everyone_in_step(pipeline: PipelineSettingsResource) -> dg.AssetCheckResult:
    """Over ``audit_summary``'s facts: every syncable user's latest audit."""
    summary = AuditStore(pipeline.settings().state_dir).load_summary()
    if summary is None:
        return dg.AssetCheckResult(passed=False, description="no audit summary yet: materialize audit_summary",
                                   severity=dg.AssetCheckSeverity.WARN)
    users = summary.get("users") or []
    passed, description, metadata = evaluate(
        users, problem_statuses=summary.get("problem_statuses") or [], scope="(latest audits)"
    )
    not_audited = summary.get("not_audited") or []
    orphans = summary.get("orphan_repos") or []
    metadata.update(users_not_audited=len(not_audited), orphan_repos=len(orphans))
    notes = []
    if not_audited:
        notes.append(f"{len(not_audited)} syncable users have never been audited:\n" + _named(not_audited))
    if orphans:
        notes.append(
            f"{len(orphans)} repos on the PDS hold mood records but no Mongo user holds their DID:\n"
            + _named([f"{o['did']}: {o['records']} records; {o['reason']}" for o in orphans])
        )
    if not passed:
        return dg.AssetCheckResult(passed=False, description="\n".join([description, *notes]), metadata=metadata)
    if notes:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                   description="\n".join([description, *notes]), metadata=metadata)
    return dg.AssetCheckResult(passed=True, description=description, metadata=metadata)
