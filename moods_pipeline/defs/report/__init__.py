"""The migration report asset: the checklist's figures."""
