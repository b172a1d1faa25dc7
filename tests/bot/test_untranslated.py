"""No reply text written in English only: a scan of the cogs, the views and the runner for string
literals (or f-strings) handed straight to a user-facing call (message content, embed titles,
fields, labels) instead of going through ``_()`` and the catalogs."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Calls whose text arguments reach the user (message content, embed titles, labels).
USER_FACING = {"send_message", "send", "edit_original_response", "Embed", "add_field", "set_footer", "TextInput"}
USER_KEYWORDS = {"content", "title", "label", "placeholder", "name", "value", "text"}


def _literal_words(node: ast.AST) -> str | None:
    """The words of a string literal or f-string (its constant parts), or None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
    return None


def untranslated(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if func not in USER_FACING:
            continue
        arguments = [*node.args, *(k.value for k in node.keywords if k.arg in USER_KEYWORDS)]
        for argument in arguments:
            words = _literal_words(argument)
            # Letters outside {placeholders}, markup and emoji: words a user reads.
            if words and any(w.isalpha() and len(w) > 2 for w in words.replace("{", " ").split()):
                found.append(f"{path.name}:{node.lineno}: {words!r}")
    return found


def test_no_untranslated_user_facing_literals_in_the_cogs():
    files = sorted((ROOT / "cogs").glob("*.py")) + [ROOT / "bot" / "views.py", ROOT / "bot" / "runner.py"]
    assert len(files) > 5 and all(path.exists() for path in files)
    assert [line for path in files for line in untranslated(path)] == []


def test_the_scan_finds_an_untranslated_reply(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "async def f(i):\n"
        "    await i.response.send_message(f'Queue: {n} waiting', ephemeral=True)\n"
        "    await i.response.send_message(_('Queue: {n} waiting').format(n=1), ephemeral=True)\n"
    )
    assert untranslated(sample) == ["sample.py:2: 'Queue:  waiting'"]
