"""`moods-pipeline stack`, `seed-demo`, `ui` and `demo`: the local stack, demo data, the Dagster
UI on them, and the README's main command (stack, data, backfill, audit, then the UI)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from moods_pipeline.cli.audit import cmd_audit
from moods_pipeline.cli.backfill import cmd_backfill
from moods_pipeline.cli.common import EXIT_OK, EXIT_SOMETHING_LEFT, open_store, say, say_batch_url
from moods_pipeline.settings import load_settings


def cmd_stack(args) -> int:
    from moods_pipeline.devstack import stack

    if args.action == "up":
        up = stack.stack_up(Path("."))
        for line in up.lines():
            say(line)
        print("\n".join(up.export_lines))
        return EXIT_OK
    if args.action == "down":
        for line in stack.stack_down(Path(".")):
            say(line)
        return EXIT_OK
    status = stack.stack_status(Path("."))
    for line in status.lines():
        say(line)
    return EXIT_OK if status.running else EXIT_SOMETHING_LEFT


def cmd_seed_demo(args) -> int:
    from moods_pipeline.devstack import demo_data, seed

    settings = load_settings()
    store = open_store(settings)
    data = demo_data.generate(users=args.users, moods_per_user=args.moods_per_user, scale=args.scale, seed=args.seed)
    say(f"seeding {len(data.users)} users and {len(data.moods)} moods into {settings.mongodb_name}, "
        f"accounts on {settings.pds_url}")
    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] > 2 or done == total:
            last[0] = now
            say(f"  {stage}: {done}/{total}")

    with seed.pds_account_creator(settings.pds_url) as creator:
        try:
            report = seed.seed(store.db, data, creator, progress=progress)
        except seed.DemoDataExists as exc:
            say(str(exc))
            return EXIT_SOMETHING_LEFT
    summary = report.as_dict()
    if args.json:
        print(json.dumps(summary))
    else:
        say(f"seeded: {summary}")
    return EXIT_OK if report.ok else EXIT_SOMETHING_LEFT


def cmd_demo(args) -> int:
    """The README's main command: local stack, demo data, backfill, audit, then the Dagster UI."""
    from moods_pipeline.devstack import stack

    up = stack.stack_up(Path("."))
    for line in up.lines():
        say(line)
    _export_stack_env(up.export_lines)
    settings = load_settings()
    store = open_store(settings)
    if store.db.moods.estimated_document_count() == 0:
        rc = cmd_seed_demo(argparse.Namespace(users=None, moods_per_user=None, scale="quick", seed=7, json=False))
        if rc != EXIT_OK:
            return rc
    else:
        say("demo data already seeded")
    rc = cmd_backfill(argparse.Namespace(all=True, user=None, first=None, dry_run=False, json=False, verbose=False))
    say(f"backfill finished with exit code {rc}")
    audit_rc = cmd_audit(argparse.Namespace(all=True, user=None, first=None, check_logins=False, json=False,
                                            verbose=False))
    say(f"audit finished with exit code {audit_rc}")
    rc = max(rc, audit_rc)
    if args.no_ui:
        return rc
    return serve_ui(args.port)


def cmd_ui(args) -> int:
    """The Dagster UI (webserver + daemon) on the existing stack and data; runs nothing itself."""
    from moods_pipeline.devstack import stack

    if not os.environ.get("MONGODB_CONNECTION_STRING"):
        # The local stack: `stack up` starts only what is not running and keeps its data.
        up = stack.stack_up(Path("."))
        for line in up.lines():
            say(line)
        _export_stack_env(up.export_lines)
    load_settings()  # a missing or malformed setting: exit 2 naming it, before the UI starts
    return serve_ui(args.port)


def ui_command(port: int) -> list[str]:
    """`dg dev` (webserver + daemon, as the project's pyproject [tool.dg] defines the code location):
    `dagster dev` is superseded by it and says so."""
    return [str(Path(sys.executable).parent / "dg"), "dev", "--host", "127.0.0.1", "--port", str(port)]


def serve_ui(port: int) -> int:
    """Replace this process by `dg dev`: Ctrl-C reaches it (and the webserver, daemon and code
    server it started) as it would from a shell, and it shuts them down."""
    from moods_pipeline.devstack.dagster_home import ensure_dagster_home
    from moods_pipeline.settings import DEFAULT_DAGSTER_HOME

    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(ensure_dagster_home(DEFAULT_DAGSTER_HOME))
    url = f"http://127.0.0.1:{port}"
    # Links in metadata, alerts and CLI output point at this UI unless a deployment set its own.
    os.environ.setdefault("MOODS_UI_URL", url)
    say_batch_url()  # demo's backfill and audit runs: this process ends in the exec below
    say(f"serving the Dagster UI on {url} (webserver and daemon; Ctrl+C stops them; the stack keeps running:"
        " `moods-pipeline stack down` stops it)")
    sys.stdout.flush()
    sys.stderr.flush()
    command = ui_command(port)
    os.execv(command[0], command)
    return EXIT_OK  # not reached


def _export_stack_env(lines: list[str]) -> None:
    """Apply `stack up`'s export lines to this process (and so to `dagster dev`)."""
    import subprocess

    script = "\n".join(lines) + "\nenv -0"
    output = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    wanted = {line.split("=", 1)[0].removeprefix("export ") for line in lines}
    for item in output.split(b"\0"):
        if b"=" in item:
            key, value = item.decode().split("=", 1)
            if key in wanted:
                os.environ[key] = value


def register(subparsers) -> None:
    """Add `stack` and `seed-demo`."""
    p = subparsers.add_parser("stack", help="the local stack: PDS, SecantusDB, Dagster home")
    p.add_argument("action", choices=["up", "down", "status"])
    p.set_defaults(func=cmd_stack)

    p = subparsers.add_parser("seed-demo", help="production-shaped demo data with PDS accounts")
    p.add_argument("--users", type=int)
    p.add_argument("--moods-per-user", type=int)
    p.add_argument("--scale", choices=["quick", "production"], default="quick")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_seed_demo)


def register_ui(subparsers) -> None:
    """Add `ui`."""
    p = subparsers.add_parser("ui", help="serve the Dagster UI (webserver + daemon) on the existing stack and data")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_ui)


def register_demo(subparsers) -> None:
    """Add `demo` (listed last: it runs the others)."""
    p = subparsers.add_parser("demo", help="local stack + demo data + backfill + audit, then the Dagster UI")
    p.add_argument("--no-ui", action="store_true")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_demo)
