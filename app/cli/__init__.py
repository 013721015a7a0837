"""The command line (`python -m app ...`) and the processes it starts.

`main` parses the command and dispatches; `foreground` runs the commands that
work on the state (sync, import, reindex, ask, backup) here or hands them to a
running worker (`handoff`); `supervisor` is `run`, the all-in-one mode with its
private Redis (`redis_server`); `registration` registers the slash commands.
"""
