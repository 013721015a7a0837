"""Operations: backups and restores, upkeep, the audit trail and the per-minute windows.

`backup` copies and restores the SQLite file and the Chroma directory;
`upkeep` is the worker's daily integrity check and weekly VACUUM; `audit` reads
the command audit trail for the command line; `windows` keeps the per-minute
request counters in Redis that /health reads.
"""
