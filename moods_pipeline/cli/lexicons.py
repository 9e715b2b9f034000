"""`moods-pipeline publish-lexicons [--apply] [--json]`: the project's lexicons as
`com.atproto.lexicon.schema` records (a dry run unless `--apply`)."""

from __future__ import annotations

import json

from moods_pipeline.cli.common import EXIT_OK, EXIT_SOMETHING_LEFT, dagster_instance, quiet_run_config, run_job, say
from moods_pipeline.settings import load_settings


def cmd_publish_lexicons(args) -> int:
    load_settings()  # a configuration problem is exit 2 before any run starts
    instance = dagster_instance()
    result = run_job(
        instance, "publish_lexicons_job",
        quiet_run_config({"publish_lexicons": {"config": {"apply": args.apply}}}, args.verbose),
    )
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                say(f"publish-lexicons failed: {event.step_failure_data.error.message.strip()}")
        return EXIT_SOMETHING_LEFT
    report = result.output_for_node("publish_lexicons")
    for nsid, action in report["actions"].items():
        say(f"{nsid}: {action}{' (dry run: nothing written)' if report['dry_run'] and action != 'up-to-date' else ''}")
    for name, value in report["dns_records"].items():
        say(f"DNS (outside this project): {name} TXT {value}")
    if args.json:
        print(json.dumps(report))
    return EXIT_SOMETHING_LEFT if report["pending"] or report["failed"] else EXIT_OK


def register(subparsers) -> None:
    p = subparsers.add_parser("publish-lexicons", help="publish lexicons/ as com.atproto.lexicon.schema records")
    p.add_argument("--apply", action="store_true", help="write what differs (default: dry run)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_publish_lexicons)
