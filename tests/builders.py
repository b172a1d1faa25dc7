"""Tiny random-weight models, built and saved locally (no hub access).

Everything here is written in one place so every test (and the CPU benchmark) loads the same
miniature models through the product's own ``from_pretrained`` code. Each builder writes a
directory in seconds and well under a few MB.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# ------------------------------------------------------------------------------------------------
# A byte-level CLIP BPE tokenizer written from scratch: every byte is a token (with and without the
# end-of-word marker) and there are no merges. It tokenises any text, deterministically.
# ------------------------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_clip_tokenizer(directory: Path, model_max_length: int = 77) -> Path:
    """Write vocab.json/merges.txt/tokenizer_config.json for a byte-level CLIPTokenizer."""
    from transformers import CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for ch in chars:
        vocab[ch] = len(vocab)
    for ch in chars:
        vocab[ch + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    try:  # transformers >= 5: the tokenizer is built from the vocabulary itself
        tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)
    except TypeError:  # transformers 4.x: from the files
        tokenizer = CLIPTokenizer(
            vocab_file=str(directory / "vocab.json"),
            merges_file=str(directory / "merges.txt"),
            model_max_length=model_max_length,
        )
    tokenizer.save_pretrained(directory)
    return directory


CLIP_VOCAB_SIZE = 256 * 2 + 2


def tiny_clip_text_config(**overrides):
    from transformers import CLIPTextConfig

    config = dict(
        bos_token_id=CLIP_VOCAB_SIZE - 2,
        eos_token_id=CLIP_VOCAB_SIZE - 1,
        pad_token_id=CLIP_VOCAB_SIZE - 1,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=CLIP_VOCAB_SIZE,
        max_position_embeddings=77,
        projection_dim=32,
    )
    config.update(overrides)
    return CLIPTextConfig(**config)


def tiny_clip_vision_config(**overrides):
    from transformers import CLIPVisionConfig

    config = dict(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        image_size=32,
        patch_size=8,
        projection_dim=32,
    )
    config.update(overrides)
    return CLIPVisionConfig(**config)


def build_tiny_clip(directory: Path, seed: int = 0) -> Path:
    """A tiny CLIPModel + processor (byte-level tokenizer, 32 px image processor)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=tiny_clip_text_config().to_dict(),
        vision_config=tiny_clip_vision_config().to_dict(),
        projection_dim=32,
    )
    model = CLIPModel(config).eval()
    model.save_pretrained(directory)
    write_clip_tokenizer(directory / "_tok")
    tokenizer = CLIPTokenizer.from_pretrained(directory / "_tok")
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def build_tiny_stable_diffusion(directory: Path, seed: int = 0, safety_checker: bool = True) -> Path:
    """A tiny Stable Diffusion 1.x-shaped pipeline, saved like a hub repository.

    UNet, VAE and text encoder have the SD 1.x *structure* (cross-attention conditioned UNet, 4
    latent channels, 8x VAE downsampling, CLIP text encoder with a 77-token window) with widths
    small enough to run 25 steps at 64x64 in well under a second on a laptop CPU.
    """
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
        attention_head_dim=8,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=[8, 8, 8, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=64,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(tiny_clip_text_config())
    tok_dir = write_clip_tokenizer(directory / "_tokenizer_src")
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)

    checker = None
    feature_extractor = None
    if safety_checker:
        torch.manual_seed(seed)
        checker = StableDiffusionSafetyChecker(
            CLIPConfig(
                text_config=tiny_clip_text_config().to_dict(),
                vision_config=tiny_clip_vision_config().to_dict(),
                projection_dim=32,
            )
        )
        feature_extractor = CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        )

    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=checker,
        feature_extractor=feature_extractor,
        requires_safety_checker=safety_checker,
    )
    pipe.save_pretrained(directory)
    return directory
