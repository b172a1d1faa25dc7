"""The runtime without Discord: the store, the executor, the studio and the job runner, serving
jobs from the HTTP API alone (``make run`` with no DISCORD_TOKEN). The same pieces, built the same
way, as :meth:`bot.client.VoxCanvasBot.setup_hook` builds for the bot."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pipeline.errors import VoxCanvasError
from pipeline.executor import Executor
from pipeline.executor.factory import create_executor
from pipeline.settings import Settings
from pipeline.studio import Studio

from .api_jobs import ApiJobs
from .recovery import Recovery
from .runner import JobRunner
from .store import JobStore

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 30.0


class Headless:
    """``await start()`` → the runner (with its API side); ``await close()`` drains and closes."""

    def __init__(
        self,
        settings: Settings,
        *,
        executor: Executor | None = None,
        store: JobStore | None = None,
        warm_up: bool = True,
    ) -> None:
        self.settings = settings
        self.executor = executor or create_executor(settings)
        self.store = store
        self.warm_up = warm_up
        self.studio: Studio | None = None
        self.runner: JobRunner | None = None
        self.warm_up_task: asyncio.Task[None] | None = None

    async def start(self) -> JobRunner:
        store = self.store = self.store or await JobStore.open(self.settings.DATA_DIR)
        await self.executor.start()
        studio = self.studio = Studio(self.settings, self.executor)
        runner = self.runner = JobRunner(None, store=store, executor=self.executor, studio=studio)
        ApiJobs(runner)
        if self.warm_up:
            self.warm_up_task = asyncio.create_task(self._warm(), name="warm-up")
        if self.settings.RETENTION_DAYS:
            removed = await store.purge(self.settings.RETENTION_DAYS)
            if removed:
                log.info("retention: removed %d job(s) older than %d days", removed, self.settings.RETENTION_DAYS)
        await Recovery(runner).resume()  # before the web server listens: all unfinished jobs are old
        return runner

    async def _warm(self) -> None:
        try:
            await self.executor.warm_up(clip=not self.settings.gemini_enabled)
        except VoxCanvasError as exc:
            log.error("model warm-up failed: %s", exc)

    async def close(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Stop admitting, give running jobs ``grace_s`` to finish (the rest stay queued in the
        store for the next start), stop the executor, close the studio and the store."""
        self.executor.stop_admitting()
        try:
            if self.runner is not None:
                await self.runner.drain(grace_s)
            await self.executor.shutdown(timeout_s=10)
        finally:
            if self.warm_up_task is not None:
                self.warm_up_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.warm_up_task
            if self.studio is not None:
                await self.studio.aclose()
            if self.store is not None:
                await self.store.close()
