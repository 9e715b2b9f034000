"""The README's UI walk-through as browser steps, shared by the browser tests and
``scripts/ui_screenshots.py`` (so the screenshots show what the tests check).

Selectors are what a person reads: link and button names, visible text, table rows by their
first cell. Waits poll with generous timeouts (a 2-core machine shared with other work: a run
launched from the UI starts its own processes and can take a minute); none of them is an
assertion on time.
"""

from __future__ import annotations

import re
import time
from typing import Callable
from urllib.parse import quote

from playwright.sync_api import Locator, Page, expect

RUN_TIMEOUT_MS = 240_000
# expect() waits 5 s by default, whatever the page's own timeout: too short for a page that
# loads its data over GraphQL on a busy 2-core machine.
EXPECT_TIMEOUT_MS = 60_000
expect.set_options(timeout=EXPECT_TIMEOUT_MS)
RUN_DONE = re.compile(r"^(Success|Failure|Canceled)$")


def open_catalog_asset(page: Page, asset: str) -> None:
    """Overview -> Catalog -> the asset's link, as a person finds it."""
    page.goto("/")
    page.get_by_role("navigation").get_by_role("link", name="Catalog").click()
    # An asset's link reads its name twice (a truncated copy and the full one).
    page.get_by_role("link", name=asset).first.click()
    expect(page).to_have_url(re.compile(rf"/assets/{asset}(\?|$)"))


def partition_url(asset: str, partition: str) -> str:
    return f"/assets/{asset}?view=partitions&partition={quote(partition, safe='')}"


def launch_one_partition(page: Page, asset: str, partition: str, before_launch: Callable[[], None] | None = None) -> str:
    """On the asset's page: Materialize -> Custom -> pick the partition -> Launch 1 run; then
    the toast's View opens the run. Returns the run id."""
    page.get_by_role("button", name="Materialize").first.click()
    dialog = page.get_by_role("dialog").first
    expect(dialog.get_by_text(f"Launch runs to materialize {asset}")).to_be_visible()
    dialog.get_by_text("Select a partition or create one").click()
    page.keyboard.type(partition)  # the picker's filter box has the focus
    page.get_by_role("menuitem").filter(has_text=partition).click()
    page.keyboard.press("Escape")  # close the picker, keep the dialog
    expect(page.get_by_placeholder("Filter partitions")).to_be_hidden()
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    if before_launch:
        before_launch()
    dialog.get_by_role("button", name="Launch 1 run").click()
    toast = page.get_by_text("Launched run")
    expect(toast).to_be_visible()
    view = page.get_by_role("link", name="View", exact=True)
    href = view.get_attribute("href") or ""
    run_id = href.rsplit("/", 1)[-1]
    view.click()
    expect(page).to_have_url(re.compile(rf"/runs/{run_id}"))
    return run_id


def run_status(page: Page, timeout_ms: int = RUN_TIMEOUT_MS) -> str:
    """The run page's status once the run has finished (the page updates by itself)."""
    status = page.get_by_text(RUN_DONE).first
    expect(status).to_be_visible(timeout=timeout_ms)
    return status.inner_text()


def metadata_row(scope: Page | Locator, label: str) -> Locator:
    """The metadata table row whose first cell is ``label``."""
    page = scope if isinstance(scope, Page) else scope.page
    return scope.get_by_role("row").filter(has=page.get_by_role("cell", name=label, exact=True)).first


def metadata_value(scope: Page | Locator, label: str) -> str:
    """The value of a metadata row: its last non-empty cell (an asset's overview has key,
    timestamp and value; a partition's page key, value and an empty cell)."""
    row = metadata_row(scope, label)
    expect(row).to_be_visible()
    cells = [text.strip() for text in row.get_by_role("cell").all_inner_texts()[1:]]
    filled = [text for text in cells if text]
    return filled[-1] if filled else ""


def wait_for_metadata_row(page: Page, label: str, timeout_s: float = 240) -> Locator:
    """Reload the page until it has a ``label`` metadata row (an asset a sensor materializes)."""
    deadline = time.monotonic() + timeout_s
    row = metadata_row(page, label)
    while True:
        try:
            expect(row).to_be_visible(timeout=15_000)
            return row
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        page.reload()


def open_directory(page: Page) -> Locator:
    """Catalog -> users -> the ``directory`` entry's markdown: the dialog listing every user."""
    open_catalog_asset(page, "users")
    wait_for_metadata_row(page, "directory").get_by_text("Show Markdown").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("columnheader", name="latest backfill")).to_be_visible()
    return dialog


def directory_row(dialog: Locator, handle: str) -> Locator:
    return dialog.get_by_role("row").filter(has=dialog.page.get_by_role("cell", name=f"@{handle}", exact=True))


def launch_job_partition(page: Page, job: str, partition: str, switch_on: tuple[str, ...] = (),
                         before_launch: Callable[[], None] | None = None) -> str:
    """Jobs -> the job -> Launchpad -> pick the partition -> turn the named boolean options on
    (``false`` -> ``true`` in the config editor) -> Launch Run. Returns the run id."""
    page.goto("/")
    page.get_by_role("navigation").get_by_role("link", name="Jobs").click()
    page.get_by_role("link", name=job).first.click()
    page.get_by_role("tab", name="Launchpad").click()
    picker = page.get_by_placeholder("Partition")
    picker.click()
    picker.fill(partition)
    # The suggestion truncates a long key: the filter leaves exactly the one partition.
    suggestions = page.get_by_role("menuitem")
    expect(suggestions).to_have_count(1)
    suggestions.first.click()
    expect(page.get_by_text(f"partition: {partition}")).to_be_visible()  # the run's tag
    for option in switch_on:
        line = page.locator(".CodeMirror-line").filter(has_text=re.compile(rf"^\s*{option}: false$"))
        line.locator(".cm-keyword", has_text="false").dblclick()  # selects the word
        page.keyboard.type("true")
        expect(page.locator(".CodeMirror-line").filter(has_text=re.compile(rf"^\s*{option}: true$"))).to_have_count(1)
    expect(page.get_by_text("No errors")).to_be_visible()
    if before_launch:
        before_launch()
    page.get_by_role("button", name="Launch Run").click()
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    return page.url.rsplit("/", 1)[-1].split("?")[0]


def wait_for_metadata(page: Page, label: str, wanted: str, timeout_s: float = 240) -> str:
    """Reload the page until the latest ``label`` reads ``wanted`` (for values a daemon updates);
    returns the last value seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = metadata_value(page, label)
        if value == wanted or time.monotonic() > deadline:
            return value
        page.wait_for_timeout(5_000)
        page.reload()
