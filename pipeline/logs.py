"""Logging set-up shared by the three entry points (``python -m pipeline``, ``python -m bot``,
``python -m bench``): one stderr handler on the root logger and the chatty libraries quieted."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

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

#: Libraries that give their loggers their own handler and level when first imported, from the
#: ``<NAME>_VERBOSITY`` environment variable: setting a level before the import is not enough.
_OWN_HANDLER_LIBRARIES = ("diffusers", "transformers")

DEFAULT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(
    level: str | int,
    *,
    quiet_libraries: bool = True,
    levels: Mapping[str, int] | None = None,
    fmt: str = DEFAULT_FORMAT,
    datefmt: str | None = None,
    filters: Iterable[logging.Filter] = (),
) -> None:
    """Send every log line to stderr at ``level`` (``"INFO"``, ``logging.DEBUG``, ...).

    ``quiet_libraries`` sets the loggers of :data:`QUIET_LIBRARIES` to their level (pass False
    for a ``--verbose`` run that wants everything); ``levels`` sets further loggers, after those;
    ``filters`` are added to the handler (e.g. one that redacts secrets).
    """
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(fmt, datefmt))
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
