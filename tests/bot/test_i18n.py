"""Languages against the real discord.py bot on the fake Discord: the synced commands carry
name and description localisations; a command and its replies in each shipped locale (the
interaction's ``locale``); a /preferences language wins over the client's; a French voice note
(a tiny Whisper that detects French, through the real transcription code) is answered in French.
Also the stored preferences applied: candidates (the user's, else the server's default) and
private replies."""

from __future__ import annotations

import pytest

from bot import i18n
from devkit.helpers import footer_job
from devkit.voice import make_voice_note
from pipeline.studio import Result
from tests.bot.test_bot import imagine, wait_result
from tests.bot.test_preferences import preferences
from tests.bot.test_settings import answer, settings

pytestmark = pytest.mark.timeout(300)

#: Discord locale → the language the bot answers in.
LOCALES = {"en-US": "en", "de": "de", "es-ES": "es", "fr": "fr", "ja": "ja"}


def labels(message: dict) -> list[str]:
    found: list[str] = []

    def walk(components):
        for component in components or []:
            if component.get("label"):
                found.append(component["label"])
            walk(component.get("components"))

    walk(message.get("components"))
    return found


def field_names(message: dict) -> list[str]:
    return [f["name"] for embed in message.get("embeds") or [] for f in embed.get("fields", [])]


@pytest.fixture(scope="session")
def french_whisper_dir(models_dir, tiny_whisper_dir):
    from devkit import builders

    return builders.build_tiny_whisper_hearing(models_dir / "tiny-whisper-fr", tiny_whisper_dir, "fr")


async def test_synced_commands_carry_localisations(start_bot, fake_discord):
    await start_bot()
    synced = {c["name"]: c for c in fake_discord.commands(fake_discord.guild.id)}
    command = synced["imagine"]
    names = command["name_localizations"]
    assert {names["de"], names["es-ES"], names["fr"], names["ja"]} == {"bild", "imaginar", "imaginer", "画像"}
    assert "en-US" not in names  # English is the command's own name
    descriptions = command["description_localizations"]
    for locale, language in LOCALES.items():
        if language != "en":
            expected = i18n.gettext_in(language, command["description"])
            assert descriptions[locale] == expected != command["description"]
    prompt = next(o for o in command["options"] if o["name"] == "prompt")
    assert prompt["description_localizations"]["ja"] == "画像に何を描きますか？"
    assert synced["settings"]["description_localizations"]["fr"] == "Configure VoxCanvas pour ce serveur"


async def test_commands_and_replies_in_each_locale(start_bot, fake_discord):
    await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    for locale, language in LOCALES.items():
        # A refusal straight from the command …
        refused = await imagine(fake, {"prompt": "   "}, locale=locale)
        expected = i18n.gettext_in(language, "🚫 The prompt is empty — tell me what to draw.")
        assert refused.response_body["data"]["content"] == expected
        # … and a whole job: the result's text, its embed's labels and its buttons.
        message = await wait_result(fake, await imagine(fake, {"prompt": "a red apple on a table"}, locale=locale))
        assert footer_job(message)
        assert message["content"].startswith(i18n.gettext_in(language, "Palette:") + " #")
        assert i18n.gettext_in(language, "Alignment") in field_names(message)
        assert i18n.gettext_in(language, "Regenerate") in labels(message)
        if language != "en":
            assert "Alignment" not in field_names(message) and "Regenerate" not in labels(message)


async def test_preferences_language_candidates_and_private_replies(start_bot, fake_discord):
    harness = await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    await answer(fake, await preferences(fake, "set", {"language": "ja", "candidates": 2, "private": True}))
    interaction = await imagine(fake, {"prompt": "a lighthouse at dusk"}, locale="de")
    assert interaction.ephemeral  # private: only its user sees the result
    message = await wait_result(fake, interaction)
    assert message["content"].startswith("パレット:")  # Japanese wins over the German client
    assert "一致度" in field_names(message)
    result = Result.model_validate_json((await harness.bot.store.get(footer_job(message))).result_json)
    assert len(result.candidates) == 2  # the user's default count

    # Someone without preferences: the server's default candidates, in public, in their locale.
    guilds = harness.bot.runner.guilds
    await guilds.update(fake.guild.id, (await guilds.get(fake.guild.id)).model_copy(update={"candidates": 3}), by=1)
    theirs = await imagine(fake, {"prompt": "a lighthouse at dusk"}, user=fake.other_user, locale="es-ES")
    assert not theirs.ephemeral
    message = await wait_result(fake, theirs)
    assert message["content"].startswith("Paleta:")
    result = Result.model_validate_json((await harness.bot.store.get(footer_job(message))).result_json)
    assert len(result.candidates) == 3
    # An option in the command still wins.
    own = await wait_result(fake, await imagine(fake, {"prompt": "a boat", "count": 1}, user=fake.other_user))
    assert not Result.model_validate_json((await harness.bot.store.get(footer_job(own))).result_json).candidates


async def test_a_french_voice_note_is_answered_in_french(start_bot, fake_discord, french_whisper_dir):
    harness = await start_bot(QA_MAX_ROUNDS=0, WHISPER_MODEL=str(french_whisper_dir))
    fake = fake_discord
    sent = await fake.send_voice_message(fake.channel.id, fake.user, make_voice_note("un chat"), duration_secs=2.0)

    def reply():
        for msg in fake.find_messages(channel_id=fake.channel.id, from_bot=True):
            ref = (msg.get("message_reference") or {}).get("message_id")
            if ref and int(ref) == int(sent["id"]) and footer_job(msg):
                return msg
        return None

    message = await fake.wait_until(reply, 120, "the voice note's result", poll=0.05)
    result = Result.model_validate_json((await harness.bot.store.get(footer_job(message))).result_json)
    assert result.kind == "voice" and result.language == "fr"  # what Whisper detected
    assert "Palette :" in message["content"]  # the French catalog
    assert "Fidélité" in field_names(message) and "Régénérer" in labels(message)


async def test_admin_and_personal_commands_quota_and_remix_in_the_users_language(start_bot, fake_discord, bot_settings):
    """Issue #17: /settings, /stats, /preferences, /queue, /history, the quota refusal (its reset
    date and wait formatted by Babel for the language) and the Remix form answer in the user's locale."""
    harness = await start_bot(bot_settings(QA_MAX_ROUNDS=0, DAILY_QUOTA=1))
    fake = fake_discord

    shown = await answer(fake, await settings(fake, "show", locale="de"))
    assert shown.startswith("**VoxCanvas-Einstellungen dieses Servers**") and "• Sprachnachrichten: an" in shown
    stats = await answer(fake, await settings_stats(fake, locale="fr"))
    assert stats.startswith("**Aujourd'hui (UTC) sur ce serveur**") and "Score moyen" in stats
    mine = await answer(fake, await preferences(fake, "show", locale="es-ES"))
    assert mine.startswith("**Tus preferencias de VoxCanvas**") and "— (tu idioma de Discord)" in mine
    # Choosing a language answers in it at once.
    chosen = await answer(fake, await preferences(fake, "set", {"language": "fr"}, locale="en-US"))
    assert chosen.startswith("✅ Enregistré.") and "• Langue des réponses : Français" in chosen
    await answer(fake, await preferences(fake, "clear", locale="en-US"))

    queue = await fake.slash_command("queue", {}, locale="ja")
    await fake.wait_for_response(queue)
    assert queue.response_body["data"]["content"].startswith("キュー: 待機中 0")

    message = await wait_result(fake, await imagine(fake, {"prompt": "a red kite", "seed": 3}, locale="ja"))
    job_id = footer_job(message)
    values = {f["name"]: f["value"] for embed in message["embeds"] for f in embed.get("fields", [])}
    assert "シード `3`" in values[i18n.gettext_in("ja", "Settings")] and "ステップ" in values["設定"]
    history = await fake.slash_command("history", {}, locale="ja")
    await fake.wait_for_response(history)
    assert f"`{job_id}`" in history.response_body["data"]["content"]
    assert "`/forget job:<id>` で削除できます。" in history.response_body["data"]["content"]

    # The daily quota (1) is used: the refusal in Spanish, with a Spanish date and wait.
    refused = await imagine(fake, {"prompt": "otra cometa"}, locale="es-ES")
    text = refused.response_body["data"]["content"]
    assert "Has usado tu límite diario de 1 imagen. Se reinicia a las 00:00 UTC (" in text, text
    assert any(unit in text for unit in ("horas", "hora", "minutos", "minuto", "segundos")), text

    # The Remix form in French.
    opened = await fake.click_button(message["id"], f"voxcanvas:remix:{job_id}", locale="fr")
    await fake.wait_for_response(opened)
    assert opened.response_type == 9 and opened.modal["title"] == "Remixer"
    form_labels = [c.get("label") for row in opened.modal["components"] for c in row.get("components", [])]
    assert "Prompt négatif" in form_labels and "Graine" in form_labels, form_labels
    assert harness.bot.is_ready()


async def settings_stats(fake, **kw):
    interaction = await fake.slash_command("stats", {}, **kw)
    await fake.wait_for_response(interaction)
    return interaction


def described(commands: list[dict]) -> list[dict]:
    """Every synced command, subcommand group, subcommand and option (each has a description)."""
    found: list[dict] = []

    def walk(items):
        for item in items or []:
            found.append(item)
            walk(item.get("options"))

    walk(commands)
    return found


async def test_every_synced_description_is_in_every_shipped_language(start_bot, fake_discord):
    """Discord shows an admin or a member each command, subcommand and option description in their
    client's language: none is left in English, none is over Discord's 100 characters."""
    await start_bot()
    commands = [c for c in fake_discord.commands(fake_discord.guild.id) if c.get("type", 1) == 1]  # not menus
    items = described(commands)
    assert {"settings", "style", "add", "keywords", "imagine", "prompt"} <= {i["name"] for i in items}
    missing = [
        (item["name"], item["description"], locale)
        for item in items
        for locale, language in LOCALES.items()
        if language != "en" and not (item.get("description_localizations") or {}).get(locale)
    ]
    assert missing == []
    too_long = [
        text
        for item in items
        for text in [item["description"], *(item.get("description_localizations") or {}).values()]
        if len(text) > 100
    ]
    assert too_long == []


async def test_progress_lines_in_the_users_language(start_bot, fake_discord):
    """The progress edits ("Rendering 12/25") come from the executor's thread or tasks, not the
    job's: they still speak the job's language."""
    await start_bot(QA_MAX_ROUNDS=0, STEPS=100, WIDTH=256, HEIGHT=256)
    fake = fake_discord
    interaction = await imagine(fake, {"prompt": "a lighthouse at dusk"}, locale="de")
    await wait_result(fake, interaction)
    edits = [
        (call.json or {}).get("content") or ""
        for call in fake.calls
        if call.method == "PATCH" and interaction.token in call.path and call.path.endswith("/@original")
    ]
    progress = [text for text in edits if "░" in text or "█" in text]
    assert progress, edits  # seconds of rendering: at least one progress edit
    rendering = i18n.gettext_in("de", "Rendering")
    assert rendering != "Rendering"
    assert all(rendering in text and "Rendering" not in text for text in progress), progress
