"""Alerts: the run-failure and health sensors."""
