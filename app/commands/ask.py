"""/ask: an answer from the local model, grounded in the best passages, with its sources.

`answer_for_terminal` runs the same pipeline for `python -m app ask`, as the
owner or as a given member would see the channel.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from app.commands.delivery import CollectedReply, Responder
from app.commands.resources import Resources
from app.commands.scope import NOTHING_SYNCED, permitted_channels, quotes
from app.discord.permissions import ALL_PERMISSIONS
from app.discord.snowflakes import time_snowflake
from app.errors import CommandError
from app.interactions.commands import ASK
from app.interactions.invocation import Invocation
from app.llm.prompts import NO_ANSWER, ask_prompt
from app.retrieval.search import Passage, jump_link
from app.store.models import StoredMessage

ASK_PASSAGES = 6


async def ask(resources: Resources, invocation: Invocation, reply: Responder) -> str:
    """/ask: an answer grounded in the best passages, with jump links to its sources."""
    question = str(invocation.options.get("question", "")).strip()
    channels = await permitted_channels(resources, invocation)
    if await resources.state.store.count_live(sorted(channels)) == 0:
        await reply.send(NOTHING_SYNCED)
        return "empty"
    passages = await resources.retriever.passages(question, channels, ASK_PASSAGES)
    if not passages:
        server = invocation.options.get("scope") == "server"
        where = "the channels you can see" if server else "this channel"
        await reply.send(f"I found nothing in {where} about that.")
        return "no_match"
    generator = resources.generator
    ranked = [m for p in passages for m in p.messages]
    fitted = ask_prompt(
        question,
        await quotes(resources, ranked),
        count_tokens=generator.count_tokens,
        n_ctx=generator.n_ctx,
    )
    # Fitting keeps the best-ranked messages; the model reads them in time order.
    kept = sorted(ranked[: len(fitted.quotes)], key=lambda m: m.id)
    prompt = ask_prompt(
        question,
        await quotes(resources, kept),
        count_tokens=generator.count_tokens,
        n_ctx=generator.n_ctx,
    )

    async def show(text: str) -> None:
        await reply.progress(text.strip() + " …")

    result = await generator.generate(
        prompt.text, max_tokens=prompt.max_tokens, stop=prompt.stop, on_text=show
    )
    answer = result.text.strip() or NO_ANSWER
    if result.cut_short:
        answer += "\n*(cut short: the answer took too long)*"
    await reply.send(answer + "\n\n" + _sources(kept, passages))
    return "cut_short" if result.cut_short else "ok"


async def answer_for_terminal(
    resources: Resources,
    question: str,
    channel_id: str,
    *,
    scope: str = "channel",
    user_id: str | None = None,
) -> str:
    """The /ask pipeline for `python -m app ask`: the same retrieval, prompt and model.

    Without `user_id` it answers as the server owner would see the channel; with one, as
    that member (their roles read from Discord), which server scope requires.
    """
    channel = await resources.state.store.get_channel(channel_id)
    if channel is None or channel.guild_id is None:
        raise CommandError(
            f"channel {channel_id} is not synced: run `python -m app sync --channel`"
        )
    roles: tuple[str, ...] = ()
    permissions: int | None = ALL_PERMISSIONS
    if user_id is not None:
        if resources.settings.discord_bot_token is None:
            raise CommandError("DISCORD_BOT_TOKEN: needed to read the member's roles for --user")
        member = await resources.rest.get_guild_member(channel.guild_id, user_id)
        roles = tuple(str(r) for r in member.get("roles", []))
        permissions = None
    elif scope == "server":
        raise CommandError("--scope server needs --user ID: the answer is limited to what they see")
    invocation = Invocation(
        id=str(time_snowflake(time.time())),
        application_id="",
        token="",
        command=ASK,
        options={"question": question, "scope": scope},
        guild_id=channel.guild_id,
        channel_id=channel_id,
        user_id=user_id or "0",
        user_name="",
        member_roles=roles,
        permissions=permissions,
    )
    reply = CollectedReply()
    await ask(resources, invocation, reply)
    return reply.text


def _sources(quoted: Sequence[StoredMessage], passages: Sequence[Passage]) -> str:
    """Numbered jump links matching the [n] the model was shown; hits first if few fit."""
    hits = {p.hit.id for p in passages}
    lines = ["**Sources**"]
    for number, message in enumerate(quoted, 1):
        if message.id in hits or len(quoted) <= 8:
            lines.append(
                f"[{number}] {message.author_name or message.author_id}, "
                f"{message.timestamp:%Y-%m-%d}: {jump_link(message)}"
            )
    return "\n".join(lines)
