"""docs/benchmarks.md is what `python -m bench --table` makes of bench/results/ and the
hand-written sections in bench/notes/: regenerating it loses nothing, and it is never stale."""

from __future__ import annotations

from bench import report


def test_the_published_page_is_the_generated_one():
    page = report.DOCS_PATH.read_text()
    assert report.render_markdown() == page  # after a new run or note: `python -m bench --table`
    for part in ("cpu", "gpu"):
        note = (report.NOTES_DIR / f"{part}.md").read_text().strip()
        assert note and note in page
    assert page.index((report.NOTES_DIR / "cpu.md").read_text().strip()) < page.index("## GPU mode")


def test_a_missing_notes_file_leaves_the_generated_parts(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "NOTES_DIR", tmp_path)
    page = report.render_markdown()
    assert page.startswith("# Benchmarks") and "## CPU mode" in page and "## GPU mode" in page
    assert "(g) Issue #16" not in page
