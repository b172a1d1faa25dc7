"""The GPU bench's real-size family architectures (issue #12) have the hub checkpoints' sizes:
built on the meta device (no memory), their parameters counted."""

from __future__ import annotations

import torch

from bench import family_models as fm
from devkit import builders


def millions(module: torch.nn.Module) -> int:
    return round(sum(p.numel() for p in module.parameters()) / 1e6)


def test_real_size_family_architectures():
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel, UNet2DConditionModel
    from transformers import CLIPTextModelWithProjection, T5Config, T5EncoderModel

    with torch.device("meta"):
        assert millions(UNet2DConditionModel(**fm.SDXL_UNET)) == 2567  # SDXL base UNet
        assert millions(SD3Transformer2DModel(**fm.SD3_TRANSFORMER)) == 2028  # SD3-medium MMDiT
        assert millions(FluxTransformer2DModel(**fm.FLUX_TRANSFORMER)) == 11891  # FLUX.1
        assert millions(CLIPTextModelWithProjection(builders.tiny_clip_text_config(**fm.CLIP_BIGG_TEXT))) == 695
        assert millions(T5EncoderModel(T5Config(**fm.T5_XXL))) == 4762  # T5-XXL encoder


def test_t5_word_tokenizer_has_t5_ids_and_one_token_per_word(tmp_path):
    from transformers import T5Tokenizer

    tokenizer = T5Tokenizer.from_pretrained(fm.write_t5_word_tokenizer(tmp_path))
    assert len(tokenizer) == fm.T5_VOCAB and (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1)
    assert len(tokenizer("a red apple on a wooden table", add_special_tokens=False).input_ids) == 7
