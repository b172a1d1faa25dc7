"""The local director: deterministic, no model, no network.

It picks a style, strips filler ("please draw", "can you make me a picture of"), extracts the
subject and its key elements, and writes a Stable Diffusion prompt in the usual order — subject,
medium and style descriptors, lighting, composition, quality terms — fitted to the CLIP window.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from .. import families
from ..families import FamilyProfile
from ..prompts import TokenCounter, fit_prompt
from ..scene import Scene, dedupe, language_code
from ..styles import BASE_NEGATIVE, DEFAULT_STYLE, STYLES, StyleTemplate, check_style
from .soundtrack import music_prompt_for

log = logging.getLogger(__name__)

#: The local director's budget for the subject; the rest is for medium, style and quality terms.
SUBJECT_TOKEN_LIMIT = 45
#: What the local director draws when an idea has nothing but filler in it ("um").
ABSTRACT_SUBJECT = "abstract composition of soft shapes and colour"

# fmt: off
COLOUR_WORDS: dict[str, str] = {
    # multi-word names matter only for matching, which goes longest-first
    "navy blue": "#1F2A44", "sky blue": "#87CEEB", "light blue": "#ADD8E6",
    "dark blue": "#00008B", "royal blue": "#4169E1", "dark green": "#006400",
    "light green": "#90EE90", "forest green": "#228B22", "hot pink": "#FF69B4", "red": "#D62828",
    "crimson": "#DC143C", "scarlet": "#FF2400", "maroon": "#800000", "burgundy": "#800020",
    "pink": "#FFC0CB", "magenta": "#FF00FF", "purple": "#6A0DAD", "violet": "#8F00FF",
    "lavender": "#B57EDC", "indigo": "#4B0082", "blue": "#1E63D6", "navy": "#1F2A44",
    "turquoise": "#40E0D0", "teal": "#008080", "cyan": "#00B7EB", "aqua": "#00FFFF",
    "green": "#2E8B57", "lime": "#32CD32", "olive": "#808000", "mint": "#98FF98",
    "emerald": "#50C878", "yellow": "#FFD60A", "gold": "#D4AF37", "golden": "#D4AF37",
    "amber": "#FFBF00", "orange": "#F77F00", "peach": "#FFCBA4", "coral": "#FF7F50",
    "brown": "#8B5A2B", "chocolate": "#7B3F00", "tan": "#D2B48C", "beige": "#E8DCC4",
    "cream": "#FFFDD0", "ivory": "#FFFFF0", "white": "#F8F8F8", "black": "#111111",
    "grey": "#808080", "gray": "#808080", "silver": "#C0C0C0", "charcoal": "#36454F",
    "bronze": "#CD7F32", "copper": "#B87333", "rust": "#B7410E", "sepia": "#704214",
}
# fmt: on
_COLOUR_RE = re.compile(r"\b(" + "|".join(re.escape(c) for c in sorted(COLOUR_WORDS, key=len, reverse=True)) + r")\b")

# fmt: off
_FILLER_PHRASES = sorted(
    (
        tuple(p.split())
        for p in (
            # hesitations and greetings
            "um", "umm", "uh", "uhh", "erm", "er", "hmm", "ah", "oh", "okay", "ok", "so", "well",
            "hey", "hi", "hello", "yo", "right", "alright", "like", "you know", "and", "also",
            "voxcanvas", "bot", "hey bot",
            # politeness and requests
            "please", "kindly", "can you", "could you", "would you", "will you", "can u",
            "i want you to", "i'd like you to", "i would like you to", "i need you to", "i want",
            "i'd like", "i would like", "i need", "i wanna", "let's see", "let me see",
            "how about", "what about", "there should be", "try", "go ahead and", "just",
            "i was thinking", "i'm thinking", "i am thinking", "i think", "i guess", "maybe",
            "perhaps", "what if", "let's", "let's do", "let's have", "i'd love", "i would love",
            # verbs asking for a picture
            "draw", "paint", "make", "create", "generate", "render", "show", "give", "design",
            "imagine", "illustrate", "produce", "depict", "picture", "visualize", "visualise",
            "me", "us", "for me",
            # "a picture of"
            "a picture of", "an image of", "a painting of", "a drawing of", "a photo of",
            "a photograph of", "an illustration of", "a scene of", "a scene with",
            "a scene where", "picture of", "image of", "drawing of", "an artwork of",
            "artwork of", "a pic of", "something like", "something with", "some kind of",
            "a kind of", "kind of", "sort of",
        )
    ),
    key=len,
    reverse=True,
)
_TRAILING_FILLER = sorted(
    (
        tuple(p.split())
        for p in (
            "please", "thanks", "thank you", "for me", "if you can", "if possible", "okay", "ok",
            "thanks a lot", "thank you very much", "right now", "now", "um", "uh",
        )
    ),
    key=len,
    reverse=True,
)
_DETERMINERS = {
    "a", "an", "the", "some", "my", "your", "his", "her", "its", "our", "their", "this", "that",
    "these", "those", "any", "another", "very", "really", "just", "lots", "lot", "bunch", "of",
    "kind", "sort", "type", "there", "is", "are", "be", "with", "and",
}
_SPLITTERS = {
    "and", "with", "on", "in", "at", "under", "over", "above", "below", "beside", "near",
    "behind", "inside", "by", "into", "onto", "from", "through", "across", "around", "between",
    "against", "beneath", "atop", "while", "who", "which", "that", "where", "as", "to", "next",
    "front", "top", "made", "full", "covered", "surrounded", "filled", "has", "have", "having",
    "is", "are", "being", "during", "without", "or", "for", "like",
}
_ING_NOUNS = {
    "building", "painting", "ring", "king", "wing", "string", "evening", "morning", "ceiling",
    "clothing", "thing", "something", "nothing", "everything", "anything", "spring", "swing",
    "sibling", "pudding", "dumpling", "wedding", "lightning", "stocking", "earring", "icing",
    "frosting", "duckling", "viking", "sling", "awning", "clearing", "landing", "railing",
    "lighting", "drawing", "sing", "bling", "sapling", "offering", "opening", "gathering",
}
_NOT_ELEMENTS = {
    "style", "background", "foreground", "picture", "image", "photo", "scene", "view", "detail",
    "details", "colour", "colours", "color", "colors", "way", "kind", "sort", "lot",
}
# fmt: on
_STOP_TAGS = _DETERMINERS | _SPLITTERS | {"of", "style"}

_WORD_RE = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*|[,.;:!?]", re.UNICODE)


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower().replace("’", "'"))


def _strip_phrases(words: list[str], phrases: list[tuple[str, ...]], *, leading: bool) -> list[str]:
    changed = True
    while changed and words:
        changed = False
        while words and words[0 if leading else -1] in {",", ".", ";", ":", "!", "?"}:
            words = words[1:] if leading else words[:-1]
            changed = True
        for phrase in phrases:
            n = len(phrase)
            if len(words) >= n and tuple(words[:n] if leading else words[-n:]) == phrase:
                words = words[n:] if leading else words[:-n]
                changed = True
                break
    return words


def _join(words: list[str]) -> str:
    text = " ".join(words)
    return re.sub(r"\s+([,.;:!?])", r"\1", text).strip(" ,.;:!?")


@dataclass(frozen=True)
class _Parsed:
    subject: str
    style: str
    style_from: str  # "request", "keyword", "hint" or "default"
    colours: list[str]


class LocalDirector:
    """A deterministic director: no model, no network. Same input → same :class:`Scene`.

    It never fails on text it is given: an idea with nothing usable in it (``"um"``) becomes a
    minimal abstract scene; the loop refuses truly empty ideas before calling a director.
    Non-English ideas are kept as they are (the SD 1.x text encoder understands little but
    English; the Gemini director translates).

    The palette comes from colour words in the idea, padded with the style's default colours.
    Without colour words it is the style's stock palette, marked ``palette_source="default"``,
    and the loop replaces it with the palette extracted from the rendered image
    (:func:`pipeline.palette.extract_palette`).
    """

    name = "local"

    def __init__(self, *, count_tokens: TokenCounter | None = None) -> None:
        self.count_tokens = count_tokens

    async def direct(
        self,
        idea: str,
        *,
        style: str | None = None,
        language: str = "en",
        family: FamilyProfile | None = None,
        context: str = "",
    ) -> Scene:
        """``context`` (knowledge passages) is for a language model; the rule-based director
        keeps to its templates and ignores it."""
        return self.scene_for(idea, style=style, language=language, family=family)

    # The synchronous core (it is pure string work).
    def scene_for(
        self, idea: str, *, style: str | None = None, language: str = "en", family: FamilyProfile | None = None
    ) -> Scene:
        """``family`` (the model's, when known) shapes the prompt: SD 1.x gets a tag list, SDXL,
        SD3 and FLUX a sentence (T5 families with a larger budget); no negative prompt for a
        family that has none."""
        parsed = self._parse(idea, style)
        template = STYLES[parsed.style]
        # A long, rambling idea keeps its first clauses: the subject gets at most
        # SUBJECT_TOKEN_LIMIT tokens so that the medium and style always fit after it.
        subject = fit_prompt(
            parsed.subject or ABSTRACT_SUBJECT,
            count_tokens=self.count_tokens,
            limit=SUBJECT_TOKEN_LIMIT,
        )
        elements = self._elements(parsed.subject) or [self._fallback_element(parsed.subject)]
        limit = families.prompt_token_limit(family)
        if family is not None and family.prompt_style == "sentences":
            details = ", ".join((*template.modifiers, template.lighting, template.composition))
            text = f"{subject[:1].upper()}{subject[1:]}, shown as {template.medium}, {details}."
        else:
            parts = (subject, template.medium, *template.modifiers, template.lighting, template.composition)
            text = ", ".join((*parts, *template.quality))
        prompt = fit_prompt(text, count_tokens=self.count_tokens, limit=limit)
        negative = fit_prompt(", ".join(dedupe((*template.negative, *BASE_NEGATIVE))), count_tokens=self.count_tokens)
        if family is not None and not family.negative_prompts:
            negative = ""
        palette = dedupe([COLOUR_WORDS[c] for c in parsed.colours])[:6]
        for colour in template.palette:
            if len(palette) >= 5 or (len(palette) >= 3 and parsed.colours):
                break
            if colour not in palette:
                palette.append(colour)
        try:
            language = language_code(language)
        except ValueError:
            language = "en"
        scene = Scene(
            title=self._title(subject),
            language=language,
            scene_description=self._description(subject, template, elements),
            elements=elements,
            diffusion_prompt=prompt,
            negative_prompt=negative,
            palette=palette,
            tags=self._tags(elements, parsed, template),
            style=parsed.style,
            palette_source="director" if parsed.colours else "default",
        )
        return scene.model_copy(update={"music_prompt": music_prompt_for(scene)})

    # -- parsing -------------------------------------------------------------------------------
    def _parse(self, idea: str, requested: str | None) -> _Parsed:
        text = " ".join(str(idea).split())
        lowered = text.lower()
        colours = [m.group(1) for m in _COLOUR_RE.finditer(lowered)]
        colours = dedupe(colours)

        style_from = "default"
        style = DEFAULT_STYLE
        requested = check_style(requested)
        if requested:
            style, style_from = requested, "request"
        else:
            found = self._detect_style(lowered)
            if found:
                style, style_from = found

        # Remove every style keyword of the chosen style (it becomes the medium).
        words = _words(text)
        body = " " + " ".join(words) + " "
        for template in (STYLES[style],) if style_from != "default" else ():
            for keyword in sorted(template.keywords, key=len, reverse=True):
                body = _remove_style_phrase(body, keyword)
        words = body.split()
        words = _strip_phrases(words, _FILLER_PHRASES, leading=True)
        words = _strip_phrases(words, _TRAILING_FILLER, leading=False)
        subject = _join(words)
        if not any(ch.isalnum() for ch in subject):
            subject = ""
        return _Parsed(subject=subject, style=style, style_from=style_from, colours=colours)

    @staticmethod
    def _detect_style(lowered: str) -> tuple[str, str] | None:
        """The style whose keyword appears first wins; longer keywords beat their prefixes. Hints
        (words that suggest a style without naming the medium) count only without a keyword."""
        for kind, attr in (("keyword", "keywords"), ("hint", "hints")):
            best: tuple[int, int, str] | None = None
            for name, template in STYLES.items():
                for keyword in getattr(template, attr):
                    match = re.search(rf"(?<![\w-]){re.escape(keyword)}(?![\w-])", lowered)
                    if match:
                        rank = (match.start(), -len(keyword), name)
                        if best is None or rank < best:
                            best = rank
            if best is not None:
                return best[2], kind
        return None

    @staticmethod
    def _elements(subject: str) -> list[str]:
        if not subject:
            return []
        words = _words(subject)
        chunks: list[list[str]] = [[]]
        skip_until_break = False
        for i, word in enumerate(words):
            nxt = words[i + 1] if i + 1 < len(words) else ""
            is_verb = word.endswith("ing") and len(word) > 4 and word not in _ING_NOUNS
            if word in {",", ".", ";", ":", "!", "?"} or word in _SPLITTERS or is_verb:
                chunks.append([])
                skip_until_break = False
                continue
            if word == "style" and nxt == "of" or skip_until_break:
                # "in the style of van gogh" describes the look, not a thing in the picture
                skip_until_break = True
                chunks[-1] = []
                continue
            chunks[-1].append(word)
        elements: list[str] = []
        for chunk in chunks:
            while chunk and (chunk[0] in _DETERMINERS or chunk[0] in _TRAILING_WORDS):
                chunk = chunk[1:]
            while chunk and (chunk[-1] in _DETERMINERS or chunk[-1] in _TRAILING_WORDS):
                chunk = chunk[:-1]
            if not chunk:
                continue
            if all(w in COLOUR_WORDS or w in _NOT_ELEMENTS or w.isdigit() for w in chunk):
                continue  # "in red", "in the background": not a thing to look for
            elements.append(" ".join(chunk[-4:]))
        return dedupe(elements)[:8]

    @staticmethod
    def _fallback_element(subject: str) -> str:
        words = [w for w in _words(subject) if w.isalnum() and w not in _DETERMINERS]
        return " ".join(words[:4]) or "abstract shapes"

    @staticmethod
    def _title(subject: str) -> str:
        words = subject.split()
        while len(words) > 1 and words[0].lower() in {"a", "an", "the", "some"}:
            words = words[1:]
        title = " ".join(words)
        if len(title) > 60:
            title = title[:60].rsplit(" ", 1)[0].rstrip(" ,.;:") + "…"
        return title[:1].upper() + title[1:]

    @staticmethod
    def _description(subject: str, template: StyleTemplate, elements: list[str]) -> str:
        things = ", ".join(elements)
        return (
            f"{subject[:1].upper() + subject[1:]}. A {template.medium}; {template.lighting}, "
            f"{template.composition}. Key elements: {things}."
        )

    @staticmethod
    def _tags(elements: list[str], parsed: _Parsed, template: StyleTemplate) -> list[str]:
        candidates: list[str] = [template.name]
        for element in elements:
            words = [w for w in element.split() if w not in _STOP_TAGS and w not in COLOUR_WORDS]
            if words:
                candidates.append(words[-1])
        candidates += parsed.colours
        candidates += template.tags
        tags: list[str] = []
        for tag in (*candidates, *_PADDING_TAGS):
            if len(tags) >= 5 and tag in _PADDING_TAGS:
                break
            tag = re.sub(r"[^a-z0-9 \-]", "", tag.lower()).strip()
            if tag and len(tag) <= 32 and tag not in tags:
                tags.append(tag)
        return tags[:10]


_PADDING_TAGS = ("artwork", "ai art", "voxcanvas", "art", "picture")
_TRAILING_WORDS = {"please", "thanks", "now", "too", "also", "here", "there", "it", "one", "up"}


def _remove_style_phrase(body: str, keyword: str) -> str:
    """Remove 'in a watercolour style', 'a watercolour painting of', 'as an anime', ... around
    ``keyword`` from a lower-cased, space-padded text."""
    kw = re.escape(keyword)
    pattern = (
        r"\s(?:(?:done|drawn|painted|rendered|made|shown)\s)?(?:(?:in|as|with)\s)?(?:(?:an?|the)\s)?"
        + kw
        + r"(?:\s(?:style|styled|look|aesthetic|art|artwork))?"
        r"(?:\s(?:painting|picture|image|drawing|illustration|render|rendering|photo|photograph|"
        r"shot|still|scene|version|sketch))?(?:\sof)?(?=\s)"
    )
    return re.sub(pattern, " ", body)
