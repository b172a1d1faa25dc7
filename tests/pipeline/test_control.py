"""ControlNet (issue #18): canny, depth and palette control images, and renders with a tiny random
ControlNet made from the tiny SD UNet, loaded through the product's own from_pretrained code."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from devkit import builders
from pipeline import limits
from pipeline.control import (
    ControlNets,
    ControlSpec,
    canny_edges,
    check_control,
    palette_image,
    parse_controlnet_models,
)
from pipeline.errors import BadRequest
from pipeline.synthesis import RenderRequest, Synthesizer
from tests.pipeline.test_studio import cli_env  # noqa: F401 (a fixture)

PALETTE = ("#D62828", "#1E63D6", "#FFD60A")


@pytest.fixture(scope="module")
def control_dirs(tiny_sd_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("control")
    return {
        "canny": builders.build_tiny_controlnet(tiny_sd_dir, root / "canny", seed=1),
        "palette": builders.build_tiny_controlnet(tiny_sd_dir, root / "palette", seed=2),
        "depth": builders.build_tiny_controlnet(tiny_sd_dir, root / "depth", seed=3),
        "estimator": builders.build_tiny_depth_estimator(root / "dpt"),
    }


@pytest.fixture(scope="module")
def synth(tiny_sd_dir: Path, control_dirs: dict[str, Path]) -> Synthesizer:
    synthesizer = Synthesizer(str(tiny_sd_dir), "cpu", safety_checker=False)
    models = ", ".join(f"{mode}={control_dirs[mode]}" for mode in ("canny", "palette", "depth"))
    synthesizer.controls = ControlNets(models, depth_model=str(control_dirs["estimator"]))
    synthesizer.load()
    return synthesizer


def square_png(size: int = 64) -> bytes:
    image = Image.new("RGB", (size, size), (20, 20, 20))
    ImageDraw.Draw(image).rectangle((16, 16, 47, 47), fill=(240, 240, 240))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def req(control: ControlSpec | None, **kw) -> RenderRequest:
    values = dict(prompt="a red apple on a wooden table", seed=7, steps=3, width=64, height=64, control=control)
    values.update(kw)
    return RenderRequest(**values).validated()


def test_canny_finds_the_outline_of_a_square_and_nothing_in_flat_areas():
    edges = np.asarray(canny_edges(Image.open(io.BytesIO(square_png()))).convert("L"))
    assert edges.shape == (64, 64) and set(np.unique(edges)) <= {0, 255}
    ys, xs = np.nonzero(edges)
    assert len(ys) > 60  # four sides of a 32-pixel square
    assert 12 <= ys.min() <= 18 and 45 <= ys.max() <= 51 and 12 <= xs.min() <= 18 and 45 <= xs.max() <= 51
    assert edges[28:36, 28:36].max() == 0 and edges[:8, :8].max() == 0  # inside and outside: flat
    assert np.asarray(canny_edges(Image.new("RGB", (32, 32), (90, 90, 90)))).max() == 0


def test_palette_image_is_bands_of_the_palette_with_the_first_colour_widest():
    image = palette_image(PALETTE, 64, 96)
    assert image.size == (64, 96) and image.mode == "RGB"
    column = np.asarray(image)[:, 32].astype(int)
    red, blue, yellow = column[20], column[60], column[90]
    assert red[0] > 150 and red[2] < 100 and blue[2] > 150 and yellow[0] > 200 and yellow[1] > 150
    with pytest.raises(BadRequest):
        palette_image((), 64, 64)


def test_controlnet_models_setting_parses_and_names_bad_entries():
    models = parse_controlnet_models("canny=a/b, sdxl:depth=/models/depth ,palette=c")
    assert models == {("sd", "canny"): "a/b", ("sdxl", "depth"): "/models/depth", ("sd", "palette"): "c"}
    for bad, words in (
        ("canny", "must look like"),
        ("sd3:canny=x", "family"),
        ("blur=x", "mode"),
        ("canny=a,canny=b", "twice"),
    ):
        with pytest.raises(ValueError, match=words):
            parse_controlnet_models(bad)


def test_control_options_are_checked_with_friendly_messages():
    assert check_control(None, None) == (None, 1.0) and check_control("Canny", 0.5) == ("canny", 0.5)
    with pytest.raises(BadRequest, match="Unknown control mode"):
        check_control("scribble", None)
    with pytest.raises(BadRequest, match="between 0 and 2"):
        check_control("canny", 3.0)
    with pytest.raises(BadRequest, match="needs an image"):
        ControlSpec("canny").validated()
    with pytest.raises(BadRequest, match="isn't an image"):
        ControlSpec("depth", source=b"GIF89a nonsense").validated()


def test_canny_control_render_is_deterministic_and_differs_from_a_plain_render(synth):
    spec = ControlSpec("canny", 1.0, source=square_png())
    a = synth.render([req(spec)])[0]
    b = synth.render([req(spec)])[0]
    plain = synth.render([req(None)])[0]
    assert a.image.size == (64, 64) and (a.control_mode, a.control_strength) == ("canny", 1.0)
    assert a.control_image is not None and a.control_image.size == (64, 64)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert not np.array_equal(np.asarray(a.image), np.asarray(plain.image))
    assert plain.control_image is None and plain.control_mode is None
    # strength 0: the ControlNet adds nothing, so the picture is the plain one
    zero = synth.render([req(ControlSpec("canny", 0.0, source=square_png()))])[0]
    assert np.abs(np.asarray(zero.image, dtype=int) - np.asarray(plain.image, dtype=int)).max() <= 2
    # the ControlNet pipeline shares the loaded modules (no second copy of the weights)
    pipe = synth._control_pipes[("canny", False)]
    assert pipe.unet is synth._text2img.unet and pipe.vae is synth._text2img.vae


def test_palette_control_uses_the_palette_and_batches_per_request(synth):
    warm = ControlSpec("palette", 1.0, palette=PALETTE)
    cool = ControlSpec("palette", 1.0, palette=("#1E63D6", "#008080", "#ADD8E6"))
    requests = [req(warm, seed=3), req(cool, seed=3)]
    assert synth.batch_key(requests[0]) == synth.batch_key(requests[1])
    both = synth.render(requests)
    alone = synth.render([req(warm, seed=3)])[0]
    assert [r.batch_size for r in both] == [2, 2]
    assert np.asarray(both[0].control_image)[5, 5, 0] > 150  # red band first
    assert np.asarray(both[1].control_image)[5, 5, 2] > 150  # blue band first
    assert not np.array_equal(np.asarray(both[0].image), np.asarray(both[1].image))
    assert np.abs(np.asarray(both[0].image, dtype=int) - np.asarray(alone.image, dtype=int)).max() <= 2
    # a different mode or strength never shares a batch
    assert synth.batch_key(req(ControlSpec("palette", 0.5, palette=PALETTE))) != synth.batch_key(requests[0])
    assert synth.batch_key(req(None)) != synth.batch_key(requests[0])


def test_depth_control_runs_the_depth_estimator_through_transformers(synth):
    result = synth.render([req(ControlSpec("depth", 0.8, source=square_png(48)))])[0]
    assert result.control_mode == "depth" and result.control_image is not None
    assert result.control_image.size == (64, 64) and result.image.size == (64, 64)


def test_control_with_an_init_image_renders_image_to_image(synth):
    result = synth.render([req(ControlSpec("canny", source=square_png()), init_image=square_png(), strength=0.6)])[0]
    assert result.mode == "img2img" and result.control_mode == "canny" and result.image.size == (64, 64)


def test_a_mode_without_a_model_is_a_friendly_error(tiny_sd_dir, control_dirs):
    synthesizer = Synthesizer(str(tiny_sd_dir), "cpu", safety_checker=False)
    synthesizer.controls = ControlNets(f"canny={control_dirs['canny']}")
    synthesizer.load()
    with pytest.raises(BadRequest, match="no palette ControlNet.*configured for this model: canny"):
        synthesizer.render([req(ControlSpec("palette", palette=PALETTE))])
    synthesizer.controls = None
    with pytest.raises(BadRequest, match="CONTROLNET_MODELS is empty"):
        synthesizer.render([req(ControlSpec("palette", palette=PALETTE))])


def test_sdxl_gets_its_own_controlnet_pipeline(tiny_sdxl_dir, tmp_path):
    net = builders.build_tiny_controlnet(tiny_sdxl_dir, tmp_path / "sdxl-net")
    synthesizer = Synthesizer(str(tiny_sdxl_dir), "cpu", safety_checker=False)
    synthesizer.controls = ControlNets(f"sdxl:palette={net}")
    synthesizer.load()
    spec = ControlSpec("palette", 1.0, palette=PALETTE)
    a = synthesizer.render([req(spec, steps=2)])[0]
    b = synthesizer.render([req(spec, steps=2)])[0]
    assert a.image.size == (64, 64) and a.control_mode == "palette" and a.family.key == "sdxl"
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert type(synthesizer._control_pipes[("palette", False)]).__name__ == "StableDiffusionXLControlNetPipeline"
    with pytest.raises(BadRequest, match="no canny ControlNet for SDXL"):
        synthesizer.render([req(ControlSpec("canny", source=square_png()), steps=2)])


# ------------------------------------------------------------------------------------------------
# The CLI: --control MODE --control-image PATH --control-strength X (#18)
# ------------------------------------------------------------------------------------------------
async def test_cli_canny_control_and_its_refusals(control_dirs, cli_env, tmp_path):  # noqa: F811
    from tests.pipeline.test_studio import cli

    env = {**cli_env, "CONTROLNET_MODELS": f"canny={control_dirs['canny']}", "QA_MAX_ROUNDS": "0"}
    edges = tmp_path / "edges.png"
    edges.write_bytes(square_png())
    args = ["--text", "a lighthouse", "--seed", "5", "--out", "out", "--quiet", "--control", "canny"]
    code, out, err = await cli([*args, "--control-image", str(edges), "--control-strength", "0.6"], env, tmp_path)
    assert code == 0, err
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert (result["rounds"][0]["control"], result["rounds"][0]["control_strength"]) == ("canny", 0.6)
    control = Image.open(tmp_path / "out" / "control.png")
    assert control.size == Image.open(tmp_path / "out" / "image.png").size == (64, 64)
    assert "control:   canny at strength 0.6" in out

    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (limits.MAX_IMAGE_BYTES + 1))
    refusals = [
        (["--control-strength", "2.5", "--control-image", str(edges)], "control strength must be between 0 and 2"),
        ([], "the canny control needs an image"),
        (["--control-image", str(big)], "big.png"),
        (["--control-image", str(tmp_path / "missing.png")], "missing.png"),
    ]
    (tmp_path / "refused").mkdir()
    for extra, words in refusals:
        code, _, err = await cli([*args, *extra], env, tmp_path / "refused")
        assert code == 2 and words in err and "Traceback" not in err, err
    code, _, err = await cli(["--text", "x", "--control", "sketch"], env, tmp_path)
    assert code == 2 and "Unknown control mode 'sketch'" in err
    code, _, err = await cli(["--text", "x", "--control-image", str(edges)], env, tmp_path)
    assert code == 2 and "go with --control MODE" in err
