"""LoRAs (issue #12): a tiny LoRA made with peft on the tiny UNet, saved with diffusers'
save_lora_weights, loaded by name through load_lora_weights; it changes the picture, its weight
matters, and unloading gives the base model's picture back."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import BadRequest
from pipeline.lora import LoraSet, lora_names, parse_lora
from pipeline.synthesis import RenderRequest, Synthesizer


def req(**kw) -> RenderRequest:
    values: dict = dict(prompt="a red apple", seed=3, steps=3)
    values.update(kw)
    return RenderRequest(**values).validated()


def test_lora_changes_the_picture_and_unloads_cleanly(tiny_sd_dir, tiny_lora_dir):
    assert lora_names(tiny_lora_dir) == ["tiny-style"]
    synth = Synthesizer(str(tiny_sd_dir), "cpu", safety_checker=False)
    synth.loras = LoraSet(tiny_lora_dir)
    base = np.asarray(synth.render([req()])[0].image, dtype=np.int16)
    styled = synth.render([req(loras=(("tiny-style", 1.0),))])[0]
    half = synth.render([req(loras=(("tiny-style", 0.3),))])[0]
    assert styled.loras == (("tiny-style", 1.0),)
    a, b = np.asarray(styled.image, dtype=np.int16), np.asarray(half.image, dtype=np.int16)
    assert not np.array_equal(a, base) and not np.array_equal(a, b)
    assert synth.batch_key(req(loras=(("tiny-style", 1.0),))) != synth.batch_key(req())
    again = np.asarray(synth.render([req()])[0].image, dtype=np.int16)  # unloaded: the base picture
    assert np.abs(again - base).max() <= 1 and not synth.loras.loaded


def test_unknown_lora_and_bad_weight_are_refused(tiny_sd_dir, tiny_lora_dir):
    synth = Synthesizer(str(tiny_sd_dir), "cpu", safety_checker=False)
    synth.loras = LoraSet(tiny_lora_dir)
    with pytest.raises(BadRequest, match="no LoRA called 'nope'"):
        synth.render([req(loras=(("nope", 1.0),))])
    with pytest.raises(BadRequest, match="weight"):
        req(loras=(("tiny-style", 9.0),))
    assert parse_lora("tiny-style:0.5", 0.8) == ("tiny-style", 0.5)
    assert parse_lora("tiny-style", 0.8) == ("tiny-style", 0.8)


def test_only_loras_that_fit_the_model_are_offered(tiny_sd_dir, tiny_sdxl_dir, tiny_flux_dir, tiny_lora_dir):
    from pipeline.lora import compatible_names, fits

    path = tiny_lora_dir / "tiny-style.safetensors"
    sd, sdxl, flux = (Synthesizer(str(d), "cpu") for d in (tiny_sd_dir, tiny_sdxl_dir, tiny_flux_dir))
    assert fits(sd._text2img.unet, path, "unet") is True
    assert fits(sdxl._text2img.unet, path, "unet") is False  # another UNet: layers or widths differ
    assert fits(flux._text2img.transformer, path, "transformer") is False  # a UNet LoRA on a transformer
    cache: dict = {}
    assert compatible_names(tiny_lora_dir, sd._text2img, cache) == ["tiny-style"]
    assert compatible_names(tiny_lora_dir, flux._text2img, cache) == []


def test_a_lora_for_another_family_is_refused_in_words(tiny_sdxl_dir, tiny_lora_dir):
    sdxl = Synthesizer(str(tiny_sdxl_dir), "cpu")
    sdxl.loras = LoraSet(tiny_lora_dir)
    with pytest.raises(BadRequest, match="does not fit this model"):
        sdxl.render([req(loras=(("tiny-style", 1.0),))])
    assert np.asarray(sdxl.render([req()])[0].image).shape == (64, 64, 3)  # the model still renders
