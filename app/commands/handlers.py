"""The command handlers by name: each answers one invocation through its Reply."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from app.commands.ask import ask
from app.commands.delivery import Responder
from app.commands.privacy import privacy
from app.commands.related import find_related
from app.commands.resources import Resources
from app.commands.search import search
from app.commands.stats import stats
from app.commands.summarize import summarize, summarize_from_here
from app.commands.sync import sync
from app.interactions.commands import (
    ASK,
    FIND_RELATED,
    PRIVACY,
    SEARCH,
    STATS,
    SUMMARIZE,
    SUMMARIZE_FROM_HERE,
    SYNC,
)
from app.interactions.invocation import Invocation

Handler = Callable[[Resources, Invocation, Responder], Awaitable[str]]

HANDLERS: Mapping[str, Handler] = {
    ASK: ask,
    SEARCH: search,
    SUMMARIZE: summarize,
    STATS: stats,
    SYNC: sync,
    PRIVACY: privacy,
    FIND_RELATED: find_related,
    SUMMARIZE_FROM_HERE: summarize_from_here,
}
