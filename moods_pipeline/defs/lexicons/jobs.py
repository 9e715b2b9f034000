"""Lexicon publication (checklist phase 1): every lexicon in `lexicons/` as a
`com.atproto.lexicon.schema` record in the authority account's repo."""
# No `from __future__ import annotations`: Dagster reads the annotations at definition time.

import dagster as dg

from moods_pipeline.atproto.lexicon_publish import publish
from moods_pipeline.defs.resources import PdsResource
from moods_pipeline.settings import ConfigError


class PublishConfig(dg.Config):
    apply: bool = False
    """Write what differs; without it the op only reports what would change."""


@dg.op
def publish_lexicons(context: dg.OpExecutionContext, config: PublishConfig, pds: PdsResource) -> dict:
    """Compares each lexicon with the published record and, with `apply`, creates or updates it
    with putRecord (rkey = NSID). A second run reports "up-to-date" and writes nothing."""
    account, password = pds.lexicon_credentials()
    if not account or not password:
        raise ConfigError("MOODS_LEXICON_ACCOUNT and MOODS_LEXICON_PASSWORD must be set to publish lexicons")
    session = pds.client().login(account, password, expected_did=account if account.startswith("did:") else None)
    report = publish(session, dry_run=not config.apply)
    for action in report.actions:
        context.log.info(f"lexicon {action.nsid}: {action.action}{' (dry run)' if report.dry_run and action.needs_write else ''}")
    counts = report.counts
    context.add_output_metadata(
        {
            "authority_did": report.did,
            "dry_run": report.dry_run,
            **{name.replace("-", "_"): n for name, n in counts.items()},
            "written": len(report.written),
            "failed": len(report.failed),
            "dns_records": dg.MetadataValue.md(
                "\n".join(f"- `{name}` TXT `{value}`" for name, value in report.dns_records.items())
            ),
        }
    )
    if report.failed:
        raise dg.Failure(description="lexicons not published: " + "; ".join(f"{k}: {v}" for k, v in report.failed.items()))
    return report.to_dict()


@dg.job(executor_def=dg.in_process_executor, description="Publish the lexicons (dry run unless apply).")
def publish_lexicons_job():
    publish_lexicons()
