"""ControlNet through the HTTP API (issue #18): ``control``, ``control_strength`` and a multipart
``control_image`` (bounded exactly like the start ``image``), the control image served at
``control_url``, a Regenerate that keeps the control; refusals are 4xx before a job exists. Real
uvicorn + httpx against the headless runtime on the tiny models and a tiny random ControlNet."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw

from devkit import builders
from pipeline import limits
from tests.web.conftest import wait_state

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def tiny_controlnet(tiny_sd_dir, tmp_path_factory):
    return builders.build_tiny_controlnet(tiny_sd_dir, tmp_path_factory.mktemp("controlnet") / "net")


def edges_png() -> bytes:
    image = Image.new("RGB", (64, 64), (10, 10, 10))
    ImageDraw.Draw(image).rectangle((14, 10, 50, 54), outline=(250, 250, 250), width=3)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def test_control_job_through_the_api(serve, tiny_controlnet):
    served = await serve(QA_MAX_ROUNDS=0, CONTROLNET_MODELS=f"canny={tiny_controlnet}, palette={tiny_controlnet}")
    source = edges_png()
    store = served.runtime.store
    async with served.client() as client:
        created = await client.post(
            "/api/jobs",
            data={"text": "a tall door", "control": "canny", "control_strength": "0.8", "seed": "4"},
            files={"control_image": ("edges.png", source, "image/png")},
        )
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        done = await wait_state(client, job_id, ("done", "failed"))
        assert done["state"] == "done", done
        best = done["result"]["rounds"][-1]
        assert (best["control"], best["control_strength"]) == ("canny", 0.8)
        assert done["control_url"].endswith(f"/api/jobs/{job_id}/control.png")
        control = await client.get(done["control_url"])
        assert control.status_code == 200 and control.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(control.content)).size == (64, 64)
        assert await store.read_control_input(job_id) == source  # kept as the job's input

        regen = await client.post(f"/api/jobs/{job_id}/regenerate")
        assert regen.status_code == 202, regen.text
        regen_id = regen.json()["job_id"]
        final = await wait_state(client, regen_id, ("done", "failed"))
        assert final["state"] == "done" and final["control_url"], final
        assert (final["result"]["rounds"][0]["control"], final["result"]["rounds"][0]["control_strength"]) == (
            "canny",
            0.8,
        )
        assert await store.read_control_input(regen_id) == source

        # palette needs no image: JSON is enough
        created = await client.post("/api/jobs", json={"text": "a red and blue kite", "control": "palette"})
        assert created.status_code == 202, created.text
        done = await wait_state(client, created.json()["job_id"], ("done", "failed"))
        assert done["state"] == "done" and done["result"]["rounds"][0]["control"] == "palette"

        plain = await client.post("/api/jobs", json={"text": "a plain cup", "steps": 1})
        done = await wait_state(client, plain.json()["job_id"], ("done", "failed"))
        assert "control_url" not in done or done["control_url"] is None
        assert (await client.get(f"/api/jobs/{done['job_id']}/control.png")).status_code == 404


async def test_control_refusals_are_4xx_before_a_job(serve, tiny_controlnet):
    served = await serve(QA_MAX_ROUNDS=0, CONTROLNET_MODELS=f"canny={tiny_controlnet}")
    source = edges_png()
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (limits.MAX_IMAGE_BYTES + 1)
    cases = [
        ({"json": {"text": "x", "control": "canny"}}, 422, "needs an image"),
        ({"json": {"text": "x", "control": "depth"}}, 422, "no depth control here (canny)"),
        ({"json": {"text": "x", "control": "sketch"}}, 422, "control"),
        ({"json": {"text": "x", "control": "canny", "control_strength": 2.5}}, 422, "control_strength"),
        ({"data": {"text": "x"}, "files": {"control_image": ("e.png", source, "image/png")}}, 422, "goes with"),
        ({"data": {"text": "x", "control": "canny"}, "files": {"control_image": ("e.png", b"GIF89a" * 20)}}, 415, ""),
        ({"data": {"text": "x", "control": "canny"}, "files": {"control_image": ("e.png", big)}}, 413, ""),
    ]
    async with served.client() as client:
        for request, status, words in cases:
            answer = await client.post("/api/jobs", **request)
            assert answer.status_code == status, (request.get("json") or request.get("data"), answer.text)
            assert words in answer.json()["message"]
    assert await served.runtime.store.unfinished() == []
