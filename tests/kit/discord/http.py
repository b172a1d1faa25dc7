"""HTTP plumbing of the fake: recorded calls, the API route table, injected failures, JSON answers.

Route handlers take an :class:`ApiRequest` and return a ``web.Response``; a lookup that fails raises
:class:`ApiError` (Discord's JSON error body) and the router answers it, so handlers stay
straight-line.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

__all__ = [
    "ApiError",
    "ApiRequest",
    "ApiRouter",
    "Handler",
    "RecordedCall",
    "RecordedFile",
    "json_response",
    "match_path",
    "no_content",
    "truthy",
]

log = logging.getLogger(__name__)


@dataclass
class RecordedFile:
    """One file part of a multipart request."""

    field_name: str
    filename: str
    content_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class RecordedCall:
    """One HTTP request the fake received (REST, interaction webhook, CDN or unknown).

    ``path`` is relative to the API base for API calls (``/channels/1/messages``) and the full path
    otherwise (``/attachments/...``). ``route`` is the matched template, e.g.
    ``"POST /channels/{channel_id}/messages"`` (``None`` for unknown routes). ``json`` is the JSON
    body, or the parsed ``payload_json`` of a multipart body; ``files`` the multipart files.
    """

    index: int
    kind: str  # "rest" | "webhook" | "interaction" | "cdn" | "unknown"
    method: str
    path: str
    route: str | None
    params: dict[str, str]
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None
    files: list[RecordedFile] = field(default_factory=list)
    multipart: bool = False
    raw_body: bytes = b""
    status: int | None = None
    response: Any = None
    at: float = field(default_factory=time.monotonic)

    @property
    def payload_json(self) -> Any:
        """The parsed ``payload_json`` part of a multipart request (``None`` otherwise)."""
        return self.json if self.multipart else None

    @property
    def audit_log_reason(self) -> str | None:
        reason = self.headers.get("X-Audit-Log-Reason")
        return unquote(reason) if reason is not None else None

    def __repr__(self) -> str:
        return f"<RecordedCall #{self.index} {self.method} {self.path} -> {self.status}>"


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    # discord.py only parses a body as JSON when Content-Type is *exactly* "application/json";
    # web.json_response() would add "; charset=utf-8" and turn every answer into a str.
    return web.Response(body=json.dumps(data).encode(), status=status, content_type="application/json", headers=headers)


def no_content() -> web.Response:
    return web.Response(status=204)


def truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


def match_path(pattern: str | re.Pattern[str] | None, path: str) -> bool:
    if pattern is None:
        return True
    if isinstance(pattern, re.Pattern):
        return pattern.fullmatch(path) is not None
    return fnmatch.fnmatchcase(path, pattern)


class ApiError(Exception):
    """A Discord error answer (``{"message", "code", "errors"?}``) raised by a route handler."""

    def __init__(self, status: int, message: str, code: int, errors: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{status} {message} ({code})")
        self.status = status
        self.message = message
        self.code = code
        self.errors = errors

    @classmethod
    def invalid_field(cls, name: str, code: str, message: str) -> ApiError:
        """400 "Invalid Form Body" (50035) naming one field, the way Discord words it."""
        return cls(400, "Invalid Form Body", 50035, {name: {"_errors": [{"code": code, "message": message}]}})

    def response(self) -> web.Response:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = dict(self.errors)
        return json_response(body, status=self.status)


@dataclass
class ApiRequest:
    """What a route handler gets: the aiohttp request, the path parameters and the recording."""

    raw: web.Request
    params: dict[str, str]
    query: dict[str, str]
    call: RecordedCall

    @property
    def json(self) -> Any:
        return self.call.json

    @property
    def body(self) -> dict[str, Any]:
        """The JSON object body (``{}`` when there is none)."""
        return self.call.json or {}

    @property
    def files(self) -> list[RecordedFile]:
        return self.call.files

    def int_param(self, name: str) -> int | None:
        """A numeric path parameter, ``None`` when it is not a number."""
        value = self.params[name]
        return int(value) if value.isdigit() else None


Handler = Callable[[ApiRequest], Awaitable[web.Response]]


@dataclass
class _InjectedFailure:
    """An answer the router gives instead of the handler's. ``status`` 0: the handler runs (the
    change is made) and its answer is held ``stall`` seconds — a crash of the client between
    Discord's write and hearing of it."""

    method: str
    path: str | re.Pattern[str]
    status: int
    remaining: int
    retry_after: float
    body: Mapping[str, Any] | None
    is_global: bool
    when: Callable[[RecordedCall], bool] | None = None
    stall: float = 0.0

    def matches(self, method: str, call: RecordedCall) -> bool:
        return (
            self.remaining > 0
            and self.method == method
            and match_path(self.path, call.path)
            and (self.when is None or self.when(call))
        )

    def response(self) -> web.Response:
        if self.status != 429:
            return json_response(
                dict(self.body or {"message": f"{self.status}: injected failure", "code": 0}), self.status
            )
        body = dict(
            self.body
            or {"message": "You are being rate limited.", "retry_after": self.retry_after, "global": self.is_global}
        )
        headers = {
            "Via": "1.1 google",  # discord.py treats a 429 without Via as a Cloudflare ban
            "Retry-After": str(max(1, int(self.retry_after + 0.999))),
            "X-RateLimit-Scope": "global" if self.is_global else "user",
        }
        if self.is_global:
            headers["X-RateLimit-Global"] = "true"
        return json_response(body, status=429, headers=headers)


class ApiRouter:
    """The API route table: records every request (multipart parsed), checks the bot token on REST
    routes, answers injected failures, and runs the handler."""

    def __init__(self, token: Callable[[], str], on_change: Callable[[], None]) -> None:
        self._token = token
        self._on_change = on_change
        self.calls: list[RecordedCall] = []
        self._routes: list[tuple[str, str, re.Pattern[str], Handler]] = []
        self._failures: list[_InjectedFailure] = []

    def add(self, method: str, template: str, handler: Handler) -> None:
        regex = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
        self._routes.append((method, template, re.compile(regex), handler))

    def fail_next(
        self,
        method: str,
        path: str | re.Pattern[str],
        *,
        status: int,
        times: int,
        retry_after: float,
        body: Mapping[str, Any] | None,
        is_global: bool,
        when: Callable[[RecordedCall], bool] | None = None,
        stall: float = 0.0,
    ) -> None:
        self._failures.append(
            _InjectedFailure(method.upper(), path, status, times, retry_after, body, is_global, when, stall)
        )

    async def record(self, request: web.Request, kind: str, path: str) -> RecordedCall:
        """Record a request (body and multipart files parsed) before it is answered."""
        call = RecordedCall(
            index=len(self.calls),
            kind=kind,
            method=request.method,
            path=path,
            route=None,
            params={},
            query=dict(request.query),
            headers=dict(request.headers),
        )
        self.calls.append(call)
        content_type = request.headers.get("Content-Type", "")
        if content_type.startswith("multipart/"):
            call.multipart = True
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                data = await part.read()  # type: ignore[union-attr]
                name = part.name or ""  # type: ignore[union-attr]
                if name == "payload_json":
                    call.json = json.loads(data.decode())
                elif part.filename is not None:  # type: ignore[union-attr]
                    call.files.append(
                        RecordedFile(
                            field_name=name,
                            filename=part.filename,  # type: ignore[union-attr]
                            content_type=part.headers.get("Content-Type", "application/octet-stream"),
                            data=bytes(data),
                        )
                    )
        elif request.can_read_body:
            call.raw_body = await request.read()
            if call.raw_body and "json" in content_type:
                try:
                    call.json = json.loads(call.raw_body)
                except ValueError:
                    call.json = None
        return call

    def finish(self, call: RecordedCall, response: web.StreamResponse) -> web.StreamResponse:
        """Record the answer (status, parsed JSON) and wake the waiters."""
        call.status = response.status
        if (
            isinstance(response, web.Response)
            and response.body is not None
            and response.content_type == "application/json"
        ):
            try:
                call.response = json.loads(response.body)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                call.response = None
        self._on_change()
        return response

    async def handle_unknown(self, request: web.Request, path: str | None = None) -> web.StreamResponse:
        call = await self.record(request, "unknown", path or request.path)
        log.warning("fake Discord: unknown route %s %s", request.method, call.path)
        return self.finish(call, ApiError(404, "Unknown route", 0).response())

    async def handle_api(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler for ``/api/v{version}/{tail}``."""
        path = "/" + request.match_info["tail"]
        for method, template, regex, handler in self._routes:
            match = regex.match(path)
            if match is None or method != request.method:
                continue
            kind = "interaction" if template.startswith("/interactions/") else "rest"
            kind = "webhook" if template.startswith("/webhooks/") else kind
            call = await self.record(request, kind, path)
            call.route = f"{method} {template}"
            call.params = {k: unquote(v) for k, v in match.groupdict().items()}
            failure = self._take_failure(request.method, call)
            if failure is not None and failure.status:
                return self.finish(call, failure.response())
            if kind == "rest" and request.headers.get("Authorization") != f"Bot {self._token()}":
                return self.finish(call, ApiError(401, "401: Unauthorized", 0).response())
            req = ApiRequest(raw=request, params=call.params, query=dict(request.query), call=call)
            try:
                response = await handler(req)
            except ApiError as exc:
                response = exc.response()
            except Exception:  # a bug in the fake must be visible, not a hang in the bot
                log.exception("fake Discord: handler for %s %s crashed", method, template)
                response = ApiError(500, "fake Discord crashed (see log)", 0).response()
            if failure is not None and failure.stall:
                self._on_change()  # the change is visible to the test while the answer is held
                await asyncio.sleep(failure.stall)
            return self.finish(call, response)
        return await self.handle_unknown(request, path)

    def _take_failure(self, method: str, call: RecordedCall) -> _InjectedFailure | None:
        for failure in self._failures:
            if failure.matches(method, call):
                failure.remaining -= 1
                if failure.remaining == 0:
                    self._failures.remove(failure)
                return failure
        return None
