"""A fake Gemini API: an aiohttp app on 127.0.0.1 that the real google-genai client talks to.

Point the SDK at it with ``GOOGLE_GEMINI_BASE_URL`` (``fake.url``) and any API key. It serves
``POST /{version}/models/{model}:generateContent`` (google-genai 3.4 sends
``/v1/models/gemini-2.5-flash:generateContent`` by default; ``v1beta`` with
``GOOGLE_GENAI_API_VERSION=beta``) and records every request, decoded.

Scripting — one queue of answers per purpose, ``"director"`` and ``"critic"`` (a request is a
critic request when it carries an image part or asks for the ``QAReport`` schema). A critic request
for several candidates (the ``CandidateReviews`` schema, one image part each) is answered with
``{"reviews": [...]}``: script that shape, or a single report (then every picture gets it)::

    fake.script("director", Status(429), Status(503), {"title": ...})   # two errors, then JSON
    fake.script("critic", Delay(2.0))        # answer late (the default answer, after 2 s)
    fake.script("director", Raw("not json"))  # a text part that isn't JSON
    fake.script("critic", Envelope({...}))    # a whole response body, as is

An entry is a JSON-able object (dict/list, or a pydantic model → its JSON), :class:`Raw` text,
:class:`Status` (an HTTP error with a Google-style error body), :class:`Delay` (wait, then answer
``then`` or the default), or :class:`Envelope` (the full response body). When a queue is empty
the default answer for that purpose is used: ``fake.default_scene`` / ``fake.default_report``
(both valid; change them freely). ``fake.always(purpose, entry)`` makes an entry permanent.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import deque
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from pipeline.gemini import RetryPolicy

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@dataclass(frozen=True)
class Raw:
    """Answer with this exact text as the model's text part (e.g. something that isn't JSON)."""

    text: str
    finish_reason: str = "STOP"


@dataclass(frozen=True)
class Status:
    """Answer with an HTTP error and a Google-style ``{"error": {...}}`` body."""

    code: int
    message: str = "fake error"


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds``, then answer ``then`` (``None``: the default answer)."""

    seconds: float
    then: Any = None


@dataclass(frozen=True)
class Envelope:
    """Answer with this whole response body, as is (e.g. a blocked prompt, no candidates)."""

    body: dict


@dataclass
class RecordedRequest:
    """One request as the fake saw it."""

    version: str
    model: str
    method: str
    headers: dict[str, str]
    body: dict
    purpose: str

    @property
    def api_key(self) -> str | None:
        return self.headers.get("x-goog-api-key")

    @property
    def system_instruction(self) -> str:
        si = self.body.get("systemInstruction") or {}
        return "\n".join(p.get("text", "") for p in si.get("parts", []) if "text" in p)

    @property
    def generation_config(self) -> dict:
        return self.body.get("generationConfig") or {}

    @property
    def response_schema(self) -> dict | None:
        cfg = self.generation_config
        return cfg.get("responseSchema") or cfg.get("responseJsonSchema")

    @property
    def response_mime_type(self) -> str | None:
        return self.generation_config.get("responseMimeType")

    @property
    def parts(self) -> list[dict]:
        return [p for c in self.body.get("contents", []) for p in c.get("parts", [])]

    @property
    def texts(self) -> list[str]:
        """The user's text parts, in order."""
        return [p["text"] for p in self.parts if "text" in p]

    @property
    def text(self) -> str:
        return "\n".join(self.texts)

    @property
    def images(self) -> list[tuple[str, bytes]]:
        """``(mime type, bytes)`` of every inline data part (standard or URL-safe base64)."""
        out = []
        for part in self.parts:
            blob = part.get("inlineData") or part.get("inline_data")
            if blob:
                out.append((blob.get("mimeType") or blob.get("mime_type"), decode_b64(blob["data"])))
        return out


def decode_b64(data: str) -> bytes:
    """Decode standard or URL-safe base64, with or without padding."""
    data = data.replace("+", "-").replace("/", "_").strip()
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _default_scene() -> dict:
    return {
        "title": "A red apple",
        "language": "en",
        "scene_description": "A glossy red apple on a rustic wooden table in soft morning light.",
        "elements": ["red apple", "wooden table"],
        "diffusion_prompt": "a glossy red apple on a rustic wooden table, still life, "
        "oil painting, "
        "soft morning light, centered composition, highly detailed",
        "negative_prompt": "blurry, lowres, watermark, text",
        "palette": ["#C0392B", "#8E5B3A", "#F3E9DC"],
        "tags": ["apple", "still life", "fruit", "table", "oil painting"],
        "style": "oil painting",
        "music_prompt": "cosy classical chamber music with a string quartet, warm tone, 80 bpm",
    }


def _default_report() -> dict:
    return {
        "alignment_score": 92,
        "missing_elements": [],
        "correction_prompt": "a glossy red apple on a wooden table, still life, oil painting",
        "notes": "Fake critic: looks right.",
    }


class FakeGemini:
    """The fake server. ``async with FakeGemini() as fake:`` starts it on an ephemeral port."""

    PURPOSES = ("director", "critic", "describe")

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.queues: dict[str, deque] = {p: deque() for p in self.PURPOSES}
        self.permanent: dict[str, Any] = {}
        self.default_scene: dict = _default_scene()
        self.default_report: dict = _default_report()
        self.default_description: dict = {
            "prompts": [
                "a red apple on a wooden table, still life, oil painting, soft window light",
                "close-up of a glossy red apple, rustic wooden table, warm light, shallow depth of field",
            ]
        }
        self.url: str = ""
        self._runner: web.AppRunner | None = None

    # -- scripting -------------------------------------------------------------------------------
    def script(self, purpose: str, *entries: Any) -> FakeGemini:
        """Queue answers for ``purpose`` ("director" or "critic"), used once each, in order."""
        self._check(purpose)
        self.queues[purpose].extend(entries)
        return self

    def always(self, purpose: str, entry: Any) -> FakeGemini:
        """Answer every ``purpose`` request with ``entry`` once its queue is empty."""
        self._check(purpose)
        self.permanent[purpose] = entry
        return self

    def requests_for(self, purpose: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.purpose == purpose]

    def _check(self, purpose: str) -> None:
        if purpose not in self.PURPOSES:
            raise ValueError(f"purpose must be one of {self.PURPOSES}, not {purpose!r}")

    # -- server ----------------------------------------------------------------------------------
    async def __aenter__(self) -> FakeGemini:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post(r"/{version}/models/{model:[^/:]+}:generateContent", self._generate)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        # handler_cancellation: a client that gave up (time-out test) cancels a sleeping Delay, so
        # shutting down never waits for it
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _unknown(self, request: web.Request) -> web.Response:
        return _json(
            {
                "error": {
                    "code": 404,
                    "message": f"fake Gemini has no {request.path}",
                    "status": "NOT_FOUND",
                }
            },
            404,
        )

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return _json(
                {
                    "error": {
                        "code": 400,
                        "message": "body is not JSON",
                        "status": "INVALID_ARGUMENT",
                    }
                },
                400,
            )
        purpose = self._purpose(body)
        self.requests.append(
            RecordedRequest(
                version=request.match_info["version"],
                model=request.match_info["model"],
                method=request.method,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                purpose=purpose,
            )
        )
        if self.queues[purpose]:
            entry = self.queues[purpose].popleft()
        else:
            entry = self.permanent.get(purpose)
        return await self._answer(entry, purpose, reviews=self._reviews_wanted(body))

    @staticmethod
    def _reviews_wanted(body: dict) -> int | None:
        """The number of pictures of a several-candidates critic request (``CandidateReviews``
        schema), else None."""
        cfg = body.get("generationConfig") or {}
        schema = cfg.get("responseSchema") or cfg.get("responseJsonSchema") or {}
        if schema.get("title") != "CandidateReviews":
            return None
        return sum(
            1
            for content in body.get("contents", [])
            for part in content.get("parts", [])
            if "inlineData" in part or "inline_data" in part
        )

    @staticmethod
    def _purpose(body: dict) -> str:
        cfg = body.get("generationConfig") or {}
        schema = cfg.get("responseSchema") or cfg.get("responseJsonSchema") or {}
        if schema.get("title") in ("QAReport", "CandidateReviews"):
            return "critic"
        if schema.get("title") == "Scene":
            return "director"
        if schema.get("title") == "ImageDescription":
            return "describe"
        for content in body.get("contents", []):
            for part in content.get("parts", []):
                if "inlineData" in part or "inline_data" in part:
                    return "critic"
        return "director"

    async def _answer(self, entry: Any, purpose: str, *, reviews: int | None = None) -> web.Response:
        if isinstance(entry, Delay):
            await asyncio.sleep(entry.seconds)
            entry = entry.then
        if entry is None:
            defaults = {"director": self.default_scene, "critic": self.default_report}
            entry = defaults.get(purpose, self.default_description)
        if reviews is not None:
            if hasattr(entry, "model_dump"):
                entry = entry.model_dump()
            if isinstance(entry, dict) and "reviews" not in entry:
                # A single report scripted for a several-candidates request: every picture gets it.
                entry = {"reviews": [entry] * reviews}
        if isinstance(entry, Status):
            name = _STATUS_NAMES.get(entry.code, "UNKNOWN")
            return _json(
                {"error": {"code": entry.code, "message": entry.message, "status": name}},
                entry.code,
            )
        if isinstance(entry, Envelope):
            return _json(entry.body)
        if isinstance(entry, Raw):
            return _json(_envelope(entry.text, entry.finish_reason))
        if hasattr(entry, "model_dump_json"):
            return _json(_envelope(entry.model_dump_json()))
        return _json(_envelope(json.dumps(entry)))


def _envelope(text: str, finish_reason: str = "STOP") -> dict:
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": finish_reason,
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 100,
            "candidatesTokenCount": 50,
            "totalTokenCount": 150,
        },
        "modelVersion": "fake-gemini",
    }


def _json(body: Any, status: int = 200) -> web.Response:
    # Content-Type exactly application/json (aiohttp would add "; charset=utf-8" with json_response)
    return web.Response(
        body=json.dumps(body).encode("utf-8"),
        status=status,
        headers={"Content-Type": "application/json"},
    )


# ------------------------------------------------------------------------------------------------
# pytest fixtures (imported into tests/conftest.py)
# ------------------------------------------------------------------------------------------------
@pytest.fixture
async def fake_gemini():
    """A running :class:`FakeGemini`; its recorded requests are in ``fake_gemini.requests``."""
    async with FakeGemini() as fake:
        yield fake


@pytest.fixture
def gemini_settings(fake_gemini: FakeGemini, tmp_path):
    """``gemini_settings(**overrides)`` → Settings pointing at the fake: GEMINI_API_KEY="test-key",
    GOOGLE_GEMINI_BASE_URL=fake URL, GEMINI_TIMEOUT_S=5, GEMINI_RETRIES=3, no .env file."""
    from pipeline.settings import Settings

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = dict(
            GEMINI_API_KEY="test-key",
            GOOGLE_GEMINI_BASE_URL=fake_gemini.url,
            GEMINI_MODEL="gemini-2.5-flash",
            GEMINI_TIMEOUT_S=5.0,
            GEMINI_RETRIES=3,
            DEVICE="cpu",
            DATA_DIR=tmp_path / "data",
            _env_file=None,
        )
        values.update(overrides)
        return Settings(**values)

    return factory


#: A retry policy for tests: real retries, millisecond back-off.
FAST_RETRY = RetryPolicy(initial_delay=0.01, max_delay=0.05, exp_base=2.0, jitter=0.0)
