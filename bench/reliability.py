"""The reliability figures: run the fault and bad-input tests, print what they proved.

    .venv/bin/python bench/reliability.py            # the table, as markdown, on stdout
    .venv/bin/python bench/reliability.py --json     # the rows as JSON instead
    .venv/bin/python bench/reliability.py -- -k 429  # extra pytest arguments after --

It runs ``pytest moods_pipeline_tests/test_faults.py moods_pipeline_tests/test_bad_input.py`` on
a local stack of their own (the tests start it) with ``MOODS_RELIABILITY_OUT`` pointing at a
temporary directory; each test writes one row per fault or per kind of bad input into it
(``moods_pipeline_tests/reliability.py``): what was injected, how many moods were at stake, how
many were lost or duplicated once the test's re-run had finished, and what the tool did. A
failing test still leaves its row if it got that far; the script then says which tests failed
and exits 1. Pytest's own output goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["moods_pipeline_tests/test_faults.py", "moods_pipeline_tests/test_bad_input.py"]
PLUGIN = "moods_pipeline_tests.reliability"  # loaded before conftest, which hides MOODS_* variables


def run_tests(out: Path, extra: list[str]) -> tuple[int, float]:
    env = {**os.environ, "MOODS_RELIABILITY_OUT": str(out)}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", PLUGIN, "-p", "no:cacheprovider", *TESTS, *extra]
    started = time.monotonic()
    # pytest's report goes to stderr: stdout is for the table alone.
    code = subprocess.call(argv, cwd=ROOT, env=env, stdout=sys.stderr, stderr=sys.stderr)
    return code, time.monotonic() - started


def load_rows(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(rows: list[dict], seconds: float | None = None, code: int | None = None) -> str:
    faults = [r for r in rows if r["section"] == "fault"]
    bad = [r for r in rows if r["section"] == "bad_input"]
    lines = []
    if faults:
        lines += [
            "| Fault | Injected | Moods at stake | Lost | Duplicated | What happened |",
            "|---|---|---:|---:|---:|---|",
        ]
        lines += [
            f"| {_cell(r['fault'])} | {_cell(r['injected'])} | {r['at_stake']} | {r['lost']} | "
            f"{r['duplicated']} | {_cell(r['note'])} |"
            for r in faults
        ]
        total = sum(r["at_stake"] for r in faults)
        lost = sum(r["lost"] for r in faults)
        duplicated = sum(r["duplicated"] for r in faults)
        lines.append(f"| **all faults** | | **{total}** | **{lost}** | **{duplicated}** | |")
    if bad:
        if lines:
            lines.append("")
        lines += ["| Bad input | Example | What the tool did |", "|---|---|---|"]
        lines += [f"| {_cell(r['fault'])} | {_cell(r['injected'])} | {_cell(r['note'])} |" for r in bad]
    if seconds is not None:
        lines += ["", f"{len(faults)} faults and {len(bad)} kinds of bad input, from "
                  f"{', '.join(Path(t).name for t in TESTS)} in {seconds:.0f} s"
                  + ("" if not code else f" (pytest exit code {code}: some tests failed)") + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--keep", metavar="DIR", help="write the rows into DIR and keep them")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    if args.keep:
        out = Path(args.keep).resolve()
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*.json"):
            old.unlink()
        code, seconds = run_tests(out, args.pytest_args)
        rows = load_rows(out)
    else:
        with tempfile.TemporaryDirectory(prefix="moods-reliability-") as tmp:
            code, seconds = run_tests(Path(tmp), args.pytest_args)
            rows = load_rows(Path(tmp))
    if args.json:
        print(json.dumps({"rows": rows, "seconds": round(seconds, 1), "pytest_exit_code": code}, ensure_ascii=False))
    else:
        print(markdown(rows, seconds, code))
    if not rows:
        print("no rows were recorded: did the tests run?", file=sys.stderr)
        return 1
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
