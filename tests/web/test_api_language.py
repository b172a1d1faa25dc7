"""Issue #17: the HTTP API answers in the client's language. ``Accept-Language`` (quality values
honoured) is matched against the shipped languages with Babel; error messages come from the same
catalogs as the Discord replies; every answer names its language in ``Content-Language``."""

from __future__ import annotations

import pytest

from web.language import MAX_HEADER_BYTES, negotiate

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, "en"),
        ("", "en"),
        ("de-DE,de;q=0.9,en;q=0.5", "de"),
        ("fr;q=0.3, ja;q=0.8", "ja"),
        ("pt-BR, es-419;q=0.7, *;q=0.1", "es"),
        ("pt-BR, *;q=0.5", "en"),
        ("ja;q=0, fr", "fr"),  # q=0 means "not this one"
        ("en-GB;q=oops, de;q=0.2", "de"),  # an unreadable quality counts as 0
        ("x" * 10 * MAX_HEADER_BYTES, "en"),  # hostile length: read only the first bytes
        ("de," * 1000 + "fr", "de"),
    ],
)
def test_negotiate(header, language):
    assert negotiate(header) == language


async def test_errors_are_in_the_clients_language(serve):
    served = await serve()
    async with served.client() as client:
        for header, language, text in (
            ("de-DE,de;q=0.9,en;q=0.5", "de", "Diesen Auftrag gibt es nicht"),
            ("fr;q=0.3, ja;q=0.8", "ja", "そのジョブはありません"),
            ("pt-BR", "en", "There's no such job"),
            (None, "en", "There's no such job"),
        ):
            headers = {"Accept-Language": header} if header else {}
            missing = await client.get("/api/jobs/j-does-not-exist", headers=headers)
            assert missing.status_code == 404
            assert missing.headers["content-language"] == language
            assert missing.json()["message"].startswith(text), missing.json()

        empty = await client.post("/api/jobs", json={}, headers={"Accept-Language": "es-ES"})
        assert empty.status_code in (400, 422) and empty.headers["content-language"] == "es"
        assert "Todavía no hay nada que dibujar" in empty.json()["message"], empty.json()

        health = await client.get("/healthz", headers={"Accept-Language": "fr"})
        assert health.headers["content-language"] == "fr"  # every answer names its language
        assert "accept-language" in health.headers["vary"].lower()  # caches keep one answer per language
