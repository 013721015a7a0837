"""/ask: an answer from the local model, grounded in the best passages, with its sources.

The model sees the best hits with their neighbours, numbered and dated, and
answers with the shortest phrase and the number of its source. What it writes
is then checked before anyone sees it: its source numbers become the sources
list (cited first, then the other hits), and a link that is not one of those
sources is shown as its host name only, so a message planted in the history
cannot make the answer carry data to a URL (and no reply unfurls a link:
`delivery.SUPPRESS_EMBEDS`).

`answer_for_terminal` runs the same pipeline for `python -m app ask`, as the
owner or as a given member would see the channel.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from app.commands.delivery import CollectedReply, Responder
from app.commands.resources import Resources
from app.commands.scope import NOTHING_SYNCED, permitted_channels, quotes
from app.discord.permissions import ALL_PERMISSIONS
from app.discord.snowflakes import time_snowflake
from app.errors import CommandError
from app.interactions.commands import ASK
from app.interactions.invocation import Invocation
from app.llm.generator import Sampling
from app.llm.prompts import NO_ANSWER, ask_prompt
from app.retrieval.query import terms
from app.retrieval.search import jump_link
from app.store.models import StoredMessage

# Hits handed to the model, each with a neighbour on either side.
ASK_PASSAGES = 5
# Best hits listed under an answer, besides the messages it cites.
SOURCES_SHOWN = 5
# A factual answer is the model's most likely one: the same question gets the same answer.
ANSWER_SAMPLING = Sampling(temperature=0.0)
# Share of an answer's words a quoted line must hold to be where the answer comes from.
GROUNDED = 0.5

_CITATION = re.compile(r"\s*\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_MARKDOWN_LINK = re.compile(r"\[([^\]\n]*)\]\(<?([^)\s>]+)>?\)")
_URL = re.compile(r"<?\b(?:https?|ftp)://[^\s<>)\]]+>?", re.I)
# A host and path without a scheme (not inside a URL kept above).
_BARE_HOST = re.compile(
    r"(?<![\w./:@`-])(?:www\.)?[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}/\S*", re.I
)


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
    # Best passage first, so fitting keeps the best; the model then reads them in time order.
    ranked = list(dict.fromkeys(m for p in passages for m in _hit_first(p.hit, p.messages)))
    fitted = ask_prompt(
        question,
        await quotes(resources, ranked),
        count_tokens=generator.count_tokens,
        n_ctx=generator.n_ctx,
    )
    kept = sorted(ranked[: len(fitted.quotes)], key=lambda m: m.id)
    prompt = ask_prompt(
        question,
        await quotes(resources, kept),
        count_tokens=generator.count_tokens,
        n_ctx=generator.n_ctx,
    )

    async def show(text: str) -> None:
        shown = clean_answer(text, [])[0]
        if shown:
            await reply.progress(shown + " …")

    result = await generator.generate(
        prompt.text,
        max_tokens=prompt.max_tokens,
        stop=prompt.stop,
        on_text=show,
        sampling=ANSWER_SAMPLING,
    )
    answer, cited = clean_answer(result.text, kept)
    if answer != NO_ANSWER:
        cited = grounded(answer, cited, kept[: len(prompt.lines)], prompt.lines)
    named = await resources.retriever.members_named(question, channels)
    if not answer or not attributed(cited, named, question):
        answer, cited = NO_ANSWER, []
    if result.cut_short:
        answer += "\n*(cut short: the answer took too long)*"
    hits = [p.hit for p in passages]
    await reply.send(answer + "\n\n" + sources(cited, hits))
    return "cut_short" if result.cut_short else "ok"


async def prime(resources: Resources) -> None:
    """Read /ask's fixed instructions and worked examples into the model ahead of the first
    question (a worker does this as it starts), so the first answer skips them as later
    answers do."""
    generator = resources.generator
    fixed = ask_prompt("", [], count_tokens=generator.count_tokens, n_ctx=generator.n_ctx)
    await generator.prime(fixed.text)


def clean_answer(text: str, quoted: Sequence[StoredMessage]) -> tuple[str, list[StoredMessage]]:
    """The model's answer as members see it, and the quoted messages it cites.

    Source numbers ([2], [1, 3]) are taken out of the text and returned as messages; a
    link is kept only if it is the jump link of a quoted message, any other shows as its
    host name in plain text (no URL, so no path or query can carry data out).
    """
    cited: list[StoredMessage] = []
    for match in _CITATION.finditer(text):
        for number in re.split(r"\s*,\s*", match.group(1)):
            index = int(number) - 1
            if 0 <= index < len(quoted) and quoted[index] not in cited:
                cited.append(quoted[index])
    text = _CITATION.sub("", text)
    # The answer is its first line; a model that goes on copies a quote (" / " joins its lines).
    text = text.strip().split("\n", 1)[0].split(" / ", 1)[0]
    allowed = {jump_link(m) for m in quoted}
    text = _MARKDOWN_LINK.sub(lambda m: _link_text(m.group(1), m.group(2), allowed), text)
    text = _URL.sub(lambda m: _shown_url(m.group(0).strip("<>"), allowed), text)
    text = _BARE_HOST.sub(lambda m: _host_of("http://" + m.group(0)), text)
    return text.strip(), cited


def grounded(
    answer: str,
    cited: Sequence[StoredMessage],
    quoted: Sequence[StoredMessage],
    lines: Sequence[str],
) -> list[StoredMessage]:
    """The quoted messages an answer comes from, checked against the words of the answer.

    A small model often cites the question next to the answer ("[2] Ana: you play any
    instrument?") rather than the reply that holds it ("[3] Ben: I play clarinet"), or cites
    nothing. When no cited line holds as many of the answer's words as the best quoted line
    (`lines[i]` being `quoted[i]`'s line, with its date), and that line holds at least
    `GROUNDED` of them, it is the source: it comes first, and cited lines holding none of the
    words go.
    Whose message that is then decides `attributed`.
    """
    wanted = set(_stems(answer))
    if not wanted or not quoted:
        return list(cited)
    cover = {
        m.id: len(wanted & set(_stems(line))) / len(wanted)
        for m, line in zip(quoted, lines, strict=True)
    }
    best = max(quoted, key=lambda m: cover.get(m.id, 0.0))
    top = cover.get(best.id, 0.0)
    if top < GROUNDED or any(cover.get(m.id, 0.0) >= top for m in cited):
        return list(cited)
    return [best, *(m for m in cited if cover.get(m.id, 0.0) > 0 and m != best)]


def attributed(
    cited: Sequence[StoredMessage], named: Mapping[str, str], question: str | None = None
) -> bool:
    """Whether an answer about the one member a question names rests on what concerns them.

    A question about Ana answered only from Ben's messages that are not about her is about
    the wrong person ("what did Ana paint?" when Ben painted): the messages do not say. Ben's
    message is about Ana when it names her other than in a greeting ("hey Ana!"), or speaks
    to her ("your painting is lovely"). Ana's own message is about her unless it only asks
    Ben something ("Wow! What got you into running?").
    """
    names = {name.lower() for name in named.values()}
    if len(names) != 1 or not cited:
        return True
    (name,) = names
    if question is not None and _FRIEND_OF.search(question.replace("\u2019", "'")):
        # "Ana's friend", "Ana's colleague": the answer may be that person's own message.
        return True
    return any(
        not _only_asks(m.content) if m.author_id in named else _about(m.index_text, name)
        for m in cited
    )


def sources(cited: Sequence[StoredMessage], hits: Sequence[StoredMessage]) -> str:
    """The sources list: the messages the answer cites first, then the best hits.

    A cited message never pushes a best hit off the list: when a small model cites the
    wrong line, the message that answers is still one click away.
    """
    listed = list(dict.fromkeys([*cited, *hits[:SOURCES_SHOWN]]))
    lines = ["**Sources**"]
    for number, message in enumerate(listed, 1):
        mark = " (cited)" if message in cited else ""
        lines.append(
            f"[{number}] {message.author_name or message.author_id}, "
            f"{message.timestamp:%Y-%m-%d}{mark}: {jump_link(message)}"
        )
    return "\n".join(lines)


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


def _stems(text: str) -> list[str]:
    """Content words of `text`, plural and singular alike."""
    return [w[:-1] if len(w) > 3 and w.endswith("s") else w for w in terms(text)]


def _hit_first(hit: StoredMessage, messages: Sequence[StoredMessage]) -> list[StoredMessage]:
    """A passage's messages with its hit first, then its neighbours nearest first."""
    return sorted(messages, key=lambda m: (m.id != hit.id, abs(m.id - hit.id)))


_GREETING = re.compile(
    r"^(?:hey|hi|hello|oh|wow|thanks|thank you|yes|yeah|aw+|congrats|good (?:morning|night))?"
    r"[,!]?$",
    re.I,
)
# Someone outside a member's family, named through them: "Ana's friend" may be Ben himself,
# whose own messages then answer. About her family ("Ana's kids"), hers or those about her do.
_FRIEND_OF = re.compile(
    r"'s\s+(?:\w+\s+)?(?:friends?|colleagues?|co-?workers?|neighbou?rs?|boss)\b", re.I
)
_YOU = re.compile(r"\b(?:you|your|yours|yourself)\b", re.I)
# A message about its author's own life ("I've been running") that asks "how about you?"
# is still about its author.
_FIRST_PERSON = re.compile(r"\b(?:i|i'm|i've|i'd|i'll|me|my|mine|myself)\b", re.I)
_WE = re.compile(r"\b(?:we|we're|we've|we'd|we'll|us|our|ours|ourselves)\b", re.I)
_SENTENCE = re.compile(r"[^.!?]+[.!?]*")


def _only_asks(text: str) -> bool:
    """Whether a message only asks the other person something: "Nice! Did you like it?".

    It speaks to someone, asks, says nothing of its author, and says nothing else beyond an
    exclamation of a few words.
    """
    if not (_YOU.search(text) and "?" in text):
        return False
    if _FIRST_PERSON.search(text) or _WE.search(text):
        return False
    statements = [s for s in _SENTENCE.findall(text) if s.strip() and not s.strip().endswith("?")]
    return all(len(s.split()) <= 3 for s in statements)


def _about(text: str, name: str) -> bool:
    """Whether a message by someone else is about `name`: names them, or speaks to them."""
    if _YOU.search(text) and not _FIRST_PERSON.search(text):
        return True
    for match in re.finditer(r"(?<!\w)" + re.escape(name) + r"(?!\w)", text, re.I):
        before = text[: match.start()].rsplit(".", 1)[-1].rsplit("!", 1)[-1].strip()
        after = text[match.end() :].lstrip()
        greeting = _GREETING.match(before) is not None and (not after or after[0] in ",!.?")
        if not greeting:
            return True
    return False


def _link_text(label: str, url: str, allowed: set[str]) -> str:
    if url in allowed:
        return f"[{label}]({url})"
    return f"{label} ({_host_of(url)})" if label.strip() else _host_of(url)


def _shown_url(url: str, allowed: set[str]) -> str:
    return url if url in allowed else _host_of(url)


def _host_of(url: str) -> str:
    """A URL's host as plain text that Discord does not turn into a link."""
    host = (urlsplit(url).hostname or "a link").removeprefix("www.")
    # Inline code is never turned into a link.
    return "`" + host + "`"
