"""/privacy: a member keeps their messages out of the bot's answers, lets them back in, or asks.

Always about the member who asks, never anyone else, and always answered privately. An
opt-out withholds every stored message of theirs in one transaction (see
`app.store.privacy`) and deletes their vectors before the answer goes out; an opt-in lets
their text come back from Discord as each channel is next synced. The owner does the same
from the command line (`python -m app forget --user ID [--undo]`, `app.cli.privacy`),
through `forget` and `unforget` here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from app.commands.delivery import Responder
from app.commands.resources import Resources
from app.errors import CommandError
from app.interactions.invocation import Invocation
from app.state import State
from app.store.privacy import OptInResult, OptOutResult, PrivacyStatus

OPT_OUT: Final = "opt-out"
OPT_IN: Final = "opt-in"
STATUS: Final = "status"


async def forget(state: State, user_id: str) -> OptOutResult:
    """Opt a member out: withhold their messages and delete their vectors now."""
    result = await state.store.opt_out(user_id)
    await state.indexer.remove(result.vector_ids)
    return result


async def unforget(state: State, user_id: str) -> OptInResult:
    """Opt a member back in: their text returns with the next sync of each channel."""
    return await state.store.opt_in(user_id)


async def forget_for_owner(state: State, user_id: str, *, undo: bool) -> str:
    """`python -m app forget --user ID [--undo]`: the same, told to the owner in one line."""
    if undo:
        opted_in = await unforget(state, user_id)
        done = "opted in again" if opted_in.was_opted_out else "was not opted out"
        return (
            f"member {user_id} {done}; {_messages(opted_in.messages)} in {opted_in.channels} "
            "channels get their text back from Discord at the next sync"
        )
    opted_out = await forget(state, user_id)
    if opted_out.already:
        return f"member {user_id} has been opted out since {_when(opted_out.since)}"
    return (
        f"member {user_id} opted out: {_messages(opted_out.cleared)} emptied, "
        f"{len(opted_out.vector_ids):,} vectors deleted"
    )


async def privacy(resources: Resources, invocation: Invocation, reply: Responder) -> str:
    """/privacy choice: opt-out, opt-in or status, for the member who asks."""
    choice = invocation.options.get("choice")
    state = resources.state
    if choice == OPT_OUT:
        text = opted_out_text(await forget(state, invocation.user_id))
    elif choice == OPT_IN:
        text = opted_in_text(await unforget(state, invocation.user_id))
    elif choice == STATUS:
        text = status_text(await state.store.privacy_status(invocation.user_id))
    else:
        raise CommandError("`choice` must be opt-out, opt-in or status")
    await reply.send(text)
    return "ok"


def opted_out_text(result: OptOutResult) -> str:
    """The member's answer to an opt-out."""
    undo = "`/privacy opt-in` undoes it."
    if result.already:
        return f"You have been opted out since {_when(result.since)}; nothing changed. {undo}"
    kept = (
        f"Your {_messages(result.cleared)} stay only as empty placeholders"
        if result.cleared
        else "I held none of your messages"
    )
    return (
        f"Done: you are opted out. {kept}, so they can no longer be searched, quoted, "
        "summarised or counted under your name, and the messages you write from now on are "
        f"stored without their text. {undo}"
    )


def opted_in_text(result: OptInResult) -> str:
    """The member's answer to an opt-in."""
    coming = (
        f" Your {_messages(result.messages)} in {result.channels} "
        f"{'channel' if result.channels == 1 else 'channels'} come back as each channel is next "
        "synced: their text is read from Discord again, since I kept no copy."
        if result.messages
        else ""
    )
    if not result.was_opted_out:
        return "You were not opted out." + coming
    return "Done: you are opted in again." + (coming or " New messages are stored as usual.")


def status_text(status: PrivacyStatus) -> str:
    """The member's answer to a status question."""
    if status.since is not None:
        return (
            f"You are opted out since {_when(status.since)}: {_messages(status.withheld)} of "
            "yours are kept without text and never searched, quoted, summarised or named. "
            "`/privacy opt-in` undoes it."
        )
    text = (
        "You are not opted out: members who can read a channel can find, quote and summarise "
        "your messages in it through me. `/privacy opt-out` keeps them out."
    )
    if status.withheld:
        text += (
            f" {_messages(status.withheld).capitalize()} of yours still wait for their "
            "channel's next sync to get their text back."
        )
    return text


def _messages(count: int) -> str:
    return f"{count:,} {'message' if count == 1 else 'messages'}"


def _when(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC"
