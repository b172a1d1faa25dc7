"""One way to call Gemini: structured JSON output, retries, an overall time limit, one error type.

The creative director (:mod:`pipeline.directors.gemini`) and the vision critic (:mod:`pipeline.critic`)
both ask Gemini for a JSON object shaped like a pydantic model, through one call,
:meth:`GeminiProvider.generate`. This module is the only place that talks to ``google-genai``:

* **Client** — :func:`make_client` builds a ``genai.Client`` for the Gemini Developer API
  (``vertexai=False`` explicitly, so a stray ``GOOGLE_GENAI_USE_VERTEXAI`` in the environment
  can't redirect it), with ``base_url`` from ``GOOGLE_GEMINI_BASE_URL`` when that is set (the SDK
  reads the same environment variable itself; we pass the setting explicitly so a ``.env`` file
  works too).
* **Retries** — google-genai does *not* retry unless ``HttpOptions.retry_options`` is given.
  :func:`generate_structured` attaches ``HttpRetryOptions`` to every request (per-request
  ``config.http_options``, so the policy holds for an injected client too): ``GEMINI_RETRIES + 1``
  attempts, exponential back-off from :class:`RetryPolicy`, on HTTP 408/429/500/502/503/504 and
  on connection errors. The SDK's per-attempt time-out (aiohttp ``ClientTimeout``) is *not*
  retried by the SDK.
* **Time limit** — ``GEMINI_TIMEOUT_S`` bounds the whole call, retries and back-off included
  (``asyncio.wait_for``); the same number is passed as the per-attempt ``HttpOptions.timeout``
  (milliseconds, an ``int``).
* **Answer checks** — ``response.parsed`` is ``None`` whenever the text is not valid JSON for the
  schema (the SDK swallows the ``ValidationError``). We then re-validate the text ourselves to
  produce a *reason*: blocked prompt, no candidate, a non-STOP finish reason, empty text, not
  JSON, or the first schema errors.

Every failure becomes :class:`~pipeline.errors.ProviderError` with a short reason; the caller
falls back to the local director / CLIP critic and records that reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from .errors import ProviderError
from .prompts import TokenCounter
from .settings import Settings

if TYPE_CHECKING:
    from google import genai
    from google.genai import types as genai_types

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

#: HTTP statuses worth another attempt: request time-out, rate limit, server errors.
RETRYABLE_STATUS = (408, 429, 500, 502, 503, 504)


@dataclass(frozen=True)
class RetryPolicy:
    """Back-off between attempts (seconds). The number of attempts comes from ``GEMINI_RETRIES``.

    The wait before retry *n* (1-based) is
    ``min(max_delay, initial_delay * exp_base**(n-1) + uniform(0, jitter))`` (tenacity's
    ``wait_exponential_jitter``, which the SDK uses). Tests pass
    ``RetryPolicy(initial_delay=0.01, max_delay=0.05, jitter=0)``.
    """

    initial_delay: float = 1.0
    max_delay: float = 8.0
    exp_base: float = 2.0
    jitter: float = 0.5

    def http_retry_options(self, attempts: int) -> genai_types.HttpRetryOptions:
        from google.genai import types

        return types.HttpRetryOptions(
            attempts=max(1, attempts),
            initial_delay=self.initial_delay,
            max_delay=self.max_delay,
            exp_base=self.exp_base,
            jitter=self.jitter,
            http_status_codes=list(RETRYABLE_STATUS),
        )


DEFAULT_RETRY = RetryPolicy()


def make_client(settings: Settings) -> genai.Client:
    """A ``genai.Client`` for the Gemini Developer API, or :class:`ProviderError` without a key.

    One client can be shared by the director and the critic; it owns aiohttp sessions, so close
    it with ``await client.aio.aclose()`` on shutdown.
    """
    from google import genai
    from google.genai import types

    if settings.GEMINI_API_KEY is None:
        raise ProviderError("GEMINI_API_KEY is not set.")
    http_options = types.HttpOptions(
        base_url=settings.GOOGLE_GEMINI_BASE_URL or None,
        timeout=_timeout_ms(settings.GEMINI_TIMEOUT_S),
    )
    return genai.Client(
        api_key=settings.GEMINI_API_KEY.get_secret_value(),
        vertexai=False,
        http_options=http_options,
    )


def _timeout_ms(seconds: float) -> int:
    return max(1, int(round(seconds * 1000)))


async def generate_structured(
    client: Any,
    *,
    model: str,
    contents: Any,
    schema: type[M],
    system_instruction: str,
    settings: Settings,
    retry: RetryPolicy = DEFAULT_RETRY,
    temperature: float | None = None,
    what: str = "Gemini",
) -> M:
    """Ask ``model`` for one JSON object shaped like ``schema`` and return it validated.

    Raises :class:`ProviderError` with a short reason on any failure (HTTP error after the
    retries, time-out, blocked prompt, non-JSON or off-schema answer, connection error).
    """
    from google.genai import errors as genai_errors
    from google.genai import types

    attempts = settings.GEMINI_RETRIES + 1
    config = types.GenerateContentConfig(
        system_instruction=system_instruction,
        response_mime_type="application/json",
        response_schema=schema,
        temperature=temperature,
        candidate_count=1,
        # No tools are declared: switch automatic function calling off (and its log line).
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        http_options=types.HttpOptions(
            timeout=_timeout_ms(settings.GEMINI_TIMEOUT_S),
            retry_options=retry.http_retry_options(attempts),
        ),
    )
    started = time.perf_counter()
    try:
        response = await asyncio.wait_for(
            client.aio.models.generate_content(model=model, contents=contents, config=config),
            timeout=settings.GEMINI_TIMEOUT_S,
        )
    except TimeoutError as exc:  # asyncio.TimeoutError is TimeoutError since 3.11
        raise ProviderError(f"{what} did not answer within {settings.GEMINI_TIMEOUT_S:g} s.") from exc
    except genai_errors.APIError as exc:
        status = f"HTTP {exc.code}" + (f" {exc.status}" if exc.status else "")
        if exc.code in RETRYABLE_STATUS and attempts > 1:
            status += f" after {attempts} attempts"
        raise ProviderError(f"{what} answered {status}: {_short(exc.message)}") from exc
    except asyncio.CancelledError:
        raise
    except (OSError, aiohttp.ClientError) as exc:  # refused, DNS, TLS, reset, ...
        raise ProviderError(f"{what} could not be reached: {type(exc).__name__}: {_short(str(exc))}") from exc
    except Exception as exc:  # an SDK or schema error: fall back, never crash the job
        log.warning("%s request failed", what, exc_info=exc)
        raise ProviderError(f"{what} request failed: {type(exc).__name__}: {_short(str(exc))}") from exc
    log.debug("%s answered in %.2f s", what, time.perf_counter() - started)
    return parse_structured(response, schema, what=what)


def parse_structured(response: Any, schema: type[M], *, what: str = "Gemini") -> M:
    """``GenerateContentResponse`` → a validated ``schema`` instance, or :class:`ProviderError`."""
    feedback = getattr(response, "prompt_feedback", None)
    if feedback is not None and getattr(feedback, "block_reason", None):
        raise ProviderError(f"{what} blocked the request ({_enum_name(feedback.block_reason)}).")
    candidates = getattr(response, "candidates", None) or []
    if not candidates:
        raise ProviderError(f"{what} returned no answer.")
    finish = getattr(candidates[0], "finish_reason", None)
    finish_name = _enum_name(finish) if finish is not None else None
    parsed = getattr(response, "parsed", None)
    if isinstance(parsed, schema):
        return parsed
    try:
        text = response.text
    except Exception:
        text = None
    if finish_name not in (None, "STOP", "FINISH_REASON_UNSPECIFIED"):
        raise ProviderError(f"{what} stopped early ({finish_name}).")
    if not text or not text.strip():
        raise ProviderError(f"{what} returned an empty answer.")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProviderError(f"{what} did not answer with JSON ({exc.msg}): {_short(text, 80)}") from exc
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ProviderError(
            f"{what}'s answer did not match the {schema.__name__} schema: {validation_summary(exc)}"
        ) from exc


def validation_summary(exc: ValidationError, limit: int = 3) -> str:
    """The first few pydantic errors as 'field: message; ...'."""
    parts = []
    for error in exc.errors()[:limit]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "answer"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _enum_name(value: Any) -> str:
    return str(getattr(value, "name", value))


def _short(text: str | None, limit: int = 200) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def escape_data(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` so user text can't close or open a ``<tag>`` block."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def delimit(tag: str, text: str) -> str:
    """``<tag>`` + escaped ``text`` + ``</tag>``: untrusted input passed as clearly marked data."""
    return f"<{tag}>\n{escape_data(text)}\n</{tag}>"


class GeminiProvider:
    """What the Gemini director and critic share: the client (shared or owned), the token
    counter, the retry policy, the sampling temperature and the one call, :meth:`generate`."""

    name = "gemini"
    default_temperature = 0.7
    #: Set by each provider: the system instruction of its calls, and how its errors name it.
    system_instruction: ClassVar[str] = ""
    label: ClassVar[str] = "Gemini"

    def __init__(
        self,
        settings: Settings,
        *,
        client: Any | None = None,
        count_tokens: TokenCounter | None = None,
        retry: RetryPolicy | None = None,
        temperature: float | None = None,
    ) -> None:
        self.settings = settings
        self._owns_client = client is None
        self.client = client if client is not None else make_client(settings)
        self.count_tokens = count_tokens
        self.retry = retry or DEFAULT_RETRY
        self.temperature = self.default_temperature if temperature is None else temperature

    async def generate(self, contents: Any, schema: type[M]) -> M:
        """Ask for one ``schema`` object (:func:`generate_structured`) with this provider's model,
        system instruction, retry policy and temperature; errors are named by :attr:`label`."""
        return await generate_structured(
            self.client,
            model=self.settings.GEMINI_MODEL,
            contents=contents,
            schema=schema,
            system_instruction=self.system_instruction,
            settings=self.settings,
            retry=self.retry,
            temperature=self.temperature,
            what=self.label,
        )

    async def aclose(self) -> None:
        """Close the client's HTTP sessions if this provider created the client."""
        if self._owns_client:
            await self.client.aio.aclose()
