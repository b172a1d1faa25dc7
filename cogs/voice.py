"""Voice notes (and audio attachments) in guild channels the bot can read and in DMs.

Too long or too large → refused from the attachment's metadata, before anything is downloaded.
Otherwise handed to the job runner, the same admission path as ``/imagine``: it admits the job (or
refuses in a reply), acknowledges at once (a 👂 reaction and a "Listening…" reply, which then shows
the progress and finally becomes the result), downloads the note and runs it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from pipeline.audio import audio_too_long, is_too_long
from pipeline.errors import EmptyAudio

if TYPE_CHECKING:
    from bot.client import VoxCanvasBot

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".ogg", ".oga", ".opus", ".wav", ".flac", ".mp3", ".m4a", ".aac", ".webm")


def is_audio(attachment: discord.Attachment) -> bool:
    if attachment.is_voice_message():
        return True
    content_type = (attachment.content_type or "").lower()
    return content_type.startswith("audio/") or attachment.filename.lower().endswith(AUDIO_EXTENSIONS)


class Voice(commands.Cog):
    def __init__(self, bot: VoxCanvasBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.webhook_id is not None:
            return
        audio = next((a for a in message.attachments if is_audio(a)), None)
        if audio is None:
            return
        try:
            await self._handle(message, audio)
        except Exception:
            log.exception("voice note %s in channel %s failed", message.id, message.channel.id)
            try:
                await message.reply(
                    "😵 Sorry — something broke on my side while reading that voice note. Please try again.",
                    mention_author=False,
                )
            except discord.HTTPException:
                pass

    async def _handle(self, message: discord.Message, attachment: discord.Attachment) -> None:
        settings = self.bot.settings
        limit = settings.MAX_AUDIO_SECONDS
        if attachment.duration is not None and is_too_long(attachment.duration, limit):
            refusal = audio_too_long(attachment.duration, limit)
            await message.reply(f"⏱️ {refusal} Try a shorter voice note with just your idea.", mention_author=False)
            return
        if attachment.size == 0:
            await message.reply(f"🔇 {EmptyAudio()}", mention_author=False)
            return
        if attachment.size > settings.MAX_AUDIO_BYTES:
            await message.reply(
                f"📦 That file is {attachment.size / 1e6:.1f} MB; I can take up to "
                f"{settings.MAX_AUDIO_BYTES / 1e6:.0f} MB of audio.",
                mention_author=False,
            )
            return
        await self.bot.runner.start_voice(message, attachment)


async def setup(bot: VoxCanvasBot) -> None:
    await bot.add_cog(Voice(bot))
