"""/compose: music from a description (MusicGen). Thin: parse, validate, acknowledge within 3 s;
the runner queues it with the pictures (same caps, progress, Cancel and errors)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import _
from pipeline import limits

if TYPE_CHECKING:
    from bot.client import VoxCanvasBot

log = logging.getLogger(__name__)


class Compose(commands.Cog):
    def __init__(self, bot: VoxCanvasBot) -> None:
        self.bot = bot

    @app_commands.command(name="compose", description="Compose a piece of music from a description")
    @app_commands.describe(
        description="What should it sound like? (mood, genre, instruments, tempo…)",
        seconds=f"Length in seconds ({limits.MIN_COMPOSE_SECONDS} – {limits.MAX_MUSIC_SECONDS}); "
        "default: the server's setting",
    )
    async def compose(
        self,
        interaction: discord.Interaction,
        description: app_commands.Range[str, 1, limits.MAX_MUSIC_PROMPT_CHARS],
        seconds: app_commands.Range[int, limits.MIN_COMPOSE_SECONDS, limits.MAX_MUSIC_SECONDS] | None = None,
    ) -> None:
        if not description.strip():
            await interaction.response.send_message(
                _("🚫 The description is empty — tell me what the music should sound like."), ephemeral=True
            )
            return
        length = float(seconds) if seconds is not None else self.bot.settings.MUSIC_SECONDS
        await self.bot.runner.start_compose(interaction, description, length)


async def setup(bot: VoxCanvasBot) -> None:
    await bot.add_cog(Compose(bot))
