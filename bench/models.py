"""Model directories for the benchmarks: tiny (from ``devkit.builders``) and REAL-SIZE random-weight
architectures, saved with ``save_pretrained`` and then loaded through the product's own loading code
(``Synthesizer``, ``Transcriber``, ``ClipCritic``), exactly like a hub checkout.

Why random weights: the weights cannot be downloaded here, and the time a forward pass takes does not
depend on the values in the weight tensors — only on shapes, dtypes and kernels. Two things *do*
depend on values, and are pinned so the work matches real use:

* **Prompt length in tokens** (the UNet's cross-attention length and the number of 77-token windows
  a prompt is encoded in). The SD / CLIP tokenizer here is a byte-level BPE whose merges are learned
  from every word the local director and the critic can write (and the benchmark's ideas), so a
  director prompt is ~1 token per word, like CLIP's real vocabulary, instead of 1 token per letter.
  Its vocabulary has exactly CLIP's 49408 ids (``<|startoftext|>`` 49406, ``<|endoftext|>`` 49407),
  so every id is in range of the text encoders' embedding tables.
* **How many tokens Whisper decodes.** Random weights never say ``<|endoftext|>`` and would decode up
  to the product's token budget (264 tokens for 20 s). The builder shapes the decoder so that it says
  ``<|endoftext|>`` after :data:`WHISPER_TEXT_TOKENS` text tokens — about what 20 s of speech
  (~50 words) gives — and letters before that, so the transcript is not empty. The benchmark also
  reports the budget-length worst case.

The Whisper tokenizer is Whisper's exact id layout (50257 byte-level BPE tokens, ``<|endoftext|>``
50257, ``<|startoftranscript|>`` 50258, 100 languages, task/control tokens, 1501 timestamps = 51866),
built with the helpers in ``devkit.builders``.

Real-size models are built on the GPU when there is one (random init of ~2 billion parameters takes a
few seconds there, ~30 s on a laptop CPU), stored in fp16 (about 4.5 GB) in a cache directory, and
rebuilt only when :data:`BUILD_VERSION` changes.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import re
import time
from pathlib import Path

import torch

from devkit import builders

log = logging.getLogger(__name__)

BUILD_VERSION = 1  # bump when a builder changes: cached directories are rebuilt

#: Text tokens the random Whisper decoder says before <|endoftext|> (≈ 20 s of speech, ~50 words).
WHISPER_TEXT_TOKENS = 64

CLIP_VOCAB = 49408  # openai/clip-vit-large-patch14 and the SD 1.x text encoder
CLIP_BOS, CLIP_EOS = CLIP_VOCAB - 2, CLIP_VOCAB - 1
WHISPER_VOCAB = 51866  # openai/whisper-large-v3(-turbo)
WHISPER_BASE_BPE = 50257  # byte-level BPE tokens before <|endoftext|>

#: Ideas the benchmarks use (their words are in the tokenizer's vocabulary).
IDEAS = (
    "a red apple on a wooden table",
    "a lighthouse in a storm at night",
    "a cat sleeping on a sunny windowsill",
    "an astronaut riding a horse on the moon",
    "a castle on a hill at sunset",
    "a fox in the snow in a quiet forest",
    "a sailing boat on a calm blue lake",
    "a cozy kitchen with bread and coffee",
)

# ================================================================================================
# Real-size configurations (the hub checkpoints' architectures)
# ================================================================================================
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    cross_attention_dim=768,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    attention_head_dim=8,
    norm_num_groups=32,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
)
SD15_SCHEDULER = builders.SD15_SCHEDULER
CLIP_L14_TEXT = dict(  # also the SD 1.x text encoder
    hidden_size=768,
    intermediate_size=3072,
    num_attention_heads=12,
    num_hidden_layers=12,
    vocab_size=CLIP_VOCAB,
    max_position_embeddings=77,
    projection_dim=768,
    bos_token_id=CLIP_BOS,
    eos_token_id=CLIP_EOS,
    pad_token_id=CLIP_EOS,
)
CLIP_L14_VISION = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_attention_heads=16,
    num_hidden_layers=24,
    image_size=224,
    patch_size=14,
    projection_dim=768,
)
WHISPER_TURBO = dict(
    vocab_size=WHISPER_VOCAB,
    num_mel_bins=128,
    d_model=1280,
    encoder_layers=32,
    encoder_attention_heads=20,
    decoder_layers=4,
    decoder_attention_heads=20,
    encoder_ffn_dim=5120,
    decoder_ffn_dim=5120,
    max_source_positions=1500,
    max_target_positions=448,
)
WHISPER_TURBO_ALIGNMENT_HEADS = [[2, 4], [2, 11], [3, 3], [3, 6], [3, 11], [3, 14]]


# ================================================================================================
# Tokenizers
# ================================================================================================
def vocabulary_words() -> collections.Counter:
    """Every lower-case word the local director and the CLIP critic can put in a prompt (their
    source text: style templates, quality terms, the one-token word list, element templates) and
    the benchmark's ideas, with a count (frequent words get their merges first)."""
    import pipeline.critic
    import pipeline.directors.gemini
    import pipeline.directors.local
    import pipeline.prompts
    import pipeline.scene
    import pipeline.styles

    words: collections.Counter = collections.Counter()
    for module in (
        pipeline.prompts,
        pipeline.styles,
        pipeline.scene,
        pipeline.directors.local,
        pipeline.directors.gemini,
        pipeline.critic,
    ):
        words.update(re.findall(r"[a-z]+", Path(module.__file__).read_text(encoding="utf-8").lower()))
    for idea in IDEAS:
        words.update(re.findall(r"[a-z]+", idea) * 10)
    return words


def _learn_merges(words: collections.Counter) -> list[tuple[str, str]]:
    """Plain BPE training (CLIP style: the last symbol of a word carries ``</w>``) until every word
    is one symbol. Deterministic: ties go to the lexicographically largest pair."""
    seqs = {w: [*w[:-1], w[-1] + "</w>"] for w in words if w}
    merges: list[tuple[str, str]] = []
    while True:
        pairs: collections.Counter = collections.Counter()
        for word, seq in seqs.items():
            for pair in itertools.pairwise(seq):
                pairs[pair] += words[word]
        if not pairs:
            return merges
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        for word, seq in seqs.items():
            if len(seq) < 2:
                continue
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[word] = out


def _filler_pairs(alphabet: list[str], second: list[str], taken: set[str]):
    """Endless deterministic merge pairs (a, b) whose joined token is new."""
    for a in alphabet:
        for b in second:
            if a + b not in taken:
                taken.add(a + b)
                yield a, b


def write_clip_word_tokenizer(directory: Path, words: collections.Counter | None = None) -> Path:
    """A CLIPTokenizer with CLIP's 49408 ids whose merges make every word of :func:`vocabulary_words`
    one token (and fill the rest of the vocabulary with byte-pair merges), saved in ``directory``."""
    from transformers import CLIPTokenizer

    words = words if words is not None else vocabulary_words()
    chars = list(builders.bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in chars + [c + "</w>" for c in chars]:
        vocab[token] = len(vocab)
    merges: list[tuple[str, str]] = []
    for a, b in _learn_merges(words):
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
            merges.append((a, b))
    fillers = _filler_pairs(chars, [c + "</w>" for c in chars] + chars, set(vocab))
    while len(vocab) < CLIP_BOS:
        a, b = next(fillers)
        vocab[a + b] = len(vocab)
        merges.append((a, b))
    vocab["<|startoftext|>"] = CLIP_BOS
    vocab["<|endoftext|>"] = CLIP_EOS
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    assert len(tokenizer) == CLIP_VOCAB, len(tokenizer)
    assert tokenizer.bos_token_id == CLIP_BOS and tokenizer.eos_token_id == CLIP_EOS
    tokenizer.save_pretrained(directory)
    return directory


def whisper_tokenizer():
    """A WhisperTokenizer with Whisper large-v3's exact id layout (51866 ids)."""
    chars = list(builders.bytes_to_unicode().values())
    vocab: dict[str, int] = {c: i for i, c in enumerate(chars)}
    merges: list[tuple[str, str]] = []
    fillers = _filler_pairs(chars, chars, set(vocab))
    while len(vocab) < WHISPER_BASE_BPE:
        a, b = next(fillers)
        vocab[a + b] = len(vocab)
        merges.append((a, b))
    vocab["<|endoftext|>"] = WHISPER_BASE_BPE
    tokenizer = builders.build_whisper_tokenizer(vocab, merges, builders.whisper_languages())
    assert len(tokenizer) == WHISPER_VOCAB, len(tokenizer)
    return tokenizer


# ================================================================================================
# Builders
# ================================================================================================
def _build_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_sd15(directory: Path, *, safety_checker: bool = True, seed: int = 0) -> Path:
    """Stable Diffusion 1.5's architecture (UNet 860M, VAE 84M, CLIP ViT-L/14 text encoder 123M and,
    by default, the ViT-L/14 safety checker) with random weights, saved in fp16 like a hub checkout."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextModel, CLIPTokenizer

    device = _build_device()
    torch.manual_seed(seed)
    with device:
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(**SD15_VAE)
        text_encoder = CLIPTextModel(builders.tiny_clip_text_config(**CLIP_L14_TEXT))
        checker = feature_extractor = None
        if safety_checker:
            checker = StableDiffusionSafetyChecker(
                CLIPConfig(
                    text_config=builders.tiny_clip_text_config(**CLIP_L14_TEXT).to_dict(),
                    vision_config=builders.tiny_clip_vision_config(**CLIP_L14_VISION).to_dict(),
                    projection_dim=768,
                )
            )
    if checker is not None:
        feature_extractor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    tok_dir = write_clip_word_tokenizer(directory / "_tokenizer_src")
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(tok_dir),
        scheduler=EulerDiscreteScheduler(**SD15_SCHEDULER),
        safety_checker=checker,
        feature_extractor=feature_extractor,
        requires_safety_checker=safety_checker,
    )
    pipe.to(torch.float16)
    log.info(
        "SD 1.5 architecture: UNet %.0fM, VAE %.0fM, text encoder %.0fM%s parameters",
        _n_params(unet) / 1e6,
        _n_params(vae) / 1e6,
        _n_params(text_encoder) / 1e6,
        f", safety checker {_n_params(checker) / 1e6:.0f}M" if checker is not None else "",
    )
    pipe.save_pretrained(directory)
    return directory


def build_whisper_turbo(directory: Path, *, text_tokens: int = WHISPER_TEXT_TOKENS, seed: int = 0) -> Path:
    """Whisper large-v3-turbo's architecture (809M: 32 encoder + 4 decoder layers, d_model 1280,
    128 mel bins, 51866 ids) with random weights, a real-layout tokenizer and generation config.

    The decoder is shaped (see the module docs) to say ``text_tokens`` tokens, then <|endoftext|>."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    tokenizer = whisper_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    eot = ids("<|endoftext|>")
    config = WhisperConfig(
        **WHISPER_TURBO,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=ids("<|startoftranscript|>"),
        begin_suppress_tokens=[ids("Ġ"), eot],
        suppress_tokens=[],
    )
    torch.manual_seed(seed)
    with _build_device():
        model = WhisperForConditionalGeneration(config).eval()
    shape_whisper_decoder(model, [ids(t) for t in [*"abcdefghijklmnopqrstuvwxyz", "Ġ"]], eot, text_tokens)
    model.to("cpu", torch.float16)
    log.info("Whisper large-v3-turbo architecture: %.0fM parameters", _n_params(model) / 1e6)
    generation_config = builders.whisper_generation_config(
        tokenizer,
        languages=builders.whisper_languages(),
        multilingual=True,
        suppress_tokens=[],
        alignment_heads=WHISPER_TURBO_ALIGNMENT_HEADS,
    )
    return builders.save_whisper(directory, model, tokenizer, generation_config)


#: <|startoftranscript|> <|lang|> <|task|> <|notimestamps|> precede the text.
WHISPER_PREFIX_TOKENS = 4


def shape_whisper_decoder(model, letter_ids: list[int], eot: int, text_tokens: int | None) -> None:
    """Make a random Whisper "say" letters, and <|endoftext|> after ``text_tokens`` text tokens.

    * Letters: their output-projection rows are lengthened (as ``devkit.builders`` does for the
      tiny Whisper), so they win the argmax over the other 51k random rows.
    * End: the decoder's learned position embeddings from the position that predicts the
      ``text_tokens + 1``-th text token on are set to a long vector along <|endoftext|>'s output row.
      Pre-LayerNorm layers only add bounded terms to the residual stream, so the final hidden state
      points along that row and <|endoftext|> wins at exactly that position, for every beam.
      ``text_tokens=None`` restores small random rows there (decode to the token budget).
    """
    with torch.no_grad():
        proj = model.proj_out.weight  # tied to the decoder's token embeddings, as in Whisper
        for token in letter_ids:
            if token != eot:
                proj[token] *= 8.0
    restore_whisper_length(model, text_tokens)


def restore_whisper_length(model, text_tokens: int | None) -> None:
    """Re-shape an already loaded random Whisper's end position (``None``: never end)."""
    with torch.no_grad():
        positions = model.model.decoder.embed_positions.weight
        if text_tokens is None:
            start = WHISPER_PREFIX_TOKENS - 1
            generator = torch.Generator("cpu").manual_seed(0)
            noise = torch.randn(positions[start:].shape, generator=generator) * 0.02
            positions[start:] = noise.to(positions.device, positions.dtype)
            return
        eot = int(model.config.eos_token_id)
        direction = model.proj_out.weight[eot].float()
        direction = direction / direction.norm()
        start = WHISPER_PREFIX_TOKENS + text_tokens - 1
        positions[start:] = (direction * 100.0).to(positions.dtype)


def build_clip_l14(directory: Path, *, seed: int = 0) -> Path:
    """CLIP ViT-L/14's architecture (428M: vision 1024×24 layers, patch 14, 224 px; text 768×12;
    projection 768) with random weights and a 224 px processor, saved in fp16."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    config = CLIPConfig(
        text_config=builders.tiny_clip_text_config(**CLIP_L14_TEXT).to_dict(),
        vision_config=builders.tiny_clip_vision_config(**CLIP_L14_VISION).to_dict(),
        projection_dim=768,
    )
    torch.manual_seed(seed)
    with _build_device():
        model = CLIPModel(config).eval()
    model.to("cpu", torch.float16)
    log.info("CLIP ViT-L/14 architecture: %.0fM parameters", _n_params(model) / 1e6)
    model.save_pretrained(directory)
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_word_tokenizer(directory / "_tokenizer_src"))
    image_processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


# ================================================================================================
# The cache
# ================================================================================================
REAL_BUILDERS = {
    "sd15": build_sd15,
    "whisper-large-v3-turbo": build_whisper_turbo,
    "clip-vit-large-patch14": build_clip_l14,
}


def ensure_real_models(cache_dir: Path, names=tuple(REAL_BUILDERS)) -> dict[str, Path]:
    """Build (once) the real-size random-weight models into ``cache_dir``; return their directories."""
    cache_dir = Path(cache_dir)
    out: dict[str, Path] = {}
    for name in names:
        directory = cache_dir / name
        marker = directory / "voxcanvas-bench.json"
        if marker.exists() and json.loads(marker.read_text()).get("version") == BUILD_VERSION:
            out[name] = directory
            continue
        if directory.exists():
            import shutil

            shutil.rmtree(directory)
        started = time.perf_counter()
        log.info("building %s (random weights, real size) in %s", name, directory)
        REAL_BUILDERS[name](directory)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        seconds = time.perf_counter() - started
        marker.write_text(json.dumps({"version": BUILD_VERSION, "build_s": round(seconds, 1)}))
        log.info("built %s in %.1f s", name, seconds)
        out[name] = directory
    return out


def ensure_tiny_models(
    cache_dir: Path, names=("sd15", "clip-vit-large-patch14", "whisper-large-v3-turbo")
) -> dict[str, Path]:
    """The test suite's tiny models (``devkit.builders``), built into ``cache_dir``. A name not
    built maps to a directory that does not exist (for settings that never load it)."""
    cache_dir = Path(cache_dir)
    makers = {
        "sd15": lambda d: builders.build_tiny_stable_diffusion(d),
        "clip-vit-large-patch14": lambda d: builders.build_tiny_clip(d),
        "whisper-large-v3-turbo": lambda d: builders.build_tiny_whisper(d),
    }
    out = {}
    for name, maker in makers.items():
        if name not in names:
            out[name] = cache_dir / f"not-built-{name}"
            continue
        directory = cache_dir / f"tiny-{name}"
        marker = directory / "voxcanvas-bench.json"
        if not marker.exists():
            maker(directory)
            marker.write_text(json.dumps({"version": BUILD_VERSION}))
        out[name] = directory
    return out
