"""The user directory asset."""
