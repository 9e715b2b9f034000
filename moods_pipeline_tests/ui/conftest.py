"""Fixtures for the browser tests: one walk-through stack per module and Debian's Chromium
driven by Playwright.

- ``ui_stack`` (module) ``stack.UiStack``: demo users seeded into a fresh database on the
  session's PDS and MongoDB-wire server, most of them backfilled and audited by the CLI, and the
  Dagster webserver + daemon serving the UI on a free port (``stack.py``). Torn down afterwards.
- ``browser`` (module) headless Chromium from ``/usr/bin/chromium`` (``make setup`` installs
  Debian's package; Playwright's own browser download cannot work here and is never called).
- ``page`` (function) a fresh browser context at 1280x800 on the UI's URL; when the test fails,
  a screenshot (under the system's temp dir, ``moods-ui-failures/``) and the UI's log tail are
  named in the report.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from moods_pipeline_tests.ui import stack as ui_stack_module

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 800}
# A slow 2-core machine shared with other work: a page can take several seconds to render.
ACTION_TIMEOUT_MS = 60_000
FAILURES = Path(tempfile.gettempdir()) / "moods-ui-failures"


@pytest.fixture(scope="module")
def ui_stack(local_pds, mongo_uri, tmp_path_factory):
    import pymongo

    stack = ui_stack_module.start(
        tmp_path_factory.mktemp("ui-stack"), mongo_uri=mongo_uri, pds_url=local_pds.url,
        pds_admin_password=local_pds.admin_password.reveal(),
    )
    try:
        yield stack
    finally:
        ui_stack_module.stop(stack)
        with pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=10_000) as client:
            client.drop_database(stack.db_name)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.ui_failed = report.failed  # the page fixture keeps a screenshot of a failure
    return report


@pytest.fixture
def page(browser, ui_stack, request):
    context = browser.new_context(viewport=VIEWPORT, base_url=ui_stack.url)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    opened = context.new_page()
    try:
        yield opened
    finally:
        if getattr(request.node, "ui_failed", False):
            # Not in tmp_path: other pytest sessions on this machine rotate those away.
            shot = FAILURES / f"{request.node.name}.png"
            FAILURES.mkdir(exist_ok=True)
            try:
                opened.screenshot(path=str(shot))
                request.node.add_report_section("teardown", "browser", f"screenshot: {shot}\nurl: {opened.url}")
            except Exception as exc:  # noqa: BLE001 - the failure itself is what matters
                request.node.add_report_section("teardown", "browser", f"no screenshot: {exc}")
            request.node.add_report_section("teardown", "ui log", ui_stack.tail())
        context.close()
