"""Music through the HTTP API for real: uvicorn on 127.0.0.1, httpx as the client, the headless
runtime on the tiny models and the tiny MusicGen (32 kHz EnCodec; the web fixtures' MUSIC_MODEL,
MUSIC_SECONDS=5). The WAV and OGG files served are
decoded with libsndfile (soundfile)."""

from __future__ import annotations

import io

import pytest
import soundfile as sf

from pipeline.studio import MusicResult, Result
from pipeline.tags import tags_for
from tests.web.conftest import read_events, wait_state

pytestmark = pytest.mark.timeout(240)


def decoded(data: bytes) -> tuple[str, str, int, int, int]:
    """(format, subtype, sample rate, channels, frames) as libsndfile reads the file."""
    info = sf.info(io.BytesIO(data))
    return info.format, info.subtype, info.samplerate, info.channels, info.frames


async def test_generate_sound_returns_the_absolute_url_of_a_wav(serve):
    served = await serve()
    async with served.client() as client:
        made = await client.post("/generate/sound", json={"description": "a calm seaside ambience", "seconds": 6})
        assert made.status_code == 200, made.text
        body = made.json()
        assert set(body) == {"generation_id", "file_path"}
        job_id = body["generation_id"]
        assert body["file_path"] == f"{served.url}/api/jobs/{job_id}/music.wav"

        wav = await client.get(body["file_path"])
        assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
        assert decoded(wav.content) == ("WAV", "PCM_16", 32_000, 1, 6 * 32_000)  # exactly the seconds asked for
        samples, _ = sf.read(io.BytesIO(wav.content), dtype="float32")
        assert samples.shape == (6 * 32_000,) and float(abs(samples).max()) > 0  # not silence

        status = (await client.get(f"/api/jobs/{job_id}")).json()
        assert status["state"] == "done" and status["kind"] == "compose"
        assert status["image_url"] is None and status["palette_url"] is None
        assert status["wav_url"] == body["file_path"]
        assert status["music_url"] == f"{served.url}/api/jobs/{job_id}/music.ogg"
        result = MusicResult.model_validate(status["result"])
        assert result.job_id == job_id and result.music_prompt == "a calm seaside ambience"
        assert result.sample_rate == 32_000 and result.duration_s == pytest.approx(6.0)
        assert result.tags and all(t == t.lower() for t in result.tags) and len(result.tags) == len(set(result.tags))
        assert result.tags == tags_for(sound_description=result.music_prompt)  # no picture: the music's alone

        ogg = await client.get(status["music_url"])
        assert ogg.status_code == 200 and ogg.headers["content-type"] == "audio/ogg"
        fmt, subtype, rate, channels, frames = decoded(ogg.content)
        assert (fmt, subtype, rate, channels) == ("OGG", "OPUS", 48_000, 1)
        assert frames / rate == pytest.approx(6.0, abs=0.03)

        # A piece is no picture: no image, nothing to rework, no soundtrack of a soundtrack.
        image = await client.get(f"/api/jobs/{job_id}/image.png")
        assert image.status_code == 404 and "music" in image.json()["message"]
        for follow_up in ("regenerate", "vary", "soundtrack"):
            refused = await client.post(f"/api/jobs/{job_id}/{follow_up}")
            assert refused.status_code == 409, (follow_up, refused.text)

        # Bounds are the engine's: too short, too long, empty → 422 before any job exists.
        for bad in ({"description": "waves", "seconds": 2}, {"description": "waves", "seconds": 31}, {}):
            assert (await client.post("/generate/sound", json=bad)).status_code == 422


async def test_music_job_through_events_to_done(serve):
    served = await serve()
    async with served.client() as client:
        created = await client.post("/api/jobs", json={"kind": "music", "text": "lofi beats", "seconds": 5, "seed": 4})
        assert created.status_code == 202, created.text
        job = created.json()
        events = await read_events(client, job["events_url"])
        names = [name for name, _ in events]
        assert names[0] == "queued" and names[-1] == "done", names
        steps = [data for name, data in events if name == "stage" and data["stage"] == "music"]
        counted = [s for s in steps if "total" in s]  # the first event starts the stage; then step n of N
        assert counted and all(0 <= s["step"] <= s["total"] for s in counted)
        assert counted[-1]["step"] == counted[-1]["total"]
        done = events[-1][1]
        assert done["media"] == "music" and "image_url" not in done
        assert done["wav_url"] == f"{served.url}/api/jobs/{job['job_id']}/music.wav"
        result = MusicResult.model_validate(done["result"])
        assert result.seed == 4 and result.seconds == 5 and result.kind == "compose"
        wav = await client.get(done["wav_url"])
        assert decoded(wav.content)[2:] == (32_000, 1, 5 * 32_000)

        # The same seed gives the same piece.
        again = await client.post("/api/jobs", json={"kind": "music", "text": "lofi beats", "seconds": 5, "seed": 4})
        final = await wait_state(client, again.json()["job_id"], ("done", "failed"))
        assert final["state"] == "done", final
        assert (await client.get(final["wav_url"])).content == wav.content

        # A replayed stream (a finished job's log rebuilt from the store is the same ending).
        replay = await read_events(client, job["events_url"])
        assert replay[-1][0] == "done" and replay[-1][1]["media"] == "music"

        for bad in (
            {"kind": "music", "seconds": 5},  # no description
            {"kind": "music", "text": "waves", "seconds": 4},  # too short
            {"kind": "sculpture", "text": "waves"},
        ):
            assert (await client.post("/api/jobs", json=bad)).status_code == 422, bad


async def test_soundtrack_for_a_picture_and_its_tags(serve):
    served = await serve()
    async with served.client() as client:
        picture = await client.post("/api/jobs", json={"text": "a red apple on a wooden table", "seed": 2})
        picture_id = picture.json()["job_id"]
        shown = await wait_state(client, picture_id, ("done", "failed"))
        assert shown["state"] == "done", shown
        prompt = Result.model_validate(shown["result"]).best.prompt

        created = await client.post(f"/api/jobs/{picture_id}/soundtrack", json={"seconds": 5})
        assert created.status_code == 202, created.text
        events = await read_events(client, created.json()["events_url"])
        assert events[-1][0] == "done", events[-1]
        done = events[-1][1]
        result = MusicResult.model_validate(done["result"])
        assert result.kind == "soundtrack" and result.parent_job_id == picture_id
        status = (await client.get(f"/api/jobs/{result.job_id}")).json()
        assert status["kind"] == "soundtrack" and status["parent_job_id"] == picture_id
        wav = await client.get(status["wav_url"])
        assert decoded(wav.content)[2:] == (32_000, 1, 5 * 32_000)

        # Its tags cover both the picture's prompt and the music prompt: lowercase, de-duplicated.
        tags = result.tags
        assert tags == [t.lower() for t in tags] and len(tags) == len(set(tags))
        from_picture, from_music = (
            set(tags_for(image_prompt=prompt)),
            set(tags_for(sound_description=result.music_prompt)),
        )
        assert "apple" in tags and tags and set(tags) <= from_picture | from_music
        assert set(tags) & (from_music - from_picture), (tags, result.music_prompt)

        # Without a body the setting's length is used; the picture still serves its image.
        default = await client.post(f"/api/jobs/{picture_id}/soundtrack")
        assert default.status_code == 202
        final = await wait_state(client, default.json()["job_id"], ("done", "failed"))
        assert final["state"] == "done" and final["result"]["seconds"] == 5
        assert (await client.get(f"/api/jobs/{picture_id}/music.wav")).status_code == 404
        assert (await client.get(f"/api/jobs/{picture_id}/image.png")).status_code == 200

        # Someone else's picture: 404, as for every job route.
        other = await client.post("/api/jobs/0123456789abcdef0123456789abcdef/soundtrack")
        assert other.status_code == 404


async def test_a_voice_note_that_asks_for_music_comes_back_as_music(serve, make_voice_note):
    served = await serve()
    note = make_voice_note("Please play some calm piano music by the sea")
    async with served.client() as client:
        created = await client.post(
            "/api/jobs", files={"audio": ("note.ogg", note, "audio/ogg")}, data={"seconds": "5"}
        )
        assert created.status_code == 202, created.text
        events = await read_events(client, created.json()["events_url"])
        assert events[-1][0] == "done", events[-1]
        done = events[-1][1]
        assert done["media"] == "music", done["result"].get("transcript")
        result = MusicResult.model_validate(done["result"])
        assert result.kind == "voice" and "piano" in (result.transcript or "").lower()
        assert "piano" in result.music_prompt.lower() and result.seconds == 5
        wav = await client.get(done["wav_url"])
        assert decoded(wav.content)[2:] == (32_000, 1, 5 * 32_000)
        status = (await client.get(f"/api/jobs/{result.job_id}")).json()
        assert status["kind"] == "voice" and status["wav_url"] == done["wav_url"] and status["image_url"] is None

        # The source design's /api/generate answers with a picture's fields: for music it says where the piece is.
        answer = await client.post("/api/generate", files={"audio_file": ("note.ogg", note, "audio/ogg")})
        assert answer.status_code == 409 and "music.wav" in answer.json()["message"]
