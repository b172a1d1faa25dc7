"""What Discord is sent fits Discord's limits (issue #11, item 4): the result embed stays within
6,000 characters, 25 fields and each part's limit whatever a model or a user wrote; a picture
that would not fit the upload limit is sent as WebP or JPEG — checked in the multipart the fake
Discord recorded."""

from __future__ import annotations

import io
import random
from types import SimpleNamespace

import discord
import numpy as np
import pytest
from PIL import Image

from bot import limits as discord_limits
from bot import render
from bot.surfaces import ChannelSurface, MessageParts
from devkit.helpers import footer_job
from pipeline import limits
from pipeline.critic import QAReport
from pipeline.scene import Scene
from pipeline.studio import Result, Round

pytestmark = pytest.mark.timeout(180)

# Texts as long as every bound allows, in alphabets that are long in characters per word.
ALPHABETS = {
    "latin": "abcdefghijklmnopqrstuvwxyz",
    "accents": "àéîõüçñßøå",
    "cjk": "漢字仮名交じり文東京都",
    "emoji": "🍎🌳🎨🖼️✨",
}


def _text(rng: random.Random, alphabet: str, chars: int) -> str:
    """About ``chars`` characters of words from ``alphabet`` (never fewer), with odd spacing."""
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append("".join(rng.choices(alphabet, k=rng.randint(1, 14))))
    return rng.choice([" ", "  ", "\n"]).join(words)


def maximal_result(seed: int, alphabet: str) -> Result:
    """A Result with every text and list as long as validation lets it be."""
    rng = random.Random(seed)
    scene = Scene(
        title=_text(rng, alphabet, 500),
        language="en",
        scene_description=_text(rng, alphabet, 5000),
        elements=[f"{i} " + _text(rng, alphabet, 200) for i in range(limits.MAX_ELEMENTS)],
        diffusion_prompt=_text(rng, alphabet, limits.MAX_PROMPT_CHARS - 20),
        negative_prompt=_text(rng, alphabet, 2000),
        palette=[f"#{rng.randrange(1 << 24):06X}" for _ in range(limits.MAX_PALETTE_COLOURS)],
        tags=[f"{i}{'x' * (limits.MAX_TAG_CHARS - 2)}" for i in range(limits.MAX_TAGS)],
        style="watercolour",
    )
    report = QAReport(
        alignment_score=12,
        missing_elements=scene.elements,
        correction_prompt=_text(rng, alphabet, limits.MAX_PROMPT_CHARS),
        notes=_text(rng, alphabet, 5000),
    )
    rounds = [
        Round(
            index=i,
            prompt=_text(rng, alphabet, limits.MAX_PROMPT_CHARS - 1),
            negative_prompt=scene.negative_prompt,
            seed=limits.MAX_SEED,
            guidance=limits.MAX_GUIDANCE,
            steps=limits.MAX_STEPS,
            width=limits.MAX_SIDE,
            height=limits.MAX_SIDE,
            mode="img2img",
            strength=0.75,
            prompt_tokens=500,
            prompt_chunks=7,
            nsfw=True,
            score=report.alignment_score,
            missing_elements=report.missing_elements,
            correction_prompt=report.correction_prompt,
            critic_notes=report.notes,
        )
        for i in range(2)
    ]
    return Result(
        kind="regenerate",
        parent_job_id="p" * 32,
        idea=_text(rng, alphabet, limits.MAX_IDEA_CHARS),
        transcript=_text(rng, alphabet, 4000),
        language="pt-br",
        translated=True,
        scene=scene,
        director="local",
        director_fallback=_text(rng, alphabet, 3000),
        job_id="j" * 32,
        palette=scene.palette,
        palette_source="image",
        tags=scene.tags,
        rounds=rounds,
        best_round=1,
        threshold=85,
        critic="local",
        critic_fallback=_text(rng, alphabet, 3000),
        total_s=12345.6,
    )


def assert_within_discord_limits(embed: discord.Embed) -> None:
    data = embed.to_dict()
    assert len(embed) <= discord_limits.EMBED_TOTAL_CHARS
    assert len(data.get("title", "")) <= discord_limits.EMBED_TITLE_CHARS
    assert len(data.get("description", "")) <= discord_limits.EMBED_DESCRIPTION_CHARS
    assert len(data.get("footer", {}).get("text", "")) <= discord_limits.EMBED_FOOTER_CHARS
    assert len(data.get("author", {}).get("name", "")) <= discord_limits.EMBED_AUTHOR_NAME_CHARS
    fields = data.get("fields", [])
    assert len(fields) <= discord_limits.EMBED_FIELDS
    for item in fields:
        assert 0 < len(item["name"]) <= discord_limits.EMBED_FIELD_NAME_CHARS
        assert 0 < len(item["value"]) <= discord_limits.EMBED_FIELD_VALUE_CHARS
    # Discord's own count is over these very texts; discord.py's len() is the same sum.
    total = sum(len(data.get(k, "")) for k in ("title", "description"))
    total += len(data.get("footer", {}).get("text", "")) + len(data.get("author", {}).get("name", ""))
    total += sum(len(f["name"]) + len(f["value"]) for f in fields)
    assert total == len(embed)


@pytest.mark.parametrize("alphabet", list(ALPHABETS))
def test_maximal_results_fit_every_embed_limit(alphabet):
    for seed in range(12):
        result = maximal_result(seed, ALPHABETS[alphabet])
        embed = render.result_embed(result)
        assert_within_discord_limits(embed)
        names = [f.name for f in embed.fields]
        # what a reader needs most is never what gives way
        for kept in ("Alignment", "Settings", "Palette", "Directed by", "Judged by", "Time", render.HEARD_FIELD):
            assert kept in names
        assert embed.footer.text == f"job {result.job_id}"  # recovery finds the job by it
        assert embed.image.url == f"attachment://{render.IMAGE_NAME}"
        assert len(render.result_content(result)) <= discord_limits.MESSAGE_CONTENT_CHARS
        assert len(render.details_text(result)) <= discord_limits.MESSAGE_CONTENT_CHARS


def test_a_short_result_embed_is_not_shortened():
    result = maximal_result(0, ALPHABETS["latin"])
    short = result.model_copy(update={"transcript": "a red apple", "rounds": [r.model_copy() for r in result.rounds]})
    short.rounds[1] = short.rounds[1].model_copy(update={"prompt": "a red apple", "missing_elements": []})
    short.scene = short.scene.model_copy(update={"scene_description": "An apple."})
    embed = render.result_embed(short)
    assert embed.description == "An apple." and "a red apple" in embed.fields[0].value
    assert next(f.value for f in embed.fields if f.name == render.PROMPT_FIELD) == "a red apple"


def test_fit_embed_bounds_any_embed():
    embed = discord.Embed(title="t" * 300, description="d" * 5000)
    embed.set_footer(text="f" * 3000)
    embed.set_author(name="a" * 300)
    embed.add_field(name="first", value="v" * 2000)
    for i in range(30):
        embed.add_field(name=f"{i} " + "n" * 300, value="v" * 2000)
    fitted = render.fit_embed(embed, shrink_first=["first", render.DESCRIPTION])
    assert_within_discord_limits(fitted)
    assert fitted.fields[0].value == "…" and not fitted.description  # shrunk in the order given
    assert fitted.fields[1].name.startswith("0 nnn") and len(fitted.fields) < 10  # then fields dropped from the end


# ------------------------------------------------------------------------------------------------
# Uploads
# ------------------------------------------------------------------------------------------------
def noise_png(side: int = 1024, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def guild(premium_tier: int, filesize_limit: int) -> discord.Guild:
    # The two attributes upload_limit reads, as discord.py's Guild has them.
    return SimpleNamespace(premium_tier=premium_tier, filesize_limit=filesize_limit)  # type: ignore[return-value]


def test_upload_limit_by_guild_boost_and_interaction():
    mib = 1024 * 1024
    assert render.upload_limit(None) == 10 * mib  # DMs
    assert render.upload_limit(guild(0, 25 * mib)) == 10 * mib  # an old discord.py's 25 MiB: not for bots
    assert render.upload_limit(guild(1, 25 * mib)) == 10 * mib
    assert render.upload_limit(guild(2, 50 * mib)) == 50 * mib  # boosted: the guild's own
    assert render.upload_limit(guild(3, 100 * mib)) == 100 * mib
    assert render.upload_limit(guild(3, 100 * mib), interaction_limit=8 * mib) == 8 * mib
    assert render.upload_limit(None, interaction_limit=500) == 500


@pytest.mark.parametrize(("limit", "extension"), [(1_000_000, "webp"), (500_000, "jpg")])
def test_fit_uploads_reencodes_an_oversized_png(limit, extension):
    png = noise_png()
    palette = noise_png(32, seed=1)
    assert len(png) > limit  # 3.1 MB
    embed = discord.Embed(title="x")
    embed.set_image(url=f"attachment://{render.IMAGE_NAME}")
    files, fitted_embed = render.fit_uploads(render.result_files(png, palette), embed, limit)
    assert [f.filename for f in files] == [f"image.{extension}", render.PALETTE_NAME]
    assert sum(len(f.data) for f in files) <= limit and files[1].data == palette
    assert fitted_embed is not None and fitted_embed.image.url == f"attachment://image.{extension}"
    assert embed.image.url == f"attachment://{render.IMAGE_NAME}"  # the caller's embed is left alone
    with Image.open(io.BytesIO(files[0].data)) as picture:
        assert picture.format == {"webp": "WEBP", "jpg": "JPEG"}[extension]
    same = render.fit_uploads(render.result_files(png, palette), embed, 10 * 1024 * 1024)
    assert [f.filename for f in same[0]] == [render.IMAGE_NAME, render.PALETTE_NAME] and same[1] is embed
    with pytest.raises(render.UploadTooLarge):
        render.fit_uploads(render.result_files(png, palette), embed, len(palette) + 100)


async def test_channel_post_of_an_oversized_png_arrives_as_webp(start_bot, fake_discord):
    harness = await start_bot()
    fake = fake_discord
    fake.upload_limit = limit = 1_000_000
    png = noise_png()
    embed = discord.Embed(title="noise")
    embed.set_image(url=f"attachment://{render.IMAGE_NAME}")
    surface = ChannelSurface(harness.bot, fake.channel.id, upload_limit=limit)
    parts = MessageParts("noise", embed=embed, files=render.result_files(png, noise_png(32, seed=1)))
    message = await surface.show(parts)

    upload = next(c for c in reversed(fake.calls) if c.files)
    assert sorted(f.filename for f in upload.files) == ["image.webp", "palette.png"]
    assert sum(f.size for f in upload.files) <= limit < len(png)
    picture = Image.open(io.BytesIO(next(f.data for f in upload.files if f.filename == "image.webp")))
    assert picture.format == "WEBP" and picture.size == (1024, 1024)
    assert upload.payload_json["embeds"][0]["image"]["url"] == "attachment://image.webp"
    assert message.id and sorted(a.filename for a in message.attachments) == ["image.webp", "palette.png"]


async def test_imagine_result_over_the_interaction_upload_limit_is_delivered_as_webp_or_jpeg(start_bot, fake_discord):
    harness = await start_bot(WIDTH=256, HEIGHT=256, QA_MAX_ROUNDS=0)
    fake = fake_discord
    fake.upload_limit = limit = 12_000  # read by discord.py from the interaction's attachment_size_limit
    interaction = await fake.slash_command("imagine", {"prompt": "a field of static", "seed": 7})
    await fake.wait_for_response(interaction)

    def delivered():
        msg = fake.original_response(interaction)
        if msg and (footer_job(msg) or (msg.get("content") or "").startswith(("⚠️", "😵"))):
            return msg
        return None

    message = await fake.wait_until(delivered, 90, "the job's result", poll=0.05)
    job_id = footer_job(message)
    assert job_id, message.get("content")
    image_png = await harness.bot.store.read_image(job_id)
    assert len(image_png) > limit  # the PNG itself would not have fitted

    upload = next(c for c in reversed(fake.calls) if c.files and any(f.filename.startswith("image.") for f in c.files))
    picture = next(f for f in upload.files if f.filename.startswith("image."))
    assert picture.filename in ("image.webp", "image.jpg")
    assert sum(f.size for f in upload.files) <= limit
    with Image.open(io.BytesIO(picture.data)) as decoded:
        assert decoded.format in ("WEBP", "JPEG")
    assert message["embeds"][0]["image"]["url"] == f"attachment://{picture.filename}"
    assert sorted(a["filename"] for a in message["attachments"]) == sorted(f.filename for f in upload.files)
