"""The arq worker process: it runs the queued commands, the periodic sync and the upkeep jobs.

`worker` builds the arq Worker and its jobs on `app.commands`; `metrics` is
what it counts. Everything the jobs do lives in `app`; this package only runs it.
"""
