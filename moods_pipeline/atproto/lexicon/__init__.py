"""Lexicons: identifier formats, lexicon documents, and records validated against them.

Three modules, each importing only the ones before it:

- `formats`: identifiers and string formats (DID, NSID, record key, handle, AT-URI, datetime,
  language, ...) and grapheme counting; knows nothing of documents.
- `documents`: `Lexicon`, `LexiconError`, checking and loading lexicon documents, and the
  repository's own (`default_lexicons`, `get_lexicon`).
- `records`: `ValidationError` and `validate_record`, a record against its lexicon.

The public names of all three are importable from this package.
"""

from __future__ import annotations

from moods_pipeline.atproto.lexicon.documents import (
    DEF_TYPES,
    DEFAULT_LEXICON_DIR,
    FIELD_TYPES,
    PARAM_TYPES,
    PRIMARY_TYPES,
    Lexicon,
    LexiconError,
    check_lexicon,
    default_lexicons,
    get_lexicon,
    load_lexicon_file,
    load_lexicons,
    split_ref,
)
from moods_pipeline.atproto.lexicon.formats import (
    STRING_FORMATS,
    count_graphemes,
    datetime_problem,
    format_ok,
    is_cid_syntax,
    is_datetime,
    is_did,
    is_nsid,
    is_record_key,
)
from moods_pipeline.atproto.lexicon.records import (
    INT64_MAX,
    INT64_MIN,
    ValidationError,
    validate_record,
)

__all__ = [
    "DEFAULT_LEXICON_DIR",
    "DEF_TYPES",
    "FIELD_TYPES",
    "INT64_MAX",
    "INT64_MIN",
    "PARAM_TYPES",
    "PRIMARY_TYPES",
    "STRING_FORMATS",
    "Lexicon",
    "LexiconError",
    "ValidationError",
    "check_lexicon",
    "count_graphemes",
    "datetime_problem",
    "default_lexicons",
    "format_ok",
    "get_lexicon",
    "is_cid_syntax",
    "is_datetime",
    "is_did",
    "is_nsid",
    "is_record_key",
    "load_lexicon_file",
    "load_lexicons",
    "split_ref",
    "validate_record",
]
