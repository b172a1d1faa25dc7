"""The music side of directing: a MusicGen prompt for a picture's :class:`~pipeline.scene.Scene`,
and spotting an idea that asks for music rather than a picture.

:func:`music_prompt_for` is the local director's rule (Gemini writes ``Scene.music_prompt`` itself
when a key is set; an empty one is filled with this rule). Deterministic, no model: the scene's
text gives the mood, the setting and a tempo; the style gives a genre and instruments; the
palette's warmth and brightness give the tone. MusicGen was trained on descriptions of that kind
("calm ambient piano, ocean waves, warm, 70 bpm").

:func:`music_idea` tells "compose a calm seaside ambience" (music, straight to MusicGen) from
"a seaside at dusk" (a picture): the idea must *ask* for music — a composing verb or a music noun
at its start — so a picture of a piano stays a picture.
"""

from __future__ import annotations

import colorsys
import re
from collections.abc import Iterable

from ..limits import MAX_MUSIC_PROMPT_CHARS
from ..palette import hex_to_rgb
from ..scene import Scene, shorten

# Style → (genre, instruments).
STYLE_MUSIC: dict[str, tuple[str, str]] = {
    "photographic": ("ambient", "soft piano and warm pads"),
    "cinematic": ("cinematic orchestral score", "strings, brass and timpani"),
    "watercolour": ("gentle acoustic", "acoustic guitar, flute and light piano"),
    "anime": ("japanese anime soundtrack", "piano, strings and light drums"),
    "oil painting": ("classical chamber music", "string quartet and harpsichord"),
    "pixel art": ("8-bit chiptune", "square-wave synth lead and arpeggios"),
    "digital art": ("electronic", "synthesizers and deep bass"),
    "3d render": ("modern electronic", "clean synth plucks and soft beats"),
    "sketch": ("minimal solo piano", "a single felt piano"),
    "comic book": ("upbeat funk", "brass stabs, bass guitar and drums"),
}
DEFAULT_MUSIC = ("ambient", "soft piano and pads")

# Words in a scene → (mood, tempo in bpm). The first match in this order wins.
MOODS: tuple[tuple[tuple[str, ...], str, int], ...] = (
    (("battle", "war", "fight", "storm", "stormy", "explosion", "chase", "dragon"), "epic, intense, driving", 140),
    (("horror", "haunted", "creepy", "ghost", "skull", "zombie"), "dark, eerie, tense", 70),
    (("party", "dance", "festival", "carnival", "celebration", "neon"), "energetic, joyful", 124),
    (("race", "racing", "speed", "rocket", "running"), "fast, exciting", 150),
    (("sad", "rain", "rainy", "lonely", "grief", "funeral", "abandoned"), "melancholic, slow", 68),
    (("love", "romantic", "wedding", "couple", "heart"), "romantic, tender", 80),
    (("space", "galaxy", "stars", "nebula", "planet", "cosmic"), "vast, dreamy, spacious", 72),
    (("night", "moon", "moonlit", "midnight", "dusk", "twilight"), "calm, nocturnal, mysterious", 76),
    (("sea", "seaside", "ocean", "beach", "waves", "lake", "river", "harbour", "harbor"), "calm, flowing", 84),
    (("forest", "garden", "meadow", "field", "flowers", "mountain", "valley"), "peaceful, pastoral", 90),
    (("city", "street", "cyberpunk", "downtown", "traffic", "robot"), "urban, pulsing", 110),
    (("cat", "dog", "puppy", "kitten", "toy", "cartoon", "playful"), "playful, light-hearted", 112),
    (("kitchen", "cafe", "coffee", "apple", "table", "breakfast", "still life"), "cosy, relaxed", 88),
)
DEFAULT_MOOD = ("calm, atmospheric", 90)

# Words in a scene → a sound of the setting MusicGen knows to add.
SETTINGS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("sea", "seaside", "ocean", "beach", "waves", "harbour", "harbor"), "ocean waves"),
    (("rain", "rainy", "storm"), "rain"),
    (("forest", "jungle", "garden", "meadow"), "birdsong"),
    (("city", "street", "downtown", "traffic"), "distant city hum"),
    (("space", "galaxy", "nebula", "planet", "cosmic"), "shimmering synth textures"),
    (("fire", "campfire", "fireplace"), "crackling fire"),
    (("snow", "winter", "ice"), "soft wind"),
)

_WORD_RE = re.compile(r"[a-z][a-z'-]*")


def _words(text: str) -> set[str]:
    return set(_WORD_RE.findall(text.lower()))


def _first_match(words: set[str], text: str, table: Iterable[tuple[tuple[str, ...], str, int]]) -> tuple[str, int]:
    for keys, mood, bpm in table:
        if any((" " in k and k in text) or k in words for k in keys):
            return mood, bpm
    return DEFAULT_MOOD


def palette_tone(palette: Iterable[str]) -> str:
    """ "warm"/"cool"/"neutral" and "bright"/"dark" from the palette's mean hue and lightness."""
    warm = cool = 0.0
    lightness = []
    for colour in palette:
        r, g, b = (c / 255 for c in hex_to_rgb(colour))
        h, light, s = colorsys.rgb_to_hls(r, g, b)
        lightness.append(light)
        if s < 0.15:
            continue  # greys say nothing about warmth
        degrees = h * 360
        if degrees < 70 or degrees >= 300:
            warm += s
        elif 160 <= degrees < 280:
            cool += s
    temperature = "warm" if warm > cool * 1.2 else "cool" if cool > warm * 1.2 else "neutral"
    mean_light = sum(lightness) / len(lightness) if lightness else 0.5
    brightness = "bright" if mean_light > 0.6 else "dark" if mean_light < 0.3 else ""
    return " and ".join(p for p in (temperature, brightness) if p and p != "neutral") or "balanced"


def music_prompt_for(scene: Scene) -> str:
    """The local director's MusicGen prompt for a picture: genre, mood, instruments, setting
    sound, tone, tempo. Deterministic."""
    text = f"{scene.title} {scene.scene_description} {' '.join(scene.elements)} {' '.join(scene.tags)}".lower()
    words = _words(text)
    mood, bpm = _first_match(words, text, MOODS)
    genre, instruments = STYLE_MUSIC.get(scene.style or "", DEFAULT_MUSIC)
    setting = next((sound for keys, sound in SETTINGS if any(k in words for k in keys)), "")
    parts = [f"{mood} {genre}", f"with {instruments}"]
    if setting:
        parts.append(f"{setting} in the background")
    parts.append(f"{palette_tone(scene.palette)} tone")
    parts.append(f"{bpm} bpm")
    parts.append(f"a soundtrack for {shorten(scene.title, 60)}")
    return shorten(", ".join(parts), MAX_MUSIC_PROMPT_CHARS, ellipsis=False)


# --- a spoken idea that asks for music ------------------------------------------------------------
_MUSIC_NOUNS = (
    r"music|song|songs|tune|melody|soundtrack|score|ambience|ambiance|soundscape|beat|beats|track|jingle|"
    r"lullaby|anthem|loop|symphony|sonata|theme|groove|riff|chiptune|lo-?fi"
)
_POLITE = r"(?:(?:please|hey|ok(?:ay)?|now|so|and)[\s,]+)*(?:(?:can|could|would|will) you[\s,]+)?(?:please[\s,]+)?"
_ASK_MUSIC = re.compile(
    rf"^{_POLITE}(?:compose|play|write|make|create|generate|produce|give me|i want|i'd like)\s+"
    rf"(?:me\s+|us\s+)?(?P<rest>.*\b(?:{_MUSIC_NOUNS})\b.*)$"
    rf"|^{_POLITE}(?P<verb_only>compose)[\s:]+(?P<rest2>.+)$",
    re.IGNORECASE,
)


def music_idea(idea: str) -> str | None:
    """The music description when ``idea`` asks for music ("compose a calm seaside ambience" →
    "a calm seaside ambience"; "play some lofi beats for studying" → "lofi beats for studying"),
    else None (the idea is a picture)."""
    # Speech recognition punctuates freely ("Please, compose a ..."): commas are no words.
    text = " ".join(str(idea).replace(",", " ").split()).strip(" .!?")
    match = _ASK_MUSIC.match(text)
    if match is None:
        return None
    rest = (match.group("rest") or match.group("rest2") or "").strip(" .!?,")
    rest = re.sub(r"^(?:some|me)\s+", "", rest, flags=re.IGNORECASE)
    return shorten(rest, MAX_MUSIC_PROMPT_CHARS, ellipsis=False) or None
