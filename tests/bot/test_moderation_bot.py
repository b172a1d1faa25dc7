"""The blocklist against the real discord.py bot on the fake Discord: a typed /imagine and a
spoken voice note with a blocked word are refused with a message naming the rule (never the word),
and nothing is rendered."""

from __future__ import annotations

import pytest

from devkit.voice import make_voice_note
from tests.bot.test_bot import imagine, wait_result

pytestmark = pytest.mark.timeout(180)


async def test_blocked_word_in_a_typed_prompt_is_refused(start_bot, fake_discord):
    harness = await start_bot(QA_MAX_ROUNDS=0)
    interaction = await imagine(fake_discord, {"prompt": "a hentai poster of a cat"})
    assert interaction.ack_latency < 3.0
    message = await wait_result(fake_discord, interaction)
    content = message.get("content") or ""
    assert "sexual content" in content and "typed idea" in content
    assert "hentai" not in content.lower()
    assert not message.get("attachments")
    assert harness.bot.executor.metrics().stage_mean_s.get("render") is None  # nothing was drawn


async def test_blocked_word_in_a_voice_note_is_refused(start_bot, fake_discord):
    harness = await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    note = make_voice_note("Please draw a naked man standing in the rain")
    sent = await fake.send_voice_message(fake.channel.id, fake.user, note, duration_secs=3.0)

    def reply():
        for msg in fake.find_messages(channel_id=fake.channel.id, from_bot=True):
            ref = (msg.get("message_reference") or {}).get("message_id")
            if ref and int(ref) == int(sent["id"]) and "moderation rule" in (msg.get("content") or ""):
                return msg
        return None

    message = await fake.wait_until(reply, 90, "the refusal of the voice note", poll=0.05)
    content = message["content"]
    assert "sexual content" in content and "spoken idea" in content
    assert "naked" not in content.lower()
    assert harness.bot.executor.metrics().stage_mean_s.get("render") is None
