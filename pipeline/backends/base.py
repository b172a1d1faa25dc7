"""What every render backend is: the :class:`RenderBackend` interface, its capabilities, the jobs
it is given, its errors, and the HTTP plumbing the remote ones share.

A remote backend (A1111/Forge, ComfyUI, Stability, Replicate) is driven from the event loop with
aiohttp: it never occupies the GPU thread. Its HTTP calls are bounded three ways:

* **time** — every request has a total timeout (``REMOTE_TIMEOUT_S``) and a whole render a
  deadline (the executor's stage timeout);
* **size** — a response body is read in chunks and refused past :data:`MAX_RESPONSE_BYTES`
  (an image may be base64 inside JSON, so that is ~4/3 of :data:`~pipeline.limits.MAX_IMAGE_BYTES`
  plus room for the rest of the payload); every returned image is then checked from its header by
  :mod:`pipeline.images` before its pixels are decoded;
* **tries** — connection errors, timeouts, 429 and 5xx are retried ``REMOTE_RETRIES`` times with
  exponential back-off, honouring ``Retry-After`` (capped); then :class:`BackendUnavailable`
  names the backend for the user. 4xx other than 429, and answers that are not what the protocol
  promises, are :class:`BackendRefused` / :class:`BackendGarbage` straight away (retrying would
  get the same answer).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

import aiohttp
from PIL import Image

from .. import limits
from ..errors import BadRequest, JobCancelled, VoxCanvasError
from ..images import decode_init_image

if TYPE_CHECKING:
    from ..families import FamilyProfile

log = logging.getLogger(__name__)

#: A JSON answer may carry a base64 image (4/3 of its bytes) and some metadata.
MAX_RESPONSE_BYTES = limits.MAX_IMAGE_BYTES * 4 // 3 + 1024 * 1024
#: A JSON answer without an image (a status, a progress poll) is far smaller.
MAX_JSON_BYTES = 1024 * 1024
#: A server's Retry-After is honoured up to this many seconds (then we give up sooner).
MAX_RETRY_AFTER_S = 30.0
#: How often a waiting render looks at its job's cancel flag (and polls a polling API, at most).
POLL_INTERVAL_S = 0.25

BackendName = Literal["diffusers", "a1111", "comfyui", "stability", "replicate"]
BACKEND_NAMES: tuple[BackendName, ...] = ("diffusers", "a1111", "comfyui", "stability", "replicate")
REMOTE_BACKENDS: tuple[BackendName, ...] = ("a1111", "comfyui", "stability", "replicate")
LABELS: dict[str, str] = {
    "diffusers": "the local GPU",
    "a1111": "A1111/Forge",
    "comfyui": "ComfyUI",
    "stability": "Stability AI",
    "replicate": "Replicate",
}


def remote_source(source: str) -> tuple[str, str] | None:
    """``"comfyui:sd_xl_base_1.0.safetensors"`` → ("comfyui", "sd_xl_base_1.0.safetensors");
    a hub id or a directory → None (a local model)."""
    prefix, sep, rest = source.partition(":")
    if sep and prefix.lower() in REMOTE_BACKENDS:
        return prefix.lower(), rest.strip()
    return None


# --- errors ------------------------------------------------------------------------------------
class BackendError(VoxCanvasError):
    """A render backend failed; the message names it (never its URL or key)."""

    default_message = "The renderer failed."

    def __init__(self, backend: str, message: str | None = None) -> None:
        self.backend = backend
        super().__init__(message or f"{LABELS.get(backend, backend)} could not render that picture.")


class BackendUnavailable(BackendError):
    """Down, too slow, rate limited or failing (5xx) after every retry."""

    def __init__(self, backend: str, why: str) -> None:
        super().__init__(
            backend, f"The {LABELS.get(backend, backend)} renderer is unavailable ({why}) — please try again later."
        )


class BackendRefused(BackendError):
    """The backend said no (4xx other than 429): a bad key, a model it does not have, a filter."""

    def __init__(self, backend: str, why: str) -> None:
        super().__init__(backend, f"The {LABELS.get(backend, backend)} renderer refused the picture: {why}")


class BackendGarbage(BackendError):
    """The backend answered something its protocol does not allow (not JSON, not an image ...)."""

    def __init__(self, backend: str, why: str) -> None:
        super().__init__(backend, f"The {LABELS.get(backend, backend)} renderer gave an answer I can't use ({why}).")


# --- what a backend is given and gives back ----------------------------------------------------
@dataclass(frozen=True)
class Capabilities:
    """What a backend can do (README "Render backends" shows the table)."""

    text2img: bool = True
    img2img: bool = True
    progress: bool = False  # per-step progress ("Rendering 12/25")
    cancel: bool = False  # a running render can be stopped on the server
    negative_prompt: bool = True
    seeds: bool = True  # a given seed reproduces the picture
    steps: bool = True
    guidance: bool = True
    sizes: Literal["any", "aspect"] = "any"  # "aspect": only aspect ratios, the service picks the pixels
    max_batch: int = 1  # pictures one request can render (a job's candidates are coalesced up to this)
    loras: bool = False
    controls: frozenset[str] = frozenset()  # ControlNet modes the backend can apply (pipeline.control)


@dataclass(frozen=True)
class RemoteControl:
    """ControlNet for a remote render: the control image made here (canny edges, the palette bands,
    the pose skeleton as given) or, for ``depth``, the user's picture for the server's own depth
    preprocessor (``preprocessor``); ``model``: the server's ControlNet model name for the mode."""

    mode: str
    strength: float
    image: bytes  # PNG at the render size
    model: str
    preprocessor: str = "none"  # A1111's module name: "none" (the image is the control) or "depth_midas"


@dataclass(frozen=True)
class RemoteJob:
    """One picture for a remote backend, every option resolved (no None left)."""

    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    aspect: str  # the closest of families.ASPECTS (for services that take only a ratio)
    model: str  # the backend's model id: checkpoint name, Stability model, Replicate owner/name[:version]
    init_image: bytes | None = None  # PNG/JPEG/WebP, already checked
    strength: float = limits.DEFAULT_STRENGTH
    loras: tuple[tuple[str, float], ...] = ()
    control: RemoteControl | None = None

    @property
    def mode(self) -> Literal["text2img", "img2img"]:
        return "img2img" if self.init_image is not None else "text2img"


@dataclass
class RemoteResult:
    image: Image.Image  # RGB, checked and decoded
    seed: int  # the seed the server reports (or the one we sent)
    nsfw: bool = False  # the service's own filter withheld or blanked it


ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]


class RenderBackend(Protocol):
    """One place pictures can be rendered. Implementations: :mod:`.a1111`, :mod:`.comfyui`,
    :mod:`.stability`, :mod:`.replicate`; the ``diffusers`` backend is the executor's own GPU
    thread (:class:`~pipeline.executor.local.GPUExecutor`), reached through the router."""

    name: BackendName
    capabilities: Capabilities
    default_model: str

    async def render(self, job: RemoteJob, *, progress: ProgressFn, should_stop: StopFn) -> RemoteResult:
        """Render one picture; report ``progress(step, total)`` when the backend says; stop (on the
        server too, where it can) and raise :class:`JobCancelled` once ``should_stop()``."""
        ...

    async def close(self) -> None: ...


# --- the HTTP plumbing -------------------------------------------------------------------------
class HttpBackend:
    """Base of the remote backends: one aiohttp session, bounded requests with retries."""

    name: BackendName
    capabilities: Capabilities
    default_model: str = ""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        controlnet_models: dict[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.controlnet_models = dict(controlnet_models or {})  # mode -> the server's ControlNet model
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0  # HTTP requests sent (tests and bench read it)

    @property
    def label(self) -> str:
        return LABELS[self.name]

    async def render(self, job: RemoteJob, *, progress: ProgressFn, should_stop: StopFn) -> RemoteResult:
        """See :class:`RenderBackend`."""
        raise NotImplementedError

    async def render_many(
        self, job: RemoteJob, count: int, *, progress: ProgressFn, should_stop: StopFn
    ) -> list[RemoteResult]:
        """``count`` pictures, seeds ``job.seed + i``: one request each here; a backend whose API
        takes a batch (``Capabilities.max_batch`` > 1) overrides this with one request."""
        return [
            await self.render(replace(job, seed=job.seed + i), progress=progress, should_stop=should_stop)
            for i in range(count)
        ]

    def headers(self) -> dict[str, str]:
        """Headers of every request to :attr:`base_url` (a key, for the hosted services); never
        sent elsewhere (Replicate's output files live on another host)."""
        return {}

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s, sock_connect=min(10.0, self.timeout_s)),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        max_bytes: int = MAX_JSON_BYTES,
        should_stop: StopFn | None = None,
        retries: int | None = None,
        timeout_s: float | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One HTTP exchange with retries: (status, headers, body) of a 2xx answer. 429, 5xx,
        timeouts and connection errors are retried; any other status raises
        :class:`BackendRefused` with what the server said (its error text, bounded)."""
        tries = (self.retries if retries is None else retries) + 1
        why = "no answer"
        for attempt in range(tries):
            if should_stop is not None and should_stop():
                raise JobCancelled()
            delay = self.backoff_s * 2**attempt * (0.8 + 0.4 * random.random())
            try:
                body_data = data() if callable(data) else data  # a FormData is single-use: rebuilt per try
                self.requests += 1
                url = self.url(path)
                sent = {**self.headers(), **(headers or {})} if url.startswith(self.base_url + "/") else headers
                extra: dict[str, Any] = {}
                if timeout_s is not None:
                    extra["timeout"] = aiohttp.ClientTimeout(total=timeout_s)
                async with self.session().request(
                    method, url, json=json_body, data=body_data, params=params, headers=sent, **extra
                ) as response:
                    body = await read_bounded(response, max_bytes, self.name)
                    status = response.status
                    if 200 <= status < 300:
                        return status, response.headers, body
                    if status == 429 or status >= 500:
                        why = "rate limited" if status == 429 else f"HTTP {status}"
                        retry_after = _retry_after(response.headers.get("Retry-After"))
                        if retry_after is not None:
                            delay = retry_after
                        log.info(
                            "%s answered %s to %s %s (try %d/%d)", self.label, status, method, path, attempt + 1, tries
                        )
                    else:
                        raise BackendRefused(self.name, self.error_text(status, body))
            except TimeoutError:
                why = "timed out"
                log.info("%s timed out on %s %s (try %d/%d)", self.label, method, path, attempt + 1, tries)
            except aiohttp.ClientError as exc:
                why = "unreachable"
                log.info("%s: %s %s failed (try %d/%d): %s", self.label, method, path, attempt + 1, tries, exc)
            if attempt + 1 < tries:
                await sleep_unless_stopped(delay, should_stop)
        raise BackendUnavailable(self.name, why)

    async def get_json(self, path: str, **kwargs: Any) -> Any:
        _, _, body = await self.request("GET", path, **kwargs)
        return self.parse_json(body)

    async def post_json(self, path: str, payload: Any, **kwargs: Any) -> Any:
        _, _, body = await self.request("POST", path, json_body=payload, **kwargs)
        return self.parse_json(body)

    def parse_json(self, body: bytes) -> Any:
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise BackendGarbage(self.name, "not JSON") from None

    def error_text(self, status: int, body: bytes) -> str:
        """What to tell the user of a refusal: the server's error message when it gives one."""
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return f"HTTP {status}."
        message = _first_message(payload)
        return f"{_clip(message)} (HTTP {status})." if message else f"HTTP {status}."

    # --- images ---
    def decode_image(self, data: bytes) -> Image.Image:
        """An image the server returned, checked by :mod:`pipeline.images` (size, format, pixels)."""
        try:
            return decode_init_image(data)
        except BadRequest:
            raise BackendGarbage(self.name, "not a PNG, JPEG or WebP picture of a sane size") from None

    def decode_base64_image(self, text: object) -> Image.Image:
        if not isinstance(text, str) or not text:
            raise BackendGarbage(self.name, "no image in the answer")
        if "," in text[:100] and text.startswith("data:"):
            text = text.split(",", 1)[1]
        if len(text) > limits.MAX_IMAGE_BYTES * 4 // 3 + 8:
            raise BackendGarbage(self.name, "the picture is too large")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise BackendGarbage(self.name, "the picture is not base64") from None
        return self.decode_image(data)


async def read_bounded(response: aiohttp.ClientResponse, max_bytes: int, backend: str) -> bytes:
    """The body, refused (:class:`BackendGarbage`) once it passes ``max_bytes``."""
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise BackendGarbage(backend, "the answer is too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise BackendGarbage(backend, "the answer is too large")
        chunks.append(chunk)
    return b"".join(chunks)


async def sleep_unless_stopped(seconds: float, should_stop: StopFn | None) -> None:
    """Sleep ``seconds``, looking at ``should_stop`` every :data:`POLL_INTERVAL_S`."""
    deadline = time.monotonic() + seconds
    while True:
        if should_stop is not None and should_stop():
            raise JobCancelled()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        await asyncio.sleep(min(left, POLL_INTERVAL_S))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value)))
    except ValueError:
        return None  # an HTTP date: back off as usual


def _first_message(payload: object) -> str | None:
    """The human part of an error body: Stability's ``errors``, A1111's ``detail``/``error``,
    ComfyUI's ``error.message``, Replicate's ``detail``."""
    if isinstance(payload, str):
        return payload
    if isinstance(payload, list):
        return _first_message(payload[0]) if payload else None
    if isinstance(payload, dict):
        for key in ("errors", "detail", "message", "error", "title"):
            if key in payload:
                found = _first_message(payload[key])
                if found:
                    return found
    return None


def _clip(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def family_profile(architecture: str, width: int, height: int, defaults: Any = None) -> FamilyProfile:
    """A family profile for a remote model (no pipeline to detect it from): the architecture's
    defaults, so self-correction bumps steps and guidance as it does locally."""
    from .. import families

    arch: Any = architecture if architecture in ("sd", "sdxl", "sd3", "flux") else "sdxl"
    base = dict(families._BASE[arch])
    profile = families.FamilyProfile(
        architecture=arch,
        few_step=False,
        native_width=width,
        native_height=height,
        max_steps=limits.MAX_STEPS,
        scheduler="model",
        max_prompt_tokens=None if base["prompt_encoding"] == "clip-windows" else families.T5_MAX_TOKENS,
        **base,
    )
    return profile.with_overrides(defaults)
