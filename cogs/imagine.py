"""/imagine, /queue, /history and /forget. Thin: parse, validate, acknowledge within 3 s."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import _
from pipeline import control as controls
from pipeline import limits
from pipeline.errors import BadRequest
from pipeline.families import ASPECTS
from pipeline.images import check_image_bytes
from pipeline.lora import lora_names
from pipeline.registry import model_names
from pipeline.studio import Idea
from pipeline.styles import check_style

if TYPE_CHECKING:
    from bot.client import VoxCanvasBot

log = logging.getLogger(__name__)

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
CONTROL_CHOICES = [app_commands.Choice(name=mode, value=mode) for mode in controls.CONTROL_MODES]
ASPECT_CHOICES = [app_commands.Choice(name=aspect, value=aspect) for aspect in ASPECTS]


class Imagine(commands.Cog):
    def __init__(self, bot: VoxCanvasBot) -> None:
        self.bot = bot

    @app_commands.command(
        name="imagine", description="Turn an idea into a picture, checked and corrected automatically"
    )
    @app_commands.describe(
        prompt="What should the picture show?",
        negative_prompt="Things to keep out of the picture",
        seed=f"Repeat a picture exactly (0 – {limits.MAX_SEED}); empty = random",
        steps="Denoising steps (more = finer, slower); default 25",
        guidance=f"How closely to follow the prompt ({limits.MIN_GUIDANCE:g} – {limits.MAX_GUIDANCE:g}); default 7.5",
        style="A visual style; empty = picked from your words",
        image="A starting image: makes this image-to-image",
        strength=f"Image-to-image: how much to change the starting image ({limits.MIN_STRENGTH:g} – "
        f"{limits.MAX_STRENGTH:g})",
        aspect="The frame: 1:1, 16:9, 9:16 …; the model's native size by default",
        model="Which model draws it; empty = the default",
        lora="A LoRA (a style or subject add-on) by name",
        weight=f"The LoRA's weight ({limits.MIN_LORA_WEIGHT:g} – {limits.MAX_LORA_WEIGHT:g}); "
        f"default {limits.DEFAULT_LORA_WEIGHT:g}",
        count=f"How many candidates to render and score (1 – {limits.MAX_CANDIDATES}); the best is marked",
        control="ControlNet: keep the edges (canny), depth or pose of control_image, or paint in the palette",
        control_image="The image whose edges/depth/pose guide the picture (default: the starting image)",
        control_strength=f"How strongly the control guides ({controls.MIN_CONTROL_STRENGTH:g} – "
        f"{controls.MAX_CONTROL_STRENGTH:g}); default {controls.DEFAULT_CONTROL_STRENGTH:g}",
    )
    @app_commands.choices(aspect=ASPECT_CHOICES, control=CONTROL_CHOICES)
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, limits.MAX_IDEA_CHARS],
        negative_prompt: app_commands.Range[str, 0, limits.MAX_NEGATIVE_PROMPT_CHARS] | None = None,
        seed: app_commands.Range[int, 0, limits.MAX_SEED] | None = None,
        steps: app_commands.Range[int, limits.MIN_STEPS, limits.MAX_STEPS] | None = None,
        guidance: app_commands.Range[float, limits.MIN_GUIDANCE, limits.MAX_GUIDANCE] | None = None,
        style: app_commands.Range[str, 1, 40] | None = None,
        image: discord.Attachment | None = None,
        strength: app_commands.Range[float, limits.MIN_STRENGTH, limits.MAX_STRENGTH] = limits.DEFAULT_STRENGTH,
        aspect: app_commands.Choice[str] | None = None,
        model: app_commands.Range[str, 1, 40] | None = None,
        lora: app_commands.Range[str, 1, 64] | None = None,
        weight: app_commands.Range[float, limits.MIN_LORA_WEIGHT, limits.MAX_LORA_WEIGHT] = limits.DEFAULT_LORA_WEIGHT,
        count: app_commands.Range[int, 1, limits.MAX_CANDIDATES] | None = None,
        control: app_commands.Choice[str] | None = None,
        control_image: discord.Attachment | None = None,
        control_strength: app_commands.Range[
            float, controls.MIN_CONTROL_STRENGTH, controls.MAX_CONTROL_STRENGTH
        ] = controls.DEFAULT_CONTROL_STRENGTH,
    ) -> None:
        if not prompt.strip():
            await interaction.response.send_message(_("🚫 The prompt is empty — tell me what to draw."), ephemeral=True)
            return
        for attachment in (image, control_image):
            problem = _image_problem(attachment) if attachment is not None else None  # metadata only
            if problem:
                await interaction.response.send_message("🚫 " + _(problem), ephemeral=True)
                return
        try:
            with await self.bot.runner.guilds.style_context(interaction.guild_id):  # this server's own too
                style = check_style(style)  # a typed name that is no style: said now, privately
        except BadRequest as exc:
            await interaction.response.send_message("🚫 " + _(exc.user_message), ephemeral=True)
            return
        problem = _control_problem(self.bot.settings.CONTROLNET_MODELS, control, control_image or image)
        if problem:
            await interaction.response.send_message("🚫 " + _(problem), ephemeral=True)
            return
        settings = self.bot.settings
        if model is not None and model not in model_names(settings):
            names = ", ".join(model_names(settings))
            await interaction.response.send_message(
                _("🚫 There is no model called {model}. Try: {names}.").format(model=repr(model), names=names),
                ephemeral=True,
            )
            return
        if lora is not None and lora not in lora_names(settings.LORA_DIR):
            names = ", ".join(lora_names(settings.LORA_DIR)) or _("none are set up")
            await interaction.response.send_message(
                _("🚫 There is no LoRA called {lora} ({names}).").format(lora=repr(lora), names=names), ephemeral=True
            )
            return
        idea = Idea(
            text=prompt,
            style=style,
            negative_prompt=negative_prompt,
            seed=seed,
            steps=steps,
            guidance=guidance,
            strength=strength,
            aspect=aspect.value if aspect else None,
            model=model,
            loras=((lora, weight),) if lora else (),
            candidates=count,
            control=control.value if control else None,
            control_strength=control_strength if control else None,
        )
        # The runner downloads the images only after acknowledging: Discord's 3 s are not spent on the CDN.
        await self.bot.runner.start_imagine(
            interaction, idea, image=image, control_image=control_image if control is not None else None
        )

    @imagine.autocomplete("style")
    async def _style_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = await self.bot.runner.guilds.style_choices(interaction.guild_id, current)
        return [app_commands.Choice(name=n, value=n) for n in names]

    @imagine.autocomplete("model")
    async def _model_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = model_names(self.bot.settings)
        return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n.lower()][:25]

    @imagine.autocomplete("lora")
    async def _lora_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        # Only LoRAs that fit the chosen model's family (once it is loaded; a header check, no weights).
        model = getattr(interaction.namespace, "model", None) or None
        names = self.bot.executor.lora_choices(model)
        return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n.lower()][:25]

    @app_commands.command(name="queue", description="Your pictures in progress, with their place in the queue")
    async def queue(self, interaction: discord.Interaction) -> None:
        executor = self.bot.executor
        jobs = executor.jobs_of(interaction.user.id)
        metrics = executor.metrics()
        lines = []
        for job in jobs:
            pos = job.position()
            if pos is None:
                lines.append(_("• `{job}` — {stage} (running)").format(job=job.id, stage=job.stage))
            else:
                eta = job.eta_s()
                line = _("• `{job}` — position {position}").format(job=job.id, position=pos)
                lines.append(line + (_(", about {seconds} s").format(seconds=max(1, round(eta))) if eta else ""))
        head = _("Queue: {waiting} waiting, {running} running · limit {limit} per person").format(
            waiting=metrics.queue_depth, running=metrics.running_jobs, limit=self.bot.settings.MAX_JOBS_PER_USER
        )
        body = "\n".join(lines) if lines else _("You have nothing in progress. Try /imagine or send a voice note!")
        await interaction.response.send_message(f"{head}\n{body}", ephemeral=True)

    @app_commands.command(name="history", description="Your recent pictures")
    @app_commands.describe(count="How many (1 – 20)")
    async def history(self, interaction: discord.Interaction, count: app_commands.Range[int, 1, 20] = 10) -> None:
        records = await self.bot.store.history(interaction.user.id, limit=count)
        if not records:
            await interaction.response.send_message(
                _("No pictures yet — try /imagine or send a voice note!"), ephemeral=True
            )
            return
        lines = []
        open_label = _("open")
        for r in records:
            when = f"<t:{int(r.created_at)}:R>"  # the store keeps UTC epoch seconds
            title = (r.title or r.idea.get("text") or _("untitled"))[:80]
            score = f"{r.score}/100" if r.score is not None else r.state
            link = ""
            if r.delivered_message_id and r.delivered_channel_id:
                guild = r.guild_id or "@me"
                link = f" · [{open_label}](https://discord.com/channels/{guild}/{r.delivered_channel_id}/{r.delivered_message_id})"
            lines.append(f"• **{title}** — {score} · {when} · `{r.id}`{link}")
        lines.append(_("Delete one with `/forget job:<id>`."))
        await interaction.response.send_message("\n".join(lines)[:1990], ephemeral=True)

    @app_commands.command(name="forget", description="Delete one of your pictures from my history (record and images)")
    @app_commands.describe(job="The job id shown in /history or under the picture")
    async def forget(self, interaction: discord.Interaction, job: app_commands.Range[str, 4, 40]) -> None:
        job_id = job.strip().removeprefix("job ").strip()
        await interaction.response.defer(ephemeral=True, thinking=True)
        record = await self.bot.store.get(job_id)
        deleted = await self.bot.store.delete(job_id, user_id=interaction.user.id)
        if deleted:
            text = _("🗑️ Deleted `{job}` — its record, images and post are gone.").format(job=job_id)
            if record is not None and record.delivered_message_id and record.delivered_channel_id:
                post = self.bot.get_partial_messageable(record.delivered_channel_id).get_partial_message(
                    record.delivered_message_id
                )
                try:
                    await post.delete()
                except discord.NotFound:
                    pass
                except discord.HTTPException as exc:
                    log.info("job %s: could not delete its post: %s", job_id, exc)
                    text = _("🗑️ Deleted `{job}` — its record and images are gone (I couldn't remove the post).").format(
                        job=job_id
                    )
        else:
            text = _("I couldn't find a picture `{job}` of yours.").format(job=job_id)
        await interaction.followup.send(text, ephemeral=True)


def _control_problem(models: str, control: app_commands.Choice[str] | None, source: object) -> str | None:
    """A ``control:`` that can't work, said before anything is queued."""
    if control is None:
        return None
    configured = {mode for _, mode in controls.parse_controlnet_models(models)}
    if control.value not in configured:
        offered = ", ".join(sorted(configured)) or _("none are set up")
        return _("There is no {mode} control here ({offered}).").format(mode=control.value, offered=offered)
    if control.value in controls.IMAGE_MODES and source is None:
        return _("The {mode} control needs an image: attach one as control_image (or image).").format(
            mode=control.value
        )
    return None


def _image_problem(image: discord.Attachment) -> str | None:
    content_type = (image.content_type or "").split(";")[0].strip().lower()
    if content_type not in IMAGE_TYPES:
        return _("The attachment must be a PNG, JPEG or WebP image.")
    try:
        check_image_bytes(image.size)
    except BadRequest as exc:
        return exc.user_message
    return None


async def setup(bot: VoxCanvasBot) -> None:
    await bot.add_cog(Imagine(bot))
