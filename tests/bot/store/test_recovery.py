"""Crashes and restarts: close and reopen, SIGKILL mid-work, a fresh process, a second process."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bot.store import DB_NAME, JobStore
from tests.bot.store.helpers import PNG, finish, new_job, run_python


# ------------------------------------------------------------------------------------------------
# Crashes and restarts
# ------------------------------------------------------------------------------------------------
async def test_unfinished_and_undelivered_after_restart(data_dir: Path) -> None:
    store = await JobStore.open(data_dir)
    queued = await new_job(store, user_id=1)
    running = await new_job(store, user_id=2)
    await store.mark_running(running.id)
    done = await new_job(store, user_id=3)
    await finish(store, done.id)
    failed = await new_job(store, user_id=4)
    await store.fail(failed.id, "That took far longer than it should.")
    delivered = await new_job(store, user_id=5)
    await finish(store, delivered.id)
    await store.record_delivery(delivered.id, message_id=9, channel_id=10)
    cancelled = await new_job(store, user_id=6)
    await store.fail(cancelled.id, "cancelled", state="cancelled")
    await store.close()  # "crash": nothing finished; reopen the same DATA_DIR

    store = await JobStore.open(data_dir)
    try:
        assert [j.id for j in await store.unfinished()] == [queued.id, running.id]  # oldest first
        assert [j.id for j in await store.undelivered()] == [done.id, failed.id]
        assert (await store.get(running.id)).attempts == 1
        assert await store.read_image(done.id) == PNG
        assert await store.count_active() == 2 and await store.count_active(2) == 1
        assert await store.count_active(3) == 0
    finally:
        await store.close()


async def test_sigkill_mid_work_loses_nothing(data_dir: Path) -> None:
    """A writer process is SIGKILLed: committed jobs survive; a job whose picture files were saved
    but whose row was not yet updated is finished from its files at the next open."""
    proc = run_python(
        f"""
        import asyncio, os, signal
        from bot.store import JobStore
        from bot.store.files import write_result_files
        async def main():
            store = await JobStore.open({str(data_dir)!r})
            q = await store.create_job(user_id=1, channel_id=2, kind="voice", idea={{}},
                                       audio=b"OggS-voice", job_id="queued1")
            r = await store.create_job(user_id=1, channel_id=2, kind="text", idea={{}},
                                       job_id="running1")
            await store.mark_running(r.id)
            d = await store.create_job(user_id=1, channel_id=2, kind="text", idea={{}},
                                       job_id="done1")
            await store.mark_running(d.id)
            await store.complete(d.id, result_json='{{"a": 1}}', score=90, title="t",
                                 image_png=b"img", palette_png=b"pal")
            h = await store.create_job(user_id=1, channel_id=2, kind="text", idea={{}},
                                       job_id="halfway1")
            await store.mark_running(h.id)
            # complete() step 1 only (files), then the process dies before the row is written
            marker = b'{{"result_json": "{{}}", "score": 77, "title": "h"}}'
            await asyncio.to_thread(write_result_files, store.job_dir(h.id), b"img2",
                                    b"pal2", marker, durable=True)
            os.kill(os.getpid(), signal.SIGKILL)
        asyncio.run(main())
        """,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr
    store = await JobStore.open(data_dir)
    try:
        assert [j.id for j in await store.unfinished()] == ["queued1", "running1"]
        assert await store.read_audio("queued1") == b"OggS-voice"
        recovered = await store.get("halfway1")
        assert (recovered.state, recovered.score, recovered.title) == ("done", 77, "h")
        assert await store.read_image("halfway1") == b"img2"
        assert [j.id for j in await store.undelivered()] == ["done1", "halfway1"]
        assert await store.read_image("done1") == b"img"
    finally:
        await store.close()


async def test_fresh_process_sees_everything(data_dir: Path) -> None:
    store = await JobStore.open(data_dir)
    jobs = [await new_job(store, user_id=i, interaction_token=f"t{i}") for i in range(5)]
    await finish(store, jobs[0].id, score=93)
    await store.fail(jobs[1].id, "nope")
    await store.close()
    assert not (data_dir / f"{DB_NAME}-wal").exists()  # checkpointed into the main file on close

    proc = run_python(
        f"""
        import asyncio, hashlib, json
        from bot.store import JobStore
        async def main():
            store = await JobStore.open({str(data_dir)!r})
            jobs = [j for u in range(5) for j in await store.history(u)]
            image = await store.read_image({jobs[0].id!r})
            print(json.dumps({{"states": [j.state for j in jobs], "score": jobs[0].score,
                              "tokens": [j.interaction_token for j in jobs],
                              "image": hashlib.sha256(image).hexdigest()}}))
            await store.close()
        asyncio.run(main())
        """
    )
    seen = json.loads(proc.stdout)
    assert seen["states"] == ["done", "failed", "queued", "queued", "queued"]
    assert seen["score"] == 93 and seen["image"] == hashlib.sha256(PNG).hexdigest()
    assert seen["tokens"] == ["t0", "t1", "t2", "t3", "t4"]  # kept until delivered (or 15 min)


async def test_second_process_on_same_data_dir_is_refused(store: JobStore, data_dir: Path) -> None:
    proc = run_python(
        f"""
        import asyncio
        from bot.store import JobStore, StoreError
        try:
            asyncio.run(JobStore.open({str(data_dir)!r}))
        except StoreError as exc:
            print(exc)
        """
    )
    assert "Another VoxCanvas process is already using DATA_DIR" in proc.stdout
    assert str(data_dir) in proc.stdout
    await new_job(store)  # the first one is unaffected
