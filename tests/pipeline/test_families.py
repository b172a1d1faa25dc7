"""Model families (issue #12): tiny random-weight SD 1.x, SDXL, SDXL-Turbo-like, SD3 and FLUX
pipelines built by the fixtures and loaded by the product's own ``from_pretrained`` code. Each
family renders text→image and image→image at its native size (diffusers' rule), at an aspect
ratio, with a prompt longer than CLIP's window, and in a batch equal to one at a time."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline import families
from pipeline.errors import BadRequest
from pipeline.families import ModelDefaults
from pipeline.synthesis import RenderRequest, Synthesizer

FAMILIES = {
    # fixture: (architecture, few_step, native size, scheduler kept or switched)
    "tiny_sd_dir": ("sd", False, (64, 64), "EulerDiscreteScheduler"),
    "tiny_sdxl_dir": ("sdxl", False, (64, 64), "EulerDiscreteScheduler"),
    "tiny_sdxl_turbo_dir": ("sdxl", True, (64, 64), "EulerAncestralDiscreteScheduler"),
    "tiny_sd3_dir": ("sd3", False, (64, 64), "FlowMatchEulerDiscreteScheduler"),
    "tiny_flux_dir": ("flux", True, (128, 128), "FlowMatchEulerDiscreteScheduler"),
}
_loaded: dict[str, Synthesizer] = {}


@pytest.fixture(params=list(FAMILIES), scope="module")
def family_synth(request) -> tuple[str, Synthesizer]:
    name = request.param
    if name not in _loaded:
        synth = Synthesizer(str(request.getfixturevalue(name)), "cpu")
        synth.load()
        _loaded[name] = synth
    return name, _loaded[name]


def req(prompt: str = "a red apple on a wooden table", **kw) -> RenderRequest:
    values: dict = dict(prompt=prompt, seed=7, steps=1)
    values.update(kw)
    return RenderRequest(**values).validated()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (90, 60), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_profile_is_read_from_the_loaded_model(family_synth):
    name, synth = family_synth
    architecture, few_step, native, scheduler = FAMILIES[name]
    family = synth.family
    assert (family.architecture, family.few_step, family.native_size) == (architecture, few_step, native)
    assert type(synth._text2img.scheduler).__name__ == scheduler
    assert family.negative_prompts == (architecture != "flux" and not few_step)
    if few_step:
        assert (family.default_steps, family.default_guidance, family.guidance_step) == (4, 0.0, 0.0)
        assert family.correction(4, 0.0) == (5, 0.0)  # a Turbo model at guidance 0 gets no "+1.5"
    assert family.prompt_encoding == ("t5" if architecture in ("sd3", "flux") else "clip-windows")


def test_text_to_image_at_native_size_and_aspect(family_synth):
    name, synth = family_synth
    native = FAMILIES[name][2]
    image = synth.render([req()])[0]
    assert image.image.size == native and (image.width, image.height) == native
    assert image.family is synth.family and image.steps == 1
    wide = synth.render([req(aspect="16:9")])[0]
    assert wide.image.size == families.aspect_size(native, "16:9")
    assert wide.image.size[0] > wide.image.size[1]
    default_steps = synth.resolve(req(steps=None))
    assert (default_steps.steps, default_steps.guidance) == (synth.family.default_steps, synth.family.default_guidance)


def test_image_to_image(family_synth):
    _, synth = family_synth
    red = synth.render([req(init_image=png((250, 10, 10)), strength=0.5, steps=2)])[0]
    blue = synth.render([req(init_image=png((10, 10, 250)), strength=0.5, steps=2)])[0]
    assert red.mode == "img2img" and red.image.size == synth.family.native_size
    assert not np.array_equal(pixels(red.image), pixels(blue.image))  # the starting image is used


def test_long_prompt_is_not_cut(family_synth):
    _, synth = family_synth
    prefix = "a very detailed scene " * 6  # > 77 CLIP tokens of the byte tokenizer, < 512 T5 tokens
    cat = synth.render([req(prefix + "with a cat", seed=5)])[0]
    dog = synth.render([req(prefix + "with a dog", seed=5)])[0]
    assert cat.prompt_tokens > 77
    assert not np.array_equal(pixels(cat.image), pixels(dog.image))  # the words past 77 tokens count
    if synth.family.prompt_encoding == "clip-windows":
        assert cat.prompt_chunks > 1
    else:
        with pytest.raises(BadRequest, match="tokens long"):
            synth.render([req("word " * 200)])  # over T5's 512: refused, never cut


def test_batch_equals_one_at_a_time(family_synth):
    _, synth = family_synth
    requests = [req("a red apple", seed=1), req("a blue boat", seed=2, negative_prompt="blurry")]
    assert len({synth.batch_key(r) for r in requests}) == 1
    batched = synth.render(requests)
    assert [b.batch_size for b in batched] == [2, 2]
    for request, image in zip(requests, batched, strict=True):
        alone = synth.render([request])[0]
        assert np.abs(pixels(alone.image) - pixels(image.image)).max() <= 2
    assert synth.batch_key(req(aspect="16:9")) != synth.batch_key(req())  # sizes never share a batch


def test_sizes_must_fit_the_family(family_synth):
    _, synth = family_synth
    with pytest.raises(BadRequest, match="multiple"):
        synth.resolve(req(width=64 + synth.family.side_multiple // 2, height=64))
    assert synth.resolve(req(width=64, height=128)).width == 64


@pytest.mark.parametrize(
    "native, aspect, size",
    [
        ((1024, 1024), "16:9", (1344, 768)),
        ((1024, 1024), "1:1", (1024, 1024)),
        ((1024, 1024), "9:16", (768, 1344)),
        ((1024, 1024), "21:9", (1536, 640)),
        ((512, 512), "16:9", (704, 384)),
        ((512, 512), "4:3", (576, 448)),
        ((64, 64), "16:9", (88, 64)),
    ],
)
def test_aspect_sizes(native, aspect, size):
    assert families.aspect_size(native, aspect) == size
    w, h = size
    budget = native[0] * native[1]
    assert abs(w * h - budget) / budget < 0.15 or min(native) < 512  # about the native pixel budget


def test_every_aspect_is_renderable_and_bad_ones_refused():
    for aspect in families.ASPECTS:
        for native in ((512, 512), (1024, 1024), (64, 64)):
            w, h = families.aspect_size(native, aspect)
            RenderRequest(prompt="x", width=w, height=h).validated()
    with pytest.raises(BadRequest, match="aspect ratio"):
        RenderRequest(prompt="x", aspect="5:1").validated()


def test_model_defaults_override_the_profile(tiny_sdxl_dir):
    synth = Synthesizer(str(tiny_sdxl_dir), "cpu", defaults=ModelDefaults(steps=3, guidance=2.0, few_step=True))
    family = synth.family
    assert family.few_step and (family.default_steps, family.default_guidance) == (3, 2.0)
    assert synth.resolve(req(steps=None)).steps == 3


def test_local_director_writes_for_the_family(tiny_flux_dir):
    from pipeline.directors import LocalDirector

    flux = Synthesizer(str(tiny_flux_dir), "cpu")
    director = LocalDirector()
    tags = director.scene_for("a red fox in the snow")
    prose = director.scene_for("a red fox in the snow", family=flux.family)
    assert tags.negative_prompt and not prose.negative_prompt  # FLUX has no negative prompt
    assert prose.diffusion_prompt.endswith(".") and prose.diffusion_prompt[0].isupper()
    assert "red fox" in prose.diffusion_prompt.lower() and "masterpiece" not in prose.diffusion_prompt
    assert families.prompt_token_limit(flux.family) > families.prompt_token_limit(None) == 75


def test_critics_write_corrections_for_the_family(tiny_flux_dir):
    from pipeline.critic import build_correction_prompt

    flux = Synthesizer(str(tiny_flux_dir), "cpu").family
    long_prompt = ", ".join(f"detail number {i}" for i in range(40))  # ~120 words
    short = build_correction_prompt(long_prompt, ["a red apple"])
    long = build_correction_prompt(long_prompt, ["a red apple"], limit=families.prompt_token_limit(flux))
    assert long.startswith("prominent a red apple") and len(long) > len(short)
    brief = families.director_brief(flux, "correction_prompt", negative=False)
    assert "correction_prompt" in brief and "natural English sentences" in brief and "negative" not in brief
