"""Stable Diffusion rendering on the tiny random-weight pipeline, loaded through the product's
own from_pretrained code: validation, determinism, batching, long prompts, progress, interrupt,
image-to-image, the safety checker and load errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import BadRequest, ModelUnavailable, UnsafeImage
from pipeline.synthesis import RenderInterrupted, RenderRequest, Synthesizer, redacted


@pytest.fixture(scope="module")
def synth(tiny_sd_dir) -> Synthesizer:
    synthesizer = Synthesizer(str(tiny_sd_dir), "cpu")
    synthesizer.load()
    return synthesizer


def req(prompt: str = "a red apple on a wooden table", **kw) -> RenderRequest:
    values = dict(prompt=prompt, seed=7, steps=4, width=64, height=64)
    values.update(kw)
    return RenderRequest(**values).validated()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_loads_through_from_pretrained_with_euler_and_safety_checker(synth):
    pipe = synth._text2img
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert synth.load().checker is not None  # on by default (run by flag_unsafe, not by diffusers)
    assert synth._img2img.unet is pipe.unet and synth._img2img.vae is pipe.vae  # no second copy


def test_render_is_deterministic_per_seed_and_records_it(synth):
    a = synth.render([req(seed=11)])[0]
    b = synth.render([req(seed=11)])[0]
    c = synth.render([req(seed=12)])[0]
    assert a.image.size == (64, 64) and a.image.mode == "RGB"
    assert (a.seed, a.steps, a.guidance, a.mode) == (11, 4, 7.5, "text2img")
    assert np.array_equal(pixels(a.image), pixels(b.image))
    assert not np.array_equal(pixels(a.image), pixels(c.image))
    assert a.png_bytes().startswith(b"\x89PNG")


def test_missing_seed_is_chosen_and_recorded():
    chosen = {RenderRequest(prompt="x", width=64, height=64).validated().seed for _ in range(5)}
    assert all(isinstance(s, int) and 0 <= s < 2**32 for s in chosen)
    assert len(chosen) > 1


@pytest.mark.parametrize(
    "options, words",
    [
        (dict(prompt="  "), "empty"),
        (dict(width=100), "multiple of 8"),
        (dict(height=4096), "between 64 and 2048"),
        (dict(steps=0), "Steps"),
        (dict(steps=500), "Steps"),
        (dict(guidance=31.0), "Guidance"),
        (dict(seed=2**40), "seed"),
        (dict(init_image=b"not an image", strength=0.5), "isn't an image"),
        (dict(init_image=b"\x89PNG", strength=0.0), "Strength"),
        (dict(init_image=b"\x89PNG", strength=0.01), "between 0.05 and 1"),
        (dict(init_image=b"\x89PNG", strength=1.5), "Strength"),
        (dict(prompt="x" * 5000), "characters"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(options, words):
    values = dict(prompt="a cat", width=64, height=64)
    values.update(options)
    with pytest.raises(BadRequest) as refused:
        RenderRequest(**values).validated()
    assert words.lower() in str(refused.value).lower()


def test_batch_equals_one_at_a_time(synth):
    requests = [req("a red apple", seed=1), req("a blue boat at sea", seed=2), req("a green cat", seed=3)]
    assert len({synth.batch_key(r) for r in requests}) == 1
    batched = synth.render(requests)
    assert [img.batch_size for img in batched] == [3, 3, 3]
    for request, image in zip(requests, batched, strict=True):
        alone = synth.render([request])[0]
        assert alone.seed == image.seed
        assert np.abs(pixels(alone.image) - pixels(image.image)).max() <= 1


def test_incompatible_requests_are_not_batched(synth):
    with pytest.raises(ValueError):
        synth.render([req(seed=1), req(seed=2, steps=5)])


def test_long_prompt_is_encoded_whole_not_cut(synth):
    window = synth._text2img.tokenizer.model_max_length
    prefix = "a very detailed scene " * 10  # well past 77 tokens of the tiny tokenizer
    assert synth.count_tokens(prefix) > window
    cat = synth.render([req(prefix + "with a cat", seed=5)])[0]
    dog = synth.render([req(prefix + "with a dog", seed=5)])[0]
    assert cat.prompt_chunks > 1 and cat.prompt_tokens == synth.count_tokens(prefix + "with a cat")
    # The words past the 77-token window still change the picture: nothing was cut off.
    assert not np.array_equal(pixels(cat.image), pixels(dog.image))
    short = synth.render([req("a cat", seed=5)])[0]
    assert short.prompt_chunks == 1
    assert synth.batch_key(req(prefix)) != synth.batch_key(req("a cat"))  # padding would change images


def test_progress_every_step_and_interrupt(synth):
    steps: list[tuple[int, int]] = []
    synth.render([req(steps=6)], progress=lambda step, total: steps.append((step, total)))
    assert steps == [(i, 6) for i in range(1, 7)]

    seen: list[int] = []
    with pytest.raises(RenderInterrupted):
        synth.render([req(steps=50)], progress=lambda s, t: seen.append(s), should_stop=lambda: len(seen) >= 3)
    assert len(seen) == 3


def test_image_to_image(synth):
    buf = io.BytesIO()
    Image.new("RGB", (120, 80), (250, 10, 10)).save(buf, format="PNG")
    steps: list[tuple[int, int]] = []
    out = synth.render(
        [req(init_image=buf.getvalue(), strength=0.5, steps=10)], progress=lambda s, t: steps.append((s, t))
    )[0]
    assert out.mode == "img2img" and out.image.size == (64, 64)
    assert steps[-1] == (5, 5)  # strength 0.5 of 10 steps
    # The starting image is really used: another one, same seed and prompt, gives another picture.
    other = io.BytesIO()
    Image.new("RGB", (120, 80), (10, 10, 250)).save(other, format="PNG")
    blue = synth.render([req(init_image=other.getvalue(), strength=0.5, steps=10)])[0]
    assert not np.array_equal(pixels(out.image), pixels(blue.image))


def test_safety_checker_flags_keeps_the_picture_refuses_flagged_start_images(flagging_sd_dir):
    """The checker's verdict is kept per picture and the picture is kept as rendered (the studio
    blacks out what it withholds: pipeline.studio._screened); a flagged img2img start image is refused."""
    checked = Synthesizer(str(flagging_sd_dir), "cpu")
    assert checked.load().checker is not None and checked._text2img.safety_checker is None  # run by us
    first, second = checked.render([req(seed=3), req(seed=4)])
    assert first.nsfw and second.nsfw and pixels(first.image).max() > 0
    assert pixels(redacted(first.image)).max() == 0 and redacted(first.image).size == first.image.size
    start = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(start, format="PNG")
    with pytest.raises(UnsafeImage) as refused:
        checked.render([req(init_image=start.getvalue(), strength=0.5, steps=4)])
    assert "safety checker" in refused.value.user_message

    unchecked = Synthesizer(str(flagging_sd_dir), "cpu", safety_checker=False)
    unchecked.load()
    assert unchecked._text2img.safety_checker is None and unchecked.load().checker is None
    free = unchecked.render([req(seed=3)])[0]
    assert not free.nsfw and pixels(free.image).max() > 0


def test_default_checker_flags_nothing(synth):
    assert synth.flag_unsafe([Image.new("RGB", (64, 64), (250, 250, 250))]) == [False]
    assert not synth.render([req(seed=3)])[0].nsfw


def test_unloadable_model_names_the_setting(tmp_path):
    with pytest.raises(ModelUnavailable) as missing:
        Synthesizer(str(tmp_path / "no-such-model"), "cpu").load()
    assert "DIFFUSION_MODEL" in str(missing.value)
    with pytest.raises(ModelUnavailable) as typo:
        Synthesizer("not-a-user/not-a-model-xyz", "cpu").load()  # HF_HUB_OFFLINE in tests
    assert "DIFFUSION_MODEL" in str(typo.value) and "\n" not in str(typo.value)


def test_each_prompt_is_tokenised_once_per_render(synth, monkeypatch):
    """Issue #19: the batch key, the encoding and the recorded token count share one tokenisation
    of each request's prompt and negative prompt (counted on the real tokenizer's ``__call__``)."""
    tokenizer_type = type(synth.tokenizer)
    real_call = tokenizer_type.__call__
    texts: list[str] = []

    def counting_call(self, text, *args, **kwargs):
        texts.append(text)
        return real_call(self, text, *args, **kwargs)

    monkeypatch.setattr(tokenizer_type, "__call__", counting_call)
    long_prompt = ", ".join(["a red apple on a wooden table"] * 20)  # several 75-token chunks
    requests = [req(long_prompt, seed=1, negative_prompt="blurry"), req(long_prompt + ", pears", seed=2)]
    keys = {synth.batch_key(r) for r in requests}  # what the executor does before rendering
    images = synth.render(requests)
    monkeypatch.undo()

    assert len(keys) == 1 and keys.pop()[-1] > 1
    assert sorted(texts) == sorted([long_prompt, "blurry", long_prompt + ", pears", ""]), texts
    assert [image.prompt_tokens for image in images] == [synth.count_tokens(r.prompt) for r in requests]
    assert all(image.prompt_chunks > 1 for image in images)
    # The cache is not part of a request's identity: equal requests stay equal and hash alike.
    fresh = req(long_prompt, seed=1, negative_prompt="blurry")
    assert fresh == requests[0] and hash(fresh) == hash(requests[0]) and not fresh.token_cache
