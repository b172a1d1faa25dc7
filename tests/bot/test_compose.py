"""Music in Discord: /compose and the Soundtrack button against the fake Discord with the real
discord.py client and the tiny MusicGen; the audio attachment decodes; the button works after a
restart; a piece whose delivery a crash interrupted is delivered again."""

from __future__ import annotations

import io

import pytest
import soundfile as sf

from devkit.helpers import custom_ids, footer_job
from pipeline.studio import MusicResult, Result

from .test_bot import delivered_record, field, forget_delivery, imagine, wait_result

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def music_settings(bot_settings, tiny_musicgen_dir):
    def factory(**overrides):
        return bot_settings(MUSIC_MODEL=str(tiny_musicgen_dir), MUSIC_SECONDS=5, QA_MAX_ROUNDS=0, **overrides)

    return factory


def audio_uploads(fake) -> list:
    return [c for c in fake.calls if c.files and any(f.filename == "soundtrack.ogg" for f in c.files)]


def uploaded_audio(fake, message: dict) -> tuple[bytes, float, int]:
    """The OGG the message carries: its bytes, duration (s) and sample rate, as libsndfile reads it."""
    assert [a["filename"] for a in message["attachments"]] == ["soundtrack.ogg"]
    upload = audio_uploads(fake)[-1]
    data = next(f.data for f in upload.files if f.filename == "soundtrack.ogg")
    info = sf.info(io.BytesIO(data))
    assert data.startswith(b"OggS") and info.format == "OGG" and info.subtype == "OPUS" and info.channels == 1
    return data, info.frames / info.samplerate, info.samplerate


async def test_compose_end_to_end(start_bot, fake_discord, music_settings):
    harness = await start_bot(music_settings())
    fake = fake_discord
    assert "compose" in {c["name"] for c in fake.commands(fake.guild.id)}
    spec = next(c for c in fake.commands(fake.guild.id) if c["name"] == "compose")
    seconds = next(o for o in spec["options"] if o["name"] == "seconds")
    assert (seconds["min_value"], seconds["max_value"]) == (5, 30)

    interaction = await fake.slash_command("compose", {"description": "a calm seaside ambience", "seconds": 6})
    await fake.wait_for_response(interaction)
    assert interaction.response_type == 5 and interaction.ack_latency < 3.0  # deferred, "thinking"
    message = await wait_result(fake, interaction)
    _, duration, rate = uploaded_audio(fake, message)
    assert rate == 48_000 and duration == pytest.approx(6.0, abs=0.03)
    assert field(message, "Music prompt") == "a calm seaside ambience"
    assert custom_ids(message) == []  # nothing to rework on a piece of music

    job_id = footer_job(message)
    record = await delivered_record(harness, job_id)
    assert record.kind == "compose" and record.state == "done" and record.music_file == "music.ogg"
    result = MusicResult.model_validate_json(record.result_json)
    assert result.duration_s == 6.0 and result.director == "user"
    assert await harness.bot.store.read_music(job_id) == uploaded_audio(fake, message)[0]

    # A music job takes a queue slot like a picture: the cap applies to both together.
    history = await fake.slash_command("history", {})
    await fake.wait_for_response(history)
    assert "calm seaside ambience" in history.response_body["data"]["content"]


async def test_soundtrack_button_works_after_a_restart_and_redelivers_after_a_crash(
    start_bot, fake_discord, music_settings
):
    fake = fake_discord
    settings = music_settings()
    first = await start_bot(settings)
    picture = await wait_result(fake, await imagine(fake, {"prompt": "a lighthouse on a stormy sea at night"}))
    picture_id = footer_job(picture)
    assert f"voxcanvas:music:{picture_id}" in custom_ids(picture)
    parent = Result.model_validate_json((await first.bot.store.get(picture_id)).result_json)
    await first.bot.close()

    # A new process: the button under the old message still works (state comes from the store).
    second = await start_bot(settings)
    click = await fake.click_button(picture["id"], f"voxcanvas:music:{picture_id}", user=fake.other_user)
    await fake.wait_for_response(click)
    assert click.response_type == 5 and click.ack_latency < 3.0
    message = await wait_result(fake, click)
    _, duration, _ = uploaded_audio(fake, message)
    assert duration == pytest.approx(5.0, abs=0.03)  # MUSIC_SECONDS
    job_id = footer_job(message)
    record = await delivered_record(second, job_id)
    assert record.kind == "soundtrack" and record.parent_job_id == picture_id
    assert record.user_id == fake.other_user.id  # it is the presser's job
    result = MusicResult.model_validate_json(record.result_json)
    assert result.music_prompt == parent.scene.music_prompt and "bpm" in result.music_prompt
    assert field(message, "Music prompt") == result.music_prompt
    assert message["content"].startswith("A soundtrack")

    assert custom_ids(message) == []
    await second.bot.close()

    # The process died right after sending the music, before recording it: sent again on start.
    forget_delivery(settings, job_id, click)
    uploads_before = len(audio_uploads(fake))
    third = await start_bot(settings)
    record = await delivered_record(third, job_id)
    assert record.delivered_message_id is not None
    assert len(audio_uploads(fake)) == uploads_before + 1  # the stored piece was uploaded again
    redelivered = fake.get_message(record.delivered_message_id)
    assert footer_job(redelivered) == job_id
    _, duration, _ = uploaded_audio(fake, redelivered)
    assert duration == pytest.approx(5.0, abs=0.03)
