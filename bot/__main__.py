"""``python -m bot`` (``make run``): start VoxCanvas — the Discord bot when DISCORD_TOKEN is set,
the web playground and API when API_PORT is set (the default), both in one process sharing one
queue and store. With nothing configured, the web playground runs alone.

Exit codes: 0 clean shutdown, 2 configuration problem (neither Discord nor the web server, bad
settings, unusable data directory, the web port taken), 3 Discord rejected the token, 4 Discord
could not be reached (after retrying for DISCORD_CONNECT_TIMEOUT_S).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.settings import Settings

HOW_TO_ADD_DISCORD = (
    "  To add the Discord bot (same queue, same pictures):\n"
    "    1. Create an application and a bot at https://discord.com/developers/applications\n"
    "    2. Copy .env.example to .env and put the bot token in DISCORD_TOKEN=\n"
    "    3. Run `make run` again.\n"
    "  README.md ('Set up your Discord bot') walks through it, intents and invite link included."
)

EXIT_CONFIG, EXIT_TOKEN, EXIT_UNREACHABLE = 2, 3, 4


def setup_logging(level: str, secrets: list[str], unmute: list[str] | None = None) -> None:
    """The process's logging: every line redacted (``secrets`` and credential shapes, tracebacks
    included); the loggers that carry interaction tokens stay at WARNING unless in ``unmute``."""
    from pipeline.logs import configure_logging

    configure_logging(level, secrets=secrets, unmute=unmute or ())


def main() -> int:
    import faulthandler

    from pipeline.settings import Settings

    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>` prints every thread's stack: for hangs
        faulthandler.register(signal.SIGUSR1, all_threads=True)

    try:
        settings = Settings()
    except Exception as exc:
        print(f"VoxCanvas: invalid settings:\n{exc}\nSee .env.example for every setting.", file=sys.stderr)
        return EXIT_CONFIG
    if settings.DISCORD_TOKEN is None and not settings.api_enabled:
        print(
            "VoxCanvas: nothing to serve — DISCORD_TOKEN is not set and API_PORT is empty.\n"
            "  Set API_PORT (e.g. 8080) for the web playground, or:\n" + HOW_TO_ADD_DISCORD,
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if settings.EXECUTOR == "ray":
        from pipeline.executor.ray_serve import preflight

        if (problem := preflight(settings)) is not None:
            print(f"VoxCanvas: {problem}", file=sys.stderr)
            return EXIT_UNREACHABLE
    secrets = [key.get_secret_value() for key in settings.API_KEYS]
    if settings.GEMINI_API_KEY is not None:
        secrets.append(settings.GEMINI_API_KEY.get_secret_value())
    for remote_key in (settings.STABILITY_API_KEY, settings.REPLICATE_API_TOKEN):
        if remote_key is not None:
            secrets.append(remote_key.get_secret_value())
    if settings.DISCORD_TOKEN is None:
        setup_logging(settings.LOG_LEVEL, secrets, settings.LOG_DEBUG_LOGGERS)
        return asyncio.run(run_web(settings))
    token = settings.DISCORD_TOKEN.get_secret_value()
    setup_logging(settings.LOG_LEVEL, [token, *secrets], settings.LOG_DEBUG_LOGGERS)
    return asyncio.run(run(settings, token))


def _on_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[str], None]) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop, sig.name)
        except NotImplementedError:  # pragma: no cover - Windows
            pass


async def run_web(settings: Settings) -> int:
    """The web playground and API alone (no DISCORD_TOKEN): until SIGINT / SIGTERM."""
    from web.server import WebServer, WebServerError

    from .headless import Headless
    from .store import StoreError

    log = logging.getLogger("bot")
    runtime = Headless(settings)
    server = WebServer(settings)
    stopping = asyncio.Event()

    def request_stop(signame: str) -> None:
        log.info("%s received: shutting down gracefully", signame)
        stopping.set()

    _on_signals(asyncio.get_running_loop(), request_stop)
    try:
        try:
            runner = await runtime.start()
            url = await server.start(runner)
        except (StoreError, WebServerError) as exc:
            print(f"VoxCanvas: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        print(
            f"VoxCanvas: the web playground is at {url}  (API docs: {url}docs)\n"
            "  Discord is off: DISCORD_TOKEN is not set.\n" + HOW_TO_ADD_DISCORD,
            flush=True,
        )
        await stopping.wait()
    finally:
        await server.stop()
        await runtime.close()
    return 0


async def run(settings: Settings, token: str) -> int:
    import aiohttp
    import discord

    from web.server import WebServerError

    from .client import bot_class, configure_endpoints
    from .connectivity import DiscordUnreachable, host_of, reason_of, wait_for_discord
    from .store import StoreError

    configure_endpoints(settings)
    log = logging.getLogger("bot")
    try:
        await wait_for_discord(settings.DISCORD_API_BASE, settings.DISCORD_CONNECT_TIMEOUT_S)
    except DiscordUnreachable as exc:
        print(f"VoxCanvas: {exc}. Check the network (or DISCORD_API_BASE).", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        from .store import JobStore

        store = await JobStore.open(settings.DATA_DIR)
    except StoreError as exc:
        print(f"VoxCanvas: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    services = []
    if settings.api_enabled:
        from web.server import WebServer

        services.append(WebServer(settings))
    bot = bot_class(settings)(settings, store=store, services=services)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def request_stop(signame: str) -> None:
        if not stopping.is_set():
            log.info("%s received: shutting down gracefully", signame)
            stopping.set()
            loop.create_task(bot.close())

    _on_signals(loop, request_stop)
    try:
        async with bot:
            await bot.start(token)
    except discord.LoginFailure:
        print(
            "VoxCanvas: Discord rejected DISCORD_TOKEN (401 Unauthorized). Reset the token in the "
            "developer portal (Bot → Reset Token) and put the new one in .env.",
            file=sys.stderr,
        )
        return EXIT_TOKEN
    except aiohttp.ClientConnectionError as exc:  # reachable a moment ago, gone again: say so, no traceback
        print(
            f"VoxCanvas: lost the connection to Discord at {host_of(settings.DISCORD_API_BASE)} "
            f"({reason_of(exc, settings.DISCORD_CONNECT_TIMEOUT_S)}).",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    except WebServerError as exc:
        print(f"VoxCanvas: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except discord.PrivilegedIntentsRequired:
        print(
            "VoxCanvas: the MESSAGE CONTENT intent is not enabled for this bot. Enable it in the "
            "developer portal (Bot → Privileged Gateway Intents → Message Content Intent); it is "
            "needed to read voice notes.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    finally:
        if not bot.is_closed():
            await bot.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
