"""The language of an HTTP API answer: the client's ``Accept-Language`` (RFC 9110 quality values),
matched against the languages the bot ships (:data:`bot.i18n.LANGUAGES`) with Babel's
``negotiate_locale``; English when nothing matches. Error messages and a job's error text are
looked up in the same catalogs as the bot's Discord replies (a message without a translation stays
English), and every answer says which language it chose (``Content-Language``) and that it depends on the
header (``Vary: Accept-Language``, so a shared cache never serves one client's language to another)."""

from __future__ import annotations

from typing import Final

from babel.core import negotiate_locale
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot import i18n

#: Longest ``Accept-Language`` header read (browsers send well under 200 bytes); the rest is ignored.
MAX_HEADER_BYTES: Final = 512
MAX_RANGES: Final = 20


def negotiate(accept_language: str | None) -> str:
    """The shipped language ``accept_language`` prefers most (``"de-DE,de;q=0.9,en;q=0.5"`` → ``"de"``)."""
    if not accept_language:
        return i18n.DEFAULT_LANGUAGE
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language[:MAX_HEADER_BYTES].split(",")[:MAX_RANGES]):
        tag, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and tag != "*" and quality > 0:
            ranked.append((-quality, position, tag.replace("-", "_")))
    preferred = [tag for _, _, tag in sorted(ranked)]
    return negotiate_locale(preferred, list(i18n.LANGUAGES), sep="_") or i18n.DEFAULT_LANGUAGE


class LanguageMiddleware:
    """Sets the language of each request (``bot.i18n.use``: a context variable the error handlers'
    ``_()`` reads) and adds ``Content-Language`` to its answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = next((value for name, value in scope["headers"] if name == b"accept-language"), b"")
        language = i18n.use(negotiate(header[:MAX_HEADER_BYTES].decode("latin-1")))

        async def send_with_language(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-language"]
                vary = b", ".join(v for k, v in headers if k.lower() == b"vary")
                if b"accept-language" not in vary.lower():
                    vary = b", ".join(filter(None, [vary, b"Accept-Language"]))
                headers = [(k, v) for k, v in headers if k.lower() != b"vary"]
                message = {
                    **message,
                    "headers": [*headers, (b"content-language", language.encode()), (b"vary", vary)],
                }
            await send(message)

        await self.app(scope, receive, send_with_language)
