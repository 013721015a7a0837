"""`python -m app forget --user ID [--undo]` and `python -m app privacy`: the owner's /privacy.

`forget` opts a member out (or back in, with `--undo`) exactly as `/privacy` does for the
member: here when no worker runs, otherwise through the queue by a worker, which owns the
state. `privacy` lists who opted out; it only reads, so it runs beside a worker.
"""

from __future__ import annotations

import re
from typing import Final

from app.cli.handoff import run_on_worker, workers_running
from app.errors import StateLockedError, UsageError
from app.jobs import RUN_FORGET
from app.settings import Settings
from app.store.db import Store
from app.store.privacy import OptOut

# A Discord id: an unsigned 64-bit integer, written in decimal.
_SNOWFLAKE: Final = re.compile(r"[0-9]{1,20}")


def user_id_argument(value: str) -> str:
    """`--user`'s value as a Discord user id; a UsageError names what is wrong."""
    text = value.strip()
    if not _SNOWFLAKE.fullmatch(text) or not 0 < int(text) < 2**64:
        raise UsageError(
            f"--user: {value!r} is not a Discord user id (a number such as 80351110224678912)"
        )
    return text


async def forget(settings: Settings, user_id: str, *, undo: bool) -> str:
    """Opt a member out (or back in): here, or by a worker when any runs."""
    user_id = user_id_argument(user_id)
    if busy := await workers_running(settings):
        return await run_on_worker(settings, busy, RUN_FORGET, user_id, undo)
    from app.commands.privacy import forget_for_owner
    from app.state import State

    try:
        state = await State.open(settings, "forget command")
    except StateLockedError as exc:
        return await run_on_worker(settings, exc, RUN_FORGET, user_id, undo)
    try:
        return await forget_for_owner(state, user_id, undo=undo)
    finally:
        await state.close()


async def list_opted_out(settings: Settings) -> list[OptOut]:
    """Every member who opted out; needs no state lock (a reader never blocks the writer)."""
    async with Store.from_url(settings.database_url) as store:
        await store.migrate()
        return await store.opted_out_members()


def format_opted_out(members: list[OptOut]) -> str:
    """A plain-text table for `python -m app privacy`, earliest opt-out first."""
    if not members:
        return "no member has opted out"
    header = ("user", "name", "opted out (UTC)", "messages withheld")
    rows = [
        (m.user_id, m.name or "-", f"{m.at:%Y-%m-%d %H:%M}", f"{m.withheld:,}") for m in members
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)
