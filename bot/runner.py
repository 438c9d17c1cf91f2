"""``python -m bot run``: connect the bot to Discord.

Order matters: the database opens first, then the model loads (on the
executor's worker thread) BEFORE the gateway connects, so every interaction
can be deferred within Discord's 3 seconds. SIGTERM/SIGINT close the bot
(no new commands, buffered history flushed), then the executor, then the database.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any, Mapping

from .config import ConfigError, Config, is_loopback_host

log = logging.getLogger("bot.runner")

# TEST ONLY: point discord.py at a fake Discord server (end-to-end tests). Never set these in production.
# They send the bot token wherever they point, so they work only together with TEST_MODE_ENV=1 and only
# for a loopback host; anything else stops start-up.
API_BASE_ENV = "RECAP_DISCORD_API_BASE"  # e.g. http://127.0.0.1:8080/api/v10
GATEWAY_ENV = "RECAP_DISCORD_GATEWAY"  # e.g. ws://127.0.0.1:8080/gateway
TEST_MODE_ENV = "RECAP_TEST_MODE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force-sync", action="store_true", help="sync slash commands at start even if unchanged")


def _loopback_url(variable: str, raw: str, schemes: tuple[str, ...]) -> str:
    """``raw`` when it is a plain URL to this machine; raises ``ConfigError`` naming ``variable`` otherwise."""
    import yarl

    try:
        url = yarl.URL(raw)
        host = url.host or ""
    except ValueError:
        raise ConfigError(f"{variable} is not a URL") from None
    if url.scheme not in schemes or url.user is not None or url.password is not None:
        raise ConfigError(f"{variable} must be a {' or '.join(schemes)} URL without user info")
    if not is_loopback_host(host):
        raise ConfigError(f"{variable} may only point at this machine (127.0.0.1, ::1 or localhost), not {host!r}")
    return raw


def apply_test_endpoints(environ: Mapping[str, str] = os.environ) -> None:
    """Redirect REST and gateway when the test-only variables are set (see the comment above).

    Raises ``ConfigError`` when they are set without ``RECAP_TEST_MODE=1`` or point off this machine.
    """
    import discord.gateway
    import discord.http
    import yarl

    api = environ.get(API_BASE_ENV, "").strip()
    gateway = environ.get(GATEWAY_ENV, "").strip()
    if not api and not gateway:
        return
    if environ.get(TEST_MODE_ENV, "").strip() != "1":
        names = " and ".join(name for name, value in ((API_BASE_ENV, api), (GATEWAY_ENV, gateway)) if value)
        raise ConfigError(f"{names} is for tests only and needs {TEST_MODE_ENV}=1; unset it to connect to Discord")
    if api:
        api = _loopback_url(API_BASE_ENV, api, ("http", "https"))
    if gateway:
        gateway = _loopback_url(GATEWAY_ENV, gateway, ("ws", "wss"))
    if api:
        discord.http.Route.BASE = api.rstrip("/")
        log.warning("TEST MODE: Discord REST calls go to %s", api)
    if gateway:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)
        log.warning("TEST MODE: the Discord gateway is %s", gateway)


def main(args: argparse.Namespace, settings: Config) -> int:
    if not settings.discord_token:
        print(
            "DISCORD_TOKEN is not set. Create a bot at https://discord.com/developers/applications, "
            "copy its token into .env as DISCORD_TOKEN=..., and run again.",
            file=sys.stderr,
        )
        return 2
    try:
        apply_test_endpoints()
    except ConfigError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run(settings, force_sync=getattr(args, "force_sync", False)))
    except KeyboardInterrupt:
        return 0


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl+C still raises KeyboardInterrupt
            pass


async def run(settings: Config, *, force_sync: bool = False) -> int:
    import discord

    from storage import StorageError, open_database

    from engine.executor_metrics import start_metrics_server
    from engine.models import ModelLoadError
    from engine.summarizer import Summarizer

    from .client import RecapBot
    from .services import build_executor

    stop = asyncio.Event()
    _install_signal_handlers(stop)
    try:
        if settings.database_url and settings.database_path_set:
            log.info("DATABASE_URL is set: it is used, and DATABASE_PATH (%s) is not", settings.database_path)
        async with open_database(settings.database_target) as db:
            log.info("database: %s, ready (schema %d)", db.label, db.schema_version)
            log.info("loading model %s ...", settings.model_label)
            async with build_executor(settings) as executor:
                summarizer = Summarizer(executor, input_token_budget=settings.input_token_budget)
                metrics: Any = start_metrics_server(executor, settings.metrics_port) if settings.metrics_port else None
                try:
                    bot = RecapBot(settings=settings, db=db, executor=executor, summarizer=summarizer)
                    bot.force_sync = force_sync
                    return await _serve(bot, settings.discord_token.get(), stop)
                finally:
                    if metrics is not None:
                        metrics.close()
    except StorageError as exc:
        print(f"Database error: {exc}", file=sys.stderr)
        return 1
    except ModelLoadError as exc:
        print(f"Model error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the metrics port is taken
        print(f"Start-up failed: {exc}", file=sys.stderr)
        return 1
    except discord.LoginFailure:
        print("Discord refused the token. Check DISCORD_TOKEN (reset it in the developer portal if needed).", file=sys.stderr)
        return 1
    except discord.PrivilegedIntentsRequired:
        print(
            "Discord refused the Message Content intent. Enable it for this bot in the developer portal "
            "(Bot → Privileged Gateway Intents → Message Content Intent).",
            file=sys.stderr,
        )
        return 1


async def _serve(bot: Any, token: str, stop: asyncio.Event) -> int:
    """Run until the bot stops or a signal arrives; always close the bot before returning."""
    async with bot:
        runner = asyncio.create_task(bot.start(token), name="recap-bot")
        stopper = asyncio.create_task(stop.wait(), name="recap-stop")
        try:
            await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                log.info("stopping: no new commands; flushing history")
        finally:
            stopper.cancel()
            await bot.close()  # unloads cogs: the history buffer is flushed here
        if runner.done() and not runner.cancelled():
            runner.result()  # re-raises LoginFailure and other start-up errors for run()
        else:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
    log.info("bot stopped")
    return 0
