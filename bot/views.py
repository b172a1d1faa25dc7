"""Persistent buttons: Regenerate, Vary, Soundtrack, Details.

All four are :class:`JobButton`, a ``discord.ui.DynamicItem`` whose ``custom_id`` carries the
action and the job id (``voxcanvas:<action>:<job id>``, well under Discord's 100 characters).
discord.py matches the template on every component interaction, also for messages posted before a
restart, and the callback loads the job from the store — no state lives in memory.

Who may press them: anyone who can see the message. Regenerate and Vary start a new job that
belongs to the person who pressed (it counts against *their* queue limit, and the new picture is
posted for them); Soundtrack likewise composes music from the picture's scene and posts it as an
audio attachment; Details answers privately (ephemeral).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import discord

if TYPE_CHECKING:
    from .client import VoxCanvasBot

log = logging.getLogger(__name__)

Action = Literal["regen", "vary", "music", "details"]
ACTIONS: tuple[Action, ...] = get_args(Action)
JOB_ID = r"(?P<job_id>[0-9a-f]{8,32})"

# action → label, emoji, style; in the order the buttons appear under a picture
BUTTONS: dict[Action, tuple[str, str, discord.ButtonStyle]] = {
    "regen": ("Regenerate", "🔁", discord.ButtonStyle.primary),
    "vary": ("Vary", "🎲", discord.ButtonStyle.secondary),
    "music": ("Soundtrack", "🎵", discord.ButtonStyle.secondary),
    "details": ("Details", "🔎", discord.ButtonStyle.secondary),
}

Button = discord.ui.Button[discord.ui.View]
FollowUp = Literal["regenerate", "vary", "soundtrack"]
FOLLOW_UPS: dict[Action, FollowUp] = {"regen": "regenerate", "vary": "vary", "music": "soundtrack"}


class JobButton(discord.ui.DynamicItem[Button], template=rf"voxcanvas:(?P<action>{'|'.join(ACTIONS)}):{JOB_ID}"):
    """One of the buttons under a picture; which one is the ``action`` in its ``custom_id``."""

    def __init__(self, action: Action, job_id: str) -> None:
        label, emoji, style = BUTTONS[action]
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=custom_id(action, job_id)))
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        return cls(cast(Action, match["action"]), match["job_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        runner = cast("VoxCanvasBot", interaction.client).runner
        if self.action == "details":
            await runner.show_details(interaction, self.job_id)
        else:
            await runner.start_follow_up(interaction, self.job_id, kind=FOLLOW_UPS[self.action])


DYNAMIC_ITEMS = (JobButton,)


def custom_id(action: Action, job_id: str) -> str:
    return f"voxcanvas:{action}:{job_id}"


def result_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in ACTIONS:
        view.add_item(JobButton(action, job_id))
    return view
