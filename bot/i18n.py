"""Languages: the bot's replies and its slash commands in English, German, Spanish, French and
Japanese, from gettext message catalogs (Babel).

The catalogs are the ``.po`` files in ``bot/locales/<language>/LC_MESSAGES/voxcanvas.po`` (shipped
as package data); they are compiled in memory when first used (``babel.messages.mofile``), so no
binary ``.mo`` file is kept in the repository or needs a build step. The English text in the code
is the message id; a message without a translation is shown in English.

Which language a reply is in (:func:`reply_language`): the user's ``/preferences language``, else
the language of their Discord client (``interaction.locale``) for commands and buttons, or the
language Whisper heard for a voice note. The language of the job at hand lives in a context
variable (:func:`use`): set once where an interaction or a job starts, it follows the job's
task (asyncio copies the context into the tasks it creates), so deep helpers such as the progress
lines call :func:`_` without passing it around.

Slash commands: :class:`CommandTranslator` (discord.py's ``app_commands.Translator``) gives
Discord ``name_localizations`` / ``description_localizations`` from the same catalogs; command
names are looked up under the message context ``"command"`` and used only when they are valid
Discord command names.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import io
import logging
import re
from collections.abc import Iterator
from importlib import resources
from typing import Final

import discord
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from discord import app_commands

log = logging.getLogger(__name__)

DOMAIN: Final = "voxcanvas"
DEFAULT_LANGUAGE: Final = "en"
#: The languages shipped, in the order /preferences lists them (English is the code's own text).
LANGUAGES: Final = {"en": "English", "de": "Deutsch", "es": "Español", "fr": "Français", "ja": "日本語"}
COMMAND_CONTEXT: Final = "command"  # msgctxt of command and option names in the catalogs
#: Discord's rule for command and option names (lower case where the script has case).
_NAME_RE = re.compile(r"^[-_\w]{1,32}$")

_language: contextvars.ContextVar[str] = contextvars.ContextVar("voxcanvas_language", default=DEFAULT_LANGUAGE)


def _(message: str) -> str:
    """``message`` in the language of the job or interaction at hand."""
    return gettext_in(_language.get(), message)


def N_(message: str) -> str:
    """Mark ``message`` for the catalogs without translating it now (module constants)."""
    return message


def gettext_in(language: str | None, message: str) -> str:
    return str(translations(language or DEFAULT_LANGUAGE).gettext(message))


def current() -> str:
    """The language of the job or interaction at hand."""
    return _language.get()


def use(language: str | discord.Locale | None) -> str:
    """Make ``language`` (a code we ship, or anything :func:`language_of` understands) the language of
    what the current task shows from now on; returns the code used."""
    code = language_of(language) or DEFAULT_LANGUAGE
    _language.set(code)
    return code


@contextlib.contextmanager
def speaking(language: str | discord.Locale | None) -> Iterator[str]:
    """``language`` for what is shown inside the block only, whatever task or thread's context runs
    it (a progress callback from the executor speaks its job's language); the code used."""
    token = _language.set(language_of(language) or DEFAULT_LANGUAGE)
    try:
        yield _language.get()
    finally:
        _language.reset(token)


def language_of(locale: str | discord.Locale | None) -> str | None:
    """The shipped language for a Discord locale (``"fr"``, ``"es-ES"``, ``"en-GB"``), a Whisper
    language code (``"ja"``) or a language name Whisper gives (``"french"``); ``None`` if not shipped."""
    if locale is None:
        return None
    text = (locale.value if isinstance(locale, discord.Locale) else str(locale)).strip().lower()
    code = text.replace("_", "-").split("-")[0]
    if code in LANGUAGES:
        return code
    by_name = {"english": "en", "german": "de", "spanish": "es", "french": "fr", "japanese": "ja"}
    return by_name.get(text)


def reply_language(preference: str | None, *, locale: str | discord.Locale | None = None) -> str | None:
    """The language of a reply: the user's preference, else ``locale`` (their Discord client's, or
    the language heard in their voice note); ``None`` when neither is one we ship."""
    return language_of(preference) or language_of(locale)


@functools.cache
def translations(language: str) -> NullTranslations:
    """The compiled catalog of ``language`` (English, or a language without a catalog: the ids)."""
    if language == DEFAULT_LANGUAGE or language not in LANGUAGES:
        return NullTranslations()
    source = resources.files(__package__).joinpath("locales", language, "LC_MESSAGES", f"{DOMAIN}.po")
    try:
        with source.open("rb") as po:
            catalog = read_po(po, locale=language, domain=DOMAIN)
    except FileNotFoundError:
        log.warning("no message catalog for %s; replies stay in English", language)
        return NullTranslations()
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def catalog_fingerprint() -> str:
    """A hash of every catalog: the slash-command sync re-sends the commands when a translation changed."""
    digest = hashlib.sha256()
    for language in sorted(LANGUAGES):
        source = resources.files(__package__).joinpath("locales", language, "LC_MESSAGES", f"{DOMAIN}.po")
        if source.is_file():
            digest.update(language.encode() + source.read_bytes())
    return digest.hexdigest()


class CommandTranslator(app_commands.Translator):
    """Slash commands' names, descriptions and choices in the shipped languages (Discord shows
    each user their client's language)."""

    async def translate(
        self, string: app_commands.locale_str, locale: discord.Locale, context: app_commands.TranslationContextTypes
    ) -> str | None:
        language = language_of(locale)
        if language is None or language == DEFAULT_LANGUAGE:
            return None
        catalog = translations(language)
        names = (
            app_commands.TranslationContextLocation.command_name,
            app_commands.TranslationContextLocation.group_name,
            app_commands.TranslationContextLocation.parameter_name,
        )
        if context.location in names:
            name = str(catalog.pgettext(COMMAND_CONTEXT, string.message))
            if name == string.message or not _NAME_RE.match(name) or name != name.lower():
                return None
            return name
        text = str(catalog.gettext(string.message))
        return text if text != string.message else None


__all__ = [
    "COMMAND_CONTEXT",
    "DEFAULT_LANGUAGE",
    "DOMAIN",
    "LANGUAGES",
    "CommandTranslator",
    "N_",
    "_",
    "catalog_fingerprint",
    "current",
    "gettext_in",
    "language_of",
    "reply_language",
    "speaking",
    "translations",
    "use",
]
