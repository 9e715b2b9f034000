"""The user directory: one row per user with moods (handle, sub, DID, live moods, the latest
backfill outcome, the latest audit's problems), for the ``users`` asset and ``moods-pipeline whois``.

Plain Python (no Dagster, no URLs): the Dagster layer and the command line add the UI links.
Rows hold ids, counts and reasons; never mood text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from moods_pipeline.model import UserAccount, UserOutcome
from moods_pipeline.storage.audits import AuditStore
from moods_pipeline.storage.results import ResultsStore
from moods_pipeline.sync.refusal import refusal

NEVER = "never run"


@dataclass
class UserRow:
    handle: str | None
    sub: str
    did: str | None
    live_moods: int
    status: str  # syncable | no account | refused: <reason>
    backfill: str  # ok | failed: ... | N moods failed | dry run only | never run
    backfill_created: int | None
    backfill_needs_repair: int | None
    audit: str  # in step | N problems | unreadable: ... | never run
    audit_problems: int | None
    trouble: bool  # something for a person to look at (listed first)

    @property
    def label(self) -> str:
        return f"@{self.handle}" if self.handle else (self.did or self.sub)

    def as_dict(self) -> dict:
        return asdict(self)


def backfill_text(outcome: UserOutcome | None) -> str:
    if outcome is None:
        return NEVER
    if outcome.error:
        return f"failed: {outcome.error}"
    if outcome.failed:
        return f"{len(outcome.failed)} moods failed"
    if outcome.dry_run:
        return "dry run only"
    return "ok" + (f", {outcome.needs_repair} need a repair" if outcome.needs_repair else "")


def audit_text(summary: dict | None) -> str:
    if summary is None:
        return NEVER
    if summary.get("unreadable"):
        return f"unreadable: {summary['unreadable']}"
    problems = int(summary.get("problems", 0))
    return f"{problems} problems" if problems else "in step"


def user_row(user: UserAccount, live: int, outcome: UserOutcome | None, audit: dict | None) -> UserRow:
    reason = refusal(user)
    status = f"refused: {reason}" if reason else ("syncable" if user.has_account else "no account")
    backfill = backfill_text(outcome)
    audit_state = audit_text(audit)
    problems = int(audit.get("problems", 0)) if audit and not audit.get("unreadable") else None
    trouble = bool(reason) or backfill.startswith("failed") or "moods failed" in backfill \
        or "need a repair" in backfill or audit_state.startswith("unreadable") or bool(problems)
    return UserRow(
        handle=user.handle, sub=user.sub, did=user.did if isinstance(user.did, str) else None, live_moods=live,
        status=status, backfill=backfill,
        backfill_created=outcome.created if outcome is not None else None,
        backfill_needs_repair=outcome.needs_repair if outcome is not None else None,
        audit=audit_state, audit_problems=problems, trouble=trouble,
    )


def _latest_by_did(state_dir, dids: set[str]) -> tuple[dict, dict]:
    outcomes = {o.did: o for o in ResultsStore(state_dir).latest_backfill() if o.did in dids}
    audits = {}
    for stored in AuditStore(state_dir).load_latest():
        did = stored.summary.get("did")
        if did in dids:
            audits[did] = stored.summary
    return outcomes, audits


def directory(store, state_dir) -> list[UserRow]:
    """Every user with moods; users with trouble first, then by handle (users without one last)."""
    users = store.users_with_moods()
    counts = store.live_mood_counts()
    dids = {u.did for u in users if isinstance(u.did, str)}
    outcomes, audits = _latest_by_did(state_dir, dids)
    rows = [user_row(u, counts.get(u.sub, 0), outcomes.get(u.did), audits.get(u.did)) for u in users]
    rows.sort(key=lambda r: (not r.trouble, r.handle is None, (r.handle or "").lower(), r.sub))
    return rows


def whois(store, state_dir, user: UserAccount) -> UserRow:
    """One user's row (``user`` as ``MongoStore.resolve`` found it)."""
    did = user.did if isinstance(user.did, str) else None
    outcomes, audits = _latest_by_did(state_dir, {did} if did else set())
    live = store.live_mood_counts([user.sub]).get(user.sub, 0)
    return user_row(user, live, outcomes.get(did), audits.get(did))
