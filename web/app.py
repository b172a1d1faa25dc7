"""The HTTP API and the playground: thin — parse, validate, authenticate, stream.

Every job goes through the bot runtime's API side (:class:`bot.api_jobs.ApiJobs`): the same
admission (caps, queue, store), executor queue, studio and fairness as Discord's jobs; an API key
is a user. Why FastAPI rather than the aiohttp already in the process: the OpenAPI schema and
``/docs`` come from the route signatures, request bodies are validated by pydantic models (the
engine's own bounds from :mod:`pipeline.limits`), per-route body-size caps and Server-Sent Events
are built in, and it runs on uvicorn inside the bot's event loop (:mod:`web.server`).

Request bodies are capped before they are read whole (FastAPI's ``max_body_size``: the
``Content-Length`` is checked first, a chunked body is counted as it arrives); each file is then
checked against its own bound, and audio and images from their headers, before a job is admitted.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Annotated, Any, Final, Literal

from fastapi import Depends, FastAPI, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.datastructures import FormData as Form
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from bot.api_jobs import ApiJobs, api_user_id
from bot.i18n import _
from bot.ops import CONTENT_TYPE as OPS_CONTENT_TYPE
from bot.ops import Ops
from bot.runner import JobRequest
from bot.store import JobRecord, StoreError
from pipeline import limits
from pipeline.audio import audio_duration, audio_too_long, is_too_long
from pipeline.control import (
    IMAGE_MODES,
    MAX_CONTROL_STRENGTH,
    MIN_CONTROL_STRENGTH,
    ControlMode,
    parse_controlnet_models,
)
from pipeline.errors import AudioTooLarge, BadRequest, EmptyAudio, VoxCanvasError
from pipeline.images import check_image_bytes, inspect_init_image
from pipeline.settings import Settings
from pipeline.studio import Idea, Result
from pipeline.styles import STYLES, check_style
from pipeline.tags import tags_for

from .errors import ERROR_RESPONSES, ApiError, ErrorBody, api_error
from .language import LanguageMiddleware

log = logging.getLogger(__name__)

JSON_BODY_BYTES: Final = 64 * 1024
MULTIPART_OVERHEAD_BYTES: Final = 64 * 1024
DEFAULT_IMAGE_PROMPT: Final = "this picture, reimagined"
STATIC = resources.files("web") / "static"


# --- request and response models -----------------------------------------------------------------
def known_style(value: str | None) -> str | None:
    """A style name as the engine knows it (``None`` for none); unknown ones fail validation (422)."""
    if value is None or not value.strip():
        return None
    try:
        return check_style(value)
    except BadRequest as exc:
        raise ValueError(str(exc)) from exc


class JobOptions(BaseModel):
    """What a job makes. ``text`` (an idea) or an audio upload is needed; bounds are the engine's.
    ``kind: "music"``: a piece composed from ``text`` (``seconds`` long; ``seed`` applies)."""

    kind: Literal["picture", "music"] = Field("picture", description="A picture (default) or a piece of music")
    text: str | None = Field(None, max_length=limits.MAX_IDEA_CHARS, description="The idea, in words")
    style: str | None = Field(None, max_length=40, description=f"One of: {', '.join(STYLES)}")
    negative_prompt: str | None = Field(None, max_length=limits.MAX_NEGATIVE_PROMPT_CHARS)
    seed: int | None = Field(None, ge=0, le=limits.MAX_SEED)
    steps: int | None = Field(None, ge=limits.MIN_STEPS, le=limits.MAX_STEPS)
    guidance: float | None = Field(None, ge=limits.MIN_GUIDANCE, le=limits.MAX_GUIDANCE)
    width: int | None = Field(None, ge=limits.MIN_SIDE, le=limits.MAX_SIDE, multiple_of=limits.SIDE_MULTIPLE)
    height: int | None = Field(None, ge=limits.MIN_SIDE, le=limits.MAX_SIDE, multiple_of=limits.SIDE_MULTIPLE)
    strength: float = Field(limits.DEFAULT_STRENGTH, ge=limits.MIN_STRENGTH, le=limits.MAX_STRENGTH)
    seconds: float | None = Field(
        None, ge=limits.MIN_COMPOSE_SECONDS, le=limits.MAX_MUSIC_SECONDS, description="Music length (kind music)"
    )
    count: int | None = Field(
        None,
        ge=1,
        le=limits.MAX_CANDIDATES,
        description="Candidates rendered in one batch and all scored by the critic (default: CANDIDATES)",
    )
    control: ControlMode | None = Field(
        None,
        description="A ControlNet control: canny, depth or pose (from the 'control_image' upload, else the start "
        "'image'), or palette (the director's palette; no image)",
    )
    control_strength: float | None = Field(
        None,
        ge=MIN_CONTROL_STRENGTH,
        le=MAX_CONTROL_STRENGTH,
        description="How strongly the control guides the picture (default 1)",
    )

    model_config = {"extra": "forbid"}

    @field_validator("style")
    @classmethod
    def _known_style(cls, value: str | None) -> str | None:
        return known_style(value)

    @field_validator("text", "negative_prompt")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value if value is None or value.strip() else None

    def idea(self, **extra: Any) -> Idea:
        return Idea(
            text=self.text,
            style=self.style,
            negative_prompt=self.negative_prompt,
            seed=self.seed,
            steps=self.steps,
            guidance=self.guidance,
            width=self.width,
            height=self.height,
            strength=self.strength,
            seconds=self.seconds,
            candidates=self.count,
            control=self.control,
            control_strength=self.control_strength if self.control is not None else None,
            **extra,
        )


class PromptRequest(BaseModel):
    prompt: str = Field(min_length=1, max_length=limits.MAX_IDEA_CHARS)
    style: str | None = Field(None, max_length=40)
    negative_prompt: str | None = Field(None, max_length=limits.MAX_NEGATIVE_PROMPT_CHARS)
    seed: int | None = Field(None, ge=0, le=limits.MAX_SEED)
    steps: int | None = Field(None, ge=limits.MIN_STEPS, le=limits.MAX_STEPS)
    guidance: float | None = Field(None, ge=limits.MIN_GUIDANCE, le=limits.MAX_GUIDANCE)

    @field_validator("style")
    @classmethod
    def _known_style(cls, value: str | None) -> str | None:
        return known_style(value)


class TagsRequest(BaseModel):
    image_prompt: str = Field("", max_length=limits.MAX_IDEA_CHARS)
    sound_description: str = Field("", max_length=limits.MAX_IDEA_CHARS)


class TagsResponse(BaseModel):
    tags: list[str]


class SoundRequest(BaseModel):
    description: str = Field(min_length=1, max_length=limits.MAX_MUSIC_PROMPT_CHARS, description="The music, in words")
    seconds: float | None = Field(None, ge=limits.MIN_COMPOSE_SECONDS, le=limits.MAX_MUSIC_SECONDS)
    seed: int | None = Field(None, ge=0, le=limits.MAX_SEED)


class SoundtrackRequest(BaseModel):
    seconds: float | None = Field(None, ge=limits.MIN_COMPOSE_SECONDS, le=limits.MAX_MUSIC_SECONDS)


class Generation(BaseModel):
    """The AI generator API's answer: an id and the absolute URL of the PNG (or, for a sound, the WAV)."""

    generation_id: str
    file_path: str


class GenerateResponse(BaseModel):
    """``POST /api/generate``: the pipeline orchestrator's answer."""

    status: Literal["success"] = "success"
    transcription: str | None
    expanded_scene: str
    final_prompt: str
    color_palette: list[str]
    qa_score: int | None
    qa_feedback: str
    job_id: str
    image_url: str
    palette_url: str


class JobCreated(BaseModel):
    job_id: str
    status_url: str
    events_url: str


class JobStatus(BaseModel):
    job_id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    kind: str
    parent_job_id: str | None = None
    position: int | None = None
    eta_s: float | None = None
    stage: dict[str, Any] | None = None
    error: str | None = None
    created_at: float
    finished_at: float | None = None
    result: dict[str, Any] | None = None
    status_url: str
    events_url: str
    image_url: str | None = None
    palette_url: str | None = None
    music_url: str | None = None  # a finished music job: OGG/Opus
    wav_url: str | None = None  # the same piece as WAV
    grid_url: str | None = None  # a picture with several candidates: the labelled 2×2 grid
    candidate_urls: list[str] | None = None  # … and each candidate's picture, in order (scores: result.candidates)
    control_url: str | None = None  # a picture rendered with a ControlNet control: its control image


class Deleted(BaseModel):
    job_id: str
    state: str
    deleted: bool


# --- auth: a key is a user (module level: FastAPI resolves these annotations here) ------------------
async def caller(request: Request) -> int:
    """The user id of the request's API key (401 without one, 403 for an unknown one); with no
    keys configured (loopback only), every client is the one anonymous user."""
    keys: list[bytes] = request.app.state.keys
    if not keys:
        return api_user_id(None)
    header = request.headers.get("authorization", "")
    scheme, _space, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401, "Send your API key as 'Authorization: Bearer <key>'.", headers={"WWW-Authenticate": "Bearer"}
        )
    given = token.strip().encode()
    if not any(hmac.compare_digest(given, key) for key in keys):
        raise ApiError(403, "That API key is not valid here.")
    return api_user_id(given.decode())


User = Annotated[int, Depends(caller)]


async def own_job(job_id: str, user: User, request: Request) -> JobRecord:
    """The job ``job_id`` if it is the caller's; 404 for anyone else's (no hint that it exists)."""
    api: ApiJobs = request.app.state.api
    try:
        record = await api.store.get(job_id)
    except StoreError as exc:
        raise api_error(exc) from exc
    if record is None or record.user_id != user:
        raise ApiError(404, "There's no such job (it may have been deleted or expired).", job_id=job_id)
    return record


OwnJob = Annotated[JobRecord, Depends(own_job)]


def kept_flagged(record: JobRecord) -> bool:
    """The job's pictures were kept as rendered although the safety checker flagged one of them."""
    if not record.result_json:
        return False
    try:
        return bool(json.loads(record.result_json).get("flagged_kept"))
    except (ValueError, AttributeError):
        return True  # unreadable: refuse rather than guess


# --- the app ------------------------------------------------------------------------------------
def create_app(settings: Settings, api: ApiJobs, *, base_url: Callable[[], str] | None = None) -> FastAPI:
    """The FastAPI app serving ``api``. ``base_url`` gives the absolute URL prefix (PUBLIC_URL, or
    the address actually bound)."""
    # FastAPIOffline: FastAPI whose /docs and /redoc serve Swagger UI / ReDoc from the package,
    # not from a CDN (the machine may be offline).
    app = FastAPIOffline(
        title="VoxCanvas API",
        version="1.0",
        description="A spoken idea → a checked picture. The same engine, queue and store as the Discord bot.",
        max_body_size=JSON_BODY_BYTES,
        responses=ERROR_RESPONSES,
    )
    app.add_middleware(LanguageMiddleware)  # Accept-Language → the language of messages (web/language.py)
    keys = [key.get_secret_value().encode() for key in settings.API_KEYS]
    app.state.keys = keys
    app.state.api = api
    upload_cap = settings.MAX_AUDIO_BYTES + limits.MAX_IMAGE_BYTES + MULTIPART_OVERHEAD_BYTES
    base = base_url or settings.public_url
    store = api.store

    def url(path: str) -> str:
        return f"{base()}{path}"

    # --- errors: one place --------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        body = ErrorBody(message=_(exc.message), job_id=exc.job_id, detail=exc.problems)
        return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {413: "The request body is too large."}.get(exc.status_code, str(exc.detail))
        return JSONResponse(
            ErrorBody(message=_(message)).model_dump(),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors() if isinstance(e, dict)
        ]
        first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        return JSONResponse(ErrorBody(message=message, detail=problems).model_dump(), status_code=422)

    # --- helpers ------------------------------------------------------------------------------
    async def submit(user: int, request: JobRequest) -> JobRecord:
        try:
            return await api.submit(user, request)
        except (VoxCanvasError, StoreError) as exc:
            raise api_error(exc) from exc

    async def finished(record: JobRecord) -> tuple[JobRecord, dict[str, Any]]:
        """Wait (bounded) for the job; its record and ``done`` event's data (``media``, ``result``),
        or its error as an answer."""
        events = api.events_of(record)
        try:
            await asyncio.wait_for(events.wait_finished(), settings.API_WAIT_S)
        except TimeoutError as exc:
            raise ApiError(
                503,
                "The picture is taking longer than this request may wait; follow the job instead.",
                job_id=record.id,
                headers={"Retry-After": "10", "Location": url(f"/api/jobs/{record.id}")},
            ) from exc
        final = events.events[-1]
        if final.name != "done":
            if events.error is not None:
                raise api_error(events.error, job_id=record.id)
            status = 409 if final.data.get("state") == "cancelled" else 503
            raise ApiError(status, str(final.data.get("message", "The job failed.")), job_id=record.id)
        return record, final.data

    async def finished_picture(record: JobRecord) -> tuple[JobRecord, Result]:
        record, done = await finished(record)
        if done.get("media") == "music":  # a voice note that asked for music
            raise ApiError(
                409,
                f"That asked for music, so music was composed: {url(f'/api/jobs/{record.id}/music.wav')}",
                job_id=record.id,
            )
        return record, Result.model_validate(done["result"])

    def media_urls(job_id: str, media: str) -> dict[str, str]:
        if media == "music":
            return {"music_url": url(f"/api/jobs/{job_id}/music.ogg"), "wav_url": url(f"/api/jobs/{job_id}/music.wav")}
        return {
            "image_url": url(f"/api/jobs/{job_id}/image.png"),
            "palette_url": url(f"/api/jobs/{job_id}/palette.png"),
        }

    def candidate_links(job_id: str, result: dict[str, Any] | None) -> dict[str, Any]:
        """``grid_url`` and ``candidate_urls`` of a finished picture with several candidates."""
        cells = (result or {}).get("candidates") or []
        if len(cells) < 2:
            return {}
        return {
            "grid_url": url(f"/api/jobs/{job_id}/grid.png"),
            "candidate_urls": [url(f"/api/jobs/{job_id}/candidates/{n}.png") for n in range(1, len(cells) + 1)],
        }

    def status_of(record: JobRecord) -> JobStatus:
        events = api.events_of(record)
        position, eta = api.position(record.id)
        result = None
        if record.state == "done" and record.result_json:
            result = json.loads(record.result_json)  # stored as the Result's own JSON dump
        done = record.state == "done"
        media: dict[str, Any] = media_urls(record.id, "music" if record.is_music else "image") if done else {}
        if done and not record.is_music:
            media.update(candidate_links(record.id, result))
            if any(r.get("control") for r in (result or {}).get("rounds") or []):
                media["control_url"] = url(f"/api/jobs/{record.id}/control.png")
        return JobStatus(
            job_id=record.id,
            state=record.state,
            kind=record.kind,
            parent_job_id=record.parent_job_id,
            position=position,
            eta_s=round(eta, 1) if eta is not None else None,
            stage=events.latest_stage if record.active else None,
            error=_(record.error) if record.error and record.state in ("failed", "cancelled") else None,
            created_at=record.created_at,
            finished_at=record.finished_at,
            result=result,
            status_url=url(f"/api/jobs/{record.id}"),
            events_url=url(f"/api/jobs/{record.id}/events"),
            **media,
        )

    def created(record: JobRecord) -> JSONResponse:
        body = JobCreated(
            job_id=record.id,
            status_url=url(f"/api/jobs/{record.id}"),
            events_url=url(f"/api/jobs/{record.id}/events"),
        )
        return JSONResponse(body.model_dump(), status_code=202, headers={"Location": body.status_url})

    # --- the playground -----------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/api/config", tags=["playground"])
    async def config() -> dict[str, Any]:
        """What the playground needs to know: styles, whether keys are required, the bounds."""
        return {
            "styles": list(STYLES),
            "auth": bool(keys),
            "max_audio_bytes": settings.MAX_AUDIO_BYTES,
            "max_audio_seconds": settings.MAX_AUDIO_SECONDS,
            "max_idea_chars": limits.MAX_IDEA_CHARS,
        }

    # --- operators: Prometheus metrics and the health check (bot.ops) --------------------------
    ops = app.state.ops = Ops(api.runner)

    @app.get("/metrics", response_class=Response, tags=["operators"])
    async def metrics() -> Response:
        """Prometheus text format: jobs, stage latencies, queue depth, batch sizes, GPU memory,
        Gemini fallbacks, Discord REST errors."""
        return Response(await ops.metrics(), media_type=OPS_CONTENT_TYPE)

    @app.get("/healthz", tags=["operators"], responses={503: {"description": "A check failed"}})
    async def healthz() -> JSONResponse:
        """200 when the gateway (if Discord runs), the model thread and the store are healthy; else 503."""
        health = await ops.health()
        return JSONResponse(health.as_dict(), status_code=200 if health.ok else 503)

    # --- the pipeline orchestrator's endpoint --------------------------------------------------
    @app.post(
        "/api/generate",
        response_model=GenerateResponse,
        tags=["source designs"],
        max_body_size=upload_cap,
        openapi_extra=multipart_schema({"audio_file": "binary"}, required=["audio_file"]),
    )
    async def generate(request: Request, user: User) -> GenerateResponse:
        """A voice note → transcription, expanded scene, final prompt, palette, QA score and feedback.
        Waits for the job (at most API_WAIT_S)."""
        form = await read_form(request)
        audio = await audio_field(form, "audio_file", settings, required=True)
        assert audio is not None
        record = await submit(user, JobRequest("voice", Idea(audio=audio[0], audio_filename=audio[1])))
        record, result = await finished_picture(record)
        best = result.best
        feedback = best.critic_notes or ""
        if best.missing_elements:
            feedback = f"{feedback} Missing: {', '.join(best.missing_elements)}.".strip()
        return GenerateResponse(
            transcription=result.transcript,
            expanded_scene=result.scene.scene_description,
            final_prompt=best.prompt,
            color_palette=result.palette,
            qa_score=result.score,
            qa_feedback=feedback,
            job_id=record.id,
            image_url=url(f"/api/jobs/{record.id}/image.png"),
            palette_url=url(f"/api/jobs/{record.id}/palette.png"),
        )

    # --- the AI generator API's endpoints ------------------------------------------------------
    @app.post("/generate/image/prompt", response_model=Generation, tags=["source designs"])
    async def image_from_prompt(body: PromptRequest, user: User) -> Generation:
        """A text prompt → a picture (through the director, renderer and critic). Waits for it."""
        options = validated(JobOptions, {"text": body.prompt, **body.model_dump(exclude={"prompt"})})
        record, _data = await finished_picture(await submit(user, JobRequest("text", options.idea())))
        return Generation(generation_id=record.id, file_path=url(f"/api/jobs/{record.id}/image.png"))

    @app.post(
        "/generate/image/image",
        response_model=Generation,
        tags=["source designs"],
        max_body_size=upload_cap,
        openapi_extra=multipart_schema(
            {"image": "binary", "prompt": "string", "strength": "number"}, required=["image"]
        ),
    )
    async def image_from_image(request: Request, user: User) -> Generation:
        """A start image (PNG, JPEG or WebP) and an optional prompt → a reworked picture."""
        form = await read_form(request)
        image = await image_field(form, "image", required=True)
        fields = text_fields(form, ("prompt", "strength"))
        options = validated(
            JobOptions, {"text": fields.get("prompt") or DEFAULT_IMAGE_PROMPT, **pick(fields, "strength")}
        )
        record, _data = await finished_picture(await submit(user, JobRequest("text", options.idea(init_image=image))))
        return Generation(generation_id=record.id, file_path=url(f"/api/jobs/{record.id}/image.png"))

    @app.post("/generate/tags", response_model=TagsResponse, tags=["source designs"])
    async def tags(body: TagsRequest, user: User) -> TagsResponse:
        """The director's tags for an image prompt and a sound description (lowercase, de-duplicated)."""
        try:
            return TagsResponse(tags=tags_for(body.image_prompt, body.sound_description))
        except VoxCanvasError as exc:
            raise api_error(exc) from exc

    @app.post("/generate/sound", response_model=Generation, tags=["source designs"])
    async def sound(body: SoundRequest, user: User) -> Generation:
        """A description → music (MusicGen), ``seconds`` long (MUSIC_SECONDS without it): an id and
        the absolute URL of the WAV (32 kHz mono, 16-bit). Waits for it."""
        idea = Idea(text=body.description, seconds=body.seconds, seed=body.seed)
        record, _data = await finished(await submit(user, JobRequest("compose", idea)))
        return Generation(generation_id=record.id, file_path=url(f"/api/jobs/{record.id}/music.wav"))

    # --- jobs ---------------------------------------------------------------------------------
    @app.post(
        "/api/jobs",
        status_code=202,
        response_model=JobCreated,
        tags=["jobs"],
        max_body_size=upload_cap,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": JobOptions.model_json_schema(ref_template="#/components/schemas/{model}")
                    },
                    **multipart_schema(
                        {
                            "audio": "binary",
                            "image": "binary",
                            "control_image": "binary",
                            **dict.fromkeys(JobOptions.model_fields, "string"),
                        },
                        required=[],
                    )["requestBody"]["content"],
                },
            }
        },
    )
    async def create_job(request: Request, user: User) -> JSONResponse:
        """Start a job and return at once: JSON options, or a multipart form with an ``audio`` voice
        note and/or a start ``image`` (and a ControlNet ``control_image``) and the same options as
        fields. Follow it at ``events_url``."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        audio = image = control_image = None
        if content_type == "multipart/form-data":
            form = await read_form(request)
            audio = await audio_field(form, "audio", settings)
            image = await image_field(form, "image")
            control_image = await image_field(form, "control_image")  # bounded exactly like the start image
            fields = text_fields(form, tuple(JobOptions.model_fields))
            options = validated(JobOptions, {k: v for k, v in fields.items() if v != ""})
        elif content_type == "application/json":
            try:
                raw = await request.json()
            except ValueError as exc:
                raise ApiError(400, "The body is not valid JSON.") from exc
            if not isinstance(raw, dict):
                raise ApiError(422, "The body must be a JSON object of job options.")
            options = validated(JobOptions, raw)
        else:
            raise ApiError(415, "Send the options as application/json, or as multipart/form-data with files.")
        if audio is None and options.text is None:
            raise ApiError(422, "There's nothing to draw yet — send an idea as 'text', or a voice note as 'audio'.")
        offered = {mode for _, mode in parse_controlnet_models(settings.CONTROLNET_MODELS)}
        if options.control is not None and options.control not in offered:
            raise ApiError(
                422, f"There is no {options.control} control here ({', '.join(sorted(offered)) or 'none are set up'})."
            )
        if control_image is not None and options.control is None:
            raise ApiError(422, "A 'control_image' goes with a 'control' mode (canny, depth or pose).")
        if options.control in IMAGE_MODES and control_image is None and image is None:
            raise ApiError(
                422, f"The {options.control} control needs an image: upload one as 'control_image' (multipart)."
            )
        if options.kind == "music":
            if audio is not None or image is not None or control_image is not None or options.text is None:
                raise ApiError(422, "Music is composed from a description: send it as 'text' (no files).")
            music = Idea(text=options.text, seconds=options.seconds, seed=options.seed)
            return created(await submit(user, JobRequest("compose", music)))
        if audio is not None:
            idea = options.idea(audio=audio[0], audio_filename=audio[1], init_image=image, control_image=control_image)
            job_request = JobRequest("voice", idea)
        else:
            job_request = JobRequest("text", options.idea(init_image=image, control_image=control_image))
        return created(await submit(user, job_request))

    @app.get("/api/jobs/{job_id}", response_model=JobStatus, tags=["jobs"])
    async def get_job(record: OwnJob) -> JobStatus:
        """The job's state, queue position and ETA, current stage, and once done the full result
        (as the CLI's result.json) with the picture's and palette's URLs."""
        return status_of(record)

    @app.get(
        "/api/jobs/{job_id}/events",
        response_class=EventSourceResponse,
        tags=["jobs"],
        responses={200: {"content": {"text/event-stream": {}}, "description": "queued / stage / done / failed"}},
    )
    async def job_events(record: OwnJob, request: Request) -> AsyncIterator[ServerSentEvent]:
        """Server-Sent Events: ``queued`` (position, ETA), ``stage`` (decode, transcribe, direct,
        render n/N, review, correct; ``t`` seconds since the job started), then ``done`` (the
        result and its URLs) or ``failed`` (the message). ``Last-Event-ID`` resumes."""
        events = api.events_of(record)
        last = request.headers.get("last-event-id", "")
        after = int(last) if last.isdigit() else -1
        async for event in events.follow(after):
            data = {**event.data, "t": event.t}
            if event.name == "done":
                data.update(media_urls(record.id, str(event.data.get("media", "image"))))
                if event.data.get("media", "image") == "image":
                    data.update(candidate_links(record.id, event.data.get("result")))
            yield ServerSentEvent(event=event.name, id=str(event.seq), data=data)

    async def result_file(
        record: JobRecord,
        read: Callable[[str], Awaitable[bytes]],
        media_type: str = "image/png",
        *,
        picture: bool = True,
    ) -> Response:
        """``read``'s bytes for a finished job. A picture kept as rendered although the safety checker
        flagged it (for a spoiler in an age-restricted Discord channel) is never served here: 451.
        API jobs always black flagged pictures out, and API keys only reach their own jobs, so this
        guards the rule rather than a path a client can take today."""
        music = media_type.startswith("audio/")
        if record.state != "done":
            raise ApiError(409, "That job isn't finished yet.", job_id=record.id)
        if music != record.is_music:
            what = "a piece of music, not a picture" if record.is_music else "a picture, not music"
            raise ApiError(404, f"That job made {what}.", job_id=record.id)
        if picture and kept_flagged(record):
            raise ApiError(
                451,
                "The safety checker flagged this picture: it is shown only behind a spoiler in an "
                "age-restricted Discord channel, never over the API.",
                job_id=record.id,
            )
        try:
            data = await read(record.id)
        except (VoxCanvasError, StoreError) as exc:
            raise api_error(exc, job_id=record.id) from exc
        return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=86400"})

    def media(kind: str, description: str) -> dict[int | str, dict[str, Any]]:
        return {200: {"content": {kind: {}}, "description": description}}

    png = media("image/png", "PNG")

    @app.get("/api/jobs/{job_id}/image.png", response_class=Response, responses=png, tags=["jobs"])
    async def job_image(record: OwnJob) -> Response:
        return await result_file(record, store.read_image)

    @app.get("/api/jobs/{job_id}/grid.png", response_class=Response, responses=png, tags=["jobs"])
    async def job_grid(record: OwnJob) -> Response:
        """A picture's candidates as one 2×2 grid labelled 1–4 (jobs with several candidates)."""

        async def read(job_id: str) -> bytes:
            grid = await store.read_grid(job_id)
            if grid is None:
                raise ApiError(404, "That job made one picture, so there is no grid.", job_id=job_id)
            return grid

        return await result_file(record, read)

    @app.get("/api/jobs/{job_id}/control.png", response_class=Response, responses=png, tags=["jobs"])
    async def job_control(record: OwnJob) -> Response:
        """The ControlNet control image a picture was rendered with (its edge/depth map, pose or
        palette bands); 404 for a picture rendered without a control."""

        async def read(job_id: str) -> bytes:
            control = await store.read_control(job_id)
            if control is None:
                raise ApiError(404, "That picture was rendered without a control.", job_id=job_id)
            return control

        return await result_file(record, read)

    @app.get("/api/jobs/{job_id}/candidates/{number}.png", response_class=Response, responses=png, tags=["jobs"])
    async def job_candidate(record: OwnJob, number: Annotated[int, Path(ge=1, le=limits.MAX_CANDIDATES)]) -> Response:
        """Candidate ``number`` (1–4) of a picture: its own PNG (the best one's is the job's picture)."""
        return await result_file(record, lambda job_id: store.read_candidate(job_id, number - 1))

    @app.get("/api/jobs/{job_id}/palette.png", response_class=Response, responses=png, tags=["jobs"])
    async def job_palette(record: OwnJob) -> Response:
        return await result_file(record, store.read_palette, picture=False)  # colours only

    @app.get(
        "/api/jobs/{job_id}/music.ogg", response_class=Response, responses=media("audio/ogg", "OGG/Opus"), tags=["jobs"]
    )
    async def job_music(record: OwnJob) -> Response:
        """A music job's piece as OGG/Opus (48 kHz; what Discord plays)."""
        return await result_file(record, store.read_music, "audio/ogg", picture=False)

    @app.get(
        "/api/jobs/{job_id}/music.wav", response_class=Response, responses=media("audio/wav", "WAV"), tags=["jobs"]
    )
    async def job_music_wav(record: OwnJob) -> Response:
        """A music job's piece as WAV (the model's 32 kHz, mono, 16-bit PCM; lossless)."""
        return await result_file(record, store.read_music_wav, "audio/wav", picture=False)

    async def follow_up(
        record: JobRecord, user: int, kind: Literal["regenerate", "vary", "soundtrack"], seconds: float | None = None
    ) -> JSONResponse:
        if record.state != "done":
            raise ApiError(409, "Only a finished picture can be reworked.", job_id=record.id)
        try:
            return created(await api.follow_up(user, record, kind, seconds=seconds))
        except (VoxCanvasError, StoreError) as exc:
            raise api_error(exc, job_id=record.id) from exc

    @app.post("/api/jobs/{job_id}/regenerate", status_code=202, response_model=JobCreated, tags=["jobs"])
    async def regenerate(record: OwnJob, user: User) -> JSONResponse:
        """Again, better: the last correction prompt (or the prompt), a new seed, guidance +1.5,
        reviewed (and corrected) again."""
        return await follow_up(record, user, "regenerate")

    @app.post("/api/jobs/{job_id}/vary", status_code=202, response_model=JobCreated, tags=["jobs"])
    async def vary(record: OwnJob, user: User) -> JSONResponse:
        """A variation: the shown picture's prompt and settings with a new seed."""
        return await follow_up(record, user, "vary")

    @app.post("/api/jobs/{job_id}/soundtrack", status_code=202, response_model=JobCreated, tags=["jobs"])
    async def soundtrack(record: OwnJob, user: User, body: SoundtrackRequest | None = None) -> JSONResponse:
        """Music for a finished picture, from its scene's music prompt (a music job; its tags
        cover the picture's prompt and the music's). Optional body: ``{"seconds": 5-30}``."""
        return await follow_up(record, user, "soundtrack", body.seconds if body is not None else None)

    @app.delete("/api/jobs/{job_id}", response_model=Deleted, tags=["jobs"])
    async def delete_job(record: OwnJob, user: User) -> Deleted:
        """Cancel a queued or running job; delete a finished one (its record and files)."""
        try:
            if record.active:
                cancelled = await api.cancel(record)
                return Deleted(job_id=record.id, state=cancelled.state, deleted=False)
            deleted = await store.delete(record.id, user_id=user)
        except (VoxCanvasError, StoreError) as exc:
            raise api_error(exc, job_id=record.id) from exc
        return Deleted(job_id=record.id, state=record.state, deleted=deleted)

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """The schema, with every error answer as what it is: JSON :class:`ErrorBody` (FastAPI
        would document it in the route's own media type, e.g. text/event-stream or image/png)."""
        if app.openapi_schema is None:
            schema = default_openapi()
            for path in schema["paths"].values():
                for operation in path.values():
                    for code, answer in operation.get("responses", {}).items():
                        if code.isdigit() and int(code) >= 400:
                            answer["content"] = {"application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


ERROR_SCHEMA_REF: Final = "#/components/schemas/ErrorBody"


# --- request parsing ----------------------------------------------------------------------------
def multipart_schema(fields: dict[str, str], *, required: list[str]) -> dict[str, Any]:
    """An OpenAPI ``requestBody`` for a multipart form (the route parses it itself, bounded)."""
    properties = {
        name: {"type": "string", "format": "binary"} if kind == "binary" else {"type": kind}
        for name, kind in fields.items()
    }
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


async def read_form(request: Request) -> Form:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise ApiError(415, "Send this as multipart/form-data (e.g. curl -F field=@file).")
    try:
        return await request.form(max_files=4, max_fields=32, max_part_size=64 * 1024)
    except StarletteHTTPException:  # the body-size cap (413)
        raise
    except Exception as exc:  # a malformed multipart body: python-multipart raises several types
        raise ApiError(400, "The multipart form could not be read.") from exc


def text_fields(form: Form, names: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        value = form.get(name)
        if isinstance(value, str):
            out[name] = value
        elif value is not None:
            raise ApiError(422, f"'{name}' must be a text field, not a file.")
    return out


def pick(fields: dict[str, str], *names: str) -> dict[str, str]:
    return {name: fields[name] for name in names if fields.get(name, "") != ""}


def validated(model: type[JobOptions], data: dict[str, Any]) -> JobOptions:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = f"{where}: {first['msg']}" if where else first["msg"]
        detail = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        raise ApiError(422, message, problems=detail) from exc


async def upload_bytes(value: UploadFile, limit: int) -> bytes:
    """An uploaded file's bytes, reading at most ``limit`` + 1 of them."""
    return await value.read(limit + 1)


async def audio_field(
    form: Form, name: str, settings: Settings, *, required: bool = False
) -> tuple[bytes, str | None] | None:
    """A voice-note upload, bounded and checked from its header (size, length) before a job exists."""
    value = form.get(name)
    if value is None or (isinstance(value, str) and not value):
        if required:
            raise ApiError(422, f"Attach a voice note as the '{name}' field.")
        return None
    if not isinstance(value, UploadFile):
        raise ApiError(422, f"'{name}' must be a file upload.")
    data = await upload_bytes(value, settings.MAX_AUDIO_BYTES)
    try:
        if not data:
            raise EmptyAudio()
        if len(data) > settings.MAX_AUDIO_BYTES:
            raise AudioTooLarge(
                f"That file is larger than {settings.MAX_AUDIO_BYTES / 1_000_000:g} MB; "
                "please send a shorter voice note."
            )
        duration = await asyncio.to_thread(audio_duration, data)
        if duration is not None and is_too_long(duration, settings.MAX_AUDIO_SECONDS):
            raise audio_too_long(duration, settings.MAX_AUDIO_SECONDS)
    except VoxCanvasError as exc:
        raise api_error(exc) from exc
    return data, value.filename or None


async def image_field(form: Form, name: str, *, required: bool = False) -> bytes | None:
    """A start-image upload: at most MAX_IMAGE_BYTES read, format and size checked from its header."""
    value = form.get(name)
    if value is None or (isinstance(value, str) and not value):
        if required:
            raise ApiError(422, f"Attach an image (PNG, JPEG or WebP) as the '{name}' field.")
        return None
    if not isinstance(value, UploadFile):
        raise ApiError(422, f"'{name}' must be a file upload.")
    data = await upload_bytes(value, limits.MAX_IMAGE_BYTES)
    try:
        check_image_bytes(len(data))
        await asyncio.to_thread(inspect_init_image, data)
    except VoxCanvasError as exc:
        raise api_error(exc) from exc
    return data


class JsonTooLarge:
    """ASGI wrapper around the whole app: the body-size cap's own 413 answer (plain text, sent by
    Starlette's limiter outside the app's exception handlers) becomes the API's JSON error body."""

    BODY: Final = ErrorBody(message="The request body is too large.").model_dump_json().encode()

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rewriting = False

        async def send_json(message: Any) -> None:
            nonlocal rewriting
            if message["type"] == "http.response.start" and message["status"] == 413:
                headers = dict(message.get("headers") or [])
                if headers.get(b"content-type", b"").startswith(b"text/plain"):
                    rewriting = True
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 413,
                            "headers": [
                                (b"content-type", b"application/json"),
                                (b"content-length", str(len(self.BODY)).encode()),
                                (b"connection", b"close"),
                            ],
                        }
                    )
                    return
            if rewriting:
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": self.BODY, "more_body": False})
                return
            await send(message)

        await self.app(scope, receive, send_json)
