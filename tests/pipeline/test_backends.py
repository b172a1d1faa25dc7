"""Each remote render backend against a wire-level fake of its real protocol (devkit.backends):
text-to-image and image-to-image, progress, seeds, 429 with Retry-After, 5xx, timeouts,
garbage, oversized answers and a cancel that lands mid-render."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from devkit.backends import FakeA1111, FakeBackend, FakeComfyUI, FakeReplicate, FakeStability, picture, png
from pipeline.backends.a1111 import A1111Backend
from pipeline.backends.base import (
    BackendGarbage,
    BackendRefused,
    BackendUnavailable,
    HttpBackend,
    RemoteJob,
    RemoteResult,
)
from pipeline.backends.comfyui import ComfyUIBackend, fill, load_workflow
from pipeline.backends.replicate import ReplicateBackend
from pipeline.backends.stability import StabilityBackend
from pipeline.errors import JobCancelled

KINDS = ["a1111", "comfyui", "stability", "replicate"]
STEPS = 6


def fake_for(kind: str, step_s: float = 0.01) -> FakeBackend:
    return {
        "a1111": FakeA1111,
        "comfyui": FakeComfyUI,
        "stability": FakeStability,
        "replicate": FakeReplicate,
    }[kind](step_s=step_s)


def backend_for(kind: str, url: str, **kwargs: Any) -> HttpBackend:
    kwargs.setdefault("timeout_s", 5.0)
    kwargs.setdefault("retries", 2)
    kwargs.setdefault("backoff_s", 0.01)
    if kind == "a1111":
        return A1111Backend(url, model="sd_xl_base_1.0.safetensors", **kwargs)
    if kind == "comfyui":
        return ComfyUIBackend(url, checkpoint="sd_xl_base_1.0.safetensors", **kwargs)
    if kind == "stability":
        return StabilityBackend(url, api_key="sk-test", **kwargs)
    return ReplicateBackend(url, api_token="r8_test", model="stability-ai/sdxl", **kwargs)


def job(seed: int = 42, **kw: Any) -> RemoteJob:
    values: dict[str, Any] = dict(
        prompt="a red apple on a wooden table",
        negative_prompt="blurry",
        seed=seed,
        steps=STEPS,
        guidance=6.0,
        width=64,
        height=48,
        aspect="4:3",
        model="",
    )
    values.update(kw)
    return RemoteJob(**values)


class Progress:
    def __init__(self) -> None:
        self.events: list[tuple[int, int]] = []

    def __call__(self, step: int, total: int) -> None:
        self.events.append((step, total))


async def render(
    backend: HttpBackend, remote: RemoteJob, stop: Callable[[], bool] = lambda: False
) -> tuple[RemoteResult, Progress]:
    progress = Progress()
    result = await backend.render(remote, progress=progress, should_stop=stop)
    return result, progress


@pytest.mark.parametrize("kind", KINDS)
async def test_text_to_image(kind: str) -> None:
    async with fake_for(kind) as fake:
        backend = backend_for(kind, fake.url)
        try:
            result, progress = await render(backend, job(seed=7))
        finally:
            await backend.close()
    assert isinstance(result.image, Image.Image) and result.image.mode == "RGB"
    assert result.seed == 7
    # The fake's picture depends on the seed alone: the backend sent ours and decoded the answer.
    expected = picture(7, *result.image.size)
    assert result.image.tobytes() == expected.tobytes()
    if kind == "stability":  # the service takes only an aspect ratio: 4:3 → its 5:4
        assert fake.forms[0]["aspect_ratio"] == "5:4" and fake.forms[0]["negative_prompt"] == "blurry"
    else:
        assert result.image.size == (64, 48)
    assert progress.events and progress.events[-1][0] == progress.events[-1][1]


@pytest.mark.parametrize("kind", ["a1111", "comfyui", "replicate"])
async def test_progress_while_rendering(kind: str) -> None:
    """Steps as the server reports them (A1111: /progress polls; ComfyUI: websocket; Replicate: logs)."""
    async with fake_for(kind, step_s=0.1) as fake:
        backend = backend_for(kind, fake.url)
        try:
            _, progress = await render(backend, job(steps=12))
        finally:
            await backend.close()
    middle = [step for step, total in progress.events if 0 < step < total]
    assert middle and middle == sorted(middle)
    assert {total for _, total in progress.events} == {12}


@pytest.mark.parametrize("kind", KINDS)
async def test_image_to_image(kind: str) -> None:
    init = png(picture(1, 40, 32))
    async with fake_for(kind) as fake:
        backend = backend_for(kind, fake.url)
        try:
            result, _ = await render(backend, job(seed=3, init_image=init, strength=0.5, width=40, height=32))
        finally:
            await backend.close()
    assert result.image.size == (40, 32)
    bodies = [s.body for s in fake.seen if s.body]
    text = json.dumps(bodies, default=lambda b: "<bytes>")
    if kind == "a1111":
        assert fake.paths("POST")[0] == "/sdapi/v1/img2img"
        assert base64.b64decode(bodies[0]["init_images"][0]) == init and bodies[0]["denoising_strength"] == 0.5
    elif kind == "comfyui":
        assert "/upload/image" in fake.paths("POST")
        assert "LoadImage" in text and '"denoise": 0.5' in text
    elif kind == "stability":
        assert bodies[0]["mode"] == "image-to-image" and bodies[0]["image"] == init and bodies[0]["strength"] == "0.5"
    else:
        assert bodies[0]["input"]["prompt_strength"] == 0.5 and bodies[0]["input"]["image"].startswith("data:")


@pytest.mark.parametrize("kind", KINDS)
async def test_rate_limit_is_retried_after_retry_after(kind: str) -> None:
    path = {"a1111": "/txt2img", "comfyui": "/prompt", "stability": "/generate", "replicate": "/predictions"}[kind]
    async with fake_for(kind) as fake:
        fake.fail(path, 429, times=2, headers={"Retry-After": "0.2"}, body=b'{"detail": "slow down"}')
        backend = backend_for(kind, fake.url)
        began = time.monotonic()
        try:
            result, _ = await render(backend, job())
        finally:
            await backend.close()
    assert result.seed == 42
    assert time.monotonic() - began >= 0.4  # two waits of Retry-After: 0.2
    assert sum(1 for p in fake.paths("POST") if path in p) == 3


@pytest.mark.parametrize("kind", KINDS)
async def test_server_errors_exhaust_the_retries_and_name_the_backend(kind: str) -> None:
    async with fake_for(kind) as fake:
        fake.fail("/", 503, times=100)
        backend = backend_for(kind, fake.url, retries=2)
        try:
            with pytest.raises(BackendUnavailable) as caught:
                await render(backend, job())
        finally:
            await backend.close()
    label = {"a1111": "A1111/Forge", "comfyui": "ComfyUI", "stability": "Stability AI", "replicate": "Replicate"}[kind]
    assert label in str(caught.value) and "HTTP 503" in str(caught.value)
    assert fake.url not in str(caught.value)
    assert fake.renders_started == 0
    assert len([s for s in fake.seen if s.method == "POST"]) == 3  # 1 + 2 retries


@pytest.mark.parametrize("kind", KINDS)
async def test_a_server_that_does_not_answer_in_time(kind: str) -> None:
    async with fake_for(kind) as fake:
        fake.fail("/", 200, times=100, delay_s=2.0)
        backend = backend_for(kind, fake.url, retries=1, timeout_s=0.3)
        began = time.monotonic()
        try:
            with pytest.raises(BackendUnavailable, match="timed out"):
                await render(backend, job())
            elapsed = time.monotonic() - began
        finally:
            await backend.close()
    assert elapsed < 1.9  # two tries of 0.3 s, not the server's 2 s


@pytest.mark.parametrize("kind", KINDS)
async def test_garbage_is_refused_without_retrying(kind: str) -> None:
    path = {"a1111": "/txt2img", "comfyui": "/prompt", "stability": "/generate", "replicate": "/predictions"}[kind]
    async with fake_for(kind) as fake:
        fake.fail(path, 200, body=b"<html>proxy error</html>", content_type="text/html")
        backend = backend_for(kind, fake.url)
        try:
            with pytest.raises(BackendGarbage, match="not JSON"):
                await render(backend, job())
        finally:
            await backend.close()
    assert sum(1 for p in fake.paths("POST") if path in p) == 1


@pytest.mark.parametrize("kind", ["a1111", "stability"])
async def test_a_picture_that_is_not_one(kind: str) -> None:
    path = {"a1111": "/txt2img", "stability": "/generate"}[kind]
    body = {
        "a1111": {"images": ["bm90IGFuIGltYWdl"], "info": "{}"},
        "stability": {"image": "bm90IGFuIGltYWdl", "seed": 1},
    }
    async with fake_for(kind) as fake:
        fake.fail(path, 200, body=json.dumps(body[kind]).encode())
        backend = backend_for(kind, fake.url)
        try:
            with pytest.raises(BackendGarbage, match="picture"):
                await render(backend, job())
        finally:
            await backend.close()


async def test_an_oversized_answer_is_refused_while_it_is_read() -> None:
    async with FakeA1111() as fake:
        fake.fail("/txt2img", 200, body=b"x" * (20 * 1024 * 1024))
        backend = backend_for("a1111", fake.url)
        try:
            with pytest.raises(BackendGarbage, match="too large"):
                await render(backend, job())
        finally:
            await backend.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_refusal_carries_the_servers_reason(kind: str) -> None:
    async with fake_for(kind) as fake:
        if kind == "stability":
            backend: HttpBackend = StabilityBackend(fake.url, api_key="sk-wrong", timeout_s=5, retries=2)
            reason = "authorization: invalid or missing header value"
        elif kind == "replicate":
            backend = ReplicateBackend(fake.url, api_token="r8_wrong", timeout_s=5, retries=2)
            reason = "You did not pass a valid authentication token"
        elif kind == "comfyui":
            fake.fail(
                "/prompt",
                400,
                body=json.dumps(
                    {"error": {"type": "x", "message": "Prompt has no outputs"}, "node_errors": {}}
                ).encode(),
            )
            backend = backend_for(kind, fake.url)
            reason = "Prompt has no outputs"
        else:
            fake.fail("/txt2img", 422, body=b'{"detail": "Sampler not found"}')
            backend = backend_for(kind, fake.url)
            reason = "Sampler not found"
        try:
            with pytest.raises(BackendRefused) as caught:
                await render(backend, job())
        finally:
            await backend.close()
    assert reason in str(caught.value)
    assert len(fake.paths("POST")) == 1  # a refusal is not retried
    assert "sk-wrong" not in str(caught.value) and "r8_wrong" not in str(caught.value)


@pytest.mark.parametrize("kind", ["a1111", "comfyui", "replicate"])
async def test_cancel_mid_render_stops_the_server(kind: str) -> None:
    async with fake_for(kind, step_s=0.1) as fake:
        backend = backend_for(kind, fake.url)
        progress = Progress()
        stop = False
        cancelled_at = 0.0

        def on_progress(step: int, total: int) -> None:
            nonlocal stop, cancelled_at
            progress(step, total)
            if 0 < step < total and not stop:
                stop, cancelled_at = True, time.monotonic()

        try:
            with pytest.raises(JobCancelled):
                await backend.render(job(steps=40), progress=on_progress, should_stop=lambda: stop)
            await asyncio.sleep(0.3)
        finally:
            await backend.close()
        assert fake.interrupted == 1
        assert fake.renders_finished == 0
        assert time.monotonic() - cancelled_at < 2.0  # 40 steps would take 4 s


async def test_comfyui_without_websocket_reads_history() -> None:
    async with FakeComfyUI() as fake:
        fake.send_ws = False  # a proxy that drops websocket frames: outputs come from /history
        backend = backend_for("comfyui", fake.url)
        try:
            result, _ = await render(backend, job(seed=11))
        finally:
            await backend.close()
    assert result.image.tobytes() == picture(11, 64, 48).tobytes()
    assert any(p.startswith("/history/") for p in fake.paths("GET"))


async def test_comfyui_placeholders_keep_their_types(tmp_path: Path) -> None:
    graph = load_workflow(None, "comfyui_txt2img.json")
    filled = fill(
        graph,
        dict(
            prompt="cat",
            negative_prompt="",
            seed=5,
            steps=9,
            cfg=6.5,
            width=64,
            height=48,
            checkpoint="x.safetensors",
            denoise=1.0,
            image="",
        ),
    )
    assert filled["3"]["inputs"]["seed"] == 5 and filled["3"]["inputs"]["cfg"] == 6.5
    assert filled["6"]["inputs"]["text"] == "cat" and graph["6"]["inputs"]["text"] == "{{prompt}}"
    own = tmp_path / "mine.json"
    own.write_text(json.dumps({"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "masterpiece, {{prompt}}"}}}))
    assert fill(load_workflow(own, "x"), dict(prompt="cat"))["1"]["inputs"]["text"] == "masterpiece, cat"
    broken = tmp_path / "broken.json"
    for text, message in (
        ("{not json", "is not JSON"),
        ('{"1": {"inputs": {}}}', "API-format"),
        ('{"1": {"class_type": "X", "inputs": {"text": "{{promt}}"}}}', "unknown placeholders: promt"),
        ('{"1": {"class_type": "X", "inputs": {"text": "a cat"}}}', "no {{prompt}}"),
    ):
        broken.write_text(text)
        with pytest.raises(ValueError, match=message) as caught:
            load_workflow(broken, "x")
        assert str(broken) in str(caught.value)


async def test_stability_image_answers_and_content_filter() -> None:
    async with FakeStability() as fake:
        backend = StabilityBackend(fake.url, api_key="sk-test", accept="image/*", timeout_s=5)
        try:
            result, _ = await render(backend, job(seed=9, prompt="a forbidden thing", aspect="16:9"))
        finally:
            await backend.close()
    assert result.nsfw and result.seed == 9 and result.image.size == (96, 56)
    assert fake.seen[0].headers["Accept"] == "image/*"


async def test_replicate_failed_prediction_and_versioned_model() -> None:
    async with FakeReplicate() as fake:
        fake.fail_with = "CUDA out of memory"
        backend = ReplicateBackend(fake.url, api_token="r8_test", model="acme/xl:" + "ab12" * 16, timeout_s=5)
        try:
            with pytest.raises(BackendRefused, match="CUDA out of memory"):
                await render(backend, job())
        finally:
            await backend.close()
    assert fake.seen[0].path == "/v1/predictions" and fake.seen[0].body["version"] == "ab12" * 16


async def test_replicate_keeps_the_token_off_other_hosts() -> None:
    """Output files live on another host (replicate.delivery): the token is not sent there."""
    async with FakeReplicate() as api, FakeReplicate(api_token="unused") as files:
        files.files["x.png"] = png(picture(5, 16, 16))
        backend = ReplicateBackend(api.url, api_token="r8_test", timeout_s=5)
        original = api._run

        async def elsewhere(pid: str, base: str) -> None:
            await original(pid, base)
            api.predictions[pid]["output"] = [f"{files.url}/files/x.png"]

        api._run = elsewhere  # type: ignore[method-assign]
        try:
            result, _ = await render(backend, job(seed=5))
        finally:
            await backend.close()
    assert result.image.size == (16, 16)
    assert "Authorization" not in files.seen[0].headers
    assert api.seen[0].headers["Authorization"] == "Bearer r8_test"
