"""Failing parts, and every job still ends with a message to its user (issue #11, items 3 and 7).

Real failures at real boundaries: the OS refusing to write the picture (ENOSPC), the SQLite
connection refusing writes, a trigger failing one UPDATE, Discord answering 400 to the upload.
Each test asserts what the user sees and what the store's row says.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import sqlite3
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest

from devkit.helpers import custom_ids, footer_job
from devkit.voice import noise, wav_bytes

pytestmark = pytest.mark.timeout(180)

RESULT_TIMEOUT = 90
MB = 1024 * 1024
ORIGINAL = "/webhooks/*/messages/@original"  # the interaction's "thinking…" response, edited into the result


async def imagine(fake, prompt: str):
    interaction = await fake.slash_command("imagine", {"prompt": prompt})
    await fake.wait_for_response(interaction)
    assert interaction.response_type == 5
    return interaction


def final_message(fake, interaction) -> dict | None:
    """The interaction's response once it is no longer "thinking…" nor a progress line."""
    message = fake.original_response(interaction)
    if not message:
        return None
    content = message.get("content") or ""
    if footer_job(message) or message.get("attachments") or content.startswith(("⚠️", "😵")):
        return message
    return None


async def wait_final(fake, interaction) -> dict:
    return await fake.wait_until(lambda: final_message(fake, interaction), RESULT_TIMEOUT, "a final message", poll=0.05)


async def latest_job(harness, user_id: int):
    return (await harness.bot.store.history(user_id, limit=1))[0]


async def settled_record(harness, job_id: str, timeout: float = 10.0):
    """The job's record once the runner is done with it (its task finished)."""
    running = {t for t in harness.bot.runner.tasks if t.get_name() == f"job-{job_id}"}
    if running:
        _, pending = await asyncio.wait(running, timeout=timeout)
        assert not pending, f"job {job_id} still running after {timeout} s"
    return await harness.bot.store.get(job_id)


def hold_the_gpu(harness) -> tuple[threading.Event, asyncio.Task]:
    """Occupy the model thread until the returned event is set (jobs queue behind it)."""
    gate = threading.Event()
    holding = asyncio.create_task(harness.bot.executor.call(None, "maintenance", gate.wait, 60))
    return gate, holding


async def wait_running(harness, user_id: int):
    async def running():
        history = await harness.bot.store.history(user_id, limit=1)
        return history[0] if history and history[0].state == "running" else None

    deadline = time.monotonic() + 20
    while (record := await running()) is None:
        assert time.monotonic() < deadline, "the job never started"
        await asyncio.sleep(0.02)
    return record


# --- item 3 (a): the picture can't be saved ----------------------------------------------------------
@pytest.mark.parametrize("failures", [1, 1000], ids=["disk-full-once", "disk-full"])
async def test_picture_that_cannot_be_saved_is_delivered_from_memory(start_bot, fake_discord, monkeypatch, failures):
    """Disk full while saving the finished picture: one retry; if that fails too, the picture is
    still shown (from memory), without buttons and saying why, and the row says it wasn't saved."""
    from bot.runner import UNSAVED, UNSAVED_NOTE
    from bot.store import files

    harness = await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    real_write = files.atomic_write
    refused: list[Path] = []

    def disk_full(path: Path, data: bytes, *, durable: bool) -> None:
        if len(refused) < failures:
            refused.append(path)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data, durable=durable)

    monkeypatch.setattr(files, "atomic_write", disk_full)
    interaction = await imagine(fake, "a paper boat on a puddle")
    message = await wait_final(fake, interaction)
    record = await settled_record(harness, (await latest_job(harness, fake.user.id)).id)

    assert refused, "the save was never attempted"
    assert [a["filename"] for a in message["attachments"]] == ["image.png", "palette.png"]  # the picture is shown
    assert footer_job(message) == record.id
    assert int(record.delivered_message_id) == int(message["id"])
    if failures == 1:  # the retry saved it: a normal result with its buttons
        assert record.state == "done" and record.image_file and record.error is None
        assert custom_ids(message)[0] == f"voxcanvas:regen:{record.id}"
        assert UNSAVED_NOTE not in message["content"]
    else:
        assert record.state == "failed" and record.error == UNSAVED and record.image_file is None
        assert message["content"].startswith(UNSAVED_NOTE) and custom_ids(message) == []


# --- item 3 (b): the store fails too ---------------------------------------------------------------------
async def test_job_answers_when_the_database_refuses_every_write(start_bot, fake_discord, caplog):
    """The SQLite connection turns read-only while the job renders: saving fails, recording the
    failure fails, marking and recording the delivery fail — the user still gets the picture
    (before: ``store.fail`` raised inside the ``except`` and "thinking…" stayed forever)."""
    from bot.runner import UNSAVED_NOTE

    harness = await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    caplog.set_level(logging.INFO)
    gate, holding = hold_the_gpu(harness)
    interaction = await imagine(fake, "a kite over the dunes")
    record = await wait_running(harness, fake.user.id)
    conn = harness.bot.store._db._conn  # the store's own connection, refusing writes from now on
    await conn.execute("PRAGMA query_only = ON")
    try:
        gate.set()
        await holding
        message = await wait_final(fake, interaction)
        settled = await settled_record(harness, record.id)
    finally:
        await conn.execute("PRAGMA query_only = OFF")

    assert [a["filename"] for a in message["attachments"]] == ["image.png", "palette.png"]
    assert message["content"].startswith(UNSAVED_NOTE) and custom_ids(message) == []
    # Nothing could be written: the row still says running (the next start finishes it from its files).
    assert settled.state == "running" and settled.delivered_message_id is None
    assert (harness.bot.store.job_dir(record.id) / "result.json").is_file()
    logged = caplog.text
    assert f"job {record.id}: the store could not record that it failed" in logged
    assert f"job {record.id}: delivered as message {message['id']}, but the store could not record it" in logged
    assert "never retrieved" not in logged


# --- item 3 (c): recording the delivery fails after the post -------------------------------------------
async def test_failure_to_record_the_delivery_keeps_the_picture_shown(start_bot, fake_discord, caplog):
    """A trigger makes SQLite fail exactly the UPDATE that records the delivery: the picture stays
    shown (before: the task died, and the picture was replaced by an apology), the failure is
    logged with the job id, and the row says the send began but was never recorded."""
    harness = await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    caplog.set_level(logging.INFO)
    db_path = Path(harness.settings.DATA_DIR) / "voxcanvas.db"
    with contextlib.closing(sqlite3.connect(db_path)) as db, db:
        db.execute(
            "CREATE TRIGGER refuse_delivery BEFORE UPDATE OF delivered_message_id ON jobs "
            "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
        )
    interaction = await imagine(fake, "a lantern in the fog")
    message = await wait_final(fake, interaction)
    job_id = footer_job(message)
    record = await settled_record(harness, job_id)
    await asyncio.sleep(0.5)  # an apology replacing the picture would arrive now

    message = fake.original_response(interaction)
    assert footer_job(message) == job_id
    assert [a["filename"] for a in message["attachments"]] == ["image.png", "palette.png"]
    assert record.state == "done" and record.delivery_started_at is not None and record.delivered_message_id is None
    assert f"job {job_id}: delivered as message {message['id']}, but the store could not record it" in caplog.text
    assert "never retrieved" not in caplog.text


# --- item 3 (d): Discord refuses the result -------------------------------------------------------------
@pytest.mark.parametrize("refusals", [1, 2], ids=["full-refused", "reduced-refused-too"])
async def test_result_discord_refuses_is_retried_reduced_then_apologised_for(start_bot, fake_discord, refusals):
    """Discord answers 400 to the result's upload: it is sent once more without the embed and the
    palette, the picture as JPEG; only if that is refused too does the user get an apology. The
    row records what was shown and why; before, the apology replaced a picture never shown."""
    from bot.runner import REDUCED_IMAGE_NAME, RESULT_REFUSED

    harness = await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    invalid_form = {"message": "Invalid Form Body", "code": 50035}
    fake.fail_next("PATCH", ORIGINAL, status=400, times=refusals, body=invalid_form, when=lambda call: bool(call.files))
    interaction = await imagine(fake, "a red bicycle against a yellow wall")
    message = await wait_final(fake, interaction)
    record = await settled_record(harness, (await latest_job(harness, fake.user.id)).id)

    uploads = fake.find_calls(method="PATCH", path=ORIGINAL, predicate=lambda call: bool(call.files))
    assert [c.status for c in uploads][:refusals] == [400] * refusals
    assert record.state == "done" and int(record.delivered_message_id) == int(message["id"])
    if refusals == 1:
        assert [a["filename"] for a in message["attachments"]] == [REDUCED_IMAGE_NAME]
        assert uploads[-1].status == 200 and uploads[-1].files[0].data[:3] == b"\xff\xd8\xff"  # a JPEG
        assert f"job `{record.id}`" in message["content"] and not message["embeds"]
        assert custom_ids(message)[0] == f"voxcanvas:regen:{record.id}"  # the buttons still work
        assert record.error.startswith("Discord refused the full result (400 (50035)")
        assert "a reduced one was shown" in record.error
    else:
        assert message["content"] == RESULT_REFUSED.format(job_id=record.id) and not message["attachments"]
        assert record.error.startswith("Discord refused the result (400 (50035)")
        assert "an apology was shown" in record.error


# --- item 3: no task dies silently ---------------------------------------------------------------------
async def test_a_dying_task_is_logged_with_its_job_id(start_bot, caplog):
    harness = await start_bot()
    caplog.set_level(logging.INFO)

    async def broken() -> None:
        raise RuntimeError("the renderer fell over")

    task = asyncio.create_task(broken(), name="job-0badc0ffee00")
    harness.bot.runner.track(task)
    with contextlib.suppress(RuntimeError):
        await task
    for _ in range(3):  # done callbacks run on the next loop iterations
        await asyncio.sleep(0)
    died = [r for r in caplog.records if "job-0badc0ffee00" in r.getMessage()]
    assert died and died[0].levelno == logging.ERROR and died[0].exc_info is not None
    assert "the renderer fell over" in died[0].getMessage()
    assert task not in harness.bot.runner.tasks


# --- item 7: disk over time ------------------------------------------------------------------------------
async def test_retention_purge_runs_while_the_bot_runs(start_bot, fake_discord):
    """A job that ages past RETENTION_DAYS while the bot runs is purged without a restart."""
    harness = await start_bot(QA_MAX_ROUNDS=0, RETENTION_DAYS=1, PURGE_INTERVAL_HOURS=0.5 / 3600)
    fake = fake_discord
    interaction = await imagine(fake, "an old photograph of a lighthouse")
    job_id = footer_job(await wait_final(fake, interaction))
    job_dir = harness.bot.store.job_dir(job_id)
    assert (await settled_record(harness, job_id)).state == "done" and job_dir.is_dir()

    two_days_ago = time.time() - 2 * 86_400
    with contextlib.closing(sqlite3.connect(Path(harness.settings.DATA_DIR) / "voxcanvas.db")) as db, db:
        db.execute("UPDATE jobs SET finished_at = ?, created_at = ? WHERE id = ?", (two_days_ago, two_days_ago, job_id))

    deadline = time.monotonic() + 15
    # The purge deletes the row, then the job's folder: wait for both.
    while await harness.bot.store.get(job_id) is not None or job_dir.exists():
        assert time.monotonic() < deadline, "the old job was not purged while the bot ran"
        await asyncio.sleep(0.1)
    assert not harness.bot.purge_task.done()  # still running for the next interval


def _large_values(value: Any, depth: int = 0, seen: set[int] | None = None) -> list[int]:
    """Sizes of bytes-like objects over 1 MB in ``value``, looking into dataclasses, dicts and sequences."""
    seen = set() if seen is None else seen
    if id(value) in seen or depth > 4:
        return []
    seen.add(id(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return [len(value)] if len(value) > MB else []
    if isinstance(value, dict):
        children = list(value.values())
    elif isinstance(value, (list, tuple, set, frozenset)):
        children = list(value)
    elif hasattr(value, "__dataclass_fields__"):
        children = [getattr(value, name) for name in value.__dataclass_fields__]
    elif isinstance(value, types.FunctionType):  # a closure the job keeps (the studio call it will make)
        children = [cell.cell_contents for cell in value.__closure__ or ()]
    else:
        return []
    return [size for child in children for size in _large_values(child, depth + 1, seen)]


def _awaiting(task: asyncio.Task) -> list[types.FrameType]:
    """The frames of the coroutines the task is suspended in, outermost first."""
    frames, coro = [], task.get_coro()
    while isinstance(coro, types.CoroutineType) and coro.cr_frame is not None:
        frames.append(coro.cr_frame)
        coro = coro.cr_await
    return frames


async def test_queued_voice_job_keeps_its_audio_on_disk(start_bot, fake_discord):
    """A voice job waiting for the model thread holds no copy of its audio: the runner's job (its
    idea) points at the stored file, which is read when the job runs."""
    harness = await start_bot(QA_MAX_ROUNDS=0)
    fake = fake_discord
    note = wav_bytes(noise(12.0, sample_rate=48_000), 48_000, subtype="PCM_32")  # 2.3 MB
    assert len(note) > 2 * MB
    gate, holding = hold_the_gpu(harness)
    try:
        await fake.send_voice_message(
            fake.channel.id, fake.user, note, duration_secs=12.0, filename="note.wav", content_type="audio/wav"
        )

        def queued_for_transcription():
            for task in harness.bot.runner.tasks:
                frames = _awaiting(task)
                if any(f.f_code.co_name == "transcribe" for f in frames):
                    return task, frames
            return None

        task, frames = await fake.wait_until(queued_for_transcription, 30, "the voice job to queue", poll=0.05)
        admitted = frames[0].f_locals["admitted"]
        idea = admitted.request.idea
        assert idea.audio is None and idea.audio_path is not None
        assert idea.audio_path.read_bytes() == note  # the store's copy
        assert _large_values(admitted) == []
        for frame in frames:  # nor does any coroutine the job is waiting in
            assert _large_values(dict(frame.f_locals)) == [], frame.f_code.co_name
        admitted.job.cancel()  # transcribing noise on the CPU takes a while; the point is made
        record = await settled_record(harness, admitted.job.id, timeout=30)
    finally:
        gate.set()
        await holding
    assert record.state == "cancelled"
