"""Result → what Discord shows: image.png + palette.png, an embed, and the buttons.

Also the progress lines shown while a job waits and runs, and the texts of error replies.
Pure functions of their inputs (plus discord.py's data classes), so they are easy to test.

Everything built here fits Discord's limits (:mod:`bot.limits`): :func:`fit_embed` keeps an embed
within 6,000 characters, 25 fields and each part's own limit, shortening the least important
parts first; :func:`fit_uploads` re-encodes the picture as WebP, then JPEG, when the PNG would not
fit the upload limit of where it goes (:func:`upload_limit`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import discord
from babel import Locale, UnknownLocaleError
from PIL import Image

from pipeline.errors import VoxCanvasError
from pipeline.executor import ProgressEvent
from pipeline.studio import MusicResult, Result, Round

from .i18n import DEFAULT_LANGUAGE, N_, _, current
from .limits import (
    BOOSTED_PREMIUM_TIER,
    DEFAULT_UPLOAD_BYTES,
    EMBED_AUTHOR_NAME_CHARS,
    EMBED_DESCRIPTION_CHARS,
    EMBED_FIELD_NAME_CHARS,
    EMBED_FIELD_VALUE_CHARS,
    EMBED_FIELDS,
    EMBED_FOOTER_CHARS,
    EMBED_TITLE_CHARS,
    EMBED_TOTAL_CHARS,
    MESSAGE_CONTENT_CHARS,
)

log = logging.getLogger(__name__)

EMBED_COLOUR_OK = 0x2ECC71
EMBED_COLOUR_LOW = 0xF1C40F
FIELD_LIMIT = EMBED_FIELD_VALUE_CHARS
IMAGE_NAME = "image.png"
PALETTE_NAME = "palette.png"
MUSIC_NAME = "soundtrack.ogg"  # OGG/Opus: Discord shows an inline player for it
EMBED_COLOUR_MUSIC = 0x9B59B6

# The result embed's fields that may grow with what a model or a user wrote.
HEARD_FIELD = "🎙️ Heard"
MISSING_FIELD = "Missing"
PROMPT_FIELD = "Prompt"
TAGS_FIELD = "Tags"
CANDIDATES_FIELD = "Candidates"
SAFETY_FIELD = "Safety filter"
#: :func:`fit_embed`'s names for the embed's own texts.
DESCRIPTION = "description"
TITLE = "title"
#: What a too-long result embed gives up first: tags, then the prompt (the Details button shows
#: it in full), the missing elements, the scene description, what was heard, the title.
RESULT_SHRINK_ORDER = (TAGS_FIELD, PROMPT_FIELD, MISSING_FIELD, DESCRIPTION, HEARD_FIELD, TITLE)
FALLBACK_DIRECTOR = N_("local director (Gemini unavailable)")
FALLBACK_CRITIC = N_("CLIP critic (Gemini unavailable)")

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
    """``text`` trimmed, and at most ``limit`` characters (cut ones end in "…")."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…" if limit > 0 else ""


def language_name(code: str | None) -> str:
    """The name of a language Whisper heard, in the language at hand (Babel's CLDR names)."""
    if not code:
        return _("unknown")
    try:
        name = Locale.parse(code).get_display_name(current())
    except (ValueError, TypeError, UnknownLocaleError):
        name = None
    return name or LANGUAGE_NAMES.get(code, code)


def result_embed(result: Result) -> discord.Embed:
    """The result's embed, within Discord's limits (:func:`fit_embed`)."""
    best = result.best
    score = best.score
    passed = score is not None and score >= result.threshold
    title = result.scene.title or result.idea
    embed = discord.Embed(
        title=_clip(title, EMBED_TITLE_CHARS),
        colour=EMBED_COLOUR_OK if passed else EMBED_COLOUR_LOW,
        description=_clip(result.scene.scene_description, EMBED_DESCRIPTION_CHARS),
    )
    if result.transcript is not None:
        heard = f"“{_clip(result.transcript, 900)}”\n*{language_name(result.language)}"
        heard += _(", translated to English") + "*" if result.translated else "*"
        embed.add_field(name=HEARD_FIELD, value=heard, inline=False)

    alignment = f"**{score}/100**" if score is not None else _("not scored")
    alignment += " ✅" if passed else _(" (below {threshold})").format(threshold=result.threshold)
    if result.corrected:
        first = result.rounds[0].score
        alignment += "\n" + _("Corrected automatically (first try scored {first}).").format(first=first)
    elif len(result.rounds) > 1:
        tried = _("{count} correction round(s) tried; showing the best.").format(count=len(result.rounds) - 1)
        alignment += "\n" + tried
    embed.add_field(name="Alignment", value=alignment, inline=True)
    if len(result.candidates) > 1:
        embed.add_field(name=CANDIDATES_FIELD, value=candidates_text(result), inline=False)
    embed.add_field(
        name="Settings",
        value=_("seed `{seed}`\n{width}×{height} · {steps} steps · guidance {guidance}").format(
            seed=best.seed, width=best.width, height=best.height, steps=best.steps, guidance=f"{best.guidance:g}"
        )
        + ("\n" + _("model `{model}`").format(model=best.model) if best.model else "")
        + (f"\nLoRA {model_loras(best)}" if best.loras else "")
        + (
            "\n" + _("image-to-image, strength {strength}").format(strength=f"{best.strength:g}")
            if best.mode == "img2img"
            else ""
        )
        + backend_line(best),
        inline=True,
    )
    if best.missing_elements:
        embed.add_field(name=MISSING_FIELD, value=_clip(", ".join(best.missing_elements)), inline=False)
    if best.nsfw:
        embed.add_field(
            name=SAFETY_FIELD,
            value=_("The safety checker flagged this picture; it is behind a spoiler.")
            if result.flagged_kept
            else _("The safety checker withheld this picture. Try rephrasing your idea."),
            inline=False,
        )
    embed.add_field(name=PROMPT_FIELD, value=_clip(best.prompt), inline=False)
    if result.tags:
        embed.add_field(name=TAGS_FIELD, value=_clip(" · ".join(result.tags)), inline=False)
    embed.add_field(name="Palette", value=" ".join(f"`{c}`" for c in result.palette), inline=False)
    embed.add_field(name="Directed by", value=provider_line(result.director, result.director_fallback), inline=True)
    embed.add_field(
        name="Judged by", value=provider_line(result.critic, result.critic_fallback, critic=True), inline=True
    )
    embed.add_field(name="Time", value=f"{result.total_s:.1f} s", inline=True)
    embed.set_image(url=f"attachment://{IMAGE_NAME}")
    embed.set_footer(text=f"job {result.job_id}")
    return localised_labels(fit_embed(embed, RESULT_SHRINK_ORDER))


#: The result embed's field names, in the catalogs (translated once the embed fits: fit_embed
#: finds the fields to shorten by their English names).
FIELD_LABELS = (
    N_("🎙️ Heard"),
    N_("Alignment"),
    N_("Candidates"),
    N_("Settings"),
    N_("Missing"),
    N_("Safety filter"),
    N_("Prompt"),
    N_("Tags"),
    N_("Palette"),
    N_("Directed by"),
    N_("Judged by"),
    N_("Time"),
)


def localised_labels(embed: discord.Embed) -> discord.Embed:
    """``embed`` with its field names in the language at hand (values are left as they are)."""
    if current() == DEFAULT_LANGUAGE:
        return embed
    for index, embed_field in enumerate(embed.fields):
        name = embed_field.name or ""
        embed.set_field_at(
            index, name=_(name)[:EMBED_FIELD_NAME_CHARS], value=embed_field.value, inline=embed_field.inline
        )
    return embed


def candidates_text(result: Result) -> str:
    """Each candidate's score, the best one marked: "1 · 72  **2 · 91 ★**  3 · 64  4 · 80"."""
    parts = []
    for c in result.candidates:
        score = "–" if c.score is None else str(c.score)
        text = f"{c.index + 1} · {score}" + (_(" (corrected)") if c.corrected else "")
        parts.append(f"**{text} ★**" if c.index == result.best_candidate else text)
    return "  ".join(parts)


def music_embed(result: MusicResult) -> discord.Embed:
    """A composed piece's embed (the audio itself is the attachment, played inline by Discord)."""
    title = f"🎵 {result.idea}" if result.kind == "soundtrack" else "🎵 " + result.music_prompt
    embed = discord.Embed(title=_clip(title, EMBED_TITLE_CHARS), colour=EMBED_COLOUR_MUSIC)
    if result.transcript is not None:
        embed.add_field(name=HEARD_FIELD, value=f"“{_clip(result.transcript, 900)}”", inline=False)
    embed.add_field(name=_("Music prompt"), value=_clip(result.music_prompt), inline=False)
    composer = {"user": _("your description"), "gemini": _("Gemini (director)"), "local": _("local director")}
    embed.add_field(name=_("Written by"), value=composer.get(result.director, result.director), inline=True)
    embed.add_field(
        name=_("Audio"), value=f"{result.duration_s:g} s · {result.sample_rate // 1000} kHz · seed `{result.seed}`"
    )
    embed.add_field(name=_("Time"), value=f"{result.total_s:.1f} s", inline=True)
    embed.set_footer(text=f"job {result.job_id}")
    return fit_embed(embed)


def music_content(result: MusicResult) -> str:
    if result.kind == "soundtrack":
        return _("A soundtrack for the picture:")
    return _("Your music:")


def music_files(music_ogg: bytes) -> list[Upload]:
    return [Upload(MUSIC_NAME, music_ogg)]


def fit_embed(embed: discord.Embed, shrink_first: Sequence[str] = ()) -> discord.Embed:
    """``embed`` (changed in place) within Discord's limits: each text within its own limit, at
    most 25 fields, and all of them together within 6,000 characters.

    Over the total, the parts named in ``shrink_first`` (field names, :data:`DESCRIPTION`,
    :data:`TITLE`) are shortened in that order, each no more than needed; should that not be
    enough, fields are dropped from the end, then the description and title are shortened."""
    if embed.title:
        embed.title = _clip(embed.title, EMBED_TITLE_CHARS)
    if embed.description:
        embed.description = _clip(embed.description, EMBED_DESCRIPTION_CHARS)
    if embed.footer.text:
        embed.set_footer(text=_clip(embed.footer.text, EMBED_FOOTER_CHARS), icon_url=embed.footer.icon_url)
    if embed.author.name:
        author = embed.author
        embed.set_author(
            name=_clip(author.name or "", EMBED_AUTHOR_NAME_CHARS), url=author.url, icon_url=author.icon_url
        )
    while len(embed.fields) > EMBED_FIELDS:
        embed.remove_field(len(embed.fields) - 1)
    for index, item in enumerate(embed.fields):
        name = _clip(item.name or "", EMBED_FIELD_NAME_CHARS) or "\u200b"
        value = _clip(item.value or "", EMBED_FIELD_VALUE_CHARS) or "\u200b"
        embed.set_field_at(index, name=name, value=value, inline=bool(item.inline))
    for part in shrink_first:
        excess = len(embed) - EMBED_TOTAL_CHARS
        if excess <= 0:
            return embed
        _shorten_part(embed, part, excess)
    while len(embed) > EMBED_TOTAL_CHARS and embed.fields:
        embed.remove_field(len(embed.fields) - 1)
    for part in (DESCRIPTION, TITLE):
        excess = len(embed) - EMBED_TOTAL_CHARS
        if excess > 0:
            _shorten_part(embed, part, excess)
    return embed


def _shorten_part(embed: discord.Embed, part: str, by: int) -> None:
    """Shorten one text of ``embed`` by ``by`` characters (a field value keeps at least "…")."""
    if part == DESCRIPTION and embed.description:
        embed.description = _clip(embed.description, len(embed.description) - by) or None
    elif part == TITLE and embed.title:
        embed.title = _clip(embed.title, len(embed.title) - by) or None
    else:
        for index, item in enumerate(embed.fields):
            if item.name == part and item.value:
                value = _clip(item.value, max(1, len(item.value) - by))
                embed.set_field_at(index, name=part, value=value, inline=bool(item.inline))
                return


def backend_line(round_: Round) -> str:
    """Where a remote picture was rendered, and why there when the configured backend failed."""
    from pipeline.backends import LABELS

    backend = LABELS.get(round_.backend, round_.backend)
    if round_.backend_fallback:
        fallback = LABELS.get(round_.backend_fallback, round_.backend_fallback)
        return "\n" + _("rendered on {backend} — {fallback} was unavailable").format(backend=backend, fallback=fallback)
    return "\n" + _("rendered on {backend}").format(backend=backend) if round_.backend != "diffusers" else ""


def provider_line(provider: str, fallback: str | None, *, critic: bool = False) -> str:
    if provider == "gemini":
        return "Gemini"
    local = _("CLIP (local)") if critic else _("local director")
    return _("{local} — Gemini unavailable").format(local=local) if fallback else local


@dataclass(frozen=True, slots=True)
class Upload:
    """A file to attach to a message: its name and its bytes. Kept as bytes, so a send can be
    repeated (another surface, a retry) and the picture re-encoded to fit."""

    filename: str
    data: bytes = field(repr=False)

    def file(self) -> discord.File:
        """A fresh ``discord.File`` for one request."""
        return discord.File(io.BytesIO(self.data), filename=self.filename)


def result_files(image_png: bytes, palette_png: bytes) -> list[Upload]:
    return [Upload(IMAGE_NAME, image_png), Upload(PALETTE_NAME, palette_png)]


class UploadTooLarge(VoxCanvasError):
    default_message = "The picture is too large to upload here, even compressed."


def upload_limit(guild: discord.Guild | None, interaction_limit: int | None = None) -> int:
    """Bytes of files a message may carry where it goes.

    A guild boosted to tier 2 or more has its own, larger limit; otherwise the smaller of
    discord.py's number and :data:`~bot.limits.DEFAULT_UPLOAD_BYTES` (10 MiB for bots since
    2025). DMs: the default. An interaction says what Discord allows for its response
    (``attachment_size_limit``): never more than that."""
    if guild is None:
        limit = DEFAULT_UPLOAD_BYTES
    elif (guild.premium_tier or 0) >= BOOSTED_PREMIUM_TIER:
        limit = guild.filesize_limit
    else:
        limit = min(guild.filesize_limit, DEFAULT_UPLOAD_BYTES)
    return limit if not interaction_limit else min(limit, interaction_limit)


def fit_uploads(
    files: Sequence[Upload], embed: discord.Embed | None, limit: int
) -> tuple[list[Upload], discord.Embed | None]:
    """``files`` within ``limit`` bytes in all, and ``embed`` pointing at them.

    When they don't fit, the largest PNG (the picture) is re-encoded as WebP, or else JPEG, at
    the best quality that fits (:func:`encode_to_fit`); an embed that shows it as its image is
    pointed at the new name (a copy; the given embed is left alone). CPU work: call it in a
    worker thread. Raises :class:`UploadTooLarge` when nothing fits."""
    total = sum(len(f.data) for f in files)
    if total <= limit:
        return list(files), embed
    pngs = [i for i, f in enumerate(files) if f.filename.lower().endswith(".png")]
    if not pngs:
        raise UploadTooLarge()
    index = max(pngs, key=lambda i: len(files[i].data))
    picture = files[index]
    data, extension = encode_to_fit(picture.data, limit - (total - len(picture.data)))
    renamed = Upload(f"{picture.filename.rsplit('.', 1)[0]}.{extension}", data)
    log.info(
        "%s: %d bytes of files over the %d-byte upload limit; sent as %s (%d bytes)",
        picture.filename,
        total,
        limit,
        renamed.filename,
        len(data),
    )
    fitted = [*files[:index], renamed, *files[index + 1 :]]
    if embed is not None and embed.image.url == f"attachment://{picture.filename}":
        embed = embed.copy()
        embed.set_image(url=f"attachment://{renamed.filename}")
    return fitted, embed


#: What :func:`encode_to_fit` tries, in order: (Pillow format, file extension, quality).
FALLBACK_ENCODINGS = (
    ("WEBP", "webp", 90),
    ("WEBP", "webp", 75),
    ("JPEG", "jpg", 85),
    ("JPEG", "jpg", 70),
    ("JPEG", "jpg", 50),
)
#: Then JPEG at this quality, the picture scaled by 3/4 each time, down to this side.
SCALED_JPEG_QUALITY = 75
SMALLEST_SCALED_SIDE = 64


def encode_to_fit(image_bytes: bytes, budget: int) -> tuple[bytes, str]:
    """The picture as WebP, else JPEG, in at most ``budget`` bytes: ``(data, extension)``.

    Tries :data:`FALLBACK_ENCODINGS` in order, then ever smaller JPEGs; raises
    :class:`UploadTooLarge` when even the smallest does not fit."""
    if budget > 0:
        with Image.open(io.BytesIO(image_bytes)) as opened:
            picture = opened.convert("RGB")
        for image_format, extension, quality in FALLBACK_ENCODINGS:
            data = _encode(picture, image_format, quality)
            if len(data) <= budget:
                return data, extension
        while min(picture.size) > SMALLEST_SCALED_SIDE:
            size = (max(1, picture.width * 3 // 4), max(1, picture.height * 3 // 4))
            picture = picture.resize(size, Image.Resampling.LANCZOS)
            data = _encode(picture, "JPEG", SCALED_JPEG_QUALITY)
            if len(data) <= budget:
                return data, "jpg"
    raise UploadTooLarge()


def _encode(picture: Image.Image, image_format: str, quality: int) -> bytes:
    out = io.BytesIO()
    picture.save(out, format=image_format, quality=quality)
    return out.getvalue()


def result_content(result: Result) -> str:
    parts = []
    if result.kind == "regenerate":
        parts.append(_("Regenerated with the critic's correction:"))
    elif result.kind == "vary":
        parts.append(_("A variation:"))
    parts.append(_("Palette:") + " " + " ".join(result.palette))
    return _clip(" ".join(parts), MESSAGE_CONTENT_CHARS)


def model_loras(round_: Round) -> str:
    """``name:0.8, other:0.5``."""
    return ", ".join(f"{name}:{weight:g}" for name, weight in round_.loras)


def details_text(result: Result) -> str:
    """The ephemeral Details view: the full scene and every round's QA report (labels in the
    language at hand; what the director and the critic wrote as they wrote it)."""
    scene = result.scene
    best = result.best
    model = (best.model or _("default")) + (f" ({best.family})" if best.family else "")
    model += f" · LoRA {model_loras(best)}" if best.loras else ""
    lines = [
        f"**{scene.title}**",
        scene.scene_description,
        "",
        _("**Elements:** {elements}").format(elements=", ".join(scene.elements)),
        _("**Style:** {style}").format(style=scene.style or "auto"),
        _("**Negative prompt:** {negative}").format(negative=scene.negative_prompt or "—"),
        _("**Palette:** {colours} (from the {source})").format(
            colours=" ".join(result.palette), source=result.palette_source
        ),
        _("**Tags:** {tags}").format(tags=", ".join(result.tags)),
        _("**Model:** {model}").format(model=model),
    ]
    if best.control:
        lines.append(
            _("**Control:** {mode} at strength {strength}").format(
                mode=best.control, strength=f"{best.control_strength or 1.0:g}"
            )
        )
    # Anyone who can see the message can press Details: the reason Gemini failed (it may quote
    # the provider's answer or a URL) is in the operator's log, not here.
    if result.director_fallback:
        lines.append(_("**Director:** fallback: {fallback}").format(fallback=_(FALLBACK_DIRECTOR)))
    if result.critic_fallback:
        lines.append(_("**Critic:** fallback: {fallback}").format(fallback=_(FALLBACK_CRITIC)))
    for r in result.rounds:
        marker = _(" ← shown") if r.index == result.best_round else ""
        lines += [
            "",
            _(
                "**Round {number}**{marker}: score {score}/100 · seed {seed} · {width}×{height} · {steps} steps · "
                "guidance {guidance}"
            ).format(
                number=r.index + 1,
                marker=marker,
                score=r.score,
                seed=r.seed,
                width=r.width,
                height=r.height,
                steps=r.steps,
                guidance=f"{r.guidance:g}",
            ),  # fmt: skip
            _("prompt: {prompt}").format(prompt=r.prompt),
        ]
        if r.prompt_chunks > 1:
            lines.append(
                _("(long prompt: {tokens} tokens encoded in {windows} windows)").format(
                    tokens=r.prompt_tokens, windows=r.prompt_chunks
                )
            )
        if r.missing_elements:
            lines.append(_("missing: {elements}").format(elements=", ".join(r.missing_elements)))
        if r.correction_prompt:
            lines.append(_("correction: {prompt}").format(prompt=r.correction_prompt))
        if r.critic_notes:
            lines.append(_("notes: {notes}").format(notes=r.critic_notes))
    return _clip("\n".join(lines), 1990)


STAGE_LINES = {
    "decode": N_("🎧 Reading your voice note…"),
    "transcribe": N_("🎙️ Transcribing…"),
    "direct": N_("🎬 Directing the scene…"),
    "review": N_("🔍 Reviewing the picture…"),
    "waiting": N_("🔌 Waiting for a GPU worker…"),
}


def progress_line(event: ProgressEvent, *, corrections: int = 0, candidates: int = 1) -> str:
    if event.stage == "queued":
        if event.position is None:
            return _("⏳ Starting…")
        eta = _(" (about {seconds} s)").format(seconds=max(1, round(event.eta_s))) if event.eta_s else ""
        return _("⏳ In the queue — position {position}").format(position=event.position) + eta
    if event.stage == "render":
        if event.total:
            bar_len = 10
            filled = round(bar_len * event.step / event.total)
            bar = "█" * filled + "░" * (bar_len - filled)
            verb = _("Correcting") if corrections else _("Rendering")
            if candidates > 1 and not corrections:
                verb = _("Rendering {count} candidates").format(count=candidates)
            return f"🎨 {verb} {bar} {event.step}/{event.total}"
        if candidates > 1 and not corrections:
            return _("🎨 Rendering {count} candidates…").format(count=candidates)
        return _("🎨 Rendering…")
    if event.stage == "review" and candidates > 1 and not corrections:
        return _("🔍 Reviewing {count} candidates…").format(count=candidates)
    if event.stage == "music":
        if event.total:
            filled = round(10 * event.step / event.total)
            return f"🎵 {_('Composing')} {'█' * filled}{'░' * (10 - filled)} {event.step}/{event.total}"
        return _("🎵 Composing…")
    if event.stage == "correct":
        return _("🛠️ Score below the bar — correcting…")
    if event.stage == "load":
        return _("📦 Loading {what}…").format(what=event.detail or _("the model"))
    line = STAGE_LINES.get(event.stage)
    return _(line) if line is not None else f"{event.stage}…"


def apology(job_id: str) -> str:
    return _("😵 Sorry — something broke on my side. I've logged it (job `{job_id}`); please try again.").format(
        job_id=job_id
    )
