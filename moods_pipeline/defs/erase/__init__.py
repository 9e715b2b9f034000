"""Erase: the job that removes users' mood records or whole PDS accounts, proved and verified."""
