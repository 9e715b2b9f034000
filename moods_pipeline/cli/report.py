"""`moods-pipeline report [--json]`: the checklist's figures (Migration Stats, Test Results,
Launch Stats, Final Metrics) from measured data, as ``migration_report`` shows them
(``sync.report``). Read-only: Mongo counts, the state dir's latest results, audit summary and
latency samples. A figure whose source has not run yet is "n/a" (null in JSON).
"""

from __future__ import annotations

import json

from moods_pipeline.cli.common import EXIT_OK, open_store
from moods_pipeline.settings import load_settings


def cmd_report(args) -> int:
    from moods_pipeline.sync import report as engine

    settings = load_settings(connections={"MONGODB_CONNECTION_STRING"})
    result = engine.report(open_store(settings), settings.state_dir)
    if args.json:
        print(json.dumps(result))
        return EXIT_OK
    block = None
    for row in result["rows"]:
        if row["block"] != block:
            block = row["block"]
            print(f"{block}:")
        print(f"  {row['label'] + ':':<28} {engine.format_value(row['value'], row['unit'])}")
    if result["latency_p95_ms"] is not None:
        print(f"(latency p95 {result['latency_p95_ms']} ms over {result['latency_samples']} samples)")
    return EXIT_OK


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="the checklist's migration figures (Final Metrics), measured")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report)
