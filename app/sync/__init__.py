"""Pulling history from Discord into the store, and the store into the index.

`runner` discovers a guild's channels and threads and syncs each; `history`
pages one channel (backfill, then what is new, then a re-check of recent
edits and deletions); `indexer` drains the store's outbox into the vector index.
"""
