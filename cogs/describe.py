"""/describe and the message context menu "Describe image": an attached image → 1–4 candidate
prompts (Gemini vision, or the local captioner) and its palette, with "Imagine 1–4" buttons that
start a job from a suggestion. Acknowledged (deferred) before the image is downloaded."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import N_, _
from bot.runner import download_init_image
from bot.views import suggestion_view
from cogs.imagine import _image_problem
from pipeline import limits
from pipeline.errors import VoxCanvasError
from pipeline.palette import swatch_png

if TYPE_CHECKING:
    from bot.client import VoxCanvasBot
    from pipeline.describe import Described

log = logging.getLogger(__name__)

PALETTE_NAME = "palette.png"
NO_IMAGE = N_("🚫 That message has no PNG, JPEG or WebP image to describe.")


def describe_embed(described: Described) -> discord.Embed:
    """The suggestions, numbered (the Imagine buttons read them back from here), and the palette."""
    embed = discord.Embed(title=_("Prompts for this picture"), colour=0x5865F2)
    for number, prompt in enumerate(described.prompts, start=1):
        embed.add_field(name=str(number), value=prompt[:1024], inline=False)
    embed.add_field(name=_("Palette"), value=" ".join(f"`{c}`" for c in described.palette), inline=False)
    source = "Gemini" if described.source == "gemini" else _("the local captioner")
    if described.fallback:
        source += _(" (Gemini was unavailable)")
    embed.set_footer(text=_("Described by {source}").format(source=source))
    embed.set_image(url=f"attachment://{PALETTE_NAME}")
    return embed


class Describe(commands.Cog):
    def __init__(self, bot: VoxCanvasBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Describe image", callback=self.describe_message)
        bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(name="describe", description="Suggest prompts (and a palette) for an image")
    @app_commands.describe(image="The picture to describe", count=f"How many prompts (1 – {limits.MAX_CANDIDATES})")
    async def describe(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        count: app_commands.Range[int, 1, limits.MAX_CANDIDATES] = limits.MAX_CANDIDATES,
    ) -> None:
        await self._describe(interaction, image, count)

    async def describe_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        image = next((a for a in message.attachments if _image_problem(a) is None), None)
        if image is None:
            await interaction.response.send_message(_(NO_IMAGE), ephemeral=True)
            return
        await self._describe(interaction, image, limits.MAX_CANDIDATES)

    async def _describe(self, interaction: discord.Interaction, image: discord.Attachment, count: int) -> None:
        problem = _image_problem(image)  # from the metadata: nothing downloaded yet
        if problem:
            await interaction.response.send_message("🚫 " + _(problem), ephemeral=True)
            return
        await interaction.response.defer(thinking=True)
        try:
            data = await download_init_image(image)
            described = await self.bot.studio.describe(data, count)
        except VoxCanvasError as exc:
            await interaction.edit_original_response(content="⚠️ " + _(exc.user_message))
            return
        except Exception:
            log.exception("describing attachment %s failed", image.id)
            await interaction.edit_original_response(content=_("😵 Sorry — I couldn't describe that image."))
            return
        swatch = discord.File(io.BytesIO(swatch_png(described.palette)), filename=PALETTE_NAME)
        await interaction.edit_original_response(
            content=None,
            embed=describe_embed(described),
            attachments=[swatch],
            view=suggestion_view(len(described.prompts)),
        )


async def setup(bot: VoxCanvasBot) -> None:
    await bot.add_cog(Describe(bot))
