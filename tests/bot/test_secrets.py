"""Secrets and privacy (issue #11, item 6): no credential in any log line — tracebacks included,
DEBUG included; users read friendly text while operators get the details in the log; Details
never shows why Gemini failed; everything under DATA_DIR is private to the VoxCanvas user."""

from __future__ import annotations

import io
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.gemini import Status
from devkit.helpers import footer_job
from devkit.voice import samples_voice_note, silence
from pipeline.logs import QUIET_LIBRARIES, SECRET_BEARING_LOGGERS
from tests.bot.test_bot import imagine as imagine_with
from tests.bot.test_bot import wait_result
from tests.pipeline.test_logs import run_python

pytestmark = pytest.mark.timeout(180)

RESULT_TIMEOUT = 90

# Shaped like the real things (a Discord bot token, a Google API key, an interaction token).
BOT_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4OQ.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789"
GEMINI_KEY = "AIzaSyD-0123456789abcdefghijklmnopqrstu"
INTERACTION_TOKEN = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDEyMzQ1Njc4OTpzZWNyZXQ"


# --- tracebacks through the configured logging ----------------------------------------------------
def test_secrets_inside_tracebacks_and_stacks_are_redacted():
    done = run_python(
        f"""
        import logging
        from bot.__main__ import setup_logging

        setup_logging("DEBUG", [{BOT_TOKEN!r}, {GEMINI_KEY!r}])
        log = logging.getLogger("pipeline.studio")
        try:
            raise RuntimeError(
                "401 from https://generativelanguage.googleapis.com/v1/models?key={GEMINI_KEY} "
                "with Authorization: Bot {BOT_TOKEN}"
            )
        except RuntimeError:
            log.exception("Gemini director crashed")
        try:
            raise ValueError("POST /api/v10/interactions/123456789/{INTERACTION_TOKEN}/callback failed")
        except ValueError as exc:
            log.error("delivery failed: %s", exc, exc_info=True, stack_info=True)
        log.warning("payload %s", {{"id": "1", "token": "{INTERACTION_TOKEN}"}})
        """
    )
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "Traceback" in err and "RuntimeError: 401 from" in err and "Stack (most recent call last)" in err
    for secret in (BOT_TOKEN, GEMINI_KEY, INTERACTION_TOKEN):
        assert secret not in err
    assert err.count("[redacted]") >= 5
    assert "/interactions/123456789/[redacted]/callback" in err  # what failed stays readable


def test_every_entry_point_redacts_credential_shapes_it_was_not_told_about():
    """``python -m pipeline`` and ``python -m bench`` call configure_logging without secrets."""
    done = run_python(
        f"""
        import logging
        from pipeline.logs import configure_logging

        configure_logging(logging.DEBUG, quiet_libraries=False)
        try:
            raise OSError("https://example.invalid/webhooks/42/{INTERACTION_TOKEN}x?key={GEMINI_KEY}")
        except OSError:
            logging.getLogger("pipeline").exception("with %s", "Bot {BOT_TOKEN}")
        """
    )
    assert done.returncode == 0, done.stderr
    for secret in (BOT_TOKEN, GEMINI_KEY, INTERACTION_TOKEN):
        assert secret not in done.stderr
    assert "/webhooks/42/[redacted]" in done.stderr


# --- DEBUG logging of a real bot run --------------------------------------------------------------
@pytest.fixture
def configured_logging() -> Iterator[object]:
    """``configure(level, unmute=())``: the bot's own logging set-up (bot.__main__.setup_logging),
    written to a buffer; the root logger and every level it touches are restored afterwards."""
    from bot.__main__ import setup_logging

    root = logging.getLogger()
    names = [*QUIET_LIBRARIES, *SECRET_BEARING_LOGGERS]
    saved = (root.handlers[:], root.level, {name: logging.getLogger(name).level for name in names})
    buffer = io.StringIO()

    def configure(level: str, unmute: list[str] | None = None) -> io.StringIO:
        if unmute is None:
            setup_logging(level, ["test-token"])
        else:
            setup_logging(level, ["test-token"], unmute)
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buffer)
        return buffer

    yield configure
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


async def imagine(fake, prompt: str):
    return await imagine_with(fake, {"prompt": prompt, "seed": 7})


async def test_debug_log_of_a_real_bot_run_has_no_interaction_token(start_bot, fake_discord, configured_logging):
    log_text = configured_logging("DEBUG")
    harness = await start_bot(QA_MAX_ROUNDS=0)
    interaction = await imagine(fake_discord, "a red apple on a wooden table")
    message = await wait_result(fake_discord, interaction)
    job_id = footer_job(message)
    assert job_id is not None
    record = await harness.bot.store.get(job_id)
    assert record.delivered_message_id is not None or record.state == "done"

    text = log_text.getvalue()
    assert " DEBUG " in text and job_id in text  # DEBUG really was on for our own loggers
    assert interaction.token not in text
    assert "test-token" not in text


async def test_token_carrying_loggers_need_an_explicit_opt_in(start_bot, fake_discord, configured_logging):
    log_text = configured_logging("DEBUG", unmute=["discord.webhook", "aiosqlite"])
    await start_bot(QA_MAX_ROUNDS=0)
    interaction = await imagine(fake_discord, "a blue cup")
    await wait_result(fake_discord, interaction)
    text = log_text.getvalue()
    webhook_lines = [line for line in text.splitlines() if " discord.webhook" in line]
    assert any(line.startswith(tuple("0123456789")) and " aiosqlite: " in line for line in text.splitlines())
    assert webhook_lines, "LOG_DEBUG_LOGGERS did not unmute discord.webhook"
    # Opted in, the URLs are still printed without the token.
    assert not any(interaction.token in line for line in webhook_lines)


# --- what users and operators are told ------------------------------------------------------------
async def test_model_load_error_reaches_the_user_without_its_path(start_bot, fake_discord, tmp_path, secret_log):
    broken = tmp_path / "private-models" / "broken-sd"
    broken.mkdir(parents=True)
    (broken / "model_index.json").write_text("{ not json")
    harness = await start_bot(QA_MAX_ROUNDS=0, DIFFUSION_MODEL=str(broken))
    interaction = await imagine(fake_discord, "a red apple")
    message = await wait_result(fake_discord, interaction)

    content = message["content"]
    assert content.startswith("⚠️") and "couldn't be loaded" in content
    assert str(tmp_path) not in content and "private-models" not in content and "DIFFUSION_MODEL" not in content
    [record] = await harness.bot.store.history(fake_discord.user.id)
    assert f"`{record.id}`" in content  # the operator can find the details by job id
    assert record.error is not None and "private-models" not in record.error
    # ... and the operator has them in the log.
    logged = [r for r in secret_log.records if r.levelno >= logging.ERROR and record.id in r.getMessage()]
    assert any(str(broken) in r.getMessage() for r in logged)


async def test_details_shows_the_fallback_not_why_gemini_failed(start_bot, fake_discord, fake_gemini, secret_log):
    reason = "API key not valid. Please pass a valid API key. (project 555123 quota-leak)"
    fake_gemini.always("director", Status(403, reason))
    fake_gemini.always("critic", Status(403, reason))
    await start_bot(
        QA_MAX_ROUNDS=0, GEMINI_API_KEY=GEMINI_KEY, GOOGLE_GEMINI_BASE_URL=fake_gemini.url, GEMINI_RETRIES=0
    )
    interaction = await imagine(fake_discord, "a red apple")
    message = await wait_result(fake_discord, interaction)
    job_id = footer_job(message)
    assert job_id is not None

    click = await fake_discord.click_button(message["id"], f"voxcanvas:details:{job_id}")
    await fake_discord.wait_for_response(click)
    body = click.response_body["data"]["content"]
    assert "fallback: local director (Gemini unavailable)" in body
    assert "fallback: CLIP critic (Gemini unavailable)" in body
    assert "quota-leak" not in body and "API key" not in body and "PERMISSION_DENIED" not in body
    assert any("quota-leak" in r.getMessage() for r in secret_log.records)  # the operator's copy


# --- DATA_DIR permissions ---------------------------------------------------------------------------
async def test_data_dir_is_private_after_real_jobs(start_bot, fake_discord):
    previous_umask = os.umask(0o022)  # the common default: files 0644, folders 0755 unless we say
    try:
        harness = await start_bot(QA_MAX_ROUNDS=0)
        fake = fake_discord
        interaction = await imagine(fake, "a red apple on a wooden table")
        assert footer_job(await wait_result(fake, interaction))
        # A voice note is saved (audio.ogg) before it is decoded; silence is refused after that.
        sent = await fake.send_voice_message(fake.channel.id, fake.user, samples_voice_note(silence(1.0)))

        def answered():
            for msg in fake.find_messages(channel_id=fake.channel.id, from_bot=True):
                ref = (msg.get("message_reference") or {}).get("message_id")
                if ref and int(ref) == int(sent["id"]) and (msg.get("content") or "").startswith("⚠️"):
                    return msg
            return None

        await fake.wait_until(answered, RESULT_TIMEOUT, "the voice note's answer", poll=0.05)
        data_dir = Path(harness.settings.DATA_DIR)
        modes = {
            str(path.relative_to(data_dir)): stat.S_IMODE(path.stat().st_mode)
            for path in [data_dir, *data_dir.rglob("*")]
        }
    finally:
        os.umask(previous_umask)
    names = {Path(name).name for name in modes}
    assert {"voxcanvas.db", "voxcanvas.lock", "image.png", "palette.png", "result.json"} <= names
    assert any(name.startswith("audio.") for name in names), names
    loose = {
        name: oct(mode) for name, mode in modes.items() if mode != (0o700 if (data_dir / name).is_dir() else 0o600)
    }
    assert not loose, loose


async def test_opening_the_store_tightens_what_an_older_version_left_readable(tmp_path: Path):
    from bot.store import JobStore

    data_dir = tmp_path / "data"
    store = await JobStore.open(data_dir, durable=False)
    await store.close()
    loosened = [data_dir, data_dir / "jobs", data_dir / "voxcanvas.db"]
    for path in loosened:
        path.chmod(0o755 if path.is_dir() else 0o644)  # as the previous release created them

    store = await JobStore.open(data_dir, durable=False)
    try:
        assert [oct(stat.S_IMODE(path.stat().st_mode)) for path in loosened] == ["0o700", "0o700", "0o600"]
        wal = data_dir / "voxcanvas.db-wal"
        assert not wal.exists() or stat.S_IMODE(wal.stat().st_mode) == 0o600
    finally:
        await store.close()
