"""Persistent buttons: Regenerate, Vary, Soundtrack, Details; U1–U4 / V1–V4 (Upscale) for candidates.

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

from pipeline import limits

from .i18n import N_, _

if TYPE_CHECKING:
    from .client import VoxCanvasBot

log = logging.getLogger(__name__)

Action = Literal["regen", "vary", "remix", "music", "details", "delete", "cancel"]
ACTIONS: tuple[Action, ...] = get_args(Action)
JOB_ID = r"(?P<job_id>[0-9a-f]{8,32})"

# action → label, emoji, style; in the order the buttons appear under a picture
BUTTONS: dict[Action, tuple[str, str, discord.ButtonStyle]] = {
    "regen": (N_("Regenerate"), "🔁", discord.ButtonStyle.primary),
    "vary": (N_("Vary"), "🎲", discord.ButtonStyle.secondary),
    "remix": (N_("Remix"), "🎛️", discord.ButtonStyle.secondary),  # a modal: edit the prompt, then a new job
    "music": (N_("Soundtrack"), "🎵", discord.ButtonStyle.secondary),
    "details": (N_("Details"), "🔎", discord.ButtonStyle.secondary),
    "delete": (N_("Delete"), "🗑️", discord.ButtonStyle.danger),  # the owner, or members with Manage Messages
    "cancel": (N_("Cancel"), "✖️", discord.ButtonStyle.danger),  # on the progress message; the owner only
}
RESULT_ACTIONS: tuple[Action, ...] = ("regen", "vary", "remix", "music", "details", "delete")
GRID_ACTIONS: tuple[Action, ...] = ("regen", "remix", "music", "details", "delete")  # under U1–U4 / V1–V4

Button = discord.ui.Button[discord.ui.View]
FollowUp = Literal["regenerate", "vary", "soundtrack"]
FOLLOW_UPS: dict[Action, FollowUp] = {"regen": "regenerate", "vary": "vary", "music": "soundtrack"}


class JobButton(discord.ui.DynamicItem[Button], template=rf"voxcanvas:(?P<action>{'|'.join(ACTIONS)}):{JOB_ID}"):
    """One of the buttons under a picture; which one is the ``action`` in its ``custom_id``."""

    def __init__(self, action: Action, job_id: str) -> None:
        label, emoji, style = BUTTONS[action]
        super().__init__(
            discord.ui.Button(label=_(label), emoji=emoji, style=style, custom_id=custom_id(action, job_id))
        )
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
        elif self.action == "cancel":
            await runner.cancel_from_button(interaction, self.job_id)
        elif self.action == "delete":
            await runner.delete_from_button(interaction, self.job_id)
        elif self.action == "remix":
            await runner.open_remix(interaction, self.job_id)
        else:
            await runner.start_follow_up(interaction, self.job_id, kind=FOLLOW_UPS[self.action])


CandidateAction = Literal["up", "var"]


class CandidateButton(
    discord.ui.DynamicItem[Button], template=rf"voxcanvas:(?P<action>up|var):{JOB_ID}:(?P<number>[1-4])"
):
    """U1–U4 (upscale the n-th candidate) and V1–V4 (variations of it); with one candidate the
    labels are "Upscale" and (the plain :class:`JobButton`) "Vary". ``custom_id``:
    ``voxcanvas:up:<job id>:<n>`` / ``voxcanvas:var:<job id>:<n>``, n 1-based."""

    def __init__(self, action: CandidateAction, job_id: str, number: int, *, single: bool = False) -> None:
        if single:
            label, emoji = (_("Upscale"), "🔍") if action == "up" else (_("Vary"), "🎲")
        else:
            label, emoji = f"{'U' if action == 'up' else 'V'}{number}", None
        style = discord.ButtonStyle.primary if action == "up" else discord.ButtonStyle.secondary
        row = None if single else (0 if action == "up" else 1)
        super().__init__(
            discord.ui.Button(
                label=label, emoji=emoji, style=style, row=row, custom_id=candidate_custom_id(action, job_id, number)
            )
        )
        self.action = action
        self.job_id = job_id
        self.number = number

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> CandidateButton:
        return cls(cast(CandidateAction, match["action"]), match["job_id"], int(match["number"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        runner = cast("VoxCanvasBot", interaction.client).runner
        await runner.start_follow_up(
            interaction, self.job_id, kind="vary", candidate=self.number - 1, upscale=self.action == "up"
        )


class RemixModal(discord.ui.Modal):
    """Remix: the job's prompt (the critic's correction when it wrote one), negative prompt, style
    and seed, prefilled; submitting starts a new job with the edited text."""

    def __init__(self, job_id: str, *, prompt: str, negative_prompt: str, style: str, seed: int) -> None:
        super().__init__(title=_("Remix"), custom_id=f"voxcanvas:remix-modal:{job_id}", timeout=15 * 60)
        self.job_id = job_id
        self.prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label=_("Prompt"),
            style=discord.TextStyle.paragraph,
            default=prompt[: limits.MAX_PROMPT_CHARS],
            max_length=min(4000, limits.MAX_PROMPT_CHARS),
            custom_id="prompt",
        )
        self.negative: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label=_("Negative prompt"),
            style=discord.TextStyle.paragraph,
            default=negative_prompt[: limits.MAX_NEGATIVE_PROMPT_CHARS] or None,
            required=False,
            max_length=limits.MAX_NEGATIVE_PROMPT_CHARS,
            custom_id="negative",
        )
        self.style: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label=_("Style"), default=style or None, required=False, max_length=40, custom_id="style"
        )
        self.seed: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label=_("Seed"), default=str(seed), required=False, max_length=10, custom_id="seed"
        )
        for item in (self.prompt, self.negative, self.style, self.seed):
            self.add_item(item)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        runner = cast("VoxCanvasBot", interaction.client).runner
        await runner.start_remix(
            interaction,
            self.job_id,
            prompt=self.prompt.value,
            negative_prompt=self.negative.value,
            style=self.style.value,
            seed=self.seed.value,
        )


class SuggestionButton(discord.ui.DynamicItem[Button], template=r"voxcanvas:suggest:(?P<number>[1-4])"):
    """ "Imagine n" under a /describe answer: a new /imagine job from suggestion n, read back from
    the message's embed (field "n"), so it needs no state and works after a restart."""

    def __init__(self, number: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=_("Imagine {number}").format(number=number),
                emoji="🎨",
                style=discord.ButtonStyle.primary,
                custom_id=f"voxcanvas:suggest:{number}",
            )
        )
        self.number = number

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> SuggestionButton:
        return cls(int(match["number"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        from pipeline.studio import Idea

        message = interaction.message
        fields = message.embeds[0].fields if message is not None and message.embeds else []
        prompt = next((f.value for f in fields if f.name == str(self.number)), None)
        if not prompt:
            await interaction.response.send_message(_("That suggestion is gone."), ephemeral=True)
            return
        runner = cast("VoxCanvasBot", interaction.client).runner
        await runner.start_imagine(interaction, Idea(text=prompt[: limits.MAX_IDEA_CHARS]))


def suggestion_view(count: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for number in range(1, count + 1):
        view.add_item(SuggestionButton(number))
    return view


DYNAMIC_ITEMS = (JobButton, CandidateButton, SuggestionButton)


def custom_id(action: Action, job_id: str) -> str:
    return f"voxcanvas:{action}:{job_id}"


def candidate_custom_id(action: CandidateAction, job_id: str, number: int) -> str:
    return f"voxcanvas:{action}:{job_id}:{number}"


def progress_view(job_id: str) -> discord.ui.View:
    """Under a job that waits or renders: Cancel (its owner only)."""
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton("cancel", job_id))
    return view


def result_view(job_id: str, *, candidates: int = 1, kind: str = "text") -> discord.ui.View:
    """The buttons under a picture. Several candidates: U1–U4, V1–V4, then Regenerate, Soundtrack,
    Details. One: Regenerate, Vary, Upscale, Soundtrack, Details. An upscaled picture: Vary, Details."""
    view = discord.ui.View(timeout=None)
    if kind == "upscale":
        for plain in ("vary", "details", "delete"):
            view.add_item(JobButton(plain, job_id))
        return view
    if candidates > 1:
        for action in ("up", "var"):
            for number in range(1, candidates + 1):
                view.add_item(CandidateButton(action, job_id, number))
        for plain in GRID_ACTIONS:
            button = JobButton(plain, job_id)
            button.item.row = 2
            view.add_item(button)
        return view
    for action in RESULT_ACTIONS:
        view.add_item(JobButton(action, job_id))
        if action == "vary":
            view.add_item(CandidateButton("up", job_id, 1, single=True))
    return view
