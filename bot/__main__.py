"""``python -m bot`` (``make run``): start VoxCanvas.

Exit codes: 0 clean shutdown, 2 configuration problem (missing token, bad settings, unusable
data directory), 3 Discord rejected the token, 4 Discord could not be reached (after retrying for
DISCORD_CONNECT_TIMEOUT_S).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.settings import Settings

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
    if settings.DISCORD_TOKEN is None:
        print(
            "VoxCanvas: DISCORD_TOKEN is not set.\n"
            "  1. Create an application and a bot at https://discord.com/developers/applications\n"
            "  2. Copy .env.example to .env and put the bot token in DISCORD_TOKEN=\n"
            "  3. Run `make run` again.\n"
            "README.md ('Set up your Discord bot') walks through it, intents and invite link included.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    token = settings.DISCORD_TOKEN.get_secret_value()
    secrets = [token]
    if settings.GEMINI_API_KEY is not None:
        secrets.append(settings.GEMINI_API_KEY.get_secret_value())
    setup_logging(settings.LOG_LEVEL, secrets, settings.LOG_DEBUG_LOGGERS)
    return asyncio.run(run(settings, token))


async def run(settings: Settings, token: str) -> int:
    import aiohttp
    import discord

    from .client import VoxCanvasBot, configure_endpoints
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
    bot = VoxCanvasBot(settings, store=store)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def request_stop(signame: str) -> None:
        if not stopping.is_set():
            log.info("%s received: shutting down gracefully", signame)
            stopping.set()
            loop.create_task(bot.close())

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, request_stop, sig.name)
        except NotImplementedError:  # pragma: no cover - Windows
            pass
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
