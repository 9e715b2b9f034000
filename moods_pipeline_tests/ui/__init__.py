"""Browser tests of the Dagster UI walk-through (Playwright driving Debian's Chromium)."""
