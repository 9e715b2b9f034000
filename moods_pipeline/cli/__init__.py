"""The `moods-pipeline` command line: ``app`` (the parser and ``main``), one module per command family."""

from moods_pipeline.cli.app import main

__all__ = ["main"]
