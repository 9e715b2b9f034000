"""The README's UI walk-through ("Walking through the UI") in a real browser.

One stack for the module (``conftest.py``): six demo users, five of them backfilled and audited
by the CLI as `make demo` does, the sixth (``ui_stack.fresh``) left for the browser. The tests run
in order and build on each other, as a person walking through the UI would: the fresh user is
backfilled by clicking, found in the user directory, audited from the directory's link; the
summaries and the migration report follow by themselves; a repair dry run is launched from the
Launchpad with the user picked as a partition and an option switched on.
"""

from __future__ import annotations

import re

import pymongo
import pytest
from playwright.sync_api import expect

from moods_pipeline_tests.ui import walk

pytestmark = [pytest.mark.integration, pytest.mark.ui]


def test_catalog_opens_mood_backfill_with_a_users_outcome(page, ui_stack):
    walk.open_catalog_asset(page, "mood_backfill")

    # The latest materialization is one of the CLI's users: its handle and numbers, no text.
    handles = {f"@{u.handle}" for u in ui_stack.backfilled}
    assert walk.metadata_value(page, "handle") in handles
    assert int(walk.metadata_value(page, "live_moods")) >= 1
    assert walk.metadata_value(page, "failed") == "0"


def test_backfill_one_user_by_clicking(page, ui_stack):
    user = ui_stack.fresh
    page.goto("/assets/mood_backfill")
    walk.launch_one_partition(page, "mood_backfill", user.did)

    assert walk.run_status(page) == "Success"
    expect(page.get_by_text(f"partition: {user.did}")).to_be_visible()

    page.goto(walk.partition_url("mood_backfill", user.did))
    assert walk.metadata_value(page, "handle") == f"@{user.handle}"
    assert walk.metadata_value(page, "created") == str(user.moods)
    assert walk.metadata_value(page, "failed") == "0"


def test_directory_finds_a_user_by_handle_and_links_to_its_audit_partition(page, ui_stack):
    user = ui_stack.fresh
    dialog = walk.open_directory(page)

    row = walk.directory_row(dialog, user.handle)
    expect(row).to_have_count(1)
    expect(row.get_by_role("cell", name=user.did, exact=True)).to_be_visible()
    expect(row.get_by_role("cell", name=user.sub, exact=True)).to_be_visible()
    expect(row.get_by_role("cell", name=str(user.moods), exact=True)).to_be_visible()
    # The CLI audited the others ("in step"); this user's audit has never run.
    expect(row.get_by_role("cell", name="never run", exact=True).first).to_be_visible()
    other = walk.directory_row(dialog, ui_stack.backfilled[0].handle)
    expect(other.get_by_role("cell", name="in step", exact=True)).to_be_visible()

    row.get_by_role("link", name="audit").click()
    expect(page).to_have_url(re.compile(re.escape(walk.partition_url("mood_audit", user.did)) + "$"))
    expect(page.get_by_text("Latest materialization")).to_be_visible()


def test_audit_by_clicking_shows_the_users_reconciliation_table(page, ui_stack):
    user = ui_stack.fresh
    walk.open_catalog_asset(page, "mood_audit")
    walk.launch_one_partition(page, "mood_audit", user.did)
    assert walk.run_status(page) == "Success"

    page.goto(walk.partition_url("mood_audit", user.did))
    assert walk.metadata_value(page, "handle") == f"@{user.handle}"
    assert walk.metadata_value(page, "problems") == "0"
    assert walk.metadata_value(page, "synced") == str(user.moods)
    # The reconciliation table: one row per mood with its status, ids and lengths, never the text.
    table = walk.metadata_row(page, "reconciliation")
    expect(table.get_by_text("mood_hash")).to_be_visible()
    synced_rows = table.get_by_role("row").filter(has=page.get_by_role("cell", name="synced", exact=True))
    expect(synced_rows).to_have_count(user.moods)
    expect(table.get_by_role("cell", name=re.compile(r"^[0-9a-f]{24}$"))).to_have_count(user.moods)


def test_summaries_follow_the_clicked_runs_by_themselves(page, ui_stack):
    # The CLI's summaries counted five users; the automation sensor re-materializes them after
    # the runs launched from the UI, with no one clicking.
    assert ui_stack.cli_results["backfill"]["users"] == len(ui_stack.backfilled)
    everyone = str(len(ui_stack.users))

    page.goto("/assets/backfill_summary")
    assert walk.wait_for_metadata(page, "users", everyone) == everyone
    assert walk.metadata_value(page, "users_failed") == "0"

    page.goto("/assets/audit_summary")
    assert walk.wait_for_metadata(page, "users_audited", everyone) == everyone
    assert walk.metadata_value(page, "problems") == "0"


def test_migration_report_shows_the_final_metrics(page, ui_stack):
    moods = sum(u.moods for u in ui_stack.users)
    walk.open_catalog_asset(page, "migration_report")

    # Every mood is in ATProto once the fresh user's audit has reached the report.
    assert walk.wait_for_metadata(page, "moods_in_atproto", str(moods)) == str(moods)
    assert walk.metadata_value(page, "users_with_atproto") == str(len(ui_stack.users))
    report = walk.metadata_row(page, "report")
    final = report.get_by_role("row").filter(has=page.get_by_role("cell", name="Final Metrics", exact=True))
    for figure, value in (("Total users with ATProto", len(ui_stack.users)), ("Total moods in MongoDB", moods),
                          ("Total moods in ATProto", moods), ("Failed syncs", 0)):
        row = final.filter(has=page.get_by_role("cell", name=figure, exact=True))
        expect(row.get_by_role("cell", name=str(value), exact=True)).to_be_visible()


def test_repair_dry_run_picked_in_the_launchpad_shows_its_plan(page, ui_stack, mongo_uri):
    # A pointer lost in Mongo (the record stays on the PDS): what a repair writes back.
    user = ui_stack.backfilled[1]
    with pymongo.MongoClient(mongo_uri) as client:
        moods = client[ui_stack.db_name].moods
        mood = moods.find_one({"user": user.sub, "atproto.rkey": {"$exists": True}}, sort=[("_id", 1)])
        moods.update_one({"_id": mood["_id"]}, {"$unset": {"atproto": ""}})
        mood_id = str(mood["_id"])

        walk.launch_job_partition(page, "mood_repair_job", user.did, switch_on=("delete_orphans",))
        assert walk.run_status(page) == "Success"

        # The dry-run plan as a table in the run's output metadata: user, action, mood, rkey.
        plan = page.get_by_role("row").filter(has=page.get_by_role("cell", name=mood_id, exact=True))
        expect(plan.get_by_role("cell", name="write_pointer", exact=True).first).to_be_visible()
        expect(plan.get_by_role("cell", name=f"@{user.handle}", exact=True).first).to_be_visible()
        expect(page.get_by_text("delete_orphans=True").first).to_be_visible()
        # A dry run: the pointer is still missing.
        assert "atproto" not in moods.find_one({"_id": mood["_id"]})
