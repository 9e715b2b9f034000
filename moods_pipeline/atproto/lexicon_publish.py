"""Publish lexicons as `com.atproto.lexicon.schema` records in the authority account's repo.

Per the atproto spec ("Lexicon Publication and Resolution"): one record per lexicon, rkey = the
NSID, value = the lexicon document with `"$type": "com.atproto.lexicon.schema"`. A document is
compared with what is published ignoring `$type`: equal means up to date, otherwise it is
created or updated (putRecord creates or replaces, so a re-run after an interruption is safe).
Resolution also needs the DNS TXT record `_lexicon.<authority>` = `did=<account DID>`, which is
outside this project; the report names it.

`session` is duck-typed: `did`, `get_record(collection, rkey)` -> the record value (dict) or
None, and `put_record(collection, rkey, record)`. A read error propagates (a plan made without
knowing what is published would be wrong); a write error is recorded for that lexicon and the
others are still written.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from moods_pipeline.atproto.lexicon import Lexicon, check_lexicon, default_lexicons

log = logging.getLogger(__name__)

SCHEMA_COLLECTION = "com.atproto.lexicon.schema"
CREATE, UPDATE, UP_TO_DATE = "create", "update", "up-to-date"
ACTIONS = (CREATE, UPDATE, UP_TO_DATE)


class LexiconSession(Protocol):
    did: str

    def get_record(self, collection: str, rkey: str) -> dict | None: ...

    def put_record(self, collection: str, rkey: str, record: dict) -> Any: ...


@dataclass(frozen=True)
class PublishAction:
    nsid: str  # also the rkey
    action: str  # create | update | up-to-date
    record: dict = field(repr=False, compare=False)  # what put_record writes

    @property
    def needs_write(self) -> bool:
        return self.action != UP_TO_DATE


@dataclass
class PublishReport:
    did: str
    dry_run: bool
    actions: list[PublishAction]
    written: list[str] = field(default_factory=list)  # NSIDs put (none in a dry run)
    failed: dict[str, str] = field(default_factory=dict)  # NSID -> reason

    @property
    def counts(self) -> dict[str, int]:
        return {name: sum(a.action == name for a in self.actions) for name in ACTIONS}

    @property
    def pending(self) -> list[str]:
        """NSIDs that are not published as they should be after this run."""
        return [a.nsid for a in self.actions if a.needs_write and a.nsid not in self.written]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.pending

    @property
    def dns_records(self) -> dict[str, str]:
        """The `_lexicon` TXT records resolution needs: {name: value}, one per authority."""
        return {f"_lexicon.{authority_domain(a.nsid)}": f"did={self.did}" for a in self.actions}

    def to_dict(self) -> dict:
        return {
            "did": self.did,
            "dry_run": self.dry_run,
            "planned": self.counts,
            "actions": {a.nsid: a.action for a in self.actions},
            "written": list(self.written),
            "failed": dict(self.failed),
            "pending": self.pending,
            "dns_records": self.dns_records,
        }


def authority_domain(nsid: str) -> str:
    """The domain that controls an NSID: `computer.aesthetic.mood` -> `aesthetic.computer`."""
    return ".".join(reversed(nsid.split(".")[:-1]))


def schema_record(lexicon: Lexicon) -> dict:
    """The `com.atproto.lexicon.schema` record of a lexicon."""
    doc = lexicon.document()
    doc.pop("$type", None)
    return {"$type": SCHEMA_COLLECTION, **doc}


def _without_type(value: Mapping) -> dict:
    return {k: v for k, v in value.items() if k != "$type"}


def _as_lexicons(lexicons: Mapping[str, Lexicon] | Iterable[Lexicon | Mapping] | None) -> list[Lexicon]:
    if lexicons is None:
        lexicons = default_lexicons()
    if _looks_like_doc(lexicons):
        raise TypeError("pass a list of lexicon documents, not a single document")
    items = lexicons.values() if isinstance(lexicons, Mapping) else lexicons
    out: dict[str, Lexicon] = {}
    for item in items:
        lex = item if isinstance(item, Lexicon) else check_lexicon(dict(item))
        if lex.nsid in out:
            raise ValueError(f"lexicon {lex.nsid} given twice")
        out[lex.nsid] = lex
    return [out[nsid] for nsid in sorted(out)]


def _looks_like_doc(value: object) -> bool:
    return isinstance(value, Mapping) and "lexicon" in value and "defs" in value


def plan_publication(
    lexicons: Mapping[str, Lexicon] | Iterable[Lexicon | Mapping],
    existing: Mapping[str, Mapping | None],
) -> list[PublishAction]:
    """What to do for each lexicon, given the published record value per NSID (None or absent:
    nothing published). Sorted by NSID."""
    actions = []
    for lex in _as_lexicons(lexicons):
        record = schema_record(lex)
        current = existing.get(lex.nsid)
        if not isinstance(current, Mapping):
            action = CREATE
        elif _without_type(current) == _without_type(record):
            action = UP_TO_DATE
        else:
            action = UPDATE
        actions.append(PublishAction(nsid=lex.nsid, action=action, record=record))
    return actions


def _read(session: LexiconSession, nsid: str) -> dict | None:
    value = session.get_record(SCHEMA_COLLECTION, nsid)
    if value is not None and not isinstance(value, Mapping) and hasattr(value, "value"):
        value = value.value  # a PdsRecord-like answer
    return copy.deepcopy(dict(value)) if isinstance(value, Mapping) else None


def publish(
    session: LexiconSession,
    lexicons: Mapping[str, Lexicon] | Iterable[Lexicon | Mapping] | None = None,
    dry_run: bool = True,
) -> PublishReport:
    """Plan against what `session`'s repo holds, and unless `dry_run`, write what differs.
    `lexicons` defaults to the repository's lexicons (`lexicons/`)."""
    chosen = _as_lexicons(lexicons)
    existing = {lex.nsid: _read(session, lex.nsid) for lex in chosen}
    actions = plan_publication(chosen, existing)
    report = PublishReport(did=session.did, dry_run=dry_run, actions=actions)
    for action in actions:
        log.info("lexicon %s: %s%s", action.nsid, action.action, " (dry run)" if dry_run and action.needs_write else "")
        if dry_run or not action.needs_write:
            continue
        try:
            session.put_record(SCHEMA_COLLECTION, action.nsid, copy.deepcopy(action.record))
        except Exception as exc:  # noqa: BLE001 - recorded per lexicon, the others still go
            report.failed[action.nsid] = f"{type(exc).__name__}: {exc}"
            log.warning("lexicon %s: %s failed: %s", action.nsid, action.action, report.failed[action.nsid])
        else:
            report.written.append(action.nsid)
    return report
