"""The framework-free core of POST /interactions: verify, parse, route, admit, answer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

from app.discord.permissions import MANAGE_GUILD
from app.interactions import responses
from app.interactions.admission import Admission, AdmissionUnavailable, Outcome
from app.interactions.commands import COMMAND_NAMES, SYNC, is_ephemeral, queue_for
from app.interactions.invocation import InvalidInvocation, Invocation
from app.interactions.models import (
    APPLICATION_COMMAND,
    PING,
    Interaction,
    MalformedInteraction,
    OptionChecker,
    parse_interaction,
    shown_name,
)
from app.interactions.verify import SignatureError, SignatureVerifier

logger = logging.getLogger(__name__)

Reply = tuple[int, bytes]

_UNAUTHORIZED: Final = responses.error("invalid request signature")
_UNKNOWN_USER: Final = "unknown"


@dataclass(slots=True)
class _Result:
    status: int
    body: bytes
    outcome: str
    interaction: Interaction | None = None
    detail: str | None = None


# Told of every answered request: interaction type, command, outcome and the seconds taken.
InteractionObserver = Callable[[int | None, str | None, str, float], None]


class InteractionEndpoint:
    """Answers one signed interaction request with a status and a JSON body.

    Nothing here knows about HTTP frameworks, so tests and adapters call
    `respond` or `handle` with the raw body and the two signature headers.
    """

    def __init__(
        self,
        verifier: SignatureVerifier,
        admission: Admission,
        options: OptionChecker | None = None,
        observer: InteractionObserver | None = None,
    ) -> None:
        self.verifier = verifier
        self.admission = admission
        self.options = options if options is not None else OptionChecker()
        self.observer = observer

    def respond(
        self, body: bytes, signature: str | None, timestamp: str | None
    ) -> Reply | Coroutine[Any, Any, Reply]:
        """The reply now, or, when a command must first be admitted in Redis, a coroutine for it.

        Everything but the admission is synchronous: a PING, a bad signature or a refused
        command is answered without a task, and an HTTP adapter can write the reply at once.
        """
        started = time.perf_counter()
        try:
            decided = self._decide(body, signature, timestamp)
        except Exception:
            # A bug must not surface as Discord's bare "interaction failed".
            logger.exception("interaction could not be answered")
            decided = _failed()
        if isinstance(decided, _Result):
            return self._finish(decided, started)
        return self._admit(decided, started)

    async def handle(self, body: bytes, signature: str | None, timestamp: str | None) -> Reply:
        """Verify before reading anything, then answer within Discord's deadline."""
        reply = self.respond(body, signature, timestamp)
        return reply if isinstance(reply, tuple) else await reply

    def _finish(self, result: _Result, started: float) -> Reply:
        elapsed = time.perf_counter() - started
        if self.observer is not None:
            interaction = result.interaction
            command = interaction.command if interaction else None
            self.observer(
                interaction.type if interaction else None,
                # Metric labels must stay a small set whatever a request names.
                command if command is None or command in COMMAND_NAMES else "other",
                result.outcome,
                elapsed,
            )
        # PINGs are Discord's probes of the endpoint, not anyone's request: DEBUG only.
        level = logging.DEBUG if result.outcome == "pong" else logging.INFO
        if logger.isEnabledFor(level):
            _log(result, elapsed, level)
        return result.status, result.body

    def _decide(
        self, body: bytes, signature: str | None, timestamp: str | None
    ) -> _Result | Interaction:
        """The final result, or the verified, checked command that admission must decide."""
        try:
            self.verifier.verify(body, signature, timestamp)
        except SignatureError as exc:
            return _Result(401, _UNAUTHORIZED, "unauthorized", detail=str(exc))
        try:
            interaction = parse_interaction(body)
        except MalformedInteraction as exc:
            return _Result(400, responses.error(str(exc)), "malformed", detail=str(exc))
        if interaction.type == PING:
            return _Result(200, responses.PONG_BODY, "pong", interaction)
        if interaction.type != APPLICATION_COMMAND:
            return _Result(
                200,
                responses.ephemeral_message("That kind of interaction is not supported."),
                "unsupported",
                interaction,
            )
        return self._check_command(interaction)

    def _check_command(self, interaction: Interaction) -> _Result | Interaction:
        try:
            # What the worker will need to answer; without it nothing can be delivered.
            Invocation.from_raw(interaction.raw)
        except InvalidInvocation as exc:
            return _Result(400, responses.error(str(exc)), "malformed", interaction, str(exc))
        name = interaction.command
        if name is None or name not in COMMAND_NAMES:
            text = (
                f"I don't know the command /{shown_name(name)}."
                if name
                else "That command is unknown."
            )
            return _Result(200, responses.ephemeral_message(text), "unknown_command", interaction)
        # Defence in depth beside default_member_permissions, which a guild can override.
        if name == SYNC and not interaction.has_permission(MANAGE_GUILD):
            text = "Only members with the Manage Server permission can use /sync."
            return _Result(200, responses.ephemeral_message(text), "forbidden", interaction)
        problem = self.options.problem(name, interaction.options, interaction.command_type)
        if problem is not None:
            return _Result(200, responses.ephemeral_message(problem), "bad_options", interaction)
        return interaction

    async def _admit(self, interaction: Interaction, started: float) -> Reply:
        try:
            result = await self._admission_result(interaction)
        except Exception:
            logger.exception("interaction %s could not be admitted", interaction.id)
            result = _failed(interaction)
        return self._finish(result, started)

    async def _admission_result(self, interaction: Interaction) -> _Result:
        assert interaction.id is not None  # parse_interaction guarantees it for commands
        name = interaction.command
        assert name is not None  # _check_command let only known commands through
        try:
            verdict = await self.admission.admit(
                interaction.raw,
                interaction.id,
                interaction.user_id or _UNKNOWN_USER,
                queue=queue_for(name),
            )
        except AdmissionUnavailable as exc:
            logger.warning("interaction %s not admitted: %s", interaction.id, exc)
            return _Result(200, responses.UNAVAILABLE_BODY, "unavailable", interaction)
        if verdict.outcome is Outcome.BUSY:
            return _Result(200, responses.BUSY_BODY, "busy", interaction)
        if verdict.outcome is Outcome.RATE_LIMITED:
            body = responses.rate_limited(verdict.retry_after)
            return _Result(200, body, "rate_limited", interaction)
        body = responses.deferred(is_ephemeral(name, interaction.options))
        return _Result(200, body, verdict.outcome.value, interaction)


def _failed(interaction: Interaction | None = None) -> _Result:
    return _Result(
        200, responses.ephemeral_message("Something went wrong on my side."), "error", interaction
    )


def _log(result: _Result, elapsed: float, level: int) -> None:
    interaction = result.interaction
    logger.log(
        level,
        "interaction %s",
        result.outcome,
        extra={
            "interaction_id": interaction.id if interaction else None,
            "interaction_type": interaction.type if interaction else None,
            "command": interaction.command if interaction else None,
            "outcome": result.outcome,
            "status": result.status,
            "latency_ms": round(elapsed * 1000, 3),
            "detail": result.detail,
        },
    )
