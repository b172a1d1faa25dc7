"""Start-up without Discord: find out whether Discord's REST API can be reached at all, retrying
with back-off for a bounded time, and say in one line why not.

Without this, a machine with no network ends ``make run`` in a 30-line aiohttp traceback from
discord.py's login. Any HTTP answer (even an error status) counts as reached: only the
connection itself is checked here; discord.py handles everything after it (the token, the
gateway and its own reconnects).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import yarl

from pipeline import limits

log = logging.getLogger(__name__)


class DiscordUnreachable(Exception):
    """Discord's REST API could not be reached within the start-up bound."""

    def __init__(self, host: str, reason: str, waited_s: float) -> None:
        super().__init__(f"Discord could not be reached at {host} ({reason}); gave up after {waited_s:.0f} s")
        self.host = host
        self.reason = reason
        self.waited_s = waited_s


@dataclass(frozen=True, slots=True)
class Unreached:
    """One failed try: why, in words (``Connection refused``, ``no answer within 10 s``)."""

    reason: str


def host_of(api_base: str) -> str:
    """``host`` or ``host:port`` of a URL, for messages."""
    url = yarl.URL(api_base)
    host = url.host or api_base
    return f"{host}:{url.port}" if url.port is not None and not url.is_default_port() else host


def reason_of(exc: BaseException, attempt_s: float) -> str:
    """A short reason for a failed connection, without the exception's own URL-laden text."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if not isinstance(os_error, socket.gaierror) and isinstance(os_error.errno, int) and os_error.errno > 0:
            return os.strerror(os_error.errno)  # "Connection refused", not asyncio's "Connect call failed (…)"
        return os_error.strerror or str(os_error) or type(os_error).__name__
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return f"no answer within {attempt_s:g} s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


async def probe(session: aiohttp.ClientSession, api_base: str, attempt_s: float) -> Unreached | None:
    """``None`` if ``api_base`` answers HTTP at all, else why not."""
    try:
        async with session.get(f"{api_base.rstrip('/')}/gateway", timeout=aiohttp.ClientTimeout(total=attempt_s)):
            return None
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return Unreached(reason_of(exc, attempt_s))


async def wait_for_discord(
    api_base: str,
    timeout_s: float,
    *,
    first_retry_s: float = limits.DISCORD_CONNECT_FIRST_RETRY_S,
    max_retry_s: float = limits.DISCORD_CONNECT_MAX_RETRY_S,
    attempt_s: float = limits.DISCORD_CONNECT_ATTEMPT_S,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Return once ``api_base`` answers; retry with doubling pauses (``first_retry_s`` up to
    ``max_retry_s``) for ``timeout_s`` in all, then raise :class:`DiscordUnreachable`."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout_s
    host = host_of(api_base)
    pause = first_retry_s
    async with aiohttp.ClientSession() as session:
        while True:
            left = deadline - loop.time()
            failure = await probe(session, api_base, max(0.1, min(attempt_s, left)))
            if failure is None:
                return
            left = deadline - loop.time()
            if left <= 0:
                raise DiscordUnreachable(host, failure.reason, loop.time() - started)
            wait = min(pause, left)
            log.warning("Discord is not reachable at %s (%s); retrying in %.1f s", host, failure.reason, wait)
            await sleep(wait)
            pause = min(pause * 2, max_retry_s)
