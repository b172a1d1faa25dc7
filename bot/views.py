"""Persistent buttons: Regenerate, Vary, Details.

Each is a ``discord.ui.DynamicItem`` whose ``custom_id`` carries the job id
(``voxcanvas:<action>:<job id>``, well under Discord's 100 characters). discord.py matches the
template on every component interaction, also for messages posted before a restart, and the
callback loads the job from the store — no state lives in memory.

Who may press them: anyone who can see the message. Regenerate and Vary start a new job that
belongs to the person who pressed (it counts against *their* queue limit, and the new picture is
posted for them); Details answers privately (ephemeral).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord

if TYPE_CHECKING:
    from .client import VoxCanvasBot

log = logging.getLogger(__name__)

JOB_ID = r"(?P<job_id>[0-9a-f]{8,32})"


class _JobButton:
    """Shared behaviour; each subclass is also a DynamicItem with its own template."""

    action = ""
    label = ""
    emoji = ""
    button_style = discord.ButtonStyle.secondary

    def __init__(self, job_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                label=self.label,
                emoji=self.emoji,
                style=self.button_style,
                custom_id=f"voxcanvas:{self.action}:{job_id}",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match, /):
        return cls(match["job_id"])


class RegenerateButton(_JobButton, discord.ui.DynamicItem[discord.ui.Button], template=rf"voxcanvas:regen:{JOB_ID}"):
    action, label, emoji = "regen", "Regenerate", "🔁"
    button_style = discord.ButtonStyle.primary

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: VoxCanvasBot = interaction.client  # type: ignore[assignment]
        await bot.runner.start_follow_up(interaction, self.job_id, kind="regenerate")


class VaryButton(_JobButton, discord.ui.DynamicItem[discord.ui.Button], template=rf"voxcanvas:vary:{JOB_ID}"):
    action, label, emoji = "vary", "Vary", "🎲"

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: VoxCanvasBot = interaction.client  # type: ignore[assignment]
        await bot.runner.start_follow_up(interaction, self.job_id, kind="vary")


class DetailsButton(_JobButton, discord.ui.DynamicItem[discord.ui.Button], template=rf"voxcanvas:details:{JOB_ID}"):
    action, label, emoji = "details", "Details", "🔎"

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: VoxCanvasBot = interaction.client  # type: ignore[assignment]
        await bot.runner.show_details(interaction, self.job_id)


DYNAMIC_ITEMS = (RegenerateButton, VaryButton, DetailsButton)


def result_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(RegenerateButton(job_id))
    view.add_item(VaryButton(job_id))
    view.add_item(DetailsButton(job_id))
    return view
