"""Daily quotas against the real discord.py bot on the fake Discord: the global DAILY_QUOTA and a
server's per-member quota, counted in the store (a restart does not reset them), buttons counting,
a refusal that says when the quota resets; and the server's cooldown."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from bot.guilds import GuildConfig, utc_day
from devkit.helpers import footer_job
from tests.bot.test_bot import imagine, wait_result

pytestmark = pytest.mark.timeout(180)


def refusal(interaction) -> str:
    assert interaction.response_type == 4 and interaction.ephemeral, interaction.response_body
    return interaction.response_body["data"]["content"]


async def test_daily_quota_counts_buttons_and_survives_a_restart(start_bot, fake_discord, bot_settings):
    settings = bot_settings(DAILY_QUOTA=2, QA_MAX_ROUNDS=0)
    harness = await start_bot(settings)
    fake = fake_discord
    first = await wait_result(fake, await imagine(fake, {"prompt": "a castle on a hill"}))
    job_id = footer_job(first)
    # The Regenerate button is a job too: it takes the second (last) one.
    click = await fake.click_button(first["id"], f"voxcanvas:regen:{job_id}")
    await wait_result(fake, click)
    # Used up: /imagine and the buttons are refused, privately, with when it resets.
    text = refusal(await imagine(fake, {"prompt": "one more castle"}))
    assert "daily limit of 2 pictures" in text and "00:00 UTC" in text
    click = await fake.click_button(first["id"], f"voxcanvas:vary:{job_id}")
    await fake.wait_for_response(click)
    assert "00:00 UTC" in refusal(click)
    assert await harness.bot.store.usage_today(utc_day()) == 2

    # A restart (a new process on the same DATA_DIR): the count is in the store.
    await harness.bot.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(harness.task, 10)
    await start_bot(settings)
    text = refusal(await imagine(fake, {"prompt": "after the restart"}))
    assert "daily limit of 2 pictures" in text and "resets at 00:00 UTC" in text


async def test_server_quota_per_member_and_cooldown(start_bot, fake_discord):
    harness = await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    guilds = harness.bot.runner.guilds
    await guilds.update(fake.guild.id, GuildConfig(daily_quota=1), by=fake.user.id)
    await wait_result(fake, await imagine(fake, {"prompt": "a red kite"}))
    text = refusal(await imagine(fake, {"prompt": "a second kite"}))
    assert "this server's daily limit per member of 1 picture" in text and "00:00 UTC" in text
    # Another member still has their own quota.
    other = await imagine(fake, {"prompt": "a blue kite"}, user=fake.other_user)
    assert other.response_type == 5
    await wait_result(fake, other)

    # A cooldown instead of a quota: the next job within it is refused with the time left.
    await guilds.update(fake.guild.id, GuildConfig(cooldown_s=600), by=fake.user.id)
    text = refusal(await imagine(fake, {"prompt": "a green kite"}, user=fake.other_user))
    assert "cooldown" in text and "Try again in" in text
