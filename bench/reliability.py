"""The reliability figures: run the fault, bad-input and destructive-operation tests, print what they proved.

    .venv/bin/python bench/reliability.py            # the table, as markdown, on stdout
    .venv/bin/python bench/reliability.py --json     # the rows as JSON instead
    .venv/bin/python bench/reliability.py -- -k 429  # extra pytest arguments after --

It runs every test marked ``reliability`` (each test that records a row:
``pytest -m reliability moods_pipeline_tests``) on a local stack of their own (the tests start it)
with ``MOODS_RELIABILITY_OUT`` pointing at a temporary directory; each test writes one row per
fault, per kind of bad input or per destructive case into it (``moods_pipeline_tests/reliability.py``):
what was injected or attempted, how many moods (or records and accounts) were at stake, how many
were lost or duplicated, measured on the PDS and in Mongo once the test had finished, and what the
tool did. A test that fails after recording its row still leaves it: the row is marked FAILED,
the script lists the failed tests and exits 1. Pytest's own output goes to stderr.
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
TESTS = ["moods_pipeline_tests"]
SECTIONS = ("fault", "bad_input", "destructive")
PLUGIN = "moods_pipeline_tests.reliability"  # loaded before conftest, which hides MOODS_* variables


def run_tests(out: Path, extra: list[str]) -> tuple[int, float]:
    env = {**os.environ, "MOODS_RELIABILITY_OUT": str(out)}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", PLUGIN, "-p", "no:cacheprovider", "-m", "reliability",
            *TESTS, *extra]
    started = time.monotonic()
    # pytest's report goes to stderr: stdout is for the table alone.
    code = subprocess.call(argv, cwd=ROOT, env=env, stdout=sys.stderr, stderr=sys.stderr)
    return code, time.monotonic() - started


def failed_tests(out: Path) -> set[str]:
    """Node ids of the tests that failed (in any phase) during the run."""
    path = out / "outcomes.jsonl"
    if not path.exists():
        return set()
    outcomes = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {o["test"] for o in outcomes if o["outcome"] == "failed"}


def load_rows(out: Path) -> list[dict]:
    """The recorded rows, each with ``failed``: whether its test failed after recording it."""
    failed = failed_tests(out)
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    for row in rows:
        row["failed"] = row.get("test") in failed
    return rows


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _note(row: dict) -> str:
    return ("**FAILED** " if row.get("failed") else "") + _cell(row["note"])


def _counted_table(rows: list[dict], first: str, second: str, stake: str, total_label: str) -> list[str]:
    lines = [f"| {first} | {second} | {stake} | Lost | Duplicated | What happened |", "|---|---|---:|---:|---:|---|"]
    lines += [
        f"| {_cell(r['fault'])} | {_cell(r['injected'])} | {r['at_stake']} | {r['lost']} | "
        f"{r['duplicated']} | {_note(r)} |"
        for r in rows
    ]
    total = sum(r["at_stake"] for r in rows)
    lost = sum(r["lost"] for r in rows)
    duplicated = sum(r["duplicated"] for r in rows)
    lines.append(f"| **{total_label}** | | **{total}** | **{lost}** | **{duplicated}** | |")
    return lines


def markdown(rows: list[dict], seconds: float | None = None, code: int | None = None) -> str:
    by_section = {name: [r for r in rows if r["section"] == name] for name in SECTIONS}
    faults, bad, destructive = by_section["fault"], by_section["bad_input"], by_section["destructive"]
    blocks = []
    if faults:
        blocks.append(_counted_table(faults, "Fault", "Injected", "Moods at stake", "all faults"))
    if bad:
        blocks.append(["| Bad input | Example | What the tool did |", "|---|---|---|"]
                      + [f"| {_cell(r['fault'])} | {_cell(r['injected'])} | {_note(r)} |" for r in bad])
    if destructive:
        blocks.append(["Destructive operations (records and accounts that had to survive; lost = deleted all the same):", ""]
                      + _counted_table(destructive, "Case", "Attempted", "At stake", "all destructive cases"))
    lines = [line for block in blocks for line in [*block, ""]][:-1]
    if seconds is not None:
        failed = sorted({r["test"] for r in rows if r.get("failed")})
        lines += ["", f"{len(faults)} faults, {len(bad)} kinds of bad input and {len(destructive)} destructive cases, "
                  f"from the tests marked `reliability` in {seconds:.0f} s"
                  + ("" if not code else f" (pytest exit code {code}: some tests failed)") + "."]
        if failed:
            lines += ["", "Failed tests: " + ", ".join(failed)]
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
    if any(r["failed"] for r in rows):
        print("rows marked FAILED: their tests failed after recording them", file=sys.stderr)
    return 0 if code == 0 and not any(r["failed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
