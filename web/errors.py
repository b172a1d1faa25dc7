"""The engine's friendly errors as HTTP answers: which status each one gets, and the error body.

Anything a client sent that can't be used is a 4xx with the engine's own message (written for the
person, not the programmer); the server's own trouble (a model that can't load, a full GPU) is a
503; a 500 only ever means a bug.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from fastapi import HTTPException
from pydantic import BaseModel

from bot.store import JobNotFound, JobStateError, StoreError
from pipeline import errors
from pipeline.images import NOT_AN_IMAGE

log = logging.getLogger(__name__)

RETRY_AFTER_BUSY_S: Final = 10  # per-key cap: a job of theirs is likely done by then
RETRY_AFTER_FULL_S: Final = 30  # full queue or restarting


class ErrorBody(BaseModel):
    """Every error: ``status`` is always ``"error"``, ``message`` is fit to show a user."""

    status: str = "error"
    message: str
    job_id: str | None = None
    detail: Any = None


class ApiError(HTTPException):
    """An HTTP error with the body :class:`ErrorBody`."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        job_id: str | None = None,
        headers: dict[str, str] | None = None,
        problems: Any = None,
    ) -> None:
        super().__init__(status_code, message, headers=headers)
        self.message = message
        self.job_id = job_id
        self.problems = problems


def status_for(exc: BaseException) -> int:
    """The HTTP status of an engine error."""
    match exc:
        case errors.TooManyJobs():
            return 429
        case errors.QueueFull() | errors.ShuttingDown():
            return 503
        case errors.AudioTooLarge():
            return 413
        case errors.EmptyAudio():
            return 400
        case errors.UndecodableAudio() | errors.UnsupportedAudio():
            return 415
        case errors.BadAudio() | errors.NoSpeech():
            return 422  # silent, too long, unreadable otherwise, no words in it
        case errors.BadRequest() if str(exc) == NOT_AN_IMAGE:
            return 415
        case errors.BadRequest() if str(exc).startswith(("The image is", "The attached image is too large")):
            return 413
        case errors.BadRequest():
            return 422
        case errors.JobCancelled():
            return 409
        case JobNotFound():
            return 404
        case JobStateError():
            return 409
        case StoreError():
            return 503
        case errors.VoxCanvasError():
            return 503  # the model, the GPU, the executor: not the client's doing
    return 500


def api_error(exc: errors.VoxCanvasError | StoreError, *, job_id: str | None = None) -> ApiError:
    status = status_for(exc)
    headers: dict[str, str] | None = None
    if status == 429:
        headers = {"Retry-After": str(RETRY_AFTER_BUSY_S)}
    elif status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_FULL_S)}
    message = exc.user_message if isinstance(exc, errors.VoxCanvasError) else str(exc)
    if isinstance(exc, errors.ModelUnavailable):
        log.error("model unavailable: %s", exc)
        message = "A model I need couldn't be loaded, so I can't make pictures right now. Please try again later."
    return ApiError(status, message, job_id=job_id, headers=headers)


#: The error answers every route may give, for the OpenAPI schema.
ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "Bad input (an empty file, a malformed body)"),
        (401, "No API key (send Authorization: Bearer <key>)"),
        (403, "Unknown API key"),
        (404, "No such job (or not yours)"),
        (409, "The job is not in a state that allows this"),
        (413, "The body or a file is too large"),
        (415, "Not audio / not an image this server reads"),
        (422, "Invalid options, silent or too long audio, no words heard"),
        (429, "This key already has the maximum number of jobs in progress (see Retry-After)"),
        (451, "The safety checker flagged this picture; it is shown only behind a spoiler in Discord"),
        (503, "The queue is full, the server is restarting, or a model is unavailable (see Retry-After)"),
    )
}
