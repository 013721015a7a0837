"""The contract between web, worker and health: the queue, job names and Redis keys.

The web process writes jobs straight into arq's queue without importing the
worker, and /health reads what the worker writes, so every name the processes
share is spelled here once. Where arq defines a name (its queue, job and result
keys, its heartbeat) it comes from `arq.constants`, so an arq upgrade that
renamed one would change it here too.
"""

from __future__ import annotations

from typing import Final

from arq.constants import (
    default_queue_name,
    health_check_key_suffix,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
)

# arq's queue (a sorted set of job ids) and its per-job keys.
QUEUE_NAME: Final = default_queue_name
JOB_KEY_PREFIX: Final = job_key_prefix
RESULT_KEY_PREFIX: Final = result_key_prefix
# A job a worker has started; arq skips it until the mark expires.
IN_PROGRESS_KEY_PREFIX: Final = in_progress_key_prefix

# The worker's arq heartbeat: the key arq sets every HEARTBEAT_INTERVAL seconds, expiring
# one second after the next one is due, so a dead or stuck worker is noticed within seconds.
HEARTBEAT_INTERVAL: Final = 5
HEARTBEAT_KEY: Final = QUEUE_NAME + health_check_key_suffix

# Job names: what the front door and the command line enqueue, and the worker's cron jobs.
HANDLE_INTERACTION: Final = "handle_interaction"
SYNC_GUILDS: Final = "sync_guilds"
RUN_SYNC: Final = "run_sync"
RUN_ASK: Final = "run_ask"
BACKUP_JOB: Final = "backup_state"
INTEGRITY_JOB: Final = "check_integrity"
VACUUM_JOB: Final = "vacuum_analyze"

# Per-user command counters of the front door's rate limit.
RATE_KEY_PREFIX: Final = "frontdoor:rate:"
# What the worker reports for /health (database, index, disk), rewritten every interval.
WORKER_REPORT_KEY: Final = "health:worker"
# The latest PRAGMA integrity_check and index check, kept until the next one.
INTEGRITY_KEY: Final = "health:integrity"
# Per-minute request counters of web and worker: `health:stats:SOURCE:MINUTE`.
STATS_KEY_PREFIX: Final = "health:stats:"
# When the periodic sync last started, so workers and restarts keep its interval.
LAST_SYNC_KEY: Final = "sync:last_started"

# An interaction token lives 15 minutes; after that no reply can be delivered.
INTERACTION_TOKEN_LIFETIME: Final = 15 * 60


def followups_key(interaction_id: str) -> str:
    """The list of follow-up message ids already sent for an interaction."""
    return f"reply:{interaction_id}:followups"
