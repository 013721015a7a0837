"""The framework-free core of POST /interactions: verify, parse, route, admit, answer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from app.interactions import responses
from app.interactions.admission import Admission, AdmissionUnavailable, Outcome
from app.interactions.commands import COMMAND_NAMES, SYNC, is_ephemeral
from app.interactions.invocation import InvalidInvocation, Invocation
from app.interactions.models import (
    APPLICATION_COMMAND,
    MANAGE_GUILD,
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


# Told of every answered request: interaction type, command and outcome (for metrics).
InteractionObserver = Callable[[int | None, str | None, str], None]


class InteractionEndpoint:
    """Answers one signed interaction request with a status and a JSON body.

    Nothing here knows about HTTP frameworks, so tests and adapters call
    `handle` with the raw body and the two signature headers.
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

    async def handle(self, body: bytes, signature: str | None, timestamp: str | None) -> Reply:
        """Verify before reading anything, then answer within Discord's deadline."""
        started = time.perf_counter()
        try:
            result = await self._answer(body, signature, timestamp)
        except Exception:
            # A bug must not surface as Discord's bare "interaction failed".
            logger.exception("interaction could not be answered")
            result = _Result(
                200, responses.ephemeral_message("Something went wrong on my side."), "error"
            )
        if self.observer is not None:
            interaction = result.interaction
            command = interaction.command if interaction else None
            self.observer(
                interaction.type if interaction else None,
                # Metric labels must stay a small set whatever a request names.
                command if command is None or command in COMMAND_NAMES else "other",
                result.outcome,
            )
        # PINGs are Discord's probes of the endpoint, not anyone's request: DEBUG only.
        level = logging.DEBUG if result.outcome == "pong" else logging.INFO
        if logger.isEnabledFor(level):
            _log(result, started, level)
        return result.status, result.body

    async def _answer(self, body: bytes, signature: str | None, timestamp: str | None) -> _Result:
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
        return await self._command(interaction)

    async def _command(self, interaction: Interaction) -> _Result:
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
        problem = self.options.problem(name, interaction.options)
        if problem is not None:
            return _Result(200, responses.ephemeral_message(problem), "bad_options", interaction)
        assert interaction.id is not None  # parse_interaction guarantees it for commands
        try:
            verdict = await self.admission.admit(
                interaction.raw, interaction.id, interaction.user_id or _UNKNOWN_USER
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


def _log(result: _Result, started: float, level: int) -> None:
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
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "detail": result.detail,
        },
    )
