"""/preferences: a user's personal defaults (style, aspect, candidates, private replies, language),
stored per user (:class:`bot.guilds.Preferences`). Style, aspect and candidates fill in what a new
/imagine or voice note leaves empty (before the server's defaults: :func:`bot.guilds.with_defaults`);
private replies make slash commands' results ephemeral and the language is the language of the
bot's replies (:mod:`bot.i18n`) — both applied in :mod:`bot.runner`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import i18n
from bot.guilds import Preferences
from pipeline.errors import BadRequest
from pipeline.families import ASPECTS
from pipeline.styles import check_style

if TYPE_CHECKING:
    from bot.client import VoxCanvasBot

log = logging.getLogger(__name__)

ASPECT_CHOICES = [app_commands.Choice(name=aspect, value=aspect) for aspect in ASPECTS]
LANGUAGES = i18n.LANGUAGES  # the languages the bot ships catalogs for
LANGUAGE_CHOICES = [app_commands.Choice(name=name, value=code) for code, name in LANGUAGES.items()]


def describe(prefs: Preferences) -> str:
    _ = i18n._
    language = LANGUAGES.get(prefs.language or "") or _("— (your Discord language)")
    return "\n".join(
        [
            _("**Your VoxCanvas preferences**"),
            _("• Style: {style} (a server’s own style applies in that server)").format(
                style=prefs.style or _("— (picked from your words)")
            ),
            _("• Aspect: {aspect}").format(aspect=prefs.aspect or _("— (the model’s native frame)")),
            _("• Candidates: {candidates}").format(candidates=prefs.candidates or "—"),
            _("• Private replies: {state}").format(state=_("on") if prefs.private else _("off")),
            _("• Language of replies: {language}").format(language=language),
        ]
    )


class UserPreferences(commands.GroupCog, group_name="preferences", group_description="Your personal defaults"):
    def __init__(self, bot: VoxCanvasBot) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(name="show", description="Show your preferences")
    async def show(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        prefs = await self.bot.runner.guilds.preferences(interaction.user.id)
        await interaction.followup.send(describe(prefs), ephemeral=True)

    @app_commands.command(name="set", description="Set your defaults (options left empty stay as they are)")
    @app_commands.describe(
        style="Your usual style",
        aspect="Your usual frame",
        candidates="Pictures per job (1 – 4)",
        private="Replies only you can see",
        language="The language of the bot's replies (default: your Discord language)",
    )
    @app_commands.choices(aspect=ASPECT_CHOICES, language=LANGUAGE_CHOICES)
    async def set_(
        self,
        interaction: discord.Interaction,
        style: app_commands.Range[str, 1, 40] | None = None,
        aspect: app_commands.Choice[str] | None = None,
        candidates: app_commands.Range[int, 1, 4] | None = None,
        private: bool | None = None,
        language: app_commands.Choice[str] | None = None,
    ) -> None:
        guilds = self.bot.runner.guilds
        changes: dict[str, object] = {}
        if style is not None:  # a built-in or file style, or one of this server's own
            try:
                with await guilds.style_context(interaction.guild_id):
                    changes["style"] = check_style(style)
            except BadRequest as exc:
                await interaction.response.send_message(f"🚫 {i18n._(exc.user_message)}", ephemeral=True)
                return
        await interaction.response.defer(ephemeral=True, thinking=True)
        prefs = await guilds.preferences(interaction.user.id)
        if aspect is not None:
            changes["aspect"] = aspect.value
        if candidates is not None:
            changes["candidates"] = candidates
        if private is not None:
            changes["private"] = private
        if language is not None:
            changes["language"] = language.value
        prefs = await guilds.set_preferences(interaction.user.id, prefs.model_copy(update=changes))
        if language is not None:
            i18n.use(language.value)  # answered in the language just chosen
        await interaction.followup.send(i18n._("✅ Saved.") + "\n" + describe(prefs), ephemeral=True)

    @set_.autocomplete("style")
    async def _style_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = await self.bot.runner.guilds.style_choices(interaction.guild_id, current)
        return [app_commands.Choice(name=n, value=n) for n in names]

    @app_commands.command(name="clear", description="Forget all your preferences")
    async def clear(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        prefs = await self.bot.runner.guilds.set_preferences(interaction.user.id, Preferences())
        i18n.use(interaction.locale)  # no preference any more: the Discord client's language
        await interaction.followup.send(i18n._("✅ Cleared.") + "\n" + describe(prefs), ephemeral=True)


async def setup(bot: VoxCanvasBot) -> None:
    await bot.add_cog(UserPreferences(bot))
