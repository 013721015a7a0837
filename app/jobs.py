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
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
)

# arq's queue (a sorted set of job ids) and its per-job keys.
QUEUE_NAME: Final = default_queue_name
# Commands that run the model wait here instead: each worker takes from it no more jobs than
# it has generators, so the next answer goes to a worker that can start generating now.
ANSWER_QUEUE_NAME: Final = default_queue_name + ":answers"
QUEUE_NAMES: Final = (QUEUE_NAME, ANSWER_QUEUE_NAME)
JOB_KEY_PREFIX: Final = job_key_prefix
RESULT_KEY_PREFIX: Final = result_key_prefix
# A job a worker has started; arq skips it until the mark expires.
IN_PROGRESS_KEY_PREFIX: Final = in_progress_key_prefix

# How often each worker writes its heartbeat (and arq its own health-check key).
HEARTBEAT_INTERVAL: Final = 5

# Job names: what the front door and the command line enqueue, and the worker's cron jobs.
HANDLE_INTERACTION: Final = "handle_interaction"
SYNC_GUILDS: Final = "sync_guilds"
RUN_SYNC: Final = "run_sync"
RUN_ASK: Final = "run_ask"
RUN_REINDEX: Final = "run_reindex"
RUN_FORGET: Final = "run_forget"
BACKUP_JOB: Final = "backup_state"
INTEGRITY_JOB: Final = "check_integrity"
VACUUM_JOB: Final = "vacuum_analyze"

# Per-user command counters of the front door's rate limit.
RATE_KEY_PREFIX: Final = "frontdoor:rate:"
# What the worker reports for /health (database, index, disk), rewritten every interval.
WORKER_REPORT_KEY: Final = "health:worker"
# Each worker's own heartbeat, `health:workers:WORKER_ID`: who it is and what it runs,
# rewritten every HEARTBEAT_INTERVAL and expiring after WORKER_HEARTBEAT_TTL, so /health can
# list every live worker with its age and the command line knows whether any worker runs.
WORKER_HEARTBEAT_PREFIX: Final = "health:workers:"
WORKER_HEARTBEAT_TTL: Final = 3 * HEARTBEAT_INTERVAL
# Which worker runs a job: `worker:job:JOB_ID` holds its worker id while the job runs, so
# a job left in progress by a worker whose heartbeat has gone can be freed for another.
JOB_OWNER_PREFIX: Final = "worker:job:"
# Leases (app.ops.leases) that coordinate every worker and command line: `lease:NAME`.
LEASE_KEY_PREFIX: Final = "lease:"
# Discord's rate limits shared by every process using the bot token: `ratelimit:...`.
RATE_LIMIT_KEY_PREFIX: Final = "ratelimit:"
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


def worker_heartbeat_key(worker_id: str) -> str:
    """The heartbeat key of one worker."""
    return WORKER_HEARTBEAT_PREFIX + worker_id


def job_owner_key(job_id: str) -> str:
    """Which worker runs job `job_id`."""
    return JOB_OWNER_PREFIX + job_id


def lease_key(name: str) -> str:
    """The Redis key of the lease called `name`."""
    return LEASE_KEY_PREFIX + name
