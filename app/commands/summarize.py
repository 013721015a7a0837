"""/summarize: the channel's last messages, summarised part by part when they are many."""

from __future__ import annotations

from app.commands.delivery import Responder
from app.commands.resources import Resources
from app.commands.scope import NOTHING_SYNCED, quotes
from app.interactions.commands import SUMMARIZE_COUNT_DEFAULT
from app.interactions.invocation import Invocation
from app.llm.prompts import NO_ANSWER, Prompt, map_reduce_summary
from app.retrieval.search import jump_link


async def summarize(resources: Resources, invocation: Invocation, reply: Responder) -> str:
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
        await quotes(resources, messages),
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
