"""What answering a command needs, opened by one function for the worker and the terminal.

The worker opens these once at start-up and shares them between jobs; the
command line (`python -m app ask`, `sync`) opens the same set for one command
when no worker owns the state. Only what a caller needs is loaded: a sync
never loads the model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from app.discord.rest import DiscordRest, RestObserver
from app.discord.shared_limits import SharedLimits
from app.llm.generator import Generation, Generator
from app.ops.leases import Leases
from app.retrieval.search import Retriever
from app.settings import Settings
from app.state import State
from app.sync.runner import SyncRunner

logger = logging.getLogger(__name__)


@dataclass
class Resources:
    """The collaborators of the command handlers: state, Discord, retrieval and the model."""

    settings: Settings
    rest: DiscordRest
    state: State
    sync: SyncRunner
    retriever: Retriever
    # Loaded only when `open_resources(..., model=True)`.
    generator: Generator

    async def close(self) -> None:
        """Close what `open_resources` opened."""
        self.generator.close()
        await self.rest.aclose()
        await self.state.close()


async def open_resources(
    settings: Settings,
    owner: str,
    *,
    model: bool = True,
    discard_damaged_index: bool = False,
    leases: Leases | None = None,
    shared_limits: SharedLimits | None = None,
    observer: RestObserver | None = None,
    on_generation: Callable[[Generation], None] | None = None,
    on_search: Callable[[float], None] | None = None,
) -> Resources:
    """Take the state (as `owner`, named to whoever finds it locked) and open the rest.

    Raises `StateLockedError` when another process owns the state; the command line
    then hands its work to that process.
    """
    state = await State.open(settings, owner, discard_damaged_index=discard_damaged_index)
    generator = Generator.from_settings(settings)
    generator.on_generation = on_generation
    if model:
        try:
            await asyncio.to_thread(generator.load)
        except BaseException:
            await state.close()
            raise
    rest = DiscordRest(
        settings.discord_api_base,
        settings.discord_bot_token,
        observer=observer,
        shared_limits=shared_limits,
    )
    sync = SyncRunner(
        rest,
        state.store,
        state.indexer,
        recheck_seconds=settings.sync_recheck_days * 86_400,
        leases=leases,
    )
    return Resources(
        settings=settings,
        rest=rest,
        state=state,
        sync=sync,
        retriever=Retriever(state.store, state.index, on_search=on_search),
        generator=generator,
    )
