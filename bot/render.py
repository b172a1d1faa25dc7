"""Result → what Discord shows: image.png + palette.png, an embed, and the buttons.

Also the progress lines shown while a job waits and runs, and the texts of error replies.
Pure functions of their inputs (plus discord.py's data classes), so they are easy to test.
"""

from __future__ import annotations

import io

import discord

from pipeline.executor import ProgressEvent
from pipeline.studio import Result

EMBED_COLOUR_OK = 0x2ECC71
EMBED_COLOUR_LOW = 0xF1C40F
FIELD_LIMIT = 1024
IMAGE_NAME = "image.png"
PALETTE_NAME = "palette.png"

LANGUAGE_NAMES = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "pl": "Polish",
    "ru": "Russian",
    "uk": "Ukrainian",
    "ja": "Japanese",
    "ko": "Korean",
    "zh": "Chinese",
    "ar": "Arabic",
    "hi": "Hindi",
    "tr": "Turkish",
    "sv": "Swedish",
    "fi": "Finnish",
    "da": "Danish",
    "no": "Norwegian",
}


def _clip(text: str, limit: int = FIELD_LIMIT) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def language_name(code: str | None) -> str:
    if not code:
        return "unknown"
    return LANGUAGE_NAMES.get(code, code)


def result_embed(result: Result) -> discord.Embed:
    best = result.best
    score = best.score
    passed = score is not None and score >= result.threshold
    title = result.scene.title or result.idea
    embed = discord.Embed(
        title=_clip(title, 256),
        colour=EMBED_COLOUR_OK if passed else EMBED_COLOUR_LOW,
        description=_clip(result.scene.scene_description, 4000),
    )
    if result.transcript is not None:
        heard = f"“{_clip(result.transcript, 900)}”\n*{language_name(result.language)}"
        heard += ", translated to English*" if result.translated else "*"
        embed.add_field(name="🎙️ Heard", value=heard, inline=False)

    alignment = f"**{score}/100**" if score is not None else "not scored"
    alignment += " ✅" if passed else f" (below {result.threshold})"
    if result.corrected:
        first = result.rounds[0].score
        alignment += f"\nCorrected automatically (first try scored {first})."
    elif len(result.rounds) > 1:
        alignment += f"\n{len(result.rounds) - 1} correction round(s) tried; showing the best."
    embed.add_field(name="Alignment", value=alignment, inline=True)
    embed.add_field(
        name="Settings",
        value=f"seed `{best.seed}`\n{best.steps} steps · guidance {best.guidance:g}"
        + (f"\nimage-to-image, strength {best.strength:g}" if best.mode == "img2img" else ""),
        inline=True,
    )
    if best.missing_elements:
        embed.add_field(name="Missing", value=_clip(", ".join(best.missing_elements)), inline=False)
    if best.nsfw:
        embed.add_field(
            name="Safety filter",
            value="The safety checker withheld this picture. Try rephrasing your idea.",
            inline=False,
        )
    embed.add_field(name="Prompt", value=_clip(best.prompt), inline=False)
    if result.tags:
        embed.add_field(name="Tags", value=_clip(" · ".join(result.tags)), inline=False)
    embed.add_field(name="Palette", value=" ".join(f"`{c}`" for c in result.palette), inline=False)
    embed.add_field(name="Directed by", value=provider_line(result.director, result.director_fallback), inline=True)
    embed.add_field(
        name="Judged by", value=provider_line(result.critic, result.critic_fallback, critic=True), inline=True
    )
    embed.add_field(name="Time", value=f"{result.total_s:.1f} s", inline=True)
    embed.set_image(url=f"attachment://{IMAGE_NAME}")
    embed.set_footer(text=f"job {result.job_id}")
    return embed


def provider_line(provider: str, fallback: str | None, *, critic: bool = False) -> str:
    if provider == "gemini":
        return "Gemini"
    local = "CLIP (local)" if critic else "local director"
    return f"{local} — Gemini unavailable" if fallback else local


def result_files(image_png: bytes, palette_png: bytes) -> list[discord.File]:
    return [
        discord.File(io.BytesIO(image_png), filename=IMAGE_NAME),
        discord.File(io.BytesIO(palette_png), filename=PALETTE_NAME),
    ]


def result_content(result: Result) -> str:
    parts = []
    if result.kind == "regenerate":
        parts.append("Regenerated with the critic's correction:")
    elif result.kind == "vary":
        parts.append("A variation:")
    parts.append("Palette: " + " ".join(result.palette))
    return " ".join(parts)


def details_text(result: Result) -> str:
    """The ephemeral Details view: the full scene and every round's QA report."""
    scene = result.scene
    lines = [
        f"**{scene.title}**",
        scene.scene_description,
        "",
        f"**Elements:** {', '.join(scene.elements)}",
        f"**Style:** {scene.style or 'auto'}",
        f"**Negative prompt:** {scene.negative_prompt or '—'}",
        f"**Palette:** {' '.join(result.palette)} (from the {result.palette_source})",
        f"**Tags:** {', '.join(result.tags)}",
    ]
    if result.director_fallback:
        lines.append(f"**Director fallback:** {result.director_fallback}")
    if result.critic_fallback:
        lines.append(f"**Critic fallback:** {result.critic_fallback}")
    for r in result.rounds:
        marker = " ← shown" if r.index == result.best_round else ""
        lines += [
            "",
            f"**Round {r.index + 1}**{marker}: score {r.score}/100 · seed {r.seed} · "
            f"{r.steps} steps · guidance {r.guidance:g}",
            f"prompt: {r.prompt}",
        ]
        if r.prompt_chunks > 1:
            lines.append(f"(long prompt: {r.prompt_tokens} tokens encoded in {r.prompt_chunks} windows)")
        if r.missing_elements:
            lines.append(f"missing: {', '.join(r.missing_elements)}")
        if r.correction_prompt:
            lines.append(f"correction: {r.correction_prompt}")
        if r.critic_notes:
            lines.append(f"notes: {r.critic_notes}")
    return _clip("\n".join(lines), 1990)


STAGE_LINES = {
    "decode": "🎧 Reading your voice note…",
    "transcribe": "🎙️ Transcribing…",
    "direct": "🎬 Directing the scene…",
    "review": "🔍 Reviewing the picture…",
}


def progress_line(event: ProgressEvent, *, corrections: int = 0) -> str:
    if event.stage == "queued":
        if event.position is None:
            return "⏳ Starting…"
        eta = f" (about {max(1, round(event.eta_s))} s)" if event.eta_s else ""
        return f"⏳ In the queue — position {event.position}{eta}"
    if event.stage == "render":
        if event.total:
            bar_len = 10
            filled = round(bar_len * event.step / event.total)
            bar = "█" * filled + "░" * (bar_len - filled)
            verb = "Correcting" if corrections else "Rendering"
            return f"🎨 {verb} {bar} {event.step}/{event.total}"
        return "🎨 Rendering…"
    if event.stage == "correct":
        return "🛠️ Score below the bar — correcting…"
    return STAGE_LINES.get(event.stage, f"{event.stage}…")


def apology(job_id: str) -> str:
    return f"😵 Sorry — something broke on my side. I've logged it (job `{job_id}`); please try again."
