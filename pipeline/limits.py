"""Every bound of the engine, defined once.

Settings validation, the renderer, the studio, the Discord cogs and the CLI all read these, so a
configuration that validates at start-up is one the renderer accepts, and a slash-command option
range is the same range the engine enforces.
"""

from __future__ import annotations

from typing import Final

# --- rendering ---------------------------------------------------------------------------------
MIN_SIDE: Final = 64
MAX_SIDE: Final = 1024
SIDE_MULTIPLE: Final = 8  # the VAE downsamples by 8
MIN_STEPS: Final = 1
MAX_STEPS: Final = 100
MIN_GUIDANCE: Final = 0.0
MAX_GUIDANCE: Final = 30.0
MAX_SEED: Final = 2**32 - 1
MAX_PROMPT_CHARS: Final = 2000  # a diffusion prompt (the director's output, or a correction)
MAX_IDEA_CHARS: Final = 1000  # what a user types as their idea
MAX_NEGATIVE_PROMPT_CHARS: Final = 500  # what a user types to keep out of the picture
MIN_STRENGTH: Final = 0.05  # image-to-image: below this the picture would not change
MAX_STRENGTH: Final = 1.0
DEFAULT_STRENGTH: Final = 0.75

# --- self-correction ---------------------------------------------------------------------------
GUIDANCE_STEP: Final = 1.5  # each correction round: guidance +1.5 (7.5 → 9.0)
STEPS_STEP: Final = 5  # each correction round: steps +5 (25 → 30)

# --- input images (init images for image-to-image) ---------------------------------------------
MAX_IMAGE_BYTES: Final = 10 * 1024 * 1024
MAX_IMAGE_PIXELS: Final = 4096 * 4096  # "16 megapixels"

# --- audio -------------------------------------------------------------------------------------
MAX_AUDIO_BYTES: Final = 25 * 1024 * 1024  # default of the MAX_AUDIO_BYTES setting

# --- Discord -----------------------------------------------------------------------------------
INTERACTION_TOKEN_LIFETIME_S: Final = 15 * 60  # an interaction token may be used for 15 minutes
