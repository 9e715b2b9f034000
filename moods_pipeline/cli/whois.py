"""`moods-pipeline whois SEL [--json]`: one user's sub, handle, DID, status, live moods, latest
backfill outcome and audit problems, with links to the user's partition pages in the Dagster UI
(``MOODS_UI_URL``). The same row as the ``users`` asset's directory (``sync.directory``).

SEL is ``@handle``, a DID or a sub; one that names several users is refused (exit 2) naming the
candidates, one that names nobody too. Read-only: it runs nothing.
"""

from __future__ import annotations

import json

from moods_pipeline.cli.common import EXIT_OK, open_store, resolve_users
from moods_pipeline.settings import load_settings


def whois_object(row, ui_url: str) -> dict:
    from moods_pipeline.defs.users.assets import partition_links

    links = partition_links(ui_url, row.did)
    return {
        "sub": row.sub,
        "handle": row.handle,
        "did": row.did,
        "status": row.status,
        "live_moods": row.live_moods,
        "backfill": row.backfill,
        "backfill_created": row.backfill_created,
        "backfill_needs_repair": row.backfill_needs_repair,
        "audit": row.audit,
        "audit_problems": row.audit_problems,
        "links": {"backfill": links.get("backfill_page"), "audit": links.get("audit_page")},
    }


def cmd_whois(args) -> int:
    from moods_pipeline.sync.directory import whois

    settings = load_settings(connections={"MONGODB_CONNECTION_STRING"})
    store = open_store(settings)
    (user,) = resolve_users(store, [args.selector])
    found = whois_object(whois(store, settings.state_dir, user), settings.ui_url)
    if args.json:
        print(json.dumps(found))
        return EXIT_OK
    for key in ("handle", "sub", "did", "status", "live_moods", "backfill", "audit"):
        value = found[key]
        if key == "handle":
            value = f"@{value}" if value else "(no handle)"
        print(f"{key:>10}: {value if value is not None else '-'}")
    for name, url in found["links"].items():
        print(f"{name + ' page':>10}: {url or '- (no partition for this DID)'}")
    return EXIT_OK


def register(subparsers) -> None:
    p = subparsers.add_parser("whois", help="one user's ids, status and Dagster UI links")
    p.add_argument("selector", metavar="SEL", help="@handle, DID or sub")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_whois)
