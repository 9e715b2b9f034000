"""The `moods-pipeline` command line: the parser and ``main``.

Commands live one family per module (``stack``, ``backfill``, ``lexicons``, ``audit``,
``erase``), each adding its subcommands with ``register``; what they share is in ``common``.
docs/interface.md lists every command, selector, JSON key and exit code.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import warnings
from typing import NoReturn

from moods_pipeline.cli import audit, backfill, erase, lexicons, report, stack, whois
from moods_pipeline.cli.common import EXIT_USAGE, UsageError, say, say_batch_url, start_batch
from moods_pipeline.settings import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moods-pipeline", description="Keeps aesthetic.computer moods in step "
                                     "between MongoDB and users' ATProto repos, with Dagster.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Dagster's run log on stderr too")
    sub = parser.add_subparsers(dest="command", required=True)
    stack.register(sub)
    backfill.register(sub)
    lexicons.register(sub)
    audit.register(sub)
    erase.register(sub)
    whois.register(sub)
    report.register(sub)
    stack.register_ui(sub)
    stack.register_demo(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from dagster import BetaWarning
    from pymongo.errors import PyMongoError

    parser = build_parser()
    args = parser.parse_args(argv)
    # Dagster marks backfill policies as beta; that warning means nothing to the CLI's user.
    warnings.filterwarnings("ignore", category=BetaWarning)
    # Only our own loggers go to DEBUG with -v: pymongo's and httpx's DEBUG logs carry whole
    # documents and requests (passwords included).
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose:
        logging.getLogger("moods_pipeline").setLevel(logging.DEBUG)
    start_batch(args.command)
    try:
        return args.func(args)
    except (ConfigError, UsageError) as exc:
        say(f"moods-pipeline: {exc}")
        return EXIT_USAGE
    except PyMongoError as exc:
        say(f"moods-pipeline: MongoDB unreachable or refused the request ({type(exc).__name__}: {str(exc)[:200]});"
            " check MONGODB_CONNECTION_STRING and MONGODB_NAME")
        return EXIT_USAGE
    finally:
        say_batch_url()


def exit_process(code: int) -> NoReturn:
    """End the process with ``code``, as the console script does.

    ``gc.freeze()`` first: otherwise the interpreter's last collections walk every object that
    Dagster's import created, about 0.6 s of every command's exit on a two-core machine. Atexit
    handlers (the local instance's connections), stream flushes and finalizers of objects freed
    by reference counting still run; only cyclic garbage left at exit is not collected."""
    gc.freeze()
    sys.exit(code)


def run() -> NoReturn:
    """The console script: ``main``, then ``exit_process``."""
    exit_process(main())


if __name__ == "__main__":
    run()
