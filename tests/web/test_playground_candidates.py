"""The playground with several candidates, in a real browser (Debian's chromium through
Playwright): "pictures: 4" → the job's picture, each candidate's score with the best marked ★,
and the labelled grid."""

from __future__ import annotations

import pytest

from tests.web.test_playground import CHROMIUM_ARGS, chromium

pytestmark = pytest.mark.timeout(240)


async def test_four_candidates_ranked_in_the_browser(serve):
    playwright_api = pytest.importorskip("playwright.async_api")
    executable = chromium()
    served = await serve(QA_MAX_ROUNDS=0)
    console_errors: list[str] = []
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844})
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            await page.goto(served.url + "/")
            await page.fill("#idea-text", "a red apple on a wooden table")
            await page.select_option("#count", "4")
            await page.click("#run")
            await page.wait_for_function(
                "document.getElementById('result-image').naturalWidth > 0"
                " && document.getElementById('grid-image').naturalWidth > 0",
                timeout=180_000,
            )
            cells = await page.locator("#candidates li").all_text_contents()
            assert len(cells) == 4, cells
            scores = [int(c.split("/")[0]) for c in cells]
            assert all(0 <= s <= 100 for s in scores)
            starred = [i for i, c in enumerate(cells) if "★" in c]
            assert len(starred) == 1 and scores[starred[0]] == max(scores)
            assert await page.evaluate("document.getElementById('grid-image').naturalWidth") > 128  # 2 × 64 + gap
            assert await page.evaluate("document.getElementById('result-image').naturalWidth") == 64
            assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            assert console_errors == []
        finally:
            await browser.close()
