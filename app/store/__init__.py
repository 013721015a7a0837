"""Storage only: the SQL store (SQLite or Postgres through `databases`) and the state lock.

`db.Store` is a thin front over one module per concern: `messages` (pages of
history written with their cursor), `outbox` (the index state of each row),
`channels` (channels, cursors, access and roles) and `audit`; `rows` maps rows
to the records of `models`; `migrations` evolves the schema; `lock` makes one
process the owner of a local DATA_DIR.
"""
