"""Discord's limits, defined once: what one message, its embed and its files may hold.

From Discord's API documentation (message resource, "Embed Limits"; uploads: "Uploading Files").
:mod:`bot.render` fits everything it builds inside these; the surfaces pick the upload limit for
where a message goes (:func:`bot.render.upload_limit`).
"""

from __future__ import annotations

from typing import Final

MESSAGE_CONTENT_CHARS: Final = 2000

# --- one embed (title, description, field names and values, footer text and author name count
# --- towards the total, summed over every embed of a message) ---------------------------------
EMBED_TOTAL_CHARS: Final = 6000
EMBED_TITLE_CHARS: Final = 256
EMBED_DESCRIPTION_CHARS: Final = 4096
EMBED_FIELDS: Final = 25
EMBED_FIELD_NAME_CHARS: Final = 256
EMBED_FIELD_VALUE_CHARS: Final = 1024
EMBED_FOOTER_CHARS: Final = 2048
EMBED_AUTHOR_NAME_CHARS: Final = 256

# --- files -------------------------------------------------------------------------------------
#: Bytes of files one message may carry, by default: 10 MiB for bots since 2025 (and in DMs).
#: discord.py's ``Guild.filesize_limit`` may still say 25 MiB for an unboosted guild.
DEFAULT_UPLOAD_BYTES: Final = 10 * 1024 * 1024
#: From this boost tier on, a guild's own (larger) limit applies: 50 MiB at tier 2, 100 MiB at 3.
BOOSTED_PREMIUM_TIER: Final = 2
