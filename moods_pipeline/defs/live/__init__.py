"""Live sync: the catch-up and firehose sensors, the catch-up job and the ``sync_latency`` asset."""
