"""Per-server styles (issue #18 item 4) against the real discord.py bot on the fake Discord: an
admin adds a style with /settings style add → /imagine's style autocomplete offers it in that
server and not in another; /imagine with it → the director's prompt carries its keywords and its
negative keywords, also as a /preferences default (ignored in a server without it); the job
records the style, so Regenerate still works after the style is removed; a member without Manage
Server cannot add one; bad styles are refused privately; the styles are
stored per server (a fresh cache reads them back)."""

from __future__ import annotations

import pytest

from devkit.helpers import footer_job
from pipeline.studio import Result
from tests.bot.test_bot import imagine, wait_result
from tests.bot.test_settings import answer, settings

pytestmark = pytest.mark.timeout(240)

STYLE = {
    "name": "moss glow",
    "description": "Soft bioluminescent moss",
    "keywords": "bioluminescent moss diorama, glowing spores",
    "negative_keywords": "neon signs, chrome",
}


async def test_server_style_added_offered_applied_and_kept(start_bot, fake_discord):
    harness = await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord

    # A member without Manage Server cannot add one.
    refused = await settings(fake, "style add", STYLE, user=fake.other_user)
    assert refused.ephemeral and "Manage Server" in await answer(fake, refused)
    assert await harness.bot.runner.guilds.styles(fake.guild.id) == {}

    # Bad styles are refused with a reason (a built-in name, no keywords).
    taken = await settings(fake, "style add", {**STYLE, "name": "photographic"})
    assert "already a built-in style" in await answer(fake, taken)
    empty = await settings(fake, "style add", {**STYLE, "keywords": " , ,"})
    assert "at least one keyword" in await answer(fake, empty)

    saved = await settings(fake, "style add", STYLE)
    assert "Style **moss glow** saved" in await answer(fake, saved)

    # Offered by /imagine's autocomplete in this server (first), not in another server.
    choices = await fake.autocomplete("imagine", {"prompt": "x", "style": "moss"}, "style")
    assert [c["value"] for c in choices] == ["moss glow"]
    other = await fake.add_guild("Elsewhere")
    elsewhere = next(c for c in fake.world.channels.values() if c.guild_id == other.id)
    choices = await fake.autocomplete("imagine", {"prompt": "x", "style": "moss"}, "style", channel_id=elsewhere.id)
    assert "moss glow" not in [c["value"] for c in choices]
    # ... and refused there if typed anyway.
    typed = await imagine(fake, {"prompt": "a frog", "style": "moss glow"}, channel_id=elsewhere.id)
    assert typed.ephemeral and "Unknown style" in typed.response_body["data"]["content"]

    # Listed; offered by /settings defaults and /settings style remove.
    listed = await answer(fake, await settings(fake, "style list"))
    assert "(1/25)" in listed and "moss glow" in listed and "bioluminescent moss diorama" in listed
    defaults = await fake.autocomplete("settings", {"style": "mo"}, "style", subcommand="defaults")
    assert "moss glow" in [c["value"] for c in defaults]

    # /imagine with it: the director's prompt carries its keywords, the negative prompt its negatives.
    message = await wait_result(fake, await imagine(fake, {"prompt": "a frog on a log", "style": "moss glow"}))
    job_id = footer_job(message)
    record = await harness.bot.store.get(job_id)
    result = Result.model_validate_json(record.result_json)
    assert result.scene.style == "moss glow"
    assert "bioluminescent moss diorama" in result.best.prompt and "glowing spores" in result.best.prompt
    assert "neon signs" in result.best.negative_prompt
    assert record.idea["server_style"]["name"] == "moss glow"  # recorded with the job

    # /preferences offers it in this server; as a personal default it applies here, and in another
    # server (which has no such style) the job goes on without it instead of failing.
    offered = await fake.autocomplete("preferences", {"style": "moss"}, "style", subcommand="set")
    assert [c["value"] for c in offered] == ["moss glow"]
    prefs = await fake.slash_command("preferences", {"style": "moss glow"}, subcommand="set")
    await fake.wait_for_response(prefs)
    assert "Style: moss glow" in await answer(fake, prefs)
    here = await wait_result(fake, await imagine(fake, {"prompt": "a snail"}))
    assert (
        "bioluminescent moss diorama"
        in Result.model_validate_json((await harness.bot.store.get(footer_job(here))).result_json).best.prompt
    )
    there = await wait_result(fake, await imagine(fake, {"prompt": "a snail"}, channel_id=elsewhere.id))
    elsewhere_result = Result.model_validate_json((await harness.bot.store.get(footer_job(there))).result_json)
    assert (
        elsewhere_result.scene.style != "moss glow"
        and "bioluminescent moss diorama" not in elsewhere_result.best.prompt
    )

    # Stored per server: a fresh cache reads it back. Then removed: no longer offered, but the
    # earlier job's Regenerate still works (its prompt already carries the style).
    harness.bot.runner.guilds._styles.clear()
    assert list(await harness.bot.runner.guilds.styles(fake.guild.id)) == ["moss glow"]
    removed = await settings(fake, "style remove", {"name": "moss glow"})
    assert "removed" in await answer(fake, removed)
    choices = await fake.autocomplete("imagine", {"prompt": "x", "style": "moss"}, "style")
    assert "moss glow" not in [c["value"] for c in choices]
    click = await fake.click_button(message["id"], f"voxcanvas:regen:{job_id}")
    regen = await wait_result(fake, click)
    regenerated = Result.model_validate_json((await harness.bot.store.get(footer_job(regen))).result_json)
    last = result.rounds[-1]
    assert regenerated.scene.style == "moss glow" and regenerated.parent_job_id == job_id
    assert regenerated.best.prompt == (last.correction_prompt or last.prompt)  # Regenerate's rule, style or not
