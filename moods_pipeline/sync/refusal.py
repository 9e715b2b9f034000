"""Users whose stored account a run must refuse before it makes them partitions or requests.

A backfill or audit works on users as Dagster partitions keyed by DID. Some users have
credentials that cannot be used that way, and each of them must fail alone, with its reason,
while the others of the same run go on:

- a stored ``users.atproto.did`` that is not a DID (malformed, or not even a string) or that
  several users hold (``UserAccount.problem``, set by ``MongoStore``);
- a well-formed DID that Dagster refuses as a partition key: the DID syntax allows ``...``
  (``did:web:a...b``), which Dagster keeps for partition ranges.

A user without a password is not refused but counted as having no account, as before.
"""

from __future__ import annotations

from moods_pipeline.model import UserAccount

# Dagster's own list (dagster/_core/definitions/partitions/utils/base.py, a private module;
# the tests compare this copy with it): "..." separates the ends of a partition range, and
# the control characters do not display in the UI.
INVALID_PARTITION_SUBSTRINGS = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")


def partition_key_problem(did: object) -> str | None:
    """Why this DID cannot be a Dagster partition key, or None."""
    if not isinstance(did, str) or not did:
        return f"users.atproto.did is not a non-empty string ({type(did).__name__}): it cannot be a partition key"
    found = [s for s in INVALID_PARTITION_SUBSTRINGS if s in did]
    if not found:
        return None
    return (f"users.atproto.did {did[:80]!r} contains {', '.join(repr(s) for s in found)}, which Dagster does not "
            "allow in a partition key: this user cannot be run as a partition")


def refusal(user: UserAccount) -> str | None:
    """Why this user's stored account must not be run (it fails alone with this reason), or
    None. Only users with a stored password are refused; without one a user has no account."""
    if user.password is None:
        return None
    if user.problem:
        return user.problem
    if user.did:
        return partition_key_problem(user.did)
    return None


def split_refused(users: list[UserAccount]) -> tuple[list[UserAccount], list[tuple[UserAccount, str]]]:
    """(users a run may take, one per DID; refused users with why)."""
    runnable: list[UserAccount] = []
    refused: list[tuple[UserAccount, str]] = []
    taken: dict[str, str] = {}
    for user in users:
        reason = refusal(user)
        if reason is None and user.did in taken:
            # Cannot happen for users read from one store (a shared DID is a problem there),
            # but two users must never share one partition.
            reason = f"users.atproto.did {user.did} is also selected for {taken[user.did]}"
        if reason is None:
            runnable.append(user)
            if user.did:
                taken[user.did] = user.sub
        else:
            refused.append((user, reason))
    return runnable, refused
