"""``python -m bot`` (``make run``): start VoxCanvas.

Exit codes: 0 clean shutdown, 2 configuration problem (missing token, bad settings, unusable
data directory), 3 Discord rejected the token.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.settings import Settings

EXIT_CONFIG, EXIT_TOKEN = 2, 3


class _RedactSecrets(logging.Filter):
    """Belt and braces: no log line ever carries the Discord token or the Gemini key."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            if any(s in message for s in self.secrets):
                for s in self.secrets:
                    message = message.replace(s, "[redacted]")
                record.msg, record.args = message, ()
        return True


def setup_logging(level: str, secrets: list[str]) -> None:
    from pipeline.logs import configure_logging

    configure_logging(level, filters=[_RedactSecrets(secrets)])


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
    setup_logging(settings.LOG_LEVEL, secrets)
    return asyncio.run(run(settings, token))


async def run(settings: Settings, token: str) -> int:
    import discord

    from .client import VoxCanvasBot, configure_endpoints
    from .store import StoreError

    configure_endpoints(settings)
    log = logging.getLogger("bot")
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
