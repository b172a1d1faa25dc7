"""Every bound of the engine, defined once.

Settings validation, the renderer, the studio, the Discord cogs and the CLI all read these, so a
configuration that validates at start-up is one the renderer accepts, and a slash-command option
range is the same range the engine enforces.
"""

from __future__ import annotations

from typing import Final

# --- rendering ---------------------------------------------------------------------------------
MIN_SIDE: Final = 64
MAX_SIDE: Final = 2048  # SDXL/FLUX at 21:9 are 1536 wide; SD 1.5 at 2048 px is slow but bounded
SIDE_MULTIPLE: Final = 8  # the VAE downsamples by 8
MIN_STEPS: Final = 1
MAX_STEPS: Final = 100
MIN_GUIDANCE: Final = 0.0
MAX_GUIDANCE: Final = 30.0
MAX_SEED: Final = 2**32 - 1
MAX_CANDIDATES: Final = 4  # pictures per job (/imagine count:, CANDIDATES): one 2×2 grid
MAX_PROMPT_CHARS: Final = 2000  # a diffusion prompt (the director's output, or a correction)
MAX_IDEA_CHARS: Final = 1000  # what a user types as their idea
MAX_NEGATIVE_PROMPT_CHARS: Final = 500  # what a user types to keep out of the picture
MIN_STRENGTH: Final = 0.05  # image-to-image: below this the picture would not change
MAX_STRENGTH: Final = 1.0
DEFAULT_STRENGTH: Final = 0.75
UPSCALE_FACTOR: Final = 2  # U buttons: Lanczos ×2, then image-to-image at UPSCALE_STRENGTH ("hires fix")
UPSCALE_STRENGTH: Final = 0.3
UPSCALER_TILE: Final = 128  # UPSCALER_MODEL (the SD x4 upscaler): input tiles of 128 px, 512 px out
UPSCALER_STEPS: Final = 20  # its denoising steps (diffusers' default of 75 is slow for a button)
UPSCALER_GUIDANCE: Final = 9.0  # its classifier-free guidance (diffusers' default)
VARY_STRENGTH: Final = 0.6  # V buttons: a variation of one candidate (image-to-image from it)
MIN_LORA_WEIGHT: Final = -2.0  # a LoRA's weight (negative weights push away from its concept)
MAX_LORA_WEIGHT: Final = 2.0
DEFAULT_LORA_WEIGHT: Final = 0.8
MAX_LORAS: Final = 4  # LoRAs in one picture

# --- music (MusicGen soundtracks) -------------------------------------------------------------
MIN_MUSIC_SECONDS: Final = 1
MAX_MUSIC_SECONDS: Final = 30  # MusicGen's training length; longer needs windowed continuation
MIN_COMPOSE_SECONDS: Final = 5  # the /compose option's lower bound (shorter is hardly a soundtrack)
MAX_MUSIC_PROMPT_CHARS: Final = 1000
MIN_MUSIC_GUIDANCE: Final = 1.0
MAX_MUSIC_GUIDANCE: Final = 10.0
DEFAULT_MUSIC_GUIDANCE: Final = 3.0  # MusicGen's own default (classifier-free guidance)
MUSIC_ENCODE_TIMEOUT_S: Final = 60.0  # ffmpeg encoding 30 s of audio takes well under a second

# --- self-correction ---------------------------------------------------------------------------
# SD 1.x's bump; every family has its own (pipeline.families: a Turbo model at guidance 0 gets +0).
GUIDANCE_STEP: Final = 1.5  # each correction round: guidance +1.5 (7.5 → 9.0)
STEPS_STEP: Final = 5  # each correction round: steps +5 (25 → 30)

# --- input images (init images for image-to-image) ---------------------------------------------
MAX_IMAGE_BYTES: Final = 10 * 1024 * 1024
MAX_IMAGE_PIXELS: Final = 4096 * 4096  # "16 megapixels"

# --- audio -------------------------------------------------------------------------------------
MAX_AUDIO_BYTES: Final = 25 * 1024 * 1024  # default of the MAX_AUDIO_BYTES setting
# What a voice note can be, read from the header before anything is decoded. Discord's voice messages
# are 48 kHz mono Opus; phones record 8-48 kHz, mono or stereo. Anything else is refused, so decoding
# never holds more than rate x channels of one block (a FLAC of silence at 655,350 Hz x 8 channels is
# 0.7 MB on the wire and 2.5 GB as floats).
MIN_AUDIO_SAMPLE_RATE: Final = 8_000
MAX_AUDIO_SAMPLE_RATE: Final = 48_000
MAX_AUDIO_CHANNELS: Final = 2
AUDIO_DECODE_BLOCK_FRAMES: Final = 32_768  # frames decoded (then mixed down and resampled) at a time
MAX_CONCURRENT_DECODES: Final = 2  # decodes in flight per process; the rest wait their turn

# --- Discord -----------------------------------------------------------------------------------
INTERACTION_TOKEN_LIFETIME_S: Final = 15 * 60  # an interaction token may be used for 15 minutes
DISCORD_CONNECT_FIRST_RETRY_S: Final = 1.0  # start-up: Discord unreachable → retry after 1, 2, 4 … s
DISCORD_CONNECT_MAX_RETRY_S: Final = 15.0  # … at most this far apart
DISCORD_CONNECT_ATTEMPT_S: Final = 10.0  # one reachability try

# --- what a language model writes (a director's Scene, a critic's QAReport) --------------------
# Text longer than these is cut at a word boundary; lists longer than these are refused by the
# Scene and cut by a director's repair (pipeline.scene.SceneDraft).
MAX_TITLE_CHARS: Final = 80
MAX_SCENE_DESCRIPTION_CHARS: Final = 1000  # "two or three sentences"
MAX_ELEMENT_CHARS: Final = 80  # one noun phrase: a scene element, or a critic's missing element
MIN_ELEMENTS: Final = 1
MAX_ELEMENTS: Final = 8
MAX_TAG_CHARS: Final = 32
MIN_TAGS: Final = 5
MAX_TAGS: Final = 10
MIN_PALETTE_COLOURS: Final = 3
MAX_PALETTE_COLOURS: Final = 6
MAX_CRITIC_NOTES_CHARS: Final = 1000  # "one short sentence" (the CLIP critic lists every element)

# --- delivery ----------------------------------------------------------------------------------
RESULT_SAVE_ATTEMPTS: Final = 2  # saving a finished picture is tried twice; then it is delivered from memory
RESULT_SAVE_RETRY_DELAY_S: Final = 0.5  # pause between the two tries (a full disk may get room)
