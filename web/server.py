"""The web server inside the bot's process: uvicorn serving :func:`web.app.create_app` as a task
on the running event loop (no thread, no second process), so the API shares the bot's executor
queue, store and caps. The process handles signals itself; uvicorn is told not to."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator

import uvicorn

from bot.runner import JobRunner
from pipeline.settings import Settings

from .app import JsonTooLarge, create_app

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 5


class WebServerError(RuntimeError):
    """The web server could not start (e.g. the port is taken); the message says which address."""


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:  # the process's own handlers stay
        yield


class WebServer:
    """``await start(runner)`` binds API_HOST:API_PORT (``0``: any free port) and serves the
    runner's API side until ``stop()``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port: int | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    def base_url(self) -> str:
        return self.settings.public_url(self.port)

    @property
    def url(self) -> str:
        return self.base_url() + "/"

    async def start(self, runner: JobRunner) -> str:
        """Start serving; the playground's URL. Raises :class:`WebServerError` if it can't bind."""
        if runner.api is None:
            raise WebServerError("the job runner has no API side")
        config = uvicorn.Config(
            JsonTooLarge(create_app(self.settings, runner.api, base_url=self.base_url)),
            host=self.settings.API_HOST,
            port=self.settings.API_PORT or 0,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_S,
            server_header=False,
        )
        server = self._server = _Server(config)
        self._task = asyncio.create_task(self._serve(server), name="web-server")
        while not server.started:
            if self._task.done():
                await self._task
                raise WebServerError(
                    f"the web server could not listen on {self.settings.API_HOST}:{self.settings.API_PORT} "
                    "(is the port in use? set API_PORT to another port, or empty to disable the web server)"
                )
            await asyncio.sleep(0.01)
        sockets = [s for srv in server.servers for s in (srv.sockets or ())]
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.settings.API_PORT
        log.info("web playground and API at %s", self.url)
        return self.url

    @staticmethod
    async def _serve(server: _Server) -> None:
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits when it cannot bind; the caller reports it
            log.error("web server failed to start")

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(self._task, SHUTDOWN_TIMEOUT_S + 2)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
