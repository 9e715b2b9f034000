"""The AT Protocol as this project speaks it: the XRPC client (:mod:`.client`), repo exports (:mod:`.car`), the firehose (:mod:`.firehose`), record keys (:mod:`.tid`), lexicons (:mod:`.lexicon`) and their publishing (:mod:`.lexicon_publish`). Protocol only: nothing here knows moods, MongoDB or Dagster."""

from moods_pipeline.atproto.client import (
    ClientCounters,
    LoginFailed,
    PdsAdmin,
    PdsClient,
    PdsError,
    PdsSession,
    PdsUnavailable,
    RateLimited,
    RequestTooLarge,
)

__all__ = [
    "ClientCounters",
    "LoginFailed",
    "PdsAdmin",
    "PdsClient",
    "PdsError",
    "PdsSession",
    "PdsUnavailable",
    "RateLimited",
    "RequestTooLarge",
]
