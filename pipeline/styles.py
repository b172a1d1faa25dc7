"""Style templates: how each named style shapes a diffusion prompt, and style names as users or
models spell them (:func:`resolve_style`, :func:`check_style`).

The templates are data: ``pipeline/data/styles.toml`` ships the built-in ones (read with the
standard library's ``tomllib``), and ``STYLES_FILE`` names a deployment's own file in the same
format, whose tables add styles or override fields of a built-in one of the same name
(:func:`install_styles_file`). A broken file is a :class:`StyleFileError` naming the file and the
line, raised when the settings are read (at start-up), never half-way through a job.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import tomllib
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from .errors import BadRequest

log = logging.getLogger(__name__)

#: The model families a style may prefer (``families`` in the file; see :mod:`.families`).
FAMILY_KEYS = ("sd", "sdxl", "sd3", "flux")
#: Bounds on what one styles file may hold (it is read whole at start-up).
MAX_STYLES_FILE_BYTES = 1_000_000
MAX_STYLES = 200
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9 '&+-]{0,38}[a-z0-9]$|^[a-z0-9]$")
_HEX_RE = re.compile(r"^#[0-9A-Fa-f]{6}$")


@dataclass(frozen=True)
class StyleTemplate:
    """How one style shapes a prompt. ``keywords`` both select the style and are removed from
    the subject (they become the medium); ``hints`` only select it and stay in the subject.
    ``negative`` is the file's ``negative_keywords``; ``examples`` its ``example_prompts`` (the
    director's few-shot examples); ``families`` the model families it suits best (a hint)."""

    name: str
    medium: str
    modifiers: tuple[str, ...]
    lighting: str
    composition: str
    quality: tuple[str, ...]
    negative: tuple[str, ...]
    palette: tuple[str, ...]
    keywords: tuple[str, ...] = ()
    hints: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    description: str = ""
    examples: tuple[str, ...] = ()
    families: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for a language model: medium, descriptors, lighting."""
        return ", ".join((self.medium, *self.modifiers, self.lighting, self.composition))


class StyleFileError(ValueError):
    """A styles file that can't be used; the message names the file and the line."""


# file field -> (StyleTemplate field, kind); "list" fields are tuples of non-empty strings.
_FIELDS: dict[str, tuple[str, str]] = {
    "name": ("name", "str"),
    "description": ("description", "str"),
    "medium": ("medium", "str"),
    "modifiers": ("modifiers", "list"),
    "lighting": ("lighting", "str"),
    "composition": ("composition", "str"),
    "quality": ("quality", "list"),
    "negative_keywords": ("negative", "list"),
    "palette": ("palette", "list"),
    "keywords": ("keywords", "list"),
    "hints": ("hints", "list"),
    "aliases": ("aliases", "list"),
    "tags": ("tags", "list"),
    "example_prompts": ("examples", "list"),
    "families": ("families", "list"),
}
_REQUIRED = ("name", "medium", "modifiers", "lighting", "composition", "quality", "negative_keywords", "palette")
_TEMPLATE_FIELDS = {f.name for f in fields(StyleTemplate)}


def _table_lines(text: str) -> list[int]:
    """The line number (1-based) of each ``[[style]]`` header, in order."""
    return [i for i, line in enumerate(text.splitlines(), 1) if re.match(r"^\s*\[\[\s*style\s*\]\]", line)]


def _field_line(text: str, start: int, key: str) -> int:
    """The line of ``key = ...`` in the table that starts at line ``start`` (else ``start``)."""
    lines = text.splitlines()
    for number in range(start + 1, len(lines) + 1):
        line = lines[number - 1]
        if re.match(r"^\s*\[", line):
            break
        if re.match(rf"^\s*{re.escape(key)}\s*=", line):
            return number
    return start


def parse_styles(text: str, source: str, *, base: dict[str, StyleTemplate] | None = None) -> dict[str, StyleTemplate]:
    """The styles of one file's ``text`` (``source``: its name for messages). A table whose name is
    in ``base`` overrides the fields it gives; a new name must give every required field.
    Raises :class:`StyleFileError` naming ``source`` and the line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message ends with "(at line N, column M)"
        raise StyleFileError(f"{source}: not valid TOML: {exc}") from None
    unknown_top = [k for k in data if k != "style"]
    if unknown_top:
        raise StyleFileError(f"{source}: unknown top-level key {unknown_top[0]!r} (expected [[style]] tables)")
    tables = data.get("style", [])
    if not isinstance(tables, list):
        raise StyleFileError(f"{source}: 'style' must be an array of tables ([[style]])")
    if len(tables) > MAX_STYLES:
        raise StyleFileError(f"{source}: {len(tables)} styles; at most {MAX_STYLES}")
    headers = _table_lines(text)
    base = base or {}
    styles: dict[str, StyleTemplate] = {}
    for index, table in enumerate(tables):
        start = headers[index] if index < len(headers) else 1

        def fail(message: str, key: str | None = None, start: int = start) -> StyleFileError:
            line = _field_line(text, start, key) if key else start
            return StyleFileError(f"{source}, line {line}: {message}")

        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in _FIELDS:
                raise fail(f"unknown field {key!r} (fields: {', '.join(_FIELDS)})", key)
            attr, kind = _FIELDS[key]
            if kind == "str":
                if not isinstance(value, str) or not value.strip() or len(value) > 500:
                    raise fail(f"{key} must be a non-empty string of at most 500 characters", key)
                values[attr] = " ".join(value.split())
            else:
                if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                    raise fail(f"{key} must be a list of non-empty strings", key)
                if len(value) > 50 or any(len(v) > 500 for v in value):
                    raise fail(f"{key}: at most 50 entries of at most 500 characters", key)
                values[attr] = tuple(" ".join(v.split()) for v in value)
        name = values.get("name")
        if name is None:
            raise fail("a style needs a name")
        name = name.lower()
        if not _NAME_RE.match(name):
            raise fail(f"style name {name!r}: lowercase letters, digits, spaces and - ' & + (1-40 characters)", "name")
        values["name"] = name
        if name in styles:
            raise fail(f"style {name!r} is defined twice in this file", "name")
        if "palette" in values:
            bad = [c for c in values["palette"] if not _HEX_RE.match(c)]
            if bad or not 3 <= len(values["palette"]) <= 6:
                raise fail(f"palette must be 3 to 6 '#RRGGBB' colours (got {list(values['palette'])})", "palette")
            values["palette"] = tuple(c.upper() for c in values["palette"])
        if "families" in values:
            bad = [f for f in values["families"] if f not in FAMILY_KEYS]
            if bad:
                raise fail(f"unknown family {bad[0]!r} (families: {', '.join(FAMILY_KEYS)})", "families")
        for key in ("keywords", "hints", "aliases"):
            attr = _FIELDS[key][0]
            if attr in values:
                values[attr] = tuple(v.lower() for v in values[attr])
        if name in base:
            styles[name] = replace(base[name], **values)
        else:
            missing = [k for k in _REQUIRED if _FIELDS[k][0] not in values]
            if missing:
                raise fail(f"new style {name!r} lacks {', '.join(missing)}")
            styles[name] = StyleTemplate(**{k: v for k, v in values.items() if k in _TEMPLATE_FIELDS})
    return styles


def load_styles_file(path: Path | str, *, base: dict[str, StyleTemplate] | None = None) -> dict[str, StyleTemplate]:
    """:func:`parse_styles` of a file on disk (bounded before it is read whole)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_STYLES_FILE_BYTES:
            raise StyleFileError(f"{path}: {size} bytes; a styles file may have at most {MAX_STYLES_FILE_BYTES}")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StyleFileError(f"{path}: can't be read ({exc})") from None
    return parse_styles(text, str(path), base=base)


def _builtin() -> dict[str, StyleTemplate]:
    text = (resources.files("pipeline") / "data" / "styles.toml").read_text(encoding="utf-8")
    return parse_styles(text, "pipeline/data/styles.toml")


BUILTIN_STYLES: dict[str, StyleTemplate] = _builtin()
DEFAULT_STYLE = "digital art"

#: A server's own styles (``/settings style``) in use by the code running now: set per job and per
#: interaction with :func:`server_styles`, seen through :data:`STYLES` in that context only.
_SERVER_STYLES: contextvars.ContextVar[Mapping[str, StyleTemplate]] = contextvars.ContextVar(
    "voxcanvas_server_styles", default=MappingProxyType({})
)


class StyleTable(MutableMapping[str, StyleTemplate]):
    """The deployment's styles (built-in + ``STYLES_FILE``) plus, in the current context only, the
    server styles of :func:`server_styles`. The deployment's names win: a server style may not
    shadow one (it is refused when added; a later ``STYLES_FILE`` of the same name wins)."""

    def __init__(self, base: Mapping[str, StyleTemplate]) -> None:
        self._base: dict[str, StyleTemplate] = dict(base)

    @property
    def deployment(self) -> Mapping[str, StyleTemplate]:
        """The built-in and file styles only (no server style)."""
        return self._base

    def __getitem__(self, name: str) -> StyleTemplate:
        if name in self._base:
            return self._base[name]
        return _SERVER_STYLES.get()[name]

    def __setitem__(self, name: str, template: StyleTemplate) -> None:
        self._base[name] = template

    def __delitem__(self, name: str) -> None:
        del self._base[name]

    def __iter__(self) -> Iterator[str]:
        yield from self._base
        yield from (n for n in _SERVER_STYLES.get() if n not in self._base)

    def __len__(self) -> int:
        return len(self._base) + sum(1 for n in _SERVER_STYLES.get() if n not in self._base)

    def __contains__(self, name: object) -> bool:
        return name in self._base or name in _SERVER_STYLES.get()


#: The styles in use: the built-in ones plus ``STYLES_FILE``'s (:func:`install_styles_file`), plus
#: a server's own where :func:`server_styles` is in effect. Updated in place, never replaced.
STYLES: StyleTable = StyleTable(BUILTIN_STYLES)


@contextlib.contextmanager
def server_styles(styles: Mapping[str, StyleTemplate] | None) -> Iterator[None]:
    """Within the block (this task or thread and what it starts), :data:`STYLES` also offers
    ``styles`` — one server's own. ``None`` or empty: nothing changes."""
    if not styles:
        yield
        return
    token = _SERVER_STYLES.set(dict(styles))
    try:
        yield
    finally:
        _SERVER_STYLES.reset(token)


# Server styles (/settings style add): the source design's few fields, bounded like the file's.
MAX_SERVER_STYLES = 25
MAX_STYLE_DESCRIPTION_CHARS = 200
MAX_STYLE_KEYWORDS = 20
MAX_STYLE_KEYWORD_CHARS = 60


def _keyword_list(value: str | list[str] | tuple[str, ...] | None, what: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value or ())
    words = tuple(dict.fromkeys(" ".join(str(v).split()) for v in items if str(v).strip()))
    if len(words) > MAX_STYLE_KEYWORDS or any(len(w) > MAX_STYLE_KEYWORD_CHARS for w in words):
        raise BadRequest(
            f"{what}: at most {MAX_STYLE_KEYWORDS} entries, separated by commas, of at most "
            f"{MAX_STYLE_KEYWORD_CHARS} characters each."
        )
    return words


def server_style(
    name: str,
    description: str,
    keywords: str | list[str] | tuple[str, ...],
    negative: str | list[str] | tuple[str, ...] = (),
) -> StyleTemplate:
    """A server's own style, validated: ``keywords`` (comma-separated) become the prompt's medium
    and descriptors, ``negative`` its negative keywords; lighting, composition, quality and palette
    are the default style's. Raises :class:`BadRequest` (fit for users) for a bad one."""
    key = " ".join(str(name).strip().lower().split())
    if not _NAME_RE.match(key) or key in {"none", "null", "auto", "any"}:
        raise BadRequest("A style name has 1-40 lowercase letters, digits, spaces and - ' & +.")
    if key in STYLES.deployment or key in _STYLE_ALIASES:
        raise BadRequest(f"{key!r} is already a built-in style — pick another name.")
    text = " ".join(str(description).split())
    if not text or len(text) > MAX_STYLE_DESCRIPTION_CHARS:
        raise BadRequest(f"Give a description of 1 to {MAX_STYLE_DESCRIPTION_CHARS} characters.")
    words = _keyword_list(keywords, "Keywords")
    if not words:
        raise BadRequest("Give at least one keyword (what the prompt should say), separated by commas.")
    avoid = _keyword_list(negative, "Negative keywords")
    default = BUILTIN_STYLES[DEFAULT_STYLE]
    return replace(
        default,
        name=key,
        description=text,
        medium=words[0],
        modifiers=words[1:],
        negative=avoid,
        keywords=(),
        hints=(),
        tags=(),
        examples=(),
        families=(),
        aliases=(),
    )


def style_to_dict(template: StyleTemplate) -> dict[str, Any]:
    """A template as JSON-ready data (a job records its server style this way)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(template).items()}


def style_from_dict(data: Mapping[str, Any]) -> StyleTemplate:
    """:func:`style_to_dict` back (unknown keys ignored; lists become tuples)."""
    values: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in _TEMPLATE_FIELDS
    }
    return StyleTemplate(**values)


_installed: Path | None = None

#: The built-in names (a Literal for schemas; styles from STYLES_FILE are checked at run time).
StyleName = Literal[tuple(BUILTIN_STYLES)]  # type: ignore[valid-type]


def install_styles_file(path: Path | str | None) -> StyleTable:
    """Use the built-in styles plus ``path``'s (``None``: the built-in ones only). Returns
    :data:`STYLES`. Raises :class:`StyleFileError` (and changes nothing) for a broken file."""
    global _installed
    extra = load_styles_file(path, base=BUILTIN_STYLES) if path is not None else {}
    STYLES.clear()
    STYLES.update(BUILTIN_STYLES)
    STYLES.update(extra)
    _installed = Path(path) if path is not None else None
    _rebuild_aliases()
    if extra:
        log.info("styles: %d built-in, %d from %s (%s)", len(BUILTIN_STYLES), len(extra), path, ", ".join(extra))
    return STYLES


_STYLE_ALIASES: dict[str, str] = {}


def _rebuild_aliases() -> None:
    _STYLE_ALIASES.clear()
    for name, template in STYLES.deployment.items():
        for alias in template.aliases:
            if alias not in STYLES:
                _STYLE_ALIASES.setdefault(alias, name)


_rebuild_aliases()


def matching_styles(current: str, extra: list[str] | tuple[str, ...] = (), limit: int = 25) -> list[str]:
    """Style names for an autocomplete: those starting with what was typed first, then those
    containing it, then those whose description or keywords contain it (``extra``: more names,
    e.g. a server's own styles, offered first)."""
    typed = " ".join(current.lower().split())
    names = list(dict.fromkeys([*extra, *STYLES]))
    if not typed:
        return names[:limit]
    starts = [n for n in names if n.startswith(typed)]
    contains = [n for n in names if typed in n and n not in starts]
    described = [
        n
        for n in names
        if n in STYLES
        and n not in starts
        and n not in contains
        and (
            typed in STYLES[n].description.lower() or any(typed in k for k in (*STYLES[n].keywords, *STYLES[n].aliases))
        )
    ]
    return (starts + contains + described)[:limit]


# fmt: off
BASE_NEGATIVE = (
    "lowres", "blurry", "low quality", "jpeg artifacts", "watermark", "text", "signature",
    "deformed", "bad anatomy", "extra limbs", "cropped", "out of frame",
)
# fmt: on


def check_style(name: str | None) -> str | None:
    """:func:`resolve_style` for a user's request: an unknown name is a :class:`BadRequest`."""
    try:
        return resolve_style(name)
    except ValueError as exc:
        raise BadRequest(f"Unknown style {name!r}. Choose one of: {', '.join(STYLES)}.") from exc


_KEEP_UNKNOWN: contextvars.ContextVar[bool] = contextvars.ContextVar("voxcanvas_keep_unknown_styles", default=False)


@contextlib.contextmanager
def keeping_unknown_styles() -> Iterator[None]:
    """Within the block, :func:`stored_style` keeps well-formed unknown names (reading stored jobs)."""
    token = _KEEP_UNKNOWN.set(True)
    try:
        yield
    finally:
        _KEEP_UNKNOWN.reset(token)


def stored_style(name: str | None) -> str | None:
    """:func:`resolve_style`; inside :func:`keeping_unknown_styles` (a stored job read back) a
    well-formed name that is no style now is kept as it is — a server style removed after the job
    ran, whose prompt already carries the style, so Regenerate and Vary keep working."""
    try:
        return resolve_style(name)
    except ValueError:
        key = " ".join(str(name).strip().lower().split())
        if _KEEP_UNKNOWN.get() and _NAME_RE.match(key):
            return key
        raise


def resolve_style(name: str | None) -> str | None:
    """A style name as a user or a model might spell it → a key of :data:`STYLES`, or ``None``.

    Raises ``ValueError`` for a name that is not a style."""
    if name is None:
        return None
    key = " ".join(str(name).strip().lower().replace("_", " ").split())
    if not key or key in {"none", "null", "auto", "any"}:
        return None
    if key in STYLES:
        return key
    key = _STYLE_ALIASES.get(key, _STYLE_ALIASES.get(key.replace(" ", "-"), key))
    if key in STYLES:
        return key
    raise ValueError(f"unknown style {name!r}; choose one of: {', '.join(STYLES)}")
