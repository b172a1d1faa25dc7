"""VoxCanvas end to end: the real discord.py bot against the fake Discord, on tiny models
(and the trained Whisper tiny.en for real speech)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import os
import sqlite3
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from devkit.helpers import custom_ids, footer_job
from devkit.voice import make_voice_note, samples_voice_note, silence
from pipeline.studio import Result

pytestmark = pytest.mark.timeout(180)

RESULT_TIMEOUT = 90


def field(message: dict, name: str) -> str | None:
    for embed in message.get("embeds") or []:
        for f in embed.get("fields", []):
            if f["name"] == name:
                return f["value"]
    return None


async def wait_result(fake, interaction, timeout: float = RESULT_TIMEOUT) -> dict:
    def done():
        msg = fake.original_response(interaction)
        if msg and (footer_job(msg) or (msg.get("content") or "").startswith(("⚠️", "😵"))):
            return msg
        return None

    return await fake.wait_until(done, timeout, "the job's result", poll=0.05)


async def delivered_record(harness, job_id: str, timeout: float = 10.0):
    """The job's store record once its delivery is recorded (right after the message lands)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        record = await harness.bot.store.get(job_id)
        if record.delivered_message_id is not None or asyncio.get_running_loop().time() > deadline:
            return record
        await asyncio.sleep(0.02)


async def imagine(fake, options: dict, **kw):
    interaction = await fake.slash_command("imagine", options, **kw)
    await fake.wait_for_response(interaction)
    return interaction


def posted_result(fake, interaction) -> dict | None:
    """The job's result posted in the channel (not in the interaction's own response)."""
    for msg in fake.find_messages(channel_id=fake.channel.id, from_bot=True):
        if footer_job(msg) and int(msg["id"]) != interaction.original_message_id:
            return msg
    return None


async def test_imagine_end_to_end(start_bot, fake_discord, secret_log):
    harness = await start_bot()
    fake = fake_discord
    assert fake.sync_count(fake.guild.id) == 1  # synced to DISCORD_GUILD_IDS
    names = {c["name"] for c in fake.commands(fake.guild.id)}
    assert {"imagine", "queue", "history", "forget"} <= names

    interaction = await imagine(fake, {"prompt": "a red apple on a wooden table", "seed": 1234})
    assert interaction.response_type == 5  # deferred, "thinking"
    assert interaction.ack_latency < 3.0
    message = await wait_result(fake, interaction)

    files = sorted(a["filename"] for a in message["attachments"])
    assert files == ["image.png", "palette.png"]
    upload = [c for c in fake.calls if c.files and any(f.filename == "image.png" for f in c.files)][-1]
    image = Image.open(io.BytesIO(next(f.data for f in upload.files if f.filename == "image.png")))
    assert image.size == (64, 64)
    swatch = Image.open(io.BytesIO(next(f.data for f in upload.files if f.filename == "palette.png")))
    assert swatch.width > swatch.height

    job_id = footer_job(message)
    assert custom_ids(message) == [
        f"voxcanvas:regen:{job_id}",
        f"voxcanvas:vary:{job_id}",
        f"voxcanvas:up:{job_id}:1",
        f"voxcanvas:remix:{job_id}",
        f"voxcanvas:music:{job_id}",
        f"voxcanvas:details:{job_id}",
        f"voxcanvas:delete:{job_id}",
    ]
    assert "/100" in field(message, "Alignment")
    assert field(message, "Prompt") and field(message, "Palette").count("#") >= 3
    assert "local" in field(message, "Directed by") and "CLIP" in field(message, "Judged by")
    assert message["content"].startswith("Palette: #")

    record = await delivered_record(harness, job_id)
    assert record.state == "done" and int(record.delivered_message_id) == int(message["id"])
    result = Result.model_validate_json(record.result_json)
    assert result.rounds[0].seed == 1234 and result.rounds[0].steps == 4
    assert f"seed `{result.best.seed}`" in field(message, "Settings")  # the picture shown
    if result.rounds[0].score < 85:  # the CLIP critic on random weights decides; the loop must follow
        assert len(result.rounds) == 2 and result.rounds[1].guidance == 9.0 and result.rounds[1].steps == 9

    # Secrets never reach the logs.
    assert "test-token" not in secret_log.text


async def test_progress_shows_queue_position_then_stages_throttled(start_bot, fake_discord):
    harness = await start_bot(QA_MAX_ROUNDS=0, STEPS=100, WIDTH=256, HEIGHT=256)  # seconds of rendering
    fake = fake_discord
    gate = threading.Event()
    holding = asyncio.create_task(harness.bot.executor.call(None, "maintenance", gate.wait, 30))
    await asyncio.sleep(0.05)
    interaction = await imagine(fake, {"prompt": "a windmill in a tulip field"})

    def edited_to(words):
        def check():
            message = fake.original_response(interaction) or {}
            return words in (message.get("content") or "") or None

        return check

    await fake.wait_until(edited_to("In the queue — position 1"), 10, "the queue position", poll=0.02)
    gate.set()
    await holding
    message = await wait_result(fake, interaction)
    assert footer_job(message)
    edits = [c for c in fake.calls if c.method == "PATCH" and c.path.endswith("/messages/@original") and c.json]
    times = [c.at for c in edits if "attachments" not in (c.json or {}) and not c.files]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 1.9 for gap in gaps), gaps  # at most one progress edit every ~2 s
    stages = [c.json.get("content") or "" for c in edits]
    assert any(word in t for t in stages for word in ("Rendering", "Directing", "Reviewing")), stages


async def test_buttons_regenerate_vary_details(start_bot, fake_discord):
    harness = await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    first = await wait_result(fake, await imagine(fake, {"prompt": "a castle on a hill at night"}))
    job_id = footer_job(first)
    parent = Result.model_validate_json((await harness.bot.store.get(job_id)).result_json)

    click = await fake.click_button(first["id"], f"voxcanvas:regen:{job_id}", user=fake.other_user)
    await fake.wait_for_response(click)
    assert click.ack_latency < 3.0 and click.response_type == 5
    regen = await wait_result(fake, click)
    regen_id = footer_job(regen)
    assert regen_id != job_id
    regen_record = await harness.bot.store.get(regen_id)
    assert regen_record.parent_job_id == job_id and regen_record.user_id == fake.other_user.id
    regenerated = Result.model_validate_json(regen_record.result_json)
    assert regenerated.kind == "regenerate"
    last = parent.rounds[-1]
    assert regenerated.rounds[0].prompt == (last.correction_prompt or last.prompt)
    assert regenerated.rounds[0].guidance == last.guidance + 1.5
    assert regenerated.rounds[0].seed != last.seed
    assert "Regenerated" in regen["content"]

    click = await fake.click_button(first["id"], f"voxcanvas:vary:{job_id}")
    varied = Result.model_validate_json(
        (await harness.bot.store.get(footer_job(await wait_result(fake, click)))).result_json
    )
    assert varied.kind == "vary"
    assert varied.rounds[0].prompt == parent.best.prompt and varied.rounds[0].guidance == parent.best.guidance
    assert varied.rounds[0].seed != parent.best.seed

    click = await fake.click_button(first["id"], f"voxcanvas:details:{job_id}")
    await fake.wait_for_response(click)
    assert click.ephemeral and click.response_type == 4
    body = click.response_body["data"]["content"]
    assert "Round 1" in body and parent.scene.title in body


async def test_voice_note_real_speech(start_bot, fake_discord):
    await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    note = make_voice_note("Please draw a red apple on a wooden table")
    sent = await fake.send_voice_message(fake.channel.id, fake.user, note, duration_secs=3.0)

    def result():
        for msg in fake.find_messages(channel_id=fake.channel.id, from_bot=True):
            ref = (msg.get("message_reference") or {}).get("message_id")
            if ref and int(ref) == int(sent["id"]) and footer_job(msg):
                return msg
        return None

    message = await fake.wait_until(result, RESULT_TIMEOUT, "voice-note result", poll=0.05)
    heard = field(message, "🎙️ Heard")
    assert "apple" in heard.lower() and "English" in heard
    reactions = fake.find_calls(
        method="PUT", route="PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me"
    )
    assert reactions, "the voice note was not acknowledged with a reaction"
    # The "Listening…" reply was edited into the result: one reply, not two.
    replies = [
        m
        for m in fake.find_messages(channel_id=fake.channel.id, from_bot=True)
        if int((m.get("message_reference") or {}).get("message_id") or 0) == int(sent["id"])
    ]
    assert len(replies) == 1


@pytest.mark.parametrize(
    "case, expected",
    [
        ("too_long", "long"),
        ("empty", "empty"),
        ("corrupt", "couldn't read"),
        ("not_audio", "couldn't read"),
        ("silent", "silent"),
    ],
)
async def test_bad_voice_notes_get_friendly_replies(start_bot, fake_discord, case, expected):
    await start_bot()
    fake = fake_discord
    good = make_voice_note("a blue boat")
    payloads = {
        "too_long": (good, 600.0),
        "empty": (b"", 1.0),
        "corrupt": (good[: len(good) // 3] + os.urandom(2000), 3.0),
        "not_audio": (b"this is a text file, not a voice note\n" * 50, 2.0),
        "silent": (samples_voice_note(silence(3.0)), 3.0),
    }
    audio, duration = payloads[case]
    sent = await fake.send_voice_message(fake.channel.id, fake.user, audio, duration_secs=duration)

    def reply():
        for msg in fake.find_messages(channel_id=fake.channel.id, from_bot=True):
            ref = (msg.get("message_reference") or {}).get("message_id")
            if ref and int(ref) == int(sent["id"]) and expected in (msg.get("content") or "").lower():
                return msg
        return None

    await fake.wait_until(reply, 60, f"a friendly reply for {case}", poll=0.05)
    attachment = sent["attachments"][0]
    if case in ("too_long", "empty"):
        assert not fake.was_downloaded(attachment), "refused notes must not be downloaded"
    # The bot keeps serving.
    interaction = await imagine(fake, {"prompt": "a small red house"})
    assert interaction.ack_latency < 3.0


async def test_per_user_cap_refuses_politely(start_bot, fake_discord):
    await start_bot(MAX_JOBS_PER_USER=1, STEPS=30)
    fake = fake_discord
    first = await imagine(fake, {"prompt": "a lighthouse in a storm"})
    second = await imagine(fake, {"prompt": "another lighthouse"})
    assert second.response_type == 4 and second.ephemeral
    assert "limit is 1" in second.response_body["data"]["content"]
    await wait_result(fake, first)
    third = await imagine(fake, {"prompt": "a third lighthouse"})  # the slot is free again
    assert third.response_type == 5


async def test_image_to_image_with_attached_png(start_bot, fake_discord):
    harness = await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    buf = io.BytesIO()
    Image.new("RGB", (80, 48), (200, 30, 30)).save(buf, format="PNG")
    interaction = await fake.slash_command(
        "imagine",
        {"prompt": "make it a sunset", "strength": 0.5},
        attachments={"image": ("sketch.png", buf.getvalue(), "image/png")},
    )
    message = await wait_result(fake, interaction)
    assert "image-to-image, strength 0.5" in field(message, "Settings")
    result = Result.model_validate_json((await harness.bot.store.get(footer_job(message))).result_json)
    assert result.rounds[0].mode == "img2img"

    bad = await fake.slash_command(
        "imagine", {"prompt": "x"}, attachments={"image": ("notes.txt", b"hello", "text/plain")}
    )
    await fake.wait_for_response(bad)
    assert bad.ephemeral and "PNG, JPEG or WebP" in bad.response_body["data"]["content"]


async def test_job_outliving_the_token_is_posted_to_the_channel(start_bot, fake_discord):
    await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    interaction = await imagine(fake, {"prompt": "a fox in the snow"})
    fake.expire_token(interaction)  # as if 15 minutes had passed
    message = await fake.wait_until(
        lambda: posted_result(fake, interaction), RESULT_TIMEOUT, "result in the channel", poll=0.05
    )
    assert message["content"].startswith(f"<@{fake.user.id}>")
    assert sorted(a["filename"] for a in message["attachments"]) == ["image.png", "palette.png"]


def forget_delivery(settings, job_id: str, interaction) -> None:
    """What a crash right after sending a job's result leaves in the store: the send begun
    (``delivery_started_at``), the interaction token still there, neither the message nor the
    progress message recorded."""
    with contextlib.closing(sqlite3.connect(Path(settings.DATA_DIR) / "voxcanvas.db")) as db, db:
        db.execute(
            "UPDATE jobs SET delivered_message_id = NULL, delivered_channel_id = NULL, "
            "progress_message_id = NULL, interaction_token = ? WHERE id = ?",
            (interaction.token, job_id),
        )


async def test_result_posted_just_before_a_crash_is_not_posted_again(start_bot, fake_discord, bot_settings):
    """After a restart, a result whose interaction token has run out is posted to the channel with
    the job's delivery nonce. If that process dies before recording the post, the next one sends
    it again and Discord answers with the first message: still one post, even after more chatter
    than a search of the channel's recent messages covers."""
    fake = fake_discord
    settings = bot_settings(QA_MAX_ROUNDS=0)
    first = await start_bot(settings)
    interaction = await imagine(fake, {"prompt": "a lantern on a pier"})
    job_id = footer_job(await wait_result(fake, interaction))
    await delivered_record(first, job_id)
    await first.bot.close()

    # The first process died before recording its delivery; by the restart the token has run out.
    forget_delivery(settings, job_id, interaction)
    fake.expire_token(interaction)
    second = await start_bot(settings)
    record = await delivered_record(second, job_id)
    posted = fake.get_message(record.delivered_message_id)
    assert int(posted["id"]) != interaction.original_message_id and footer_job(posted) == job_id
    assert record.delivery_started_at is not None and posted["nonce"] == record.delivery_nonce
    for i in range(60):
        await fake.send_message(fake.channel.id, fake.other_user, f"chatter {i}")
    await second.bot.close()

    # The second process died right after posting: the third sends the same post again.
    forget_delivery(settings, job_id, interaction)
    since = len(fake.calls)
    third = await start_bot(settings)
    record = await delivered_record(third, job_id)
    assert record.delivered_message_id == int(posted["id"])  # the first post, returned by Discord
    resent = fake.find_calls(method="POST", route="POST /channels/{channel_id}/messages", since=since)
    assert [(c.json["nonce"], c.json["enforce_nonce"]) for c in resent] == [(record.delivery_nonce, True)]
    in_channel = [
        m
        for m in fake.find_messages(channel_id=fake.channel.id, from_bot=True)
        if footer_job(m) == job_id and int(m["id"]) != interaction.original_message_id
    ]
    assert len(in_channel) == 1


async def test_commands_sync_only_when_changed(start_bot, fake_discord, bot_settings):
    settings = bot_settings()
    first = await start_bot(settings)
    await first.bot.close()
    await start_bot(settings)  # same DATA_DIR, same commands
    assert fake_discord.sync_count(fake_discord.guild.id) == 1


async def test_queue_and_history_commands(start_bot, fake_discord):
    harness = await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    message = await wait_result(fake, await imagine(fake, {"prompt": "a green frog on a leaf"}))
    job_id = footer_job(message)

    queue = await fake.slash_command("queue", {})
    await fake.wait_for_response(queue)
    assert queue.ephemeral and "nothing in progress" in queue.response_body["data"]["content"]

    history = await fake.slash_command("history", {})
    await fake.wait_for_response(history)
    text = history.response_body["data"]["content"]
    assert job_id in text and "/100" in text and f"/{message['id']})" in text

    async def answer(interaction) -> str:
        await fake.wait_for_response(interaction)
        assert interaction.ephemeral and interaction.ack_latency < 3.0
        return (await fake.wait_until(lambda: fake.followups(interaction) or None, 10, "the answer"))[0]["content"]

    other = await fake.slash_command("forget", {"job": job_id}, user=fake.other_user)
    assert "couldn't find" in await answer(other)
    assert int(message["id"]) in fake.world.messages
    mine = await fake.slash_command("forget", {"job": job_id})
    assert "Deleted" in await answer(mine)
    assert await harness.bot.store.get(job_id) is None
    assert int(message["id"]) not in fake.world.messages  # the post went too


async def run_bot_process(env: dict, timeout: float = 60) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode()


async def test_make_run_without_token_explains(tmp_path):
    # Without a token the web playground runs alone (tests/web/test_run.py); with it disabled too,
    # there is nothing to serve: say how to add either.
    code, out = await run_bot_process({"DISCORD_TOKEN": "", "API_PORT": "", "DATA_DIR": str(tmp_path)})
    assert code == 2
    assert "DISCORD_TOKEN is not set" in out and ".env.example" in out and "API_PORT" in out
    assert "Traceback" not in out


async def test_rejected_token_exits_with_a_clear_message(fake_discord, tmp_path):
    code, out = await run_bot_process(
        {
            "DISCORD_TOKEN": "wrong-token-123456",
            "DISCORD_API_BASE": fake_discord.api_base,
            "DISCORD_GATEWAY_URL": fake_discord.gateway_url,
            "DATA_DIR": str(tmp_path),
        }
    )
    assert code == 3, out
    assert "rejected DISCORD_TOKEN" in out
    assert "wrong-token-123456" not in out
