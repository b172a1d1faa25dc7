"""/preferences against the real discord.py bot on the fake Discord: stored per user, shown, and
applied — a user's style and aspect fill in what /imagine leaves empty (before the server's
default style); options given in the command still win; another user is unaffected."""

from __future__ import annotations

import pytest

from devkit.helpers import footer_job
from pipeline.studio import Result
from tests.bot.test_bot import imagine, wait_result
from tests.bot.test_settings import answer

pytestmark = pytest.mark.timeout(180)


async def preferences(fake, sub: str, options: dict | None = None, **kw):
    interaction = await fake.slash_command("preferences", options or {}, subcommand=sub, **kw)
    await fake.wait_for_response(interaction)
    assert interaction.ack_latency < 3.0 and interaction.ephemeral
    return interaction


async def result_of(harness, fake, interaction) -> Result:
    job_id = footer_job(await wait_result(fake, interaction))
    return Result.model_validate_json((await harness.bot.store.get(job_id)).result_json)


async def test_preferences_are_stored_shown_and_applied(start_bot, fake_discord):
    harness = await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    text = await answer(
        fake, await preferences(fake, "set", {"style": "watercolour", "aspect": "16:9", "private": True})
    )
    assert "Style: watercolour" in text and "Aspect: 16:9" in text and "Private replies: on" in text
    # The server's default style applies to members without a preference of their own.
    await harness.bot.runner.guilds.update(
        fake.guild.id,
        (await harness.bot.runner.guilds.get(fake.guild.id)).model_copy(update={"style": "pixel art"}),
        by=1,
    )

    mine = await result_of(harness, fake, await imagine(fake, {"prompt": "a lighthouse"}))
    assert mine.style == "watercolour"
    assert mine.best.width > mine.best.height  # 16:9
    given = await result_of(harness, fake, await imagine(fake, {"prompt": "a lighthouse", "style": "anime"}))
    assert given.style == "anime"  # an option in the command wins
    theirs = await result_of(harness, fake, await imagine(fake, {"prompt": "a lighthouse"}, user=fake.other_user))
    assert theirs.style == "pixel art" and theirs.best.width == theirs.best.height

    # Stored: a fresh cache reads them back; clear forgets them.
    harness.bot.runner.guilds._prefs.clear()
    assert "Style: watercolour" in await answer(fake, await preferences(fake, "show"))
    assert "Style: —" in await answer(fake, await preferences(fake, "clear"))
