"""The commands that read history: /ask, /search and /summarize.

Every one of them first decides which channels the invoking member may read
(`PermissionScope`), and nothing outside that set is ever retrieved, quoted
or linked. Links to sources come from the retrieved rows, never from the
model's text.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.delivery import Reply
from app.errors import BotError
from app.interactions.commands import SUMMARIZE_COUNT_DEFAULT
from app.interactions.invocation import Invocation
from app.llm.prompts import NO_ANSWER, Prompt, Quote, ask_prompt, map_reduce_summary
from app.retrieval.permissions import PermissionScope, Viewer
from app.retrieval.search import Passage, jump_link
from app.store.models import ChannelAccess, StoredMessage
from workers.resources import WorkerResources

ASK_PASSAGES = 6
SEARCH_DEFAULT = 5
SNIPPET_CHARS = 180

NOTHING_SYNCED = (
    "I have no history for this channel yet. Someone with Manage Server can run `/sync` here, "
    "or the owner can add this server to SYNC_GUILD_IDS."
)


async def permitted_channels(resources: WorkerResources, invocation: Invocation) -> set[str]:
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


async def ask(resources: WorkerResources, invocation: Invocation, reply: Reply) -> str:
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


async def search(resources: WorkerResources, invocation: Invocation, reply: Reply) -> str:
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


async def summarize(resources: WorkerResources, invocation: Invocation, reply: Reply) -> str:
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


async def _quotes(resources: WorkerResources, messages: Sequence[StoredMessage]) -> list[Quote]:
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
