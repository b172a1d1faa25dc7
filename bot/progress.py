"""Progress reporting: the latest progress line of a job, shown on its surface without flooding
Discord's rate limits."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import discord

from .surfaces import MessageParts, Surface

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 2.0  # at most one progress edit per message every 2 s
FIRST_PROGRESS_DELAY_S = 0.25
"""The first progress edit waits this long, so the stage the job reached by then (not "queued") is
shown first. It was 1.0 s, which alone put the first sign of life past the 1 s target (issue #19)."""


class ProgressReporter:
    """Coalesces progress lines and edits the surface at most every ``interval_s`` seconds.

    The first edit waits ``first_delay_s`` (a quarter of a second): a job that finishes sooner goes
    straight from Discord's "thinking…" (or the "Listening…" reply) to its result with no progress
    edit, and a job that starts at once shows its first stage rather than "queued"."""

    def __init__(
        self,
        surface: Surface,
        interval_s: float = PROGRESS_INTERVAL_S,
        first_delay_s: float = FIRST_PROGRESS_DELAY_S,
        view: discord.ui.View | None = None,
    ) -> None:
        self.surface = surface
        self.view = view  # shown under every progress line (Cancel)
        self.interval_s = interval_s
        self.first_delay_s = first_delay_s
        self._latest: str | None = None
        self._shown: str | None = None
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    def push(self, text: str) -> None:
        self._latest = text
        self._wake.set()

    async def _run(self) -> None:
        await asyncio.sleep(self.first_delay_s)
        while True:
            await self._wake.wait()
            self._wake.clear()
            text = self._latest
            if text is not None and text != self._shown:
                try:
                    await self.surface.show(MessageParts(text, view=self.view))
                    self._shown = text
                except discord.HTTPException as exc:
                    log.info("progress edit failed: %s", exc)
                await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
