"""Real-size random-weight architectures of the model families beyond SD 1.5 (issue #12), for the
GPU ``families`` section: SDXL base, SDXL-Turbo (the same architecture with its Euler-ancestral
"trailing" scheduler), SD3-medium and FLUX.1-schnell. Like :mod:`bench.models`: built once into a
cache directory (fp16; bf16 for the transformer families), loaded through the product's own code.

Prompt lengths are pinned as in :mod:`bench.models`: the CLIP tokenizers have CLIP's 49408 ids and
one token per vocabulary word; the T5 tokenizer has T5's 32128 ids and one piece per vocabulary word
(``▁word``), so a director prompt is about as many T5 tokens as a real one.

The T5-XXL encoder (4.7 B parameters, 9.5 GB in bf16) is written once and linked into the SD3
directory, so the four families take about 50 GB of disk.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from devkit import builders

from .models import (
    BUILD_VERSION,
    CLIP_L14_TEXT,
    SD15_SCHEDULER,
    SD15_VAE,
    _build_device,
    _n_params,
    vocabulary_words,
    write_clip_word_tokenizer,
)

log = logging.getLogger(__name__)

T5_VOCAB = 32128
SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
)
CLIP_BIGG_TEXT = dict(
    CLIP_L14_TEXT,
    hidden_size=1280,
    intermediate_size=5120,
    num_attention_heads=20,
    num_hidden_layers=32,
    projection_dim=1280,
    hidden_act="gelu",
)
T5_XXL = dict(
    vocab_size=T5_VOCAB,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    feed_forward_proj="gated-gelu",
    relative_attention_num_buckets=32,
    pad_token_id=0,
    eos_token_id=1,
)
SD3_TRANSFORMER = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    num_layers=24,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    out_channels=16,
    pos_embed_max_size=192,
)
FLUX_TRANSFORMER: dict = {}  # diffusers' defaults are FLUX.1's (19 + 38 blocks, 24 heads x 128)
FLOW_VAE = dict(SD15_VAE, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False)


def write_t5_word_tokenizer(directory: Path) -> Path:
    """A T5 (Unigram) tokenizer with T5's 32128 ids: one piece per vocabulary word, then characters."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + word, -1.0) for word in vocabulary_words()]
    pieces += [(chr(c), -5.0) for c in range(33, 127)]
    seen: set[str] = set()
    unique = [p for p in pieces if not (p[0] in seen or seen.add(p[0]))]  # type: ignore[func-returns-value]
    filler = 0
    while len(unique) < T5_VOCAB - 100:
        unique.append((f"▁zz{filler}", -20.0))
        filler += 1
    tokenizer = T5Tokenizer(vocab=unique[: T5_VOCAB - 100], extra_ids=100, model_max_length=512)
    tokenizer.save_pretrained(directory)
    return directory


def _clip_pair(device: torch.device, seed: int, *, first_projection: bool):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    with device:
        first_cls = CLIPTextModelWithProjection if first_projection else CLIPTextModel
        first = first_cls(builders.tiny_clip_text_config(**CLIP_L14_TEXT))
        second = CLIPTextModelWithProjection(builders.tiny_clip_text_config(**CLIP_BIGG_TEXT))
    return first, second


def build_sdxl(directory: Path, *, turbo: bool = False, seed: int = 0) -> Path:
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTokenizer

    device = _build_device()
    torch.manual_seed(seed)
    with device:
        unet = UNet2DConditionModel(**SDXL_UNET)
        vae = AutoencoderKL(**dict(SD15_VAE, sample_size=1024, scaling_factor=0.13025))
    text_encoder, text_encoder_2 = _clip_pair(device, seed, first_projection=False)
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_word_tokenizer(directory / "_tokenizer_src"))
    schedule = dict(SD15_SCHEDULER)
    if turbo:
        schedule.update(timestep_spacing="trailing", steps_offset=0)
        scheduler = EulerAncestralDiscreteScheduler(**schedule)
    else:
        scheduler = EulerDiscreteScheduler(**schedule)
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )
    pipe.to(torch.float16)
    log.info("SDXL architecture: UNet %.0fM parameters", _n_params(unet) / 1e6)
    pipe.save_pretrained(directory)
    return directory


def _t5(device: torch.device, seed: int):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    with device:
        return T5EncoderModel(T5Config(**T5_XXL))


def build_flux(directory: Path, *, seed: int = 0) -> Path:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5Tokenizer

    device = _build_device()
    torch.manual_seed(seed)
    with device:
        transformer = FluxTransformer2DModel(**FLUX_TRANSFORMER)
        vae = AutoencoderKL(**dict(FLOW_VAE, sample_size=1024, shift_factor=0.1159, scaling_factor=0.3611))
        text_encoder = CLIPTextModel(builders.tiny_clip_text_config(**CLIP_L14_TEXT))
    pipe = FluxPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(write_clip_word_tokenizer(directory / "_tokenizer_src")),
        text_encoder_2=_t5(device, seed),
        tokenizer_2=T5Tokenizer.from_pretrained(write_t5_word_tokenizer(directory / "_t5_src")),
    )
    pipe.to(torch.bfloat16)
    log.info("FLUX architecture: transformer %.0fM parameters", _n_params(transformer) / 1e6)
    pipe.save_pretrained(directory)
    return directory


def build_sd3(directory: Path, *, t5_from: Path | None = None, seed: int = 0) -> Path:
    """SD3-medium; ``t5_from``: a FLUX directory whose T5-XXL is linked instead of written again."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTokenizer, T5Tokenizer

    device = _build_device()
    torch.manual_seed(seed)
    with device:
        transformer = SD3Transformer2DModel(**SD3_TRANSFORMER)
        vae = AutoencoderKL(**dict(FLOW_VAE, sample_size=1024, shift_factor=0.0609, scaling_factor=1.5035))
    text_encoder, text_encoder_2 = _clip_pair(device, seed, first_projection=True)
    t5 = None if t5_from is not None else _t5(device, seed)
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_word_tokenizer(directory / "_tokenizer_src"))
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer,
        text_encoder_3=t5,
        tokenizer_3=T5Tokenizer.from_pretrained(write_t5_word_tokenizer(directory / "_t5_src")),
    )
    pipe.to(torch.float16)
    pipe.save_pretrained(directory)
    if t5_from is not None:  # link FLUX's T5-XXL (same architecture) and name it in model_index.json
        (directory / "text_encoder_3").symlink_to((t5_from / "text_encoder_2").resolve(), target_is_directory=True)
        index_path = directory / "model_index.json"
        index = json.loads(index_path.read_text())
        index["text_encoder_3"] = ["transformers", "T5EncoderModel"]
        index_path.write_text(json.dumps(index, indent=2))
    return directory


FAMILY_ORDER = ("sdxl", "sdxl-turbo", "flux-schnell", "sd3")  # sd3 links flux-schnell's T5-XXL


def family_model_dirs(cache_dir: Path, *, tiny: bool) -> dict[str, Path]:
    """Where each family model lives (built or not): ``MODELS`` name → directory."""
    prefix = "tiny-family-" if tiny else "family-"
    return {name: Path(cache_dir) / f"{prefix}{name}" for name in FAMILY_ORDER}


def ensure_family_model(cache_dir: Path, name: str, *, tiny: bool) -> Path:
    """Build one family model into the cache unless it is there already (real size, or the test
    suite's tiny one); its directory."""
    cache_dir = Path(cache_dir)
    if tiny:
        makers = {
            "sdxl": builders.build_tiny_sdxl,
            "sdxl-turbo": lambda d: builders.build_tiny_sdxl(d, turbo=True),
            "sd3": builders.build_tiny_sd3,
            "flux-schnell": builders.build_tiny_flux,
        }
    else:
        makers = {
            "sdxl": build_sdxl,
            "sdxl-turbo": lambda d: build_sdxl(d, turbo=True),
            "flux-schnell": build_flux,
            "sd3": lambda d: build_sd3(d, t5_from=ensure_family_model(cache_dir, "flux-schnell", tiny=False)),
        }
    directory = family_model_dirs(cache_dir, tiny=tiny)[name]
    marker = directory / "voxcanvas-bench.json"
    if not (marker.exists() and json.loads(marker.read_text()).get("version") == BUILD_VERSION):
        if directory.exists():
            import shutil

            shutil.rmtree(directory)
        started = time.perf_counter()
        makers[name](directory)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        marker.write_text(json.dumps({"version": BUILD_VERSION, "build_s": round(time.perf_counter() - started, 1)}))
    return directory
