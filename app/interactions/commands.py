"""The commands (slash and message context-menu): their registration payloads and answers."""

from __future__ import annotations

from typing import Any, Final

from app.discord.permissions import MANAGE_GUILD
from app.jobs import ANSWER_QUEUE_NAME, QUEUE_NAME

# Discord's enums, as numbers on the wire.
CHAT_INPUT: Final = 1
# A message context-menu command (right-click on a message, Apps).
MESSAGE: Final = 3
OPTION_STRING: Final = 3
OPTION_INTEGER: Final = 4
OPTION_USER: Final = 6
OPTION_CHANNEL: Final = 7
CONTEXT_GUILD: Final = 0
INSTALL_GUILD: Final = 0

ASK: Final = "ask"
SEARCH: Final = "search"
SUMMARIZE: Final = "summarize"
STATS: Final = "stats"
SYNC: Final = "sync"
PRIVACY: Final = "privacy"
# Context-menu commands are named as Discord shows them.
FIND_RELATED: Final = "Find related"
SUMMARIZE_FROM_HERE: Final = "Summarize from here"

SEARCH_LIMIT_MAX: Final = 10
SUMMARIZE_COUNT_DEFAULT: Final = 50
SUMMARIZE_COUNT_MAX: Final = 500
QUESTION_MAX_LENGTH: Final = 500
WHEN_MAX_LENGTH: Final = 40
# Channel types /search's channel option offers: text, announcement, threads, forum.
SEARCHABLE_CHANNEL_TYPES: Final = [0, 5, 10, 11, 12, 15]


def _command(name: str, description: str, options: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "type": CHAT_INPUT,
        "description": description,
        "options": options,
        # History lives in guild channels; the commands make no sense in DMs.
        "contexts": [CONTEXT_GUILD],
        "integration_types": [INSTALL_GUILD],
    }


def _message_command(name: str) -> dict[str, Any]:
    """A message context-menu command: Discord requires an empty description and no options."""
    return {
        "name": name,
        "type": MESSAGE,
        "description": "",
        "contexts": [CONTEXT_GUILD],
        "integration_types": [INSTALL_GUILD],
    }


COMMANDS: Final[list[dict[str, Any]]] = [
    _command(
        ASK,
        "Ask a question about this server's history",
        [
            {
                "type": OPTION_STRING,
                "name": "question",
                "description": "What you want to know",
                "required": True,
                "min_length": 2,
                "max_length": QUESTION_MAX_LENGTH,
            },
            {
                "type": OPTION_STRING,
                "name": "scope",
                "description": "Where to look: this channel (default) or every channel you can see",
                "required": False,
                "choices": [
                    {"name": "this channel", "value": "channel"},
                    {"name": "whole server", "value": "server"},
                ],
            },
        ],
    ),
    _command(
        SEARCH,
        "Find the messages that best match a query, in this channel or one you name",
        [
            {
                "type": OPTION_STRING,
                "name": "query",
                "description": "What to look for",
                "required": True,
                "min_length": 2,
                "max_length": QUESTION_MAX_LENGTH,
            },
            {
                "type": OPTION_INTEGER,
                "name": "limit",
                "description": "How many results (1-10, default 5)",
                "required": False,
                "min_value": 1,
                "max_value": SEARCH_LIMIT_MAX,
            },
            {
                "type": OPTION_USER,
                "name": "author",
                "description": "Only messages by this member",
                "required": False,
            },
            {
                "type": OPTION_CHANNEL,
                "name": "channel",
                "description": "Search this channel (one you can read) instead of this one",
                "required": False,
                "channel_types": SEARCHABLE_CHANNEL_TYPES,
            },
            {
                "type": OPTION_STRING,
                "name": "after",
                "description": "Only messages after: 2026-11-01, 24h, 3d, 2w, 6m, 1y, yesterday",
                "required": False,
                "max_length": WHEN_MAX_LENGTH,
            },
            {
                "type": OPTION_STRING,
                "name": "before",
                "description": "Only messages before: 2026-11-01, 24h, 3d, 2w, 6m, 1y, today",
                "required": False,
                "max_length": WHEN_MAX_LENGTH,
            },
        ],
    ),
    _command(
        SUMMARIZE,
        "Summarize this channel's recent messages, or a whole thread",
        [
            {
                "type": OPTION_INTEGER,
                "name": "count",
                "description": "How many recent messages (1-500; default 50, or a whole thread)",
                "required": False,
                "min_value": 1,
                "max_value": SUMMARIZE_COUNT_MAX,
            },
            {
                "type": OPTION_STRING,
                "name": "since",
                "description": "Messages since: 2026-11-01, 24h, 3d, 2w, 6m, 1y, yesterday",
                "required": False,
                "max_length": WHEN_MAX_LENGTH,
            },
        ],
    ),
    _command(
        STATS,
        "Message count, date range and top authors of this channel, with a chart",
        [
            {
                "type": OPTION_STRING,
                "name": "period",
                "description": "Which messages to count and chart (default: all)",
                "required": False,
                "choices": [
                    {"name": "last 30 days", "value": "30d"},
                    {"name": "last year", "value": "1y"},
                    {"name": "all time", "value": "all"},
                ],
            }
        ],
    ),
    {
        **_command(SYNC, "Sync this channel's history now", []),
        "default_member_permissions": str(MANAGE_GUILD),
    },
    _command(
        PRIVACY,
        "Keep your messages out of this bot's answers, or let them back in",
        [
            {
                "type": OPTION_STRING,
                "name": "choice",
                "description": "Opt out, opt back in, or see where you stand",
                "required": True,
                "choices": [
                    {"name": "opt out", "value": "opt-out"},
                    {"name": "opt in", "value": "opt-in"},
                    {"name": "status", "value": "status"},
                ],
            }
        ],
    ),
    _message_command(FIND_RELATED),
    _message_command(SUMMARIZE_FROM_HERE),
]

COMMAND_NAMES: Final = frozenset(c["name"] for c in COMMANDS)
# The commands that run the model: they wait in the answer queue (app.jobs).
GENERATING: Final = frozenset({ASK, SUMMARIZE, SUMMARIZE_FROM_HERE})


def queue_for(name: str) -> str:
    """The queue a command's job waits in: the model's own, or the general one."""
    return ANSWER_QUEUE_NAME if name in GENERATING else QUEUE_NAME


def is_ephemeral(name: str, options: dict[str, Any]) -> bool:
    """Whether the deferred answer is visible only to the invoking user.

    Server-wide answers may quote channels other members cannot see, so they
    are always private; /search, /stats, /sync and /privacy are private by nature, and so
    is "Find related", which searches every channel the member can read.
    """
    if name == ASK:
        return options.get("scope") == "server"
    return name in (SEARCH, STATS, SYNC, PRIVACY, FIND_RELATED)
