"""Logging set-up shared by the three entry points (``python -m pipeline``, ``python -m bot``,
``python -m bench``): one stderr handler on the root logger, secrets redacted from every formatted
line (tracebacks included), the chatty libraries quieted and the credential-carrying ones muted."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import IO

#: Libraries whose INFO lines are not actionable for a VoxCanvas user: HTTP clients log every
#: request, the gateway every heartbeat, and model code per-call advice (generation length,
#: token windows).
QUIET_LIBRARIES: Mapping[str, int] = {
    "httpx": logging.WARNING,
    "urllib3": logging.WARNING,
    "google_genai": logging.WARNING,
    "discord.gateway": logging.WARNING,
    "diffusers": logging.ERROR,
    "transformers": logging.ERROR,
}

#: Loggers whose DEBUG lines carry credentials: interaction tokens (valid for 15 minutes) in
#: webhook / callback URLs (``discord.webhook``, ``discord.http``), whole INTERACTION_CREATE
#: payloads (``discord.gateway``), and every SQL call with its parameters
#: (``aiosqlite``: the store saves interaction tokens). They stay at WARNING whatever the log
#: level — also with ``quiet_libraries=False`` — unless named in ``unmute`` (LOG_DEBUG_LOGGERS).
SECRET_BEARING_LOGGERS: tuple[str, ...] = (
    "discord.webhook",
    "discord.http",
    "discord.gateway",
    "aiosqlite",
)

#: Libraries that give their loggers their own handler and level when first imported, from the
#: ``<NAME>_VERBOSITY`` environment variable: setting a level before the import is not enough.
_OWN_HANDLER_LIBRARIES = ("diffusers", "transformers")

DEFAULT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
REDACTED = "[redacted]"

#: Credentials recognisable by their shape, redacted even when nobody passed them in: a Discord
#: interaction or webhook token in a URL path, an interaction token itself (base64 of
#: ``interaction:…``), a ``"token": "…"`` field of a payload, a Discord bot token, a Google API key.
SECRET_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"(?<=/interactions/)(\d+/)[^/\s?'\"]+"),
    re.compile(r"(?<=/webhooks/)(\d+/)[^/\s?'\"]+"),
    re.compile(r"aW50ZXJhY3Rpb246[A-Za-z0-9_\-.]+"),
    re.compile(r"""(?<=['"]token['"]: ['"])[^'"]+"""),
    re.compile(r"(?<![\w-])[A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6,7}\.[A-Za-z0-9_-]{27,}"),
    re.compile(r"AIza[0-9A-Za-z_-]{35}"),
    re.compile(r"(?<![\w-])r8_[0-9A-Za-z]{20,}"),  # a Replicate API token
    re.compile(r"(?<![\w-])sk-[0-9A-Za-z]{32,}"),  # a Stability AI key
)

#: Explicit secrets shorter than this are not redacted (they would blank ordinary words).
MIN_SECRET_CHARS = 6


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every one of ``secrets`` and every :data:`SECRET_PATTERNS` match replaced."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in SECRET_PATTERNS:
        text = pattern.sub(lambda match: (match.group(1) if match.groups() else "") + REDACTED, text)
    return text


class RedactingFormatter(logging.Formatter):
    """A formatter whose whole output — message, exception traceback, stack — is redacted.

    Redacting ``record.msg`` alone (a filter) misses the traceback, which is formatted later from
    ``exc_info``: a key inside an exception message would be printed."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt, datefmt)
        self.secrets = tuple(sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True))

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)


def configure_logging(
    level: str | int,
    *,
    quiet_libraries: bool = True,
    levels: Mapping[str, int] | None = None,
    fmt: str = DEFAULT_FORMAT,
    datefmt: str | None = None,
    filters: Iterable[logging.Filter] = (),
    secrets: Iterable[str] = (),
    unmute: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send every log line to stderr (or ``stream``) at ``level`` (``"INFO"``, ``logging.DEBUG``, ...).

    ``quiet_libraries`` sets the loggers of :data:`QUIET_LIBRARIES` to their level (pass False
    for a ``--verbose`` run that wants everything); ``levels`` sets further loggers, after those;
    ``filters`` are added to the handler. Every line is redacted (:class:`RedactingFormatter`:
    ``secrets`` and :data:`SECRET_PATTERNS`), and :data:`SECRET_BEARING_LOGGERS` stay at WARNING
    unless named in ``unmute``. Returns the handler.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter(fmt, datefmt, secrets))
    for log_filter in filters:
        handler.addFilter(log_filter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    if quiet_libraries:
        for name, library_level in QUIET_LIBRARIES.items():
            logging.getLogger(name).setLevel(library_level)
            if name in _OWN_HANDLER_LIBRARIES:  # for an import after this call
                os.environ.setdefault(f"{name.upper()}_VERBOSITY", logging.getLevelName(library_level).lower())
    for name, logger_level in (levels or {}).items():
        logging.getLogger(name).setLevel(logger_level)
    unmuted = set(unmute)
    for name in SECRET_BEARING_LOGGERS:
        if name in unmuted:
            logging.getLogger(name).setLevel(logging.NOTSET)  # inherits the configured level
        else:
            logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))
    return handler
