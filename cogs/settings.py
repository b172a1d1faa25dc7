"""/settings (a server's admins shape the bot for their server) and /stats.

Only members with Manage Server: ``default_permissions`` makes Discord hide the commands from
everyone else, and every call is checked here as well (a stale client, a changed role). Every
answer is private; each change is stored at once (:class:`bot.guilds.Guilds`) and applies to the
next job.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.guilds import GuildConfig, utc_day
from bot.i18n import _
from pipeline.errors import BadRequest
from pipeline.moderation import MAX_GUILD_RULES, BadRule, guild_rule
from pipeline.registry import model_names
from pipeline.styles import (
    MAX_SERVER_STYLES,
    MAX_STYLE_DESCRIPTION_CHARS,
    check_style,
    server_style,
    server_styles,
)

if TYPE_CHECKING:
    from bot.client import VoxCanvasBot

log = logging.getLogger(__name__)

CHANNEL_ACTIONS = [app_commands.Choice(name=n, value=n) for n in ("add", "remove", "all")]
LIST_ACTIONS = [app_commands.Choice(name=n, value=n) for n in ("add", "remove", "clear")]
NSFW_CHOICES = [
    app_commands.Choice(name="withhold flagged pictures everywhere", value="withhold"),
    app_commands.Choice(name="spoiler them in age-restricted channels", value="spoiler"),
]


def _admin_only(interaction: discord.Interaction) -> bool:
    if interaction.guild is None:
        raise app_commands.NoPrivateMessage()
    if not interaction.permissions.manage_guild:
        raise app_commands.MissingPermissions(["manage_guild"])
    return True


def describe(config: GuildConfig) -> str:
    channels = ", ".join(f"<#{c}>" for c in config.allowed_channels) or _("all channels")
    nsfw = _("spoiler in age-restricted channels") if config.nsfw == "spoiler" else _("withhold")
    modlog = f"<#{config.modlog_channel}>" if config.modlog_channel else _("off")
    return "\n".join(
        [
            _("**This server's VoxCanvas settings**"),
            _("• Channels: {channels}").format(channels=channels),
            _("• Voice notes: {state}").format(state=_("on") if config.voice_notes else _("off")),
            _("• Default style: {style} · model: {model} · candidates: {candidates}").format(
                style=config.style or "—", model=config.model or "—", candidates=config.candidates or "—"
            ),
            _("• Daily quota per member: {quota} · cooldown: {cooldown} s").format(
                quota=config.daily_quota or _("no limit"), cooldown=config.cooldown_s
            ),
            _("• NSFW: {policy}").format(policy=nsfw),
            _("• Blocklist additions: {count} (plus the default list)").format(count=len(config.blocklist)),
            _("• Moderation log: {channel}").format(channel=modlog),
        ]
    )


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class ServerSettings(commands.GroupCog, group_name="settings", group_description="Shape VoxCanvas for this server"):
    def __init__(self, bot: VoxCanvasBot) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return _admin_only(interaction)

    async def _change(self, interaction: discord.Interaction, **changes: object) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild is not None  # guild_only, checked
        guilds = self.bot.runner.guilds
        config = (await guilds.get(interaction.guild.id)).model_copy(update=changes)
        config = await guilds.update(interaction.guild.id, config, by=interaction.user.id)
        log.info("server %d: settings changed by %d: %s", interaction.guild.id, interaction.user.id, sorted(changes))
        await interaction.followup.send(_("✅ Saved.") + "\n" + describe(config), ephemeral=True)

    async def _config(self, interaction: discord.Interaction) -> GuildConfig:
        assert interaction.guild is not None
        return await self.bot.runner.guilds.get(interaction.guild.id)

    @app_commands.command(name="show", description="Show this server's settings")
    async def show(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.followup.send(describe(await self._config(interaction)), ephemeral=True)

    @app_commands.command(name="channels", description="Where the bot works: add or remove a channel, or all")
    @app_commands.describe(action="add / remove a channel, or all channels", channel="The channel")
    @app_commands.choices(action=CHANNEL_ACTIONS)
    async def channels(
        self,
        interaction: discord.Interaction,
        action: app_commands.Choice[str],
        channel: discord.TextChannel | None = None,
    ) -> None:
        allowed = list((await self._config(interaction)).allowed_channels)
        if action.value == "all":
            allowed = []
        elif channel is None:
            await interaction.response.send_message(_("🚫 Pick the channel to add or remove."), ephemeral=True)
            return
        elif action.value == "add" and channel.id not in allowed:
            allowed.append(channel.id)
        elif action.value == "remove" and channel.id in allowed:
            allowed.remove(channel.id)
        await self._change(interaction, allowed_channels=allowed)

    @app_commands.command(name="voice", description="Turn voice notes on or off in this server")
    @app_commands.describe(enabled="On: members may send voice notes to be drawn")
    async def voice(self, interaction: discord.Interaction, enabled: bool) -> None:
        await self._change(interaction, voice_notes=enabled)

    @app_commands.command(name="defaults", description="Default style, model and candidates for this server")
    @app_commands.describe(
        style="The style when a member names none",
        model="The model to draw with when a member names none",
        candidates="Pictures per job (1 – 4)",
    )
    async def defaults(
        self,
        interaction: discord.Interaction,
        style: app_commands.Range[str, 1, 40] | None = None,
        model: app_commands.Range[str, 1, 40] | None = None,
        candidates: app_commands.Range[int, 1, 4] | None = None,
    ) -> None:
        if model is not None and model not in model_names(self.bot.settings):
            known = ", ".join(model_names(self.bot.settings))
            await interaction.response.send_message(
                _("🚫 Unknown model. Known: {known}").format(known=known), ephemeral=True
            )
            return
        if style is not None:
            assert interaction.guild is not None
            own = await self.bot.runner.guilds.styles(interaction.guild.id)
            with server_styles(own):
                try:
                    style = check_style(style)
                except BadRequest as exc:
                    await interaction.response.send_message(f"🚫 {_(exc.user_message)}", ephemeral=True)
                    return
        await self._change(interaction, style=style, model=model, candidates=candidates)

    @defaults.autocomplete("style")
    async def _defaults_style_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = await self.bot.runner.guilds.style_choices(interaction.guild_id, current)
        return [app_commands.Choice(name=n, value=n) for n in names]

    @app_commands.command(name="quota", description="Daily pictures per member (0: no limit) and a cooldown")
    @app_commands.describe(per_member="Pictures per member per UTC day; 0 = no limit", cooldown="Seconds between jobs")
    async def quota(
        self,
        interaction: discord.Interaction,
        per_member: app_commands.Range[int, 0, 10_000],
        cooldown: app_commands.Range[int, 0, 3600] = 0,
    ) -> None:
        await self._change(interaction, daily_quota=per_member, cooldown_s=cooldown)

    @app_commands.command(name="nsfw", description="What happens to a picture the safety checker flags")
    @app_commands.describe(policy="Withhold everywhere, or spoiler in age-restricted channels")
    @app_commands.choices(policy=NSFW_CHOICES)
    async def nsfw(self, interaction: discord.Interaction, policy: app_commands.Choice[str]) -> None:
        await self._change(interaction, nsfw=policy.value)

    @app_commands.command(name="blocklist", description="Add or remove a blocked word, phrase or re:regex")
    @app_commands.describe(
        action="Add or remove an entry", entry="A word or phrase (end with * for any ending), or re:<regex>"
    )
    @app_commands.choices(action=LIST_ACTIONS)
    async def blocklist(
        self,
        interaction: discord.Interaction,
        action: app_commands.Choice[str],
        entry: app_commands.Range[str, 1, 100] | None = None,
    ) -> None:
        entries = list((await self._config(interaction)).blocklist)
        if action.value == "clear":
            entries = []
        elif entry is None:
            await interaction.response.send_message(_("🚫 Give the entry to add or remove."), ephemeral=True)
            return
        elif action.value == "add":
            try:
                guild_rule(len(entries) + 1, entry)
            except BadRule as exc:
                await interaction.response.send_message(f"🚫 {exc}", ephemeral=True)
                return
            if len(entries) >= MAX_GUILD_RULES:
                await interaction.response.send_message(
                    _("🚫 At most {count} entries.").format(count=MAX_GUILD_RULES), ephemeral=True
                )
                return
            if entry.strip() not in entries:
                entries.append(entry.strip())
        elif entry.strip() in entries:
            entries.remove(entry.strip())
        await self._change(interaction, blocklist=entries)

    # /settings style add|remove|list: the server's own styles (stored per server, migration 5).
    style = app_commands.Group(name="style", description="This server's own styles for /imagine style:")

    @style.command(name="add", description="Add (or replace) a style of this server")
    @app_commands.describe(
        name="The style's name (lowercase letters, digits, spaces)",
        description="One line for people and the director",
        keywords="What the prompt should say, separated by commas (the first is the medium)",
        negative_keywords="What to avoid, separated by commas",
    )
    async def style_add(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 40],
        description: app_commands.Range[str, 1, MAX_STYLE_DESCRIPTION_CHARS],
        keywords: app_commands.Range[str, 1, 1000],
        negative_keywords: app_commands.Range[str, 0, 1000] | None = None,
    ) -> None:
        try:
            template = server_style(name, description, keywords, negative_keywords or ())
        except BadRequest as exc:
            await interaction.response.send_message(f"🚫 {_(exc.user_message)}", ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild is not None
        try:
            await self.bot.runner.guilds.add_style(interaction.guild.id, template, by=interaction.user.id)
        except BadRequest as exc:
            await interaction.followup.send(f"🚫 {_(exc.user_message)}", ephemeral=True)
            return
        log.info("server %d: style %r added by %d", interaction.guild.id, template.name, interaction.user.id)
        await interaction.followup.send(
            _("✅ Style **{name}** saved — `/imagine style:{name}` now offers it here.").format(name=template.name)
            + "\n"
            + _("• Prompt: {prompt}").format(prompt=template.describe())
            + "\n"
            + _("• Avoids: {avoid}").format(avoid=", ".join(template.negative) or "—"),
            ephemeral=True,
        )

    @style.command(name="remove", description="Remove a style of this server")
    @app_commands.describe(name="The name of one of this server's styles")
    async def style_remove(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 40]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild is not None
        key = " ".join(name.lower().split())
        removed = await self.bot.runner.guilds.remove_style(interaction.guild.id, key)
        if removed:
            text = _("✅ Style **{name}** removed.").format(name=key)
        else:
            text = _("🚫 This server has no style called “{name}”.").format(name=key)
        await interaction.followup.send(text, ephemeral=True)

    @style_remove.autocomplete("name")
    async def _own_style_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        own = await self.bot.runner.guilds.styles(interaction.guild_id)
        typed = current.lower().strip()
        return [app_commands.Choice(name=n, value=n) for n in own if typed in n][:25]

    @style.command(name="list", description="List this server's own styles")
    async def style_list(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild is not None
        own = await self.bot.runner.guilds.styles(interaction.guild.id)
        lines = [_("**This server’s styles** ({count}/{limit})").format(count=len(own), limit=MAX_SERVER_STYLES)]
        lines += [f"• **{n}** — {t.description} (`{t.describe()}`)" for n, t in own.items()] or [_("• none yet")]
        await interaction.followup.send("\n".join(lines)[:2000], ephemeral=True)

    @app_commands.command(name="modlog", description="The channel where refusals are logged (empty: off)")
    @app_commands.describe(channel="The moderation log channel; leave empty to turn it off")
    async def modlog(self, interaction: discord.Interaction, channel: discord.TextChannel | None = None) -> None:
        await self._change(interaction, modlog_channel=channel.id if channel else None)


class Stats(commands.Cog):
    def __init__(self, bot: VoxCanvasBot) -> None:
        self.bot = bot

    @app_commands.command(name="stats", description="Today's jobs, average score and correction rate here")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    async def stats(self, interaction: discord.Interaction) -> None:
        _admin_only(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild is not None
        midnight = dt.datetime.combine(dt.datetime.now(dt.UTC).date(), dt.time(0), tzinfo=dt.UTC)
        jobs, done, average, corrected = await self.bot.store.guild_stats(interaction.guild.id, midnight.timestamp())
        admitted = await self.bot.store.usage_today(utc_day(), guild_id=interaction.guild.id)
        rate = f"{corrected / done:.0%}" if done else "—"
        score = f"{average:.0f}/100" if average is not None else "—"
        await interaction.followup.send(
            _(
                "**Today (UTC) in this server**\n• Jobs: {jobs} ({done} finished, {admitted} admitted)\n"
                "• Average score: {score}\n• Correction rate: {rate}"
            ).format(jobs=jobs, done=done, admitted=admitted, score=score, rate=rate),
            ephemeral=True,
        )


async def setup(bot: VoxCanvasBot) -> None:
    await bot.add_cog(ServerSettings(bot))
    await bot.add_cog(Stats(bot))
