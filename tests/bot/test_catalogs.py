"""The message catalogs (Babel): every message the bot marks for translation (``_()`` / ``N_()``
in bot/ and cogs/, found by Babel's own extractor) has a translation in every shipped language,
with the same ``{placeholders}``; the engine's and the admission rules' fixed error messages too;
command names are valid Discord names; the catalogs load from the package data."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from bot import i18n
from bot.guilds import ChannelNotAllowed, VoiceNotesOff
from pipeline import errors
from pipeline.executor.ray_serve import RayClusterLost

ROOT = Path(__file__).resolve().parents[2]
TRANSLATED = [lang for lang in i18n.LANGUAGES if lang != i18n.DEFAULT_LANGUAGE]
#: Fixed user-facing errors that are shown translated (their default message is the msgid).
TRANSLATED_ERRORS = (
    errors.QueueFull,
    errors.TooManyJobs,
    errors.ShuttingDown,
    errors.JobCancelled,
    errors.OutOfMemory,
    errors.ExecutorFailure,
    errors.StageTimeout,
    RayClusterLost,
    errors.UnsafeImage,
    errors.SilentAudio,
    errors.EmptyAudio,
    ChannelNotAllowed,
    VoiceNotesOff,
)


def marked_messages() -> set[str]:
    found: set[str] = set()
    for package in ("bot", "cogs"):
        for _filename, _lineno, message, _comments, _context in extract_from_dir(
            ROOT / package, keywords={"_": None, "N_": None}
        ):
            found.add(message)
    return found


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def read_catalog(language: str):
    path = ROOT / "bot" / "locales" / language / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"
    with path.open("rb") as po:
        return read_po(po, locale=language)


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_marked_message_is_translated_with_its_placeholders(language):
    marked = marked_messages()
    assert len(marked) > 60  # progress, refusals, result labels, buttons, errors
    catalog = read_catalog(language)
    for message in marked:
        entry = catalog.get(message)
        assert entry is not None and entry.string, (language, message)
        assert fields(entry.string) == fields(message), (language, message, entry.string)
        assert i18n.gettext_in(language, message) == entry.string  # what the bot shows


@pytest.mark.parametrize("language", TRANSLATED)
def test_fixed_error_messages_are_translated(language):
    for error in TRANSLATED_ERRORS:
        message = error.default_message
        assert i18n.gettext_in(language, message) != message, (language, error.__name__)


def test_catalogs_are_valid_po_files_shipped_as_package_data():
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "locales/*/LC_MESSAGES/*.po" in data["bot"]
    for language in TRANSLATED:
        catalog = read_catalog(language)
        assert str(catalog.locale) == language and len(catalog) > 60
        assert not [m.id for m in catalog if m.id and m.fuzzy], "fuzzy entries are not used by gettext"
    assert not list((ROOT / "bot" / "locales").rglob("*.mo"))  # compiled in memory, never committed


def test_command_names_are_valid_discord_names():
    for language in TRANSLATED:
        catalog = i18n.translations(language)
        for name in ("imagine", "compose", "describe", "history", "queue"):
            localised = catalog.pgettext(i18n.COMMAND_CONTEXT, name)
            assert localised != name and re.fullmatch(r"[-_\w]{1,32}", localised) and localised == localised.lower()


def test_languages_of_discord_locales_and_whisper():
    assert [i18n.language_of(x) for x in ("de", "es-ES", "es-419", "fr", "ja", "en-GB", "en-US")] == [
        "de",
        "es",
        "es",
        "fr",
        "ja",
        "en",
        "en",
    ]
    assert i18n.language_of("pt-BR") is None and i18n.language_of("french") == "fr"
    assert i18n.reply_language("ja", locale="de") == "ja"  # a /preferences language wins
    assert i18n.reply_language(None, locale="fr") == "fr"
    assert i18n.reply_language(None, locale="ko") is None  # not shipped: English
