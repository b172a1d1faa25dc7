"""The HTTP API for real: uvicorn on 127.0.0.1 in the test's event loop, httpx as the client, the
headless runtime on the tiny models (and the trained Whisper tiny.en for the voice note)."""

from __future__ import annotations

import asyncio
import io
import re

import pytest
from PIL import Image

from devkit.voice import APPLE_SENTENCE, silence, tone, wav_bytes
from pipeline.studio import Result
from tests.web.conftest import read_events, wait_state

pytestmark = pytest.mark.timeout(180)

HEX = re.compile(r"^#[0-9a-f]{6}$", re.IGNORECASE)
STAGES = {"decode", "transcribe", "load", "direct", "render", "review", "correct"}


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


def a_png(side: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


async def test_job_lifecycle_events_result_files_regenerate_delete(serve):
    served = await serve()
    async with served.client() as client:
        created = await client.post("/api/jobs", json={"text": "a red apple on a wooden table", "seed": 7})
        assert created.status_code == 202, created.text
        job = created.json()
        job_id = job["job_id"]
        assert job["status_url"] == f"{served.url}/api/jobs/{job_id}"
        assert job["events_url"] == f"{served.url}/api/jobs/{job_id}/events"
        assert created.headers["location"] == job["status_url"]

        events = await read_events(client, job["events_url"])
        names = [name for name, _ in events]
        assert names[0] == "queued" and names[-1] == "done", names
        assert set(names[1:-1]) <= {"queued", "stage"} and "stage" in names
        stages = [data["stage"] for name, data in events if name == "stage"]
        assert {"direct", "render", "review"} <= set(stages) <= STAGES
        assert stages.index("direct") < stages.index("render") < stages.index("review")
        times = [data["t"] for _, data in events]
        assert times == sorted(times)
        renders = [data for name, data in events if name == "stage" and data["stage"] == "render"]
        counted = [r for r in renders if "total" in r]  # the first may come before the step count
        assert counted and all(0 <= r["step"] <= r["total"] for r in counted)
        done = events[-1][1]
        assert done["image_url"].endswith(f"/api/jobs/{job_id}/image.png")
        result = Result.model_validate(done["result"])  # the CLI's result.json shape
        assert result.job_id == job_id and result.kind == "text" and result.idea.startswith("a red apple")

        status = (await client.get(f"/api/jobs/{job_id}")).json()
        assert status["state"] == "done" and status["position"] is None and status["error"] is None
        assert Result.model_validate(status["result"]) == result
        image = await client.get(status["image_url"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert png_size(image.content) == (64, 64)
        palette = await client.get(status["palette_url"])
        assert palette.status_code == 200 and png_size(palette.content)[0] > 0

        # A stream opened after the end replays the whole story; Last-Event-ID resumes after it.
        again = await read_events(client, job["events_url"])
        assert [n for n, _ in again] == names
        resumed = await read_events_after(client, job["events_url"], len(events) - 2)
        assert [n for n, _ in resumed] == ["done"]

        regen = await client.post(f"/api/jobs/{job_id}/regenerate")
        assert regen.status_code == 202, regen.text
        regen_id = regen.json()["job_id"]
        assert regen_id != job_id
        final = await wait_state(client, regen_id, ("done", "failed"))
        assert final["state"] == "done" and final["kind"] == "regenerate" and final["parent_job_id"] == job_id

        varied = await client.post(f"/api/jobs/{job_id}/vary")
        assert varied.status_code == 202, varied.text
        final = await wait_state(client, varied.json()["job_id"], ("done", "failed"))
        assert final["state"] == "done" and final["kind"] == "vary" and final["parent_job_id"] == job_id
        assert final["result"]["rounds"][0]["prompt"] == result.best.prompt  # same prompt and settings …
        assert final["result"]["rounds"][0]["seed"] != result.best.seed  # … a new seed

        deleted = await client.delete(f"/api/jobs/{job_id}")
        assert deleted.status_code == 200 and deleted.json() == {"job_id": job_id, "state": "done", "deleted": True}
        gone = await client.get(f"/api/jobs/{job_id}")
        assert gone.status_code == 404 and gone.json()["status"] == "error"
        assert (await client.get(f"/api/jobs/{job_id}/image.png")).status_code == 404


async def read_events_after(client, url: str, last_id: int) -> list[tuple[str, dict]]:
    client.headers["Last-Event-ID"] = str(last_id)
    try:
        return await read_events(client, url)
    finally:
        del client.headers["Last-Event-ID"]


async def test_keys_are_users(serve):
    served = await serve(API_KEYS="key-one,key-two")
    async with served.client() as anonymous, served.client("key-one") as one, served.client("key-two") as two:
        missing = await anonymous.post("/api/jobs", json={"text": "a cat"})
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "Bearer" in missing.json()["message"]
        wrong = await anonymous.post("/api/jobs", json={"text": "a cat"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        created = await one.post("/api/jobs", json={"text": "a cat on a sofa", "steps": 1})
        assert created.status_code == 202
        job_id = created.json()["job_id"]
        assert (await two.get(f"/api/jobs/{job_id}")).status_code == 404  # someone else's: not even its existence
        assert (await two.delete(f"/api/jobs/{job_id}")).status_code == 404
        assert (await one.get(f"/api/jobs/{job_id}")).status_code == 200
        await wait_state(one, job_id, ("done", "failed"))
    record = await served.runtime.store.get(job_id)
    assert record.user_id < 0 and record.channel_id == 0  # an API user; the key itself is not stored
    with open(served.settings.DATA_DIR / "voxcanvas.db", "rb") as db:
        assert b"key-one" not in db.read()


def test_an_open_api_binds_to_loopback_only(web_settings):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="API_KEYS"):
        web_settings(API_HOST="0.0.0.0")
    assert web_settings(API_HOST="0.0.0.0", API_KEYS="k").API_KEYS[0].get_secret_value() == "k"
    assert web_settings(API_HOST="0.0.0.0", API_PORT="").api_enabled is False


async def test_caps_cancel_and_full_queue(serve):
    served = await serve(API_KEYS="a,b", MAX_JOBS_PER_USER=1, MAX_QUEUE=2)
    slow = {"text": "a lighthouse in a storm", "steps": 100, "seed": 1}
    async with served.client("a") as a, served.client("b") as b:
        first = await a.post("/api/jobs", json=slow)
        assert first.status_code == 202
        busy = await a.post("/api/jobs", json=slow)
        assert busy.status_code == 429 and int(busy.headers["retry-after"]) > 0
        assert "in progress" in busy.json()["message"]
        second = await b.post("/api/jobs", json=slow)
        assert second.status_code == 202
        first_id, second_id = first.json()["job_id"], second.json()["job_id"]

        # Cancel the running one mid-render: its stream ends "failed" with state "cancelled".
        stream = asyncio.create_task(read_events(a, first.json()["events_url"]))
        await wait_stage(a, first_id, "render")
        cancelled = await a.delete(f"/api/jobs/{first_id}")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        assert cancelled.json()["deleted"] is False
        events = await stream
        assert events[-1][0] == "failed" and events[-1][1]["state"] == "cancelled"
        assert (await a.get(f"/api/jobs/{first_id}")).json()["state"] == "cancelled"
        assert (await a.get(f"/api/jobs/{first_id}/image.png")).status_code == 409
        # The slot is free again.
        again = await a.post("/api/jobs", json=slow)
        assert again.status_code == 202
        assert (await a.post("/api/jobs", json=slow)).status_code == 429
        for client, job_id in ((b, second_id), (a, again.json()["job_id"])):
            assert (await client.delete(f"/api/jobs/{job_id}")).json()["state"] == "cancelled"
            assert (await wait_state(client, job_id, ("cancelled",)))["state"] == "cancelled"


async def test_full_queue_is_503(serve):
    served = await serve(API_KEYS="a,b", MAX_JOBS_PER_USER=1, MAX_QUEUE=1)
    async with served.client("a") as a, served.client("b") as b:
        first = await a.post("/api/jobs", json={"text": "a lighthouse", "steps": 100})
        assert first.status_code == 202
        full = await b.post("/api/jobs", json={"text": "a lighthouse", "steps": 1})
        assert full.status_code == 503 and int(full.headers["retry-after"]) > 0
        assert "queue is full" in full.json()["message"]
        await a.delete(f"/api/jobs/{first.json()['job_id']}")


async def wait_stage(client, job_id: str, stage: str, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        body = (await client.get(f"/api/jobs/{job_id}")).json()
        if (body.get("stage") or {}).get("stage") == stage:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {stage}")


async def test_generate_voice_note_has_the_source_design_shape(serve, make_voice_note):
    served = await serve()
    note = make_voice_note(APPLE_SENTENCE)
    async with served.client() as client:
        answer = await client.post("/api/generate", files={"audio_file": ("note.ogg", note, "audio/ogg")})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == {
            "status",
            "transcription",
            "expanded_scene",
            "final_prompt",
            "color_palette",
            "qa_score",
            "qa_feedback",
            "job_id",
            "image_url",
            "palette_url",
        }
        assert body["status"] == "success"
        assert "apple" in body["transcription"].lower()
        assert "apple" in body["final_prompt"].lower() and body["expanded_scene"]
        assert body["color_palette"] and all(HEX.match(c) for c in body["color_palette"])
        assert isinstance(body["qa_score"], int) and 0 <= body["qa_score"] <= 100
        assert isinstance(body["qa_feedback"], str)
        image = await client.get(body["image_url"])
        assert image.status_code == 200 and png_size(image.content) == (64, 64)
        assert (await client.get(body["palette_url"])).status_code == 200


async def test_generator_endpoints(serve):
    served = await serve()
    async with served.client() as client:
        made = await client.post("/generate/image/prompt", json={"prompt": "a red apple", "seed": 3, "steps": 1})
        assert made.status_code == 200, made.text
        body = made.json()
        assert set(body) == {"generation_id", "file_path"}
        assert body["file_path"] == f"{served.url}/api/jobs/{body['generation_id']}/image.png"
        assert png_size((await client.get(body["file_path"])).content) == (64, 64)

        reworked = await client.post(
            "/generate/image/image",
            files={"image": ("start.png", a_png(96), "image/png")},
            data={"prompt": "a red square at night", "strength": "0.6"},
        )
        assert reworked.status_code == 200, reworked.text
        assert (await client.get(reworked.json()["file_path"])).status_code == 200
        job = (await client.get(f"/api/jobs/{reworked.json()['generation_id']}")).json()
        assert job["result"]["rounds"][0]["mode"] == "img2img"

        tags = await client.post(
            "/generate/tags",
            json={"image_prompt": "A red apple on a wooden table", "sound_description": "soft rain and an Apple"},
        )
        assert tags.status_code == 200
        found = tags.json()["tags"]
        assert "apple" in found and "rain" in found and "table" in found
        assert all(tag == tag.lower() for tag in found) and len(found) == len(set(found))
        assert (await client.post("/generate/tags", json={})).status_code == 422


@pytest.mark.parametrize(
    ("files", "status", "words"),
    [
        ({"audio_file": ("empty.ogg", b"", "audio/ogg")}, 400, "empty"),
        ({"audio_file": ("notes.txt", b"these are not sounds " * 50, "text/plain")}, 415, "couldn't read"),
        ({"audio_file": ("hush.wav", wav_bytes(silence(2.0, sample_rate=8_000), 8_000), "audio/wav")}, 422, "silent"),
        ({"audio_file": ("long.wav", wav_bytes(tone(4.0, sample_rate=8_000), 8_000), "audio/wav")}, 422, "up to 0:03"),
        ({"audio_file": ("big.wav", wav_bytes(tone(2.0), 48_000), "audio/wav")}, 413, "larger than"),
        ({"other": ("x.ogg", b"x", "audio/ogg")}, 422, "audio_file"),
    ],
    ids=["empty", "not-audio", "silent", "too-long", "too-large", "missing"],
)
async def test_bad_voice_notes_get_the_right_4xx(serve, files, status, words):
    served = await serve(MAX_AUDIO_SECONDS=3, MAX_AUDIO_BYTES=100_000)
    async with served.client() as client:
        answer = await client.post("/api/generate", files=files)
        assert answer.status_code == status, answer.text
        body = answer.json()
        assert body["status"] == "error" and words in body["message"].lower()


async def test_bad_requests_get_the_right_4xx(serve):
    served = await serve()
    async with served.client() as client:
        not_image = await client.post("/generate/image/image", files={"image": ("x.png", b"GIF89a" + b"0" * 64)})
        assert not_image.status_code == 415 and "isn't an image" in not_image.json()["message"]
        assert (await client.post("/api/jobs", json={"text": "a cat", "steps": 1000})).status_code == 422
        unknown_style = await client.post("/api/jobs", json={"text": "a cat", "style": "crayon-noir"})
        assert unknown_style.status_code == 422 and "Unknown style" in unknown_style.json()["message"]
        assert (await client.post("/api/jobs", json={"seed": 1})).status_code == 422
        assert (await client.post("/api/jobs", json={"text": "a cat", "bogus": 1})).status_code == 422
        assert (await client.post("/api/jobs", json=["a cat"])).status_code == 422
        broken = await client.post("/api/jobs", content=b"{not json", headers={"content-type": "application/json"})
        assert broken.status_code == 400
        assert (
            await client.post("/api/jobs", content=b"a cat", headers={"content-type": "text/plain"})
        ).status_code == 415
        assert (await client.post("/generate/image/prompt", json={"prompt": ""})).status_code == 422
        assert (await client.get("/api/jobs/no-such-job")).status_code == 404
        assert (await client.get("/api/jobs/..%2F..%2Fetc")).status_code == 404
        huge = await client.post("/generate/tags", json={"image_prompt": "x" * 200_000})
        assert huge.status_code == 413 and huge.json()["status"] == "error"
        # A multipart job: the same options as fields, the voice note as a file.
        form = await client.post("/api/jobs", data={"text": "a cat", "steps": "1", "style": ""})
        assert form.status_code == 415  # urlencoded: not multipart, not JSON
        multipart = await client.post(
            "/api/jobs", data={"text": "a cat", "steps": "1"}, files={"image": ("s.png", a_png(), "image/png")}
        )
        assert multipart.status_code == 202, multipart.text
        bad_field = await client.post("/api/jobs", data={"text": "a cat", "steps": "many"}, files={"x": ("a", b"")})
        assert bad_field.status_code == 422 and bad_field.json()["message"].startswith("steps")
        await wait_state(client, multipart.json()["job_id"], ("done", "failed"))


async def test_an_api_job_left_by_a_previous_process_is_resumed(serve, web_settings):
    from bot.api_jobs import api_user_id
    from bot.store import JobStore

    data_dir = web_settings().DATA_DIR
    async with await JobStore.open(data_dir) as store:  # a process died with this job queued
        record = await store.create_job(
            user_id=api_user_id(None), channel_id=0, kind="text", idea={"text": "a red apple", "steps": 1}
        )
    served = await serve()
    async with served.client() as client:
        events = await read_events(client, f"/api/jobs/{record.id}/events")
        assert events[-1][0] == "done"
        status = await wait_state(client, record.id, ("done",))
        assert status["result"]["idea"] == "a red apple"
    resumed = await served.runtime.store.get(record.id)
    assert resumed.attempts == 1 and resumed.delivered_message_id == 0


async def test_a_taken_port_is_a_clear_start_up_error(serve):
    import socket

    from web.server import WebServer, WebServerError

    served = await serve()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        second = WebServer(served.settings.model_copy(update={"API_PORT": port}))
        with pytest.raises(WebServerError, match=f"127.0.0.1:{port}.*API_PORT"):
            await second.start(served.runtime.runner)
    async with served.client() as client:  # the first server is unaffected
        assert (await client.get("/api/config")).status_code == 200
