"""Repair: the job that fixes what a fresh audit of the selected users finds."""
