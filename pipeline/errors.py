"""Errors whose messages are fit to show a user.

Every error the engine raises on purpose derives from :class:`VoxCanvasError`. Its ``str()`` is
written for the person who sent the voice note or typed ``/imagine``: short, friendly, and saying
what to change. Anything that is *not* a ``VoxCanvasError`` is a bug and is reported as such.
"""

from __future__ import annotations


class VoxCanvasError(Exception):
    """Base class: the message is shown to the user as it is."""

    default_message = "Something went wrong."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    @property
    def user_message(self) -> str:
        return str(self)


# --- audio -------------------------------------------------------------------------------------
class BadAudio(VoxCanvasError):
    """The audio we were given can't be used."""

    default_message = "I couldn't use that audio."


class EmptyAudio(BadAudio):
    default_message = "That file is empty — please send the voice note again."


class UndecodableAudio(BadAudio):
    default_message = (
        "I couldn't read that as audio. Send a Discord voice message, or an OGG, WAV, FLAC, MP3 or M4A file."
    )


class AudioTooLong(BadAudio):
    default_message = "That recording is too long."


class AudioTooLarge(BadAudio):
    default_message = "That file is too large for a voice note."


class UnsupportedAudio(BadAudio):
    """Audio whose header says it is no voice note (ultrasonic sample rates, surround channels)."""

    default_message = (
        "That doesn't look like a voice note. Send a Discord voice message, or a mono or stereo recording."
    )


class SilentAudio(BadAudio):
    default_message = "That recording is silent — I couldn't hear anything. Try again closer to the mic?"


class NoSpeech(VoxCanvasError):
    default_message = (
        "I heard sound but no words I could make out. Try speaking a little slower, or type your idea with /imagine."
    )


# --- requests and models -----------------------------------------------------------------------
class BadRequest(VoxCanvasError):
    """A generation request with out-of-range or inconsistent options."""

    default_message = "Those options don't work together."


class UnsafeImage(BadRequest):
    """The safety checker flagged a start image (image-to-image): it is not used."""

    default_message = "🙈 The safety checker flagged that start image, so I can't use it. Please try another picture."


class ModelUnavailable(VoxCanvasError):
    """Weights could not be loaded (offline, a typo in a model id, a broken directory)."""

    default_message = "A model could not be loaded."


class ProviderError(VoxCanvasError):
    """A cloud provider (Gemini) failed or answered something unusable; the caller falls back."""

    default_message = "The cloud model did not give a usable answer."


# --- the queue ---------------------------------------------------------------------------------
class QueueError(VoxCanvasError):
    default_message = "The queue could not take that job."


class QueueFull(QueueError):
    default_message = "The queue is full right now — please try again in a few minutes."


class TooManyJobs(QueueError):
    default_message = "You already have the maximum number of pictures in progress."


class ShuttingDown(QueueError):
    default_message = "I'm restarting — please try again in a minute."


class JobCancelled(VoxCanvasError):
    default_message = "The job was cancelled."


class OutOfMemory(VoxCanvasError):
    default_message = "The GPU ran out of memory for that picture. Try a smaller size or fewer steps."


class ExecutorFailure(VoxCanvasError):
    default_message = "The GPU worker restarted while working on this job — please try again."


class StageTimeout(VoxCanvasError):
    default_message = "That took far longer than it should — please try again."
