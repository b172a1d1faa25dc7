"""The prompt blocklist: a default list shipped with the project (``pipeline/data/blocklist.txt``,
its source and licence in its header) plus a server's own words and regexes.

Pure and synchronous: :meth:`Blocklist.find` says which rule a text breaks (or ``None``);
:func:`screen` raises :class:`PromptBlocked` — a user-facing error naming the rule, never the
matched word — for the blocklist that applies to the current job. The job runner sets a server's
rules for a job with :func:`job_rules` (a context variable, so the studio's every stage sees them
without passing them through); the studio screens the typed idea, the transcript, the director's
prompt and the critic's correction prompt.

Matching is on whole words after normalisation (Unicode NFKC, case folding, accents dropped,
common l33t digits such as ``n00d`` read as letters, zero-width characters removed). A server's
regexes (``re:...``) run under the ``regex`` library with a time limit, so a catastrophic pattern
from an admin cannot stall the event loop.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Final

import regex

from .errors import VoxCanvasError

log = logging.getLogger(__name__)

MAX_GUILD_RULES: Final = 100
MAX_RULE_CHARS: Final = 100
REGEX_TIMEOUT_S: Final = 0.05
REGEX_PREFIX: Final = "re:"
_LEET: Final = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_INVISIBLE: Final = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))


class PromptBlocked(VoxCanvasError):
    """A text broke a blocklist rule. ``rule`` names it (a category or a server rule's number),
    ``where`` the stage (typed idea, spoken idea, director's prompt, correction prompt)."""

    def __init__(self, rule: str, where: str) -> None:
        self.rule = rule
        self.where = where
        super().__init__(
            f"I can't draw that: the {where} breaks the moderation rule “{rule}”. Please rephrase your idea."
        )


class BadRule(VoxCanvasError):
    """A server rule that can't be used (too long, an invalid regex)."""


@dataclass(frozen=True, slots=True)
class Rule:
    label: str  # what a refusal names: a category of the default list or "server rule #n"
    pattern: regex.Pattern[str]
    raw: bool = False  # a server regex: run on the text as typed (lower-cased), not normalised


def normalise(text: str) -> str:
    """Case-folded NFKC text, accents dropped, invisible characters removed."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).translate(_INVISIBLE))
    return "".join(c for c in text if not unicodedata.combining(c)).casefold()


def _term_pattern(term: str) -> str:
    """A whole-word pattern for a term; ``*`` at the end: any ending; spaces: any separators."""
    stem, wildcard = (term[:-1], True) if term.endswith("*") else (term, False)
    words = [regex.escape(w) for w in normalise(stem).split()]
    body = r"[\s\-_.]+".join(words)
    ending = r"\w*" if wildcard else r"(?!\w)"
    return r"(?<!\w)" + body + ending


def _compile_terms(label: str, terms: Sequence[str]) -> Rule:
    return Rule(label, regex.compile("|".join(_term_pattern(t) for t in terms)))


def parse_list(text: str) -> list[Rule]:
    """The default list's format: ``[category]`` sections of terms; ``#`` comments."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
            sections.setdefault(current, [])
        elif current is not None:
            sections[current].append(line)
    return [_compile_terms(label, terms) for label, terms in sections.items() if terms]


def guild_rule(index: int, text: str) -> Rule:
    """A server's rule: a word or phrase (``*`` wildcard at the end allowed), or ``re:<regex>``."""
    text = text.strip()
    if not text or len(text) > MAX_RULE_CHARS:
        raise BadRule(f"A blocklist entry must be 1 to {MAX_RULE_CHARS} characters.")
    label = f"server rule #{index}"
    if text.startswith(REGEX_PREFIX):
        try:
            return Rule(label, regex.compile(text[len(REGEX_PREFIX) :], regex.IGNORECASE), raw=True)
        except regex.error as exc:
            raise BadRule(f"That regex doesn't compile ({exc}).") from exc
    return _compile_terms(label, [text])


class Blocklist:
    """Rules in order; the first one a text breaks is reported."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)

    @classmethod
    @functools.cache
    def default(cls) -> Blocklist:
        text = (resources.files("pipeline") / "data" / "blocklist.txt").read_text(encoding="utf-8")
        return cls(parse_list(text))

    def with_guild_rules(self, entries: Sequence[str]) -> Blocklist:
        """This list plus a server's entries (numbered from 1 in the order given)."""
        return Blocklist([*self.rules, *(guild_rule(i, e) for i, e in enumerate(entries[:MAX_GUILD_RULES], 1))])

    def find(self, text: str) -> Rule | None:
        plain = normalise(text)
        leet = plain.translate(_LEET)
        for rule in self.rules:
            candidates = (text.casefold(), plain) if rule.raw else (plain, leet)
            for candidate in candidates:
                try:
                    if rule.pattern.search(candidate, timeout=REGEX_TIMEOUT_S):
                        return rule
                except TimeoutError:
                    log.warning("moderation: %s timed out on a %d-char text; treated as a match", rule.label, len(text))
                    return rule
        return None


OnRefusal = Callable[[PromptBlocked], None]
_job_blocklist: contextvars.ContextVar[tuple[Blocklist, OnRefusal | None] | None] = contextvars.ContextVar(
    "job_blocklist", default=None
)


def active() -> Blocklist:
    """The blocklist for the current job: its server's (see :func:`job_rules`) or the default."""
    current = _job_blocklist.get()
    return current[0] if current is not None else Blocklist.default()


@contextlib.contextmanager
def job_rules(entries: Sequence[str], on_refusal: OnRefusal | None = None) -> Iterator[Blocklist]:
    """Within this block (and the tasks it starts), :func:`screen` uses the default list plus ``entries``
    and tells ``on_refusal`` (the moderation log) before it raises. An entry that can't be compiled
    is skipped (it was validated when the admin added it)."""
    rules = []
    for i, entry in enumerate(entries[:MAX_GUILD_RULES], 1):
        try:
            rules.append(guild_rule(i, entry))
        except BadRule:
            log.warning("moderation: server rule #%d is invalid; skipped", i)
    blocklist = Blocklist([*Blocklist.default().rules, *rules])
    token = _job_blocklist.set((blocklist, on_refusal))
    try:
        yield blocklist
    finally:
        _job_blocklist.reset(token)


def screen(text: str | None, where: str) -> None:
    """Raise :class:`PromptBlocked` if ``text`` breaks a rule of the current job's blocklist."""
    if not text:
        return
    rule = active().find(text)
    if rule is not None:
        log.info("moderation: %s refused by %s", where, rule.label)
        refusal = PromptBlocked(rule.label, where)
        current = _job_blocklist.get()
        if current is not None and current[1] is not None:
            try:
                current[1](refusal)
            except Exception:
                log.exception("moderation: the refusal could not be logged")
        raise refusal
