"""/settings and /stats against the real discord.py bot on the fake Discord (the guild's owner has
Manage Server; other members have @everyone's permissions): hidden from non-admins by
default_member_permissions, refused to them if called anyway; an admin's changes are stored and
applied to the next job (channels, blocklist, voice notes); /settings show and /stats."""

from __future__ import annotations

import pytest

from devkit.helpers import footer_job
from devkit.voice import make_voice_note
from tests.bot.test_bot import imagine, wait_result

pytestmark = pytest.mark.timeout(180)

MANAGE_GUILD = 1 << 5


async def settings(fake, sub: str, options: dict | None = None, **kw):
    interaction = await fake.slash_command("settings", options or {}, subcommand=sub, **kw)
    await fake.wait_for_response(interaction)
    assert interaction.ack_latency < 3.0
    return interaction


async def answer(fake, interaction) -> str:
    """The private answer: a direct reply, or the follow-up edited into a deferred response."""
    if interaction.response_type == 4:
        return interaction.response_body["data"]["content"]

    def edited():
        message = fake.original_response(interaction)
        return message if message and message.get("content") else None

    return (await fake.wait_until(edited, 10, "the answer", poll=0.02))["content"]


async def test_settings_are_for_admins_only(start_bot, fake_discord):
    await start_bot()
    fake = fake_discord
    synced = fake.command_api.find_synced("settings", fake.guild.id)
    assert synced is not None and int(synced["default_member_permissions"]) == MANAGE_GUILD
    assert int(fake.command_api.find_synced("stats", fake.guild.id)["default_member_permissions"]) == MANAGE_GUILD
    # A member without Manage Server whose client shows the command anyway is refused.
    refused = await settings(fake, "blocklist", {"action": "add", "entry": "clown"}, user=fake.other_user)
    assert refused.ephemeral and "Manage Server" in await answer(fake, refused)
    shown = await settings(fake, "show")  # the owner
    assert "Blocklist additions: 0 (plus the default list)" in await answer(fake, shown)
    refused = await fake.slash_command("stats", {}, user=fake.other_user)
    await fake.wait_for_response(refused)
    assert "Manage Server" in await answer(fake, refused)


async def test_admin_settings_apply_to_jobs(start_bot, fake_discord):
    harness = await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    # A server blocklist entry: refused by its rule number, the word not echoed.
    saved = await settings(fake, "blocklist", {"action": "add", "entry": "clown*"})
    assert "Saved" in await answer(fake, saved)
    bad = await settings(fake, "blocklist", {"action": "add", "entry": "re:(unclosed"})
    assert "doesn't compile" in await answer(fake, bad)
    modlog = await fake.add_channel(fake.guild.id, "mod-log")
    await answer(fake, await settings(fake, "modlog", {"channel": modlog}))
    message = await wait_result(fake, await imagine(fake, {"prompt": "two clowns on a unicycle"}))
    assert "server rule #1" in message["content"] and "clown" not in message["content"].lower()
    # The moderation log channel is told: who, which rule, the job id — not the words.
    logged = await fake.wait_until(
        lambda: next(iter(fake.find_messages(channel_id=modlog.id, from_bot=True)), None), 10, "the modlog entry"
    )
    assert f"<@{fake.user.id}>" in logged["content"] and "server rule #1" in logged["content"]
    assert "clown" not in logged["content"].lower() and "Refused job `" in logged["content"]

    # Channels: only #art — /imagine elsewhere is refused privately.
    art = await fake.add_channel(fake.guild.id, "art")
    await answer(fake, await settings(fake, "channels", {"action": "add", "channel": art}))
    refused = await imagine(fake, {"prompt": "a quiet lake"})
    assert refused.ephemeral and "not drawing in this channel" in refused.response_body["data"]["content"]
    allowed = await imagine(fake, {"prompt": "a quiet lake"}, channel_id=art.id)
    assert allowed.response_type == 5
    assert footer_job(await wait_result(fake, allowed))  # drawn and delivered in #art

    # Voice notes off (all channels again): a voice note gets a friendly refusal.
    await answer(fake, await settings(fake, "channels", {"action": "all"}))
    await answer(fake, await settings(fake, "voice", {"enabled": False}))
    sent = await fake.send_voice_message(fake.channel.id, fake.user, make_voice_note("a blue boat"), duration_secs=2.0)

    def reply():
        for msg in fake.find_messages(channel_id=fake.channel.id, from_bot=True):
            ref = (msg.get("message_reference") or {}).get("message_id")
            if ref and int(ref) == int(sent["id"]) and "Voice notes are turned off" in (msg.get("content") or ""):
                return msg
        return None

    await fake.wait_until(reply, 30, "the voice-notes-off reply", poll=0.05)

    # Stored, and shown; survives in the store (a fresh cache reads it back).
    harness.bot.runner.guilds._cache.clear()
    shown = await answer(fake, await settings(fake, "show"))
    assert (
        "Voice notes: off" in shown
        and "Blocklist additions: 1 (plus the default list)" in shown
        and "all channels" in shown
    )

    stats = await fake.slash_command("stats", {})
    await fake.wait_for_response(stats)
    text = await answer(fake, stats)
    assert "Jobs: 2 (1 finished" in text and "Correction rate: 0%" in text
