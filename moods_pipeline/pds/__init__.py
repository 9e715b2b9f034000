"""The platform's PDS over XRPC (:mod:`.xrpc`), repo exports (:mod:`.car`) and the firehose (:mod:`.firehose`)."""

from moods_pipeline.pds.xrpc import (
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
