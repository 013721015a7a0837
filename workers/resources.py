"""What every job needs, opened once when the worker starts and closed when it stops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from arq.connections import ArqRedis

from app.discord.rest import DiscordRest, RestObserver
from app.llm.generator import Generation, Generator
from app.retrieval.search import Retriever
from app.settings import Settings
from app.state import State
from app.sync.runner import SyncRunner

logger = logging.getLogger(__name__)


@dataclass
class WorkerResources:
    """Shared collaborators of the job handlers."""

    settings: Settings
    redis: ArqRedis
    rest: DiscordRest
    state: State
    sync: SyncRunner
    retriever: Retriever
    generator: Generator

    async def close(self) -> None:
        """Close what `open_resources` opened."""
        self.generator.close()
        await self.rest.aclose()
        await self.state.close()


async def open_resources(
    settings: Settings,
    redis: ArqRedis,
    *,
    observer: RestObserver | None = None,
    on_generation: Callable[[Generation], None] | None = None,
    on_search: Callable[[float], None] | None = None,
) -> WorkerResources:
    """Open the worker's collaborators from its settings, reporting to the given observers."""
    if settings.discord_bot_token is None:
        logger.warning("DISCORD_BOT_TOKEN is not set: sync cannot run; replies still work")
    state = await State.open(settings, "worker")
    try:
        generator = Generator.from_settings(settings)
        generator.on_generation = on_generation
        await asyncio.to_thread(generator.load)
    except BaseException:
        await state.close()
        raise
    rest = DiscordRest(settings.discord_api_base, settings.discord_bot_token, observer=observer)
    sync = SyncRunner(
        rest, state.store, state.indexer, recheck_seconds=settings.sync_recheck_days * 86_400
    )
    return WorkerResources(
        settings=settings,
        redis=redis,
        rest=rest,
        state=state,
        sync=sync,
        retriever=Retriever(state.store, state.index, on_search=on_search),
        generator=generator,
    )
