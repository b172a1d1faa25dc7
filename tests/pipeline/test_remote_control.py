"""ControlNet on remote backends (issue #18 item 3): A1111/Forge through the sd-webui-controlnet
extension's ``alwayson_scripts`` and ComfyUI through its core ControlNet nodes, each against its
wire-level fake, which checks what a real server checks (a known model, a decodable image, links
between nodes). The control image is made here (canny edges, palette bands; depth goes to A1111's
own preprocessor); a backend or mode that can't apply a control is refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from devkit.backends import FakeA1111, FakeComfyUI
from devkit.backends.common import picture, png
from pipeline.backends.a1111 import A1111Backend
from pipeline.backends.comfyui import CONTROL_NODES, ComfyUIBackend
from pipeline.backends.router import remote_control
from pipeline.backends.stability import StabilityBackend
from pipeline.control import ControlSpec, parse_remote_controlnet_models
from pipeline.errors import BadRequest
from pipeline.settings import Settings
from tests.pipeline.test_backends import job, render

A1111_MODELS = parse_remote_controlnet_models(Settings.model_fields["A1111_CONTROLNET_MODELS"].default, "A1111")
COMFY_MODELS = parse_remote_controlnet_models(Settings.model_fields["COMFYUI_CONTROLNET_MODELS"].default, "COMFYUI")


def source() -> bytes:
    """A white disc on black: its canny edges are a ring."""
    image = Image.new("RGB", (96, 72), (0, 0, 0))
    from PIL import ImageDraw

    ImageDraw.Draw(image).ellipse((24, 12, 72, 60), fill=(255, 255, 255))
    return png(image)


@pytest.mark.parametrize("mode", ["canny", "palette", "depth"])
async def test_a1111_sends_a_controlnet_unit(mode: str) -> None:
    spec = ControlSpec(mode, 0.7, source() if mode != "palette" else None, ("#D62828", "#1E63D6"))
    async with FakeA1111(step_s=0.005) as fake:
        backend = A1111Backend(fake.url, timeout_s=5.0, retries=1, controlnet_models=A1111_MODELS)
        try:
            remote = job(seed=5, width=64, height=48)
            remote = type(remote)(**{**remote.__dict__, "control": await remote_control(backend, spec, remote)})
            result, _ = await render(backend, remote)
        finally:
            await backend.close()
    assert result.image.size == (64, 48)
    (unit,) = fake.payloads[0]["alwayson_scripts"]["controlnet"]["args"]
    assert unit["model"] == A1111_MODELS[mode] and unit["weight"] == 0.7 and unit["enabled"] is True
    assert unit["module"] == ("depth_midas" if mode == "depth" else "none")
    (sent,) = fake.controlnet_images
    assert sent.size == (64, 48)
    pixels = np.asarray(sent)
    if mode == "canny":  # a ring of white edges on black, made here
        assert set(np.unique(pixels)) <= {0, 255} and 0 < (pixels > 0).mean() < 0.5
    elif mode == "palette":  # bands of the palette's colours, the first on top
        assert tuple(pixels[2, 32]) == (0xD6, 0x28, 0x28)


async def test_comfyui_wires_controlnet_between_the_prompts_and_the_sampler() -> None:
    spec = ControlSpec("canny", 0.55, source())
    async with FakeComfyUI(step_s=0.005) as fake:
        backend = ComfyUIBackend(fake.url, checkpoint="sd15.safetensors", timeout_s=5.0, retries=1,
                                 controlnet_models=COMFY_MODELS)  # fmt: skip
        try:
            remote = job(seed=9, width=64, height=48, init_image=png(picture(2, 64, 48)), strength=0.6)
            remote = type(remote)(**{**remote.__dict__, "control": await remote_control(backend, spec, remote)})
            result, _ = await render(backend, remote)
        finally:
            await backend.close()
    assert result.image.size == (64, 48)
    graph = fake.graphs[0]
    apply = graph[CONTROL_NODES["apply"]]
    assert apply["class_type"] == "ControlNetApplyAdvanced" and apply["inputs"]["strength"] == 0.55
    assert graph[CONTROL_NODES["loader"]]["inputs"]["control_net_name"] == COMFY_MODELS["canny"]
    sampler = next(node for node in graph.values() if node["class_type"] == "KSampler")
    assert sampler["inputs"]["positive"] == [CONTROL_NODES["apply"], 0]
    assert sampler["inputs"]["negative"] == [CONTROL_NODES["apply"], 1]
    # Two uploads: the start image and the control image (edges made here), both loaded by the graph.
    loaded = {node["inputs"]["image"] for node in graph.values() if node["class_type"] == "LoadImage"}
    assert len(loaded) == 2 and all(("input", "", name) in fake.files for name in loaded)
    control_png = fake.files[("input", "", graph[CONTROL_NODES["image"]]["inputs"]["image"])]
    with Image.open(__import__("io").BytesIO(control_png)) as edges:
        assert edges.size == (64, 48) and set(np.unique(np.asarray(edges))) <= {0, 255}
    assert "{{" not in json.dumps(graph)


async def test_what_cannot_be_applied_is_refused_by_name() -> None:
    remote = job(width=64, height=48)
    comfy = ComfyUIBackend("http://127.0.0.1:9", controlnet_models=COMFY_MODELS)
    stability = StabilityBackend("http://127.0.0.1:9", api_key="sk-test")
    a1111 = A1111Backend("http://127.0.0.1:9", controlnet_models={"canny": "control_v11p_sd15_canny"})
    try:
        with pytest.raises(BadRequest, match="ComfyUI can't apply the depth control"):
            await remote_control(comfy, ControlSpec("depth", 1.0, source()), remote)
        with pytest.raises(BadRequest, match="Stability AI can't apply a ControlNet"):
            await remote_control(stability, ControlSpec("canny", 1.0, source()), remote)
        with pytest.raises(BadRequest, match="A1111_CONTROLNET_MODELS"):
            await remote_control(a1111, ControlSpec("palette", 1.0, None, ("#FFFFFF",)), remote)
    finally:
        for backend in (comfy, stability, a1111):
            await backend.close()


def test_remote_controlnet_settings_are_checked_at_start() -> None:
    with pytest.raises(ValueError, match="A1111_CONTROLNET_MODELS entry 'sketch=x'"):
        Settings(_env_file=None, A1111_CONTROLNET_MODELS="sketch=x")
    with pytest.raises(ValueError, match="COMFYUI_CONTROLNET_MODELS entry 'canny'"):
        Settings(_env_file=None, COMFYUI_CONTROLNET_MODELS="canny")
