"""Screenshots of the README's UI walk-through, taken in headless Chromium.

    .venv/bin/python -m scripts.ui_screenshots [--out docs/ui]

Starts a stack of its own (PLC, PDS and SecantusDB on 127.0.0.1 in a temporary directory, then
the same walk-through stack as the browser tests: six demo users, five backfilled and audited by
the CLI, the Dagster webserver + daemon), walks the same pages with the same steps as
``moods_pipeline_tests/ui/test_walkthrough.py`` (``moods_pipeline_tests/ui/walk.py``) and saves a
1280x800 PNG per step into ``--out``. Everything it started is stopped at the end. Needs
``/usr/bin/chromium`` (``make setup``) and the PDS's node modules (``make setup``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VIEWPORT = {"width": 1280, "height": 800}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "ui", help="where the PNGs go")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    from moods_pipeline.devstack import LocalMongo, LocalPds, LocalPlc
    from moods_pipeline_tests.ui import stack as ui

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="moods-ui-shots-") as tmp:
        base = Path(tmp)
        plc = LocalPlc(base / "plc")
        pds = LocalPds(base / "pds", plc, invite_required=False, rate_limits=False)
        mongo = LocalMongo(log_path=base / "mongo.log")
        stack = None
        try:
            plc.start()
            pds.start()
            mongo.start()
            stack = ui.start(base / "ui", mongo_uri=mongo.uri, pds_url=pds.url,
                             pds_admin_password=pds.admin_password.reveal())
            say(f"UI up at {stack.url} after {time.monotonic() - started:.0f}s")
            walk_and_shoot(stack, mongo.uri, args.out)
        finally:
            if stack is not None:
                ui.stop(stack)
            mongo.stop()
            pds.stop()
            plc.stop()
    say(f"done in {time.monotonic() - started:.0f}s")
    return 0


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def walk_and_shoot(stack, mongo_uri: str, out: Path) -> None:
    import pymongo
    from playwright.sync_api import expect, sync_playwright

    from moods_pipeline_tests.ui import walk

    user = stack.fresh

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                             args=["--no-sandbox"])
        context = browser.new_context(viewport=VIEWPORT, base_url=stack.url)
        context.set_default_timeout(walk.EXPECT_TIMEOUT_MS)
        page = context.new_page()

        def shot(name: str) -> None:
            path = out / f"{name}.png"
            page.screenshot(path=str(path))
            say(f"  {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")

        try:
            walk.open_catalog_asset(page, "mood_backfill")
            walk.metadata_value(page, "handle")  # loaded
            page.goto("/assets")
            expect(page.get_by_role("link", name="migration_report").first).to_be_visible()
            shot("01-catalog")

            page.goto("/assets/mood_backfill")
            walk.launch_one_partition(page, "mood_backfill", user.did, before_launch=lambda: shot("02-backfill-pick-partition"))
            assert walk.run_status(page) == "Success", "the clicked backfill did not succeed"
            shot("03-backfill-run-success")

            page.goto(walk.partition_url("mood_backfill", user.did))
            walk.metadata_value(page, "created")
            shot("04-backfill-partition")

            dialog = walk.open_directory(page)
            expect(walk.directory_row(dialog, user.handle)).to_have_count(1)
            shot("05-users-directory")

            walk.directory_row(dialog, user.handle).get_by_role("link", name="audit").click()
            expect(page.get_by_text("Latest materialization")).to_be_visible()
            walk.open_catalog_asset(page, "mood_audit")
            walk.launch_one_partition(page, "mood_audit", user.did)
            assert walk.run_status(page) == "Success", "the clicked audit did not succeed"
            page.goto(walk.partition_url("mood_audit", user.did))
            walk.metadata_row(page, "reconciliation").scroll_into_view_if_needed()
            shot("06-audit-reconciliation")

            everyone = str(len(stack.users))
            page.goto("/assets/backfill_summary")
            walk.wait_for_metadata(page, "users", everyone)
            shot("07-backfill-summary")

            moods = str(sum(u.moods for u in stack.users))
            page.goto("/assets/migration_report")
            walk.wait_for_metadata(page, "moods_in_atproto", moods)
            walk.metadata_row(page, "report").scroll_into_view_if_needed()
            shot("08-migration-report")

            # A pointer lost in Mongo, so that the repair's dry run has a plan to show.
            other = stack.backfilled[1]
            with pymongo.MongoClient(mongo_uri) as client:
                moods_coll = client[stack.db_name].moods
                mood = moods_coll.find_one({"user": other.sub, "atproto.rkey": {"$exists": True}}, sort=[("_id", 1)])
                moods_coll.update_one({"_id": mood["_id"]}, {"$unset": {"atproto": ""}})
            walk.launch_job_partition(page, "mood_repair_job", other.did, switch_on=("delete_orphans",),
                                      before_launch=lambda: shot("09-repair-launchpad"))
            assert walk.run_status(page) == "Success", "the repair dry run did not succeed"
            plan = page.get_by_role("row").filter(has=page.get_by_role("cell", name=str(mood["_id"]), exact=True))
            plan.first.scroll_into_view_if_needed()
            shot("10-repair-plan")
        except Exception:
            failed = Path(tempfile.gettempdir()) / "moods-ui-shots-failed.png"  # never into --out
            page.screenshot(path=str(failed))
            say(f"failed on {page.url} (screenshot {failed}); the UI's log ends:\n{stack.tail()}")
            raise
        finally:
            context.close()
            browser.close()


if __name__ == "__main__":
    sys.exit(main())
