"""The NSFW policy against the real discord.py bot on the fake Discord, with the tiny model whose
safety checker flags every picture: withheld with a message in an ordinary channel (and stored
black), behind a spoiler in an age-restricted channel of a server that allows it, withheld there
when the server does not; a flagged img2img start image is refused; each one is logged to the
server's moderation log channel (who, the rule, the job id — never the image)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bot.guilds import GuildConfig
from bot.safety import keeps_flagged
from devkit.helpers import footer_job
from pipeline.studio import Result

from .test_bot import imagine, wait_result
from .test_settings import answer, settings

pytestmark = pytest.mark.timeout(240)


def modlog_entries(fake, channel) -> list[str]:
    return [m.get("content") or "" for m in fake.find_messages(channel_id=channel.id, from_bot=True)]


async def wait_modlog(fake, channel, count: int) -> list[str]:
    return await fake.wait_until(
        lambda: modlog_entries(fake, channel) if len(modlog_entries(fake, channel)) >= count else None,
        10,
        f"{count} moderation log entries",
        poll=0.05,
    )


def black(png: bytes) -> bool:
    with Image.open(io.BytesIO(png)) as image:
        return int(np.asarray(image).max()) == 0


async def test_flagged_pictures_follow_the_server_policy_and_the_channel(start_bot, fake_discord, flagging_sd_dir):
    harness = await start_bot(DIFFUSION_MODEL=str(flagging_sd_dir), QA_MAX_ROUNDS=0)
    fake = fake_discord
    modlog = await fake.add_channel(fake.guild.id, "mod-log")
    adults = await fake.add_channel(fake.guild.id, "after-dark", nsfw=True)
    await answer(fake, await settings(fake, "modlog", {"channel": modlog}))

    # An ordinary channel: withheld with a message, no picture posted, the stored picture black.
    message = await wait_result(fake, await imagine(fake, {"prompt": "a red apple on a table"}))
    job_id = footer_job(message)
    assert "safety checker flagged" in message["content"] and not message.get("attachments")
    assert all(not (e.get("image") or {}).get("url") for e in message.get("embeds") or [])
    record = await harness.bot.store.get(job_id)
    result = Result.model_validate_json(record.result_json)
    assert result.flagged and not result.flagged_kept and result.best.nsfw
    assert black(await harness.bot.store.read_image(job_id))  # the raw picture was never stored
    (entry,) = await wait_modlog(fake, modlog, 1)
    assert f"`{job_id}`" in entry and f"<@{fake.user.id}>" in entry and "Withheld 1 picture" in entry
    assert "safety checker" in entry and "apple" not in entry

    # An age-restricted channel while the server withholds (the default): withheld there too.
    withheld = await wait_result(fake, await imagine(fake, {"prompt": "a red apple"}, channel_id=adults.id))
    assert "safety checker flagged" in withheld["content"] and not withheld.get("attachments")

    # The server allows spoilers: in the age-restricted channel the picture is shown behind one …
    await answer(fake, await settings(fake, "nsfw", {"policy": "spoiler"}))
    shown = await wait_result(fake, await imagine(fake, {"prompt": "a red apple"}, channel_id=adults.id))
    names = sorted(a["filename"] for a in shown["attachments"])
    assert names and all(name.startswith("SPOILER_") for name in names), names
    assert "behind a spoiler" in shown["content"]
    assert all(not (e.get("image") or {}).get("url") for e in shown.get("embeds") or [])  # embeds don't blur
    spoilered_id = footer_job(shown)
    assert not black(await harness.bot.store.read_image(spoilered_id))
    # … but still withheld in an ordinary channel.
    plain = await wait_result(fake, await imagine(fake, {"prompt": "a red apple"}))
    assert not plain.get("attachments")
    entries = await wait_modlog(fake, modlog, 4)
    assert any(f"`{spoilered_id}`" in e and "Showed behind a spoiler" in e for e in entries)


async def test_flagged_start_image_is_refused_and_logged(start_bot, fake_discord, flagging_sd_dir):
    await start_bot(DIFFUSION_MODEL=str(flagging_sd_dir), QA_MAX_ROUNDS=0)
    fake = fake_discord
    modlog = await fake.add_channel(fake.guild.id, "mod-log")
    await answer(fake, await settings(fake, "modlog", {"channel": modlog}))
    start = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 120, 200)).save(start, format="PNG")
    interaction = await fake.slash_command(
        "imagine",
        {"prompt": "make it a sunset", "strength": 0.5},
        attachments={"image": ("start.png", start.getvalue(), "image/png")},
    )
    await fake.wait_for_response(interaction)
    assert interaction.ack_latency < 3.0
    message = await wait_result(fake, interaction)
    assert "flagged that start image" in message["content"] and not message.get("attachments")
    (entry,) = await wait_modlog(fake, modlog, 1)
    assert "start image" in entry and "safety checker" in entry and f"<@{fake.user.id}>" in entry


def test_dms_and_ordinary_channels_never_keep_flagged_pictures():
    spoiler = GuildConfig(nsfw="spoiler")
    assert keeps_flagged(spoiler, guild_id=1, age_restricted=True)
    assert not keeps_flagged(spoiler, guild_id=None, age_restricted=True)  # a DM: the strictest
    assert not keeps_flagged(spoiler, guild_id=1, age_restricted=False)
    assert not keeps_flagged(GuildConfig(), guild_id=1, age_restricted=True)
