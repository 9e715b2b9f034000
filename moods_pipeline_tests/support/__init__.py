"""Test helpers (the fault-injecting proxy)."""
