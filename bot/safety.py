"""The NSFW policy: what happens to a picture the model's safety checker flags.

The studio keeps a flagged picture as rendered only when its job says so (``Job.keep_flagged``);
otherwise it is blacked out before the critic, the store or anyone sees it. A job keeps flagged
pictures when it was asked for in a channel Discord marks age-restricted of a server whose
``/settings nsfw`` is ``spoiler``: they are then posted behind a spoiler (``SPOILER_`` file names,
no embed image — Discord never blurs an embed's image). Everywhere else (other channels, DMs: the
strictest) a flagged picture is withheld with a friendly message. Start images of image-to-image
jobs are checked by the same checker and refused (:class:`~pipeline.errors.UnsafeImage`). Every
withheld or spoilered picture and every refusal is logged to the server's moderation log channel:
who, which rule, the job id — never the image.
"""

from __future__ import annotations

import logging
from typing import Any

import discord

from pipeline.studio import Result

from .guilds import GuildConfig
from .render import Upload

log = logging.getLogger(__name__)

SPOILER_PREFIX = "SPOILER_"  # Discord blurs an attachment whose file name starts with it
SAFETY_RULE = "safety checker"


def age_restricted(channel: Any) -> bool:
    """Discord marks ``channel`` age-restricted (a text channel, thread or forum flagged NSFW);
    a DM or an unknown channel is not (the strictest policy applies there)."""
    is_nsfw = getattr(channel, "is_nsfw", None)
    try:
        return bool(is_nsfw()) if callable(is_nsfw) else False
    except Exception:  # a partial channel that does not know
        return False


def keeps_flagged(config: GuildConfig, *, guild_id: int | None, age_restricted: bool) -> bool:
    """Whether a job asked for here shows flagged pictures behind a spoiler (else they are withheld)."""
    return guild_id is not None and age_restricted and config.nsfw == "spoiler"


def withheld_all(result: Result) -> bool:
    """Every picture the reply would show was flagged and blacked out: there is nothing to show."""
    if result.flagged_kept or not result.flagged:
        return False
    if result.candidates:
        return all(c.nsfw for c in result.candidates)
    return result.best.nsfw


def spoilered(files: list[Upload]) -> list[Upload]:
    """``files`` renamed so Discord shows them behind a spoiler."""
    return [f if f.filename.startswith(SPOILER_PREFIX) else Upload(SPOILER_PREFIX + f.filename, f.data) for f in files]


def without_image(embed: discord.Embed) -> discord.Embed:
    """``embed`` without its image (an embed image is never hidden behind a spoiler)."""
    embed = embed.copy()
    embed.set_image(url=None)
    return embed


def flagged_count(result: Result) -> int:
    if result.candidates:
        return sum(1 for c in result.candidates if c.nsfw)
    return 1 if result.best.nsfw else 0


def modlog_flagged(result: Result, *, user_id: int, channel_id: int) -> str:
    """The moderation log's line for a job whose pictures were flagged (no image, no prompt)."""
    count = flagged_count(result)
    pictures = f"{count} picture{'s' if count != 1 else ''}"
    action = "Showed behind a spoiler" if result.flagged_kept else "Withheld"
    return (
        f"🛡️ {action} {pictures} of job `{result.job_id}` from <@{user_id}> in <#{channel_id}>: "
        f"the rule “{SAFETY_RULE}” flagged {'them' if count != 1 else 'it'}."
    )


def modlog_refused(job_id: str, *, user_id: int, channel_id: int) -> str:
    """The moderation log's line for a start image the safety checker refused."""
    return (
        f"🛡️ Refused job `{job_id}` from <@{user_id}> in <#{channel_id}>: the start image broke the rule "
        f"“{SAFETY_RULE}”."
    )


__all__ = [
    "SAFETY_RULE",
    "SPOILER_PREFIX",
    "age_restricted",
    "flagged_count",
    "keeps_flagged",
    "modlog_flagged",
    "modlog_refused",
    "spoilered",
    "withheld_all",
    "without_image",
]
