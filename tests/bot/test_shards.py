"""Gateway shards (``SHARD_COUNT``; default: Discord's recommendation through AutoShardedBot), all in
one process, against the fake Discord recommending 2 shards: both shards IDENTIFY with their shard
ids, each guild's events arrive on shard ``(guild_id >> 22) % 2``, /imagine is served in guilds on
both shards and in a DM (shard 0); an explicit ``SHARD_COUNT=N`` still wins."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from devkit.helpers import footer_job
from tests.bot.test_bot import imagine, wait_result

pytestmark = pytest.mark.timeout(240)


def shard_of(guild_id: int, count: int) -> int:
    return (guild_id >> 22) % count


async def start(fake_discord, settings):
    from bot.client import ShardedVoxCanvasBot, bot_class, configure_endpoints

    configure_endpoints(settings)
    bot = bot_class(settings)(settings, guild_ready_timeout=0.05, warm_up=False)
    assert isinstance(bot, ShardedVoxCanvasBot)
    task = asyncio.create_task(bot.start(settings.DISCORD_TOKEN.get_secret_value()))
    await fake_discord.wait_until(lambda: bot.is_ready() or None, 60, "bot ready", poll=0.02)
    return bot, task


async def stop(bot, task) -> None:
    await bot.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 10)


async def test_default_shards_follow_discord_and_route_guilds_and_dms(fake_discord, bot_settings):
    fake_discord.rules.recommended_shards = 2
    # Guilds on both shards (snowflakes carry the millisecond in bits 22+; add until both appear).
    guilds = {shard_of(fake_discord.guild.id, 2): fake_discord.guild}
    while len(guilds) < 2:
        guild = await fake_discord.add_guild(f"guild {len(fake_discord.world.guilds)}")
        guilds.setdefault(shard_of(guild.id, 2), guild)
        await asyncio.sleep(0.001)
    settings = bot_settings(QA_MAX_ROUNDS=0, DISCORD_GUILD_IDS=",".join(str(g.id) for g in guilds.values()))
    assert settings.SHARD_COUNT in (0, None)  # the default: Discord's recommendation
    bot, task = await start(fake_discord, settings)
    try:
        assert bot.shard_count == 2 and sorted(bot.shards) == [0, 1]
        identifies = [p["d"] for p in fake_discord.gateway.received if p.get("op") == 2]
        assert sorted(tuple(d["shard"]) for d in identifies) == [(0, 2), (1, 2)]
        sessions = {s.shard[0]: s for s in fake_discord.gateway.connected_sessions()}
        assert sorted(sessions) == [0, 1]

        for shard_id, guild in sorted(guilds.items()):
            # The guild arrived on its shard only (GUILD_CREATE), and discord.py knows it there.
            for sid, session in sessions.items():
                created = {f["d"]["id"] for f in session.buffer if f["t"] == "GUILD_CREATE"}
                assert (str(guild.id) in created) is (sid == shard_id)
            assert bot.get_guild(guild.id) is not None and bot.get_guild(guild.id).shard_id == shard_id
            channel_id = next(c.id for c in fake_discord.world.channels.values() if c.guild_id == guild.id)
            interaction = await imagine(
                fake_discord, {"prompt": f"a red apple {shard_id}", "seed": 1}, channel_id=channel_id
            )
            message = await wait_result(fake_discord, interaction)
            assert footer_job(message)
            for sid, session in sessions.items():
                got = [
                    f for f in session.buffer if f["t"] == "INTERACTION_CREATE" and f["d"]["id"] == str(interaction.id)
                ]
                assert len(got) == (1 if sid == shard_id else 0)

        # A DM: shard 0.
        dm = fake_discord.world.dm_channel_for(fake_discord.world.user)
        interaction = await imagine(fake_discord, {"prompt": "a blue pear", "seed": 2}, channel_id=dm.id)
        message = await wait_result(fake_discord, interaction)
        assert footer_job(message)
        got = {
            sid
            for sid, session in sessions.items()
            for f in session.buffer
            if f["t"] == "INTERACTION_CREATE" and f["d"]["id"] == str(interaction.id)
        }
        assert got == {0}
    finally:
        await stop(bot, task)


async def test_explicit_shard_count_wins_over_the_recommendation(fake_discord, bot_settings):
    fake_discord.rules.recommended_shards = 2
    settings = bot_settings(SHARD_COUNT=1, QA_MAX_ROUNDS=0)
    bot, task = await start(fake_discord, settings)
    try:
        assert bot.shard_count == 1 and sorted(bot.shards) == [0]
        assert [s.shard for s in fake_discord.gateway.connected_sessions()] == [[0, 1]]
        interaction = await imagine(fake_discord, {"prompt": "a red apple", "seed": 1})
        assert footer_job(await wait_result(fake_discord, interaction))
    finally:
        await stop(bot, task)
