"""Incremental audits: which users changed since their receipt, and the receipts themselves.

A user's audit verdict is a function of three things: the records in its repo, its moods in
Mongo, and the audit's basis (when tolerance, nuke policy, legacy rewriting, the recipe). The
repo has not changed while its ``rev`` and commit CID (``head``) have not moved (every commit
moves both, measured on the reference PDS); the moods have not changed while the user's
fingerprint (``sync.fingerprint``) has not. So a user whose receipt (``storage.receipts``)
names the repo's current rev and head, the current fingerprint and the current basis would get
exactly the receipt's counts again: it is *unchanged* and is not read again. Everyone else is
*changed*: no receipt (never audited, or the last audit was not complete), the rev or head
moved (a write by this project, by the application, or by any other client), the fingerprint
moved (an insert, edit, nuke, un-nuke, removal or pointer change in Mongo, or a new DID), the
repo is not active, or the basis changed.

Receipts are made by the audit itself: the rev and head are read (``getLatestCommit``) right
before the records, and the fingerprint is of the very moods that were compared, so a write
racing the audit always leaves the receipt behind the repo (re-checked next time), never ahead.

Whenever the selection cannot tell (listRepos or Mongo fails), every user is changed: the
fallback is a full audit, never a skipped user.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable

from moods_pipeline.atproto.client import PdsError, RepoHead
from moods_pipeline.sync import fingerprint as fp

log = logging.getLogger(__name__)

# Part of every receipt's basis: raise it when reconcile's verdicts change for the same data
# (a new status, a new comparison), so that every receipt made before is void.
RECEIPT_VERSION = 1
# Up to this many users, heads come from getLatestCommit one by one; above, from listRepos
# pages (1,000 repos a request, whatever the selection).
LATEST_COMMIT_LIMIT = 50
MAX_SAMPLE = 20  # unchanged users listed in the selection's facts


def audit_basis(*, nuke_policy: str, when_tolerance_ms: int, rewrite_legacy: bool = False) -> dict:
    """What besides the data decides a verdict; a receipt holds only for the same basis."""
    return {"version": RECEIPT_VERSION, "fingerprint": fp.VERSION, "nuke_policy": nuke_policy,
            "when_tolerance_ms": int(when_tolerance_ms), "rewrite_legacy": bool(rewrite_legacy)}


def receipt_of(audit, basis: dict, run_id: str | None = None, audited_at: str | None = None) -> dict | None:
    """The receipt of a complete audit (``sync.audit.UserAudit`` with the repo's head and the
    fingerprint), or None when it cannot make one (unreadable, no account, head unknown)."""
    if audit.unreadable or audit.no_account or not audit.did:
        return None
    if not audit.repo_rev or not audit.repo_head or not audit.fingerprint:
        return None
    summary = audit.summary()
    summary.pop("login", None)  # logins are not repo or Mongo state: --check-logins checks everyone
    return {"did": audit.did, "sub": audit.user.sub, "rev": audit.repo_rev, "head": audit.repo_head,
            "fingerprint": audit.fingerprint, "basis": dict(basis), "run_id": run_id,
            "audited_at": audited_at, "summary": summary}


def keep_receipt(receipts, audit, basis: dict, run_id: str | None = None) -> bool:
    """Save the audit's receipt, or invalidate the user's old one when the audit made none (so an
    unreadable user is always checked again). Returns whether a receipt was saved."""
    if not audit.did:
        return False
    from moods_pipeline.storage.receipts import now_iso

    receipt = receipt_of(audit, basis, run_id, now_iso())
    if receipt is None:
        receipts.invalidate(audit.did, audit.unreadable or "audit made no receipt (repo head unknown)", run_id)
        return False
    receipts.save(receipt)
    return True


def why_changed(user, receipt: dict | None, head: RepoHead | str | None, fingerprint: str | None,
                basis: dict) -> str | None:
    """Why this user must be audited again, or None when its receipt still holds (pure)."""
    if receipt is None:
        return "no receipt (never audited completely)"
    if receipt.get("basis") != basis:
        return "audit settings changed since the receipt"
    if receipt.get("sub") != user.sub:
        return "the DID's user changed"
    if head is None or isinstance(head, str):
        return f"repo head unknown: {head or 'not listed by the PDS'}"
    if not head.active:
        return f"repo not active ({head.status or 'inactive'})"
    if head.rev != receipt.get("rev") or head.head != receipt.get("head"):
        return f"repo moved: rev {receipt.get('rev')} -> {head.rev}"
    if fingerprint is None:
        return "Mongo fingerprint unknown"
    if fingerprint != receipt.get("fingerprint"):
        return "moods changed in Mongo"
    return None


def repo_heads(pds, dids: list[str], per_repo_limit: int = LATEST_COMMIT_LIMIT) -> dict[str, RepoHead | str]:
    """did -> its repo's head, or why it is unknown. A few DIDs: getLatestCommit each; more:
    listRepos pages (a DID the PDS does not list gets a reason)."""
    found: dict[str, RepoHead | str] = {}
    if len(dids) <= per_repo_limit:
        for did in dids:
            try:
                found[did] = pds.latest_commit(did)
            except PdsError as exc:
                found[did] = f"{exc.error or 'error'}: {exc.message or exc}"[:200]
        return found
    wanted = set(dids)
    for head in pds.iter_repo_heads():
        if head.did in wanted:
            found[head.did] = head
    for did in dids:
        found.setdefault(did, "not listed by the PDS (listRepos)")
    return found


@dataclass
class Selection:
    """Users to audit again (``changed``, with ``reasons`` by DID) and users whose receipt
    holds (``unchanged``: (user, receipt))."""

    changed: list = field(default_factory=list)
    unchanged: list[tuple] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    fallback: str | None = None  # why every user is changed (the selection could not tell)

    def unchanged_summaries(self) -> list[dict]:
        """The audit summaries of the unchanged users, from their receipts (current handle)."""
        out = []
        for user, receipt in self.unchanged:
            summary = dict(receipt.get("summary") or {})
            summary.update(did=user.did, sub=user.sub, handle=user.handle, login=None, unchanged=True,
                           receipt_rev=receipt.get("rev"), receipt_audited_at=receipt.get("audited_at"),
                           seconds=0.0)
            out.append(summary)
        return out

    def facts(self, mode: str = "incremental") -> dict:
        """What the selection found, for a person and for ``audit_summary`` (no mood text)."""
        revs = sorted(r.get("rev") for _, r in self.unchanged if isinstance(r.get("rev"), str))
        times = sorted(r.get("audited_at") for _, r in self.unchanged if isinstance(r.get("audited_at"), str))
        sample = [{"did": u.did, "handle": u.handle, "rev": r.get("rev"), "head": r.get("head"),
                   "audited_at": r.get("audited_at")}
                  for u, r in sorted(self.unchanged, key=lambda ur: str(ur[1].get("rev")), reverse=True)[:MAX_SAMPLE]]
        reasons: dict[str, int] = {}
        for why in self.reasons.values():
            key = why.split(":")[0].split(" -> ")[0]
            reasons[key] = reasons.get(key, 0) + 1
        return {"mode": mode, "users_selected": len(self.changed) + len(self.unchanged),
                "users_checked": len(self.changed), "users_unchanged": len(self.unchanged),
                "rev_min": revs[0] if revs else None, "rev_max": revs[-1] if revs else None,
                "receipts_oldest": times[0] if times else None, "receipts_newest": times[-1] if times else None,
                "changed_reasons": reasons, "fallback": self.fallback, "unchanged_sample": sample}


def everyone(users: Iterable, why: str) -> Selection:
    users = list(users)
    return Selection(changed=users, reasons={u.did: why for u in users}, fallback=why)


def select_changed(users: Iterable, store, pds, receipts, basis: dict) -> Selection:
    """Split ``users`` (``UserAccount``s with a DID) into changed and unchanged: one listRepos
    pass (or getLatestCommit for a few), one fingerprint query per thousand users, one receipt
    read per user. Any failure to tell makes every user changed (a full audit)."""
    users = list(users)
    if not users:
        return Selection()
    stored = receipts.load_many([u.did for u in users if u.did])
    candidates = [u for u in users if u.did in stored]
    if not candidates:
        return Selection(changed=users, reasons={u.did: "no receipt (never audited completely)" for u in users})
    try:
        heads = repo_heads(pds, [u.did for u in candidates])
    except PdsError as exc:
        log.warning("repo heads unreadable (%s): every user is audited", exc)
        return everyone(users, f"repo heads unreadable: {exc}")
    try:
        prints = fp.fingerprints(store, candidates)
    except Exception as exc:  # noqa: BLE001 - a Mongo error: audit everyone rather than guess
        log.warning("fingerprints unreadable (%s): every user is audited", type(exc).__name__)
        return everyone(users, f"Mongo fingerprints unreadable: {type(exc).__name__}")
    selection = Selection()
    for user in users:
        receipt = stored.get(user.did)
        why = why_changed(user, receipt, heads.get(user.did), prints.get(user.sub), basis) if receipt else \
            "no receipt (never audited completely)"
        if why is None:
            selection.unchanged.append((user, receipt))
        else:
            selection.changed.append(user)
            selection.reasons[user.did] = why
    return selection


def changed_partitions(keys: list[str], store, pds, receipts, basis: dict) -> tuple[list[str], Selection]:
    """The users partitions (DIDs) to audit again, in the given order, and the selection behind
    them. A DID no Mongo user holds any more stays in (the audit reports it); a Mongo failure
    keeps every key (a full audit)."""
    try:
        found = store.users_by_dids(list(keys))
    except Exception as exc:  # noqa: BLE001 - cannot tell who changed: audit everyone
        log.warning("users unreadable (%s): every partition is audited", type(exc).__name__)
        return list(keys), Selection(fallback=f"Mongo users unreadable: {type(exc).__name__}")
    selection = select_changed([found[k] for k in keys if k in found], store, pds, receipts, basis)
    skip = {user.did for user, _ in selection.unchanged}
    for key in keys:
        if key not in found:
            selection.reasons[key] = "no Mongo user holds this DID"
    return [k for k in keys if k not in skip], selection


# A run names its partitions as one contiguous range. Changed users far apart would each need a
# run of their own (a Dagster run costs about as much as auditing dozens of users), so one run
# may span the unchanged users between them, which it leaves alone (``AuditConfig.only``). Only
# users that were readable last time (they have a receipt) are joined that way: a run with an
# unreadable user fails, and Dagster would mark the skipped partitions of a failed run failed.
MAX_SPAN = 2000  # partitions one run may span (its planned-materialization events are one batch)
# Where the instance stores events one by one (SQLite: a planned-materialization event per
# spanned partition, each its own write), a wide gap costs more than a run of its own. Measured
# with the benchmark on SQLite: one run spanning 900 partitions to audit 9 users cost about as
# much as 10 single-user runs, so a run's fixed cost is worth some 90 spanned partitions; gaps
# up to half that join the run, wider ones start a new run.
UNBATCHED_MAX_GAP = 45
# ``why_changed`` reasons of users that had a receipt and whose repo is active and listed.
READABLE_CHANGES = ("repo moved", "moods changed", "audit settings changed")


def merged_runs(ordered: list[str], changed: Iterable[str], mergeable: Iterable[str],
                per_run: int = 50, max_span: int = MAX_SPAN, max_gap: int | None = None) -> list[list[str]]:
    """Runs over ``ordered`` (the partitions' order), each a contiguous slice that starts and ends
    with a changed key and holds at most ``per_run`` changed keys; two changed keys with
    unchanged ones between share a run only if both (and the run so far) are ``mergeable`` and
    at most ``max_gap`` unchanged keys lie between them."""
    if per_run < 1 or max_span < 1:
        raise ValueError("per_run and max_span must be at least 1")
    position = {key: i for i, key in enumerate(ordered)}
    mergeable = set(mergeable)
    runs: list[list[str]] = []
    current: list[int] = []
    current_mergeable = True
    for p in sorted({position[k] for k in changed if k in position}):
        joins = bool(current) and len(current) < per_run and p - current[0] + 1 <= max_span and (
            p == current[-1] + 1 or (current_mergeable and ordered[p] in mergeable
                                     and (max_gap is None or p - current[-1] - 1 <= max_gap)))
        if joins:
            current.append(p)
            current_mergeable = current_mergeable and ordered[p] in mergeable
            continue
        if current:
            runs.append(ordered[current[0] : current[-1] + 1])
        current, current_mergeable = [p], ordered[p] in mergeable
    if current:
        runs.append(ordered[current[0] : current[-1] + 1])
    return runs
