"""Expert prompt enhancement from a knowledge folder (``STYLE_KNOWLEDGE``; off by default).

The folder holds short notes (``.txt`` or ``.md``), one file per style or subject
(``watercolour.md``, ``portraits.txt``, ...), each split into passages at blank lines. For an idea
the passages are ranked with Okapi BM25 over the idea's words plus the style's name, and the best
few (bounded in count and characters) are given to the director as context.

BM25, not a sentence-embedding model: the notes are a few dozen short, keyword-rich texts written
for this purpose, where exact terms ("impasto", "golden hour") are what matter and BM25 is the
standard; it needs no model download, runs in microseconds, and is deterministic. It is the
textbook formula in a few lines rather than the ``rank-bm25`` package, which is unmaintained since
2022 and would add a dependency for those same few lines.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAX_FILES = 500
MAX_FILE_BYTES = 64 * 1024
MAX_PASSAGE_CHARS = 400
MAX_CONTEXT_CHARS = 1200
TOP_K = 3
SUFFIXES = (".txt", ".md")
K1 = 1.5
B = 0.75
# fmt: off
_STOP = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was with "
    "i me my we you your please draw make picture image show want can could would like some".split()
)
# fmt: on
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """Lowercase word tokens without stop words (plural 's' folded: "apples" → "apple")."""
    out = []
    for word in _WORD.findall(text.lower()):
        if word in _STOP:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        out.append(word)
    return out


@dataclass(frozen=True)
class Passage:
    topic: str  # the file's name without suffix ("watercolour")
    text: str


class Knowledge:
    """The passages of a knowledge folder and their BM25 index (built once, read-only after)."""

    def __init__(self, passages: list[Passage]) -> None:
        self.passages = passages
        self._terms = [Counter(words(f"{p.topic} {p.text}")) for p in passages]
        self._lengths = [sum(t.values()) for t in self._terms]
        self._average = (sum(self._lengths) / len(self._lengths)) if passages else 0.0
        frequency: Counter[str] = Counter()
        for terms in self._terms:
            frequency.update(terms.keys())
        n = len(passages)
        self._idf = {term: math.log(1 + (n - df + 0.5) / (df + 0.5)) for term, df in frequency.items()}

    @classmethod
    def load(cls, folder: Path | str) -> Knowledge:
        """Every ``.txt``/``.md`` file of ``folder`` (not recursive; bounded in count and size)."""
        folder = Path(folder)
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        if len(files) > MAX_FILES:
            log.warning("STYLE_KNOWLEDGE: %d files; reading the first %d", len(files), MAX_FILES)
            files = files[:MAX_FILES]
        passages: list[Passage] = []
        for path in files:
            if path.stat().st_size > MAX_FILE_BYTES:
                log.warning("STYLE_KNOWLEDGE: %s is over %d bytes; skipped", path.name, MAX_FILE_BYTES)
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("STYLE_KNOWLEDGE: can't read %s (%s); skipped", path.name, exc)
                continue
            topic = path.stem.replace("_", " ").replace("-", " ").lower()
            for block in re.split(r"\n\s*\n", text):
                lines = [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]
                passage = " ".join(" ".join(lines).split())
                if passage:
                    passages.append(Passage(topic, passage[:MAX_PASSAGE_CHARS]))
        log.info("STYLE_KNOWLEDGE: %d passages from %d files in %s", len(passages), len(files), folder)
        return cls(passages)

    def score(self, query: str) -> list[float]:
        """The BM25 score of every passage for ``query``."""
        terms = set(words(query))
        scores = []
        for counts, length in zip(self._terms, self._lengths, strict=True):
            total = 0.0
            for term in terms:
                tf = counts.get(term, 0)
                if tf:
                    norm = tf + K1 * (1 - B + B * length / (self._average or 1.0))
                    total += self._idf[term] * tf * (K1 + 1) / norm
            scores.append(total)
        return scores

    def search(self, query: str, k: int = TOP_K) -> list[Passage]:
        """The ``k`` best passages with a positive score, best first (ties: file order)."""
        scores = self.score(query)
        ranked = sorted((i for i, s in enumerate(scores) if s > 0), key=lambda i: (-scores[i], i))
        return [self.passages[i] for i in ranked[:k]]

    def context(self, idea: str, style: str | None = None) -> str:
        """The director's context for ``idea`` (and the chosen style): the best passages, each
        on a line starting with its topic, at most :data:`MAX_CONTEXT_CHARS`; "" when none match."""
        lines: list[str] = []
        used = 0
        for passage in self.search(f"{idea} {style or ''}"):
            line = f"- [{passage.topic}] {passage.text}"
            if used + len(line) > MAX_CONTEXT_CHARS:
                break
            lines.append(line)
            used += len(line) + 1
        return "\n".join(lines)
