"""The commands that read history: /ask, /search and /summarize.

Every one of them first decides which channels the invoking member may read
(`PermissionScope`), and nothing outside that set is ever retrieved, quoted
or linked. Links to sources come from the retrieved rows, never from the
model's text.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from app.delivery import CollectedReply, Responder
from app.discord.rest import DiscordRest
from app.errors import BotError
from app.interactions.commands import ASK, SUMMARIZE_COUNT_DEFAULT
from app.interactions.invocation import Invocation
from app.jobs import time_snowflake
from app.llm.generator import Generator
from app.llm.prompts import NO_ANSWER, Prompt, Quote, ask_prompt, map_reduce_summary
from app.retrieval.permissions import ALL_PERMISSIONS, PermissionScope, Viewer
from app.retrieval.search import Passage, Retriever, jump_link
from app.state import State
from app.store.models import ChannelAccess, StoredMessage

ASK_PASSAGES = 6
SEARCH_DEFAULT = 5
SNIPPET_CHARS = 180


class Answering(Protocol):
    """What answering needs: the state, retrieval and the model (the worker has them all)."""

    @property
    def state(self) -> State: ...

    @property
    def retriever(self) -> Retriever: ...

    @property
    def generator(self) -> Generator: ...


NOTHING_SYNCED = (
    "I have no history for this channel yet. Someone with Manage Server can run `/sync` here, "
    "or the owner can add this server to SYNC_GUILD_IDS."
)


async def permitted_channels(resources: Answering, invocation: Invocation) -> set[str]:
    """The channels this member may read for this command's scope."""
    if invocation.guild_id is None:
        raise BotError("this command works in a server's channels only")
    viewer = Viewer(
        guild_id=invocation.guild_id,
        user_id=invocation.user_id,
        role_ids=frozenset(invocation.member_roles),
        channel_id=invocation.channel_id,
        channel_permissions=invocation.permissions,
    )
    scope = PermissionScope(resources.state.store)
    if invocation.options.get("scope") != "server":
        return await scope.channel_scope(viewer)
    visible = await scope.visible_channels(viewer)
    # A channel known only from an import carries no permission overwrites yet: it is
    # shown beyond its own channel only once a sync has read its real permissions.
    confirmed = await resources.state.store.channels_with_access(
        invocation.guild_id, ChannelAccess.OK
    )
    return {c for c in visible if c in confirmed or c == invocation.channel_id}


async def ask(resources: Answering, invocation: Invocation, reply: Responder) -> str:
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
    quotes = await _quotes(resources, ranked)
    fitted = ask_prompt(
        question, quotes, count_tokens=generator.count_tokens, n_ctx=generator.n_ctx
    )
    # Fitting keeps the best-ranked messages; the model reads them in time order.
    kept = sorted(ranked[: len(fitted.quotes)], key=lambda m: m.id)
    prompt = ask_prompt(
        question,
        await _quotes(resources, kept),
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


async def search(resources: Answering, invocation: Invocation, reply: Responder) -> str:
    """/search: the best matching messages with author, date, snippet and jump link."""
    query = str(invocation.options.get("query", "")).strip()
    limit = int(invocation.options.get("limit", SEARCH_DEFAULT))
    channels = await permitted_channels(resources, invocation)
    if await resources.state.store.count_live(sorted(channels)) == 0:
        await reply.send(NOTHING_SYNCED)
        return "empty"
    hits = await resources.retriever.hits(query, channels, limit)
    if not hits:
        await reply.send("No message here matches that.")
        return "no_match"
    lines = [f"**Best matches for** “{_snippet(query, 100)}”:"]
    for rank, (message, similarity) in enumerate(hits, 1):
        lines.append(
            f"**{rank}.** {message.author_name or message.author_id}, "
            f"{message.timestamp:%Y-%m-%d}: {_snippet(message.index_text, SNIPPET_CHARS)} "
            f"([jump]({jump_link(message)}), {similarity:.0%})"
        )
    await reply.send("\n".join(lines))
    return "ok"


async def summarize(resources: Answering, invocation: Invocation, reply: Responder) -> str:
    """/summarize: the channel's last `count` messages, part by part when they are many."""
    count = int(invocation.options.get("count", SUMMARIZE_COUNT_DEFAULT))
    messages = await resources.state.store.recent_messages(invocation.channel_id, count)
    messages = [m for m in messages if m.index_text.strip()]
    if not messages:
        await reply.send(NOTHING_SYNCED)
        return "empty"
    await reply.progress(f"Summarizing the last {len(messages)} messages…")
    generator = resources.generator

    async def complete(prompt: Prompt) -> str:
        result = await generator.generate(
            prompt.text, max_tokens=prompt.max_tokens, stop=prompt.stop
        )
        return result.text

    summary = await map_reduce_summary(
        await _quotes(resources, messages),
        complete=complete,
        count_tokens=generator.count_tokens,
        n_ctx=generator.n_ctx,
    )
    first, last = messages[0], messages[-1]
    header = (
        f"**Summary of the last {len(messages)} messages** "
        f"({first.timestamp:%Y-%m-%d} to {last.timestamp:%Y-%m-%d}, "
        f"from [here]({jump_link(first)}) to [here]({jump_link(last)})):"
    )
    await reply.send(header + "\n" + (summary.text or NO_ANSWER))
    return "ok"


async def answer_for_terminal(
    answering: Answering,
    rest: DiscordRest | None,
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
    channel = await answering.state.store.get_channel(channel_id)
    if channel is None or channel.guild_id is None:
        raise BotError(f"channel {channel_id} is not synced: run `python -m app sync --channel`")
    roles: tuple[str, ...] = ()
    permissions: int | None = ALL_PERMISSIONS
    if user_id is not None:
        if rest is None:
            raise BotError("DISCORD_BOT_TOKEN: needed to read the member's roles for --user")
        member = await rest.get_guild_member(channel.guild_id, user_id)
        roles = tuple(str(r) for r in member.get("roles", []))
        permissions = None
    elif scope == "server":
        raise BotError("--scope server needs --user ID: the answer is limited to what they see")
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
    await ask(answering, invocation, reply)
    return reply.text


async def _quotes(resources: Answering, messages: Sequence[StoredMessage]) -> list[Quote]:
    names: dict[str, str] = {}
    for channel_id in {m.channel_id for m in messages}:
        channel = await resources.state.store.get_channel(channel_id)
        names[channel_id] = channel.name if channel else channel_id
    return [
        Quote(
            author=m.author_name or m.author_id,
            channel=names[m.channel_id],
            timestamp=m.timestamp,
            text=m.index_text,
        )
        for m in messages
    ]


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


def _snippet(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"
