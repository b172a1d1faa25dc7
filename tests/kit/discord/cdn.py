"""The fake CDN (``/attachments/{channel_id}/{attachment_id}/{filename}``): the files of incoming
messages and of everything the bot uploads, with every download recorded."""

from __future__ import annotations

import base64
import mimetypes
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from .http import ApiRouter, RecordedCall, RecordedFile
from .protocol import AttachmentSpec
from .world import Snowflakes

__all__ = ["Cdn", "guess_content_type", "image_size"]


def guess_content_type(filename: str, data: bytes = b"") -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"OggS"):
        return "audio/ogg"
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG (Discord reports them for images)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    return None


@dataclass
class _CdnFile:
    data: bytes
    content_type: str
    filename: str


class Cdn:
    """Stores attachment bytes under CDN paths and serves them; downloads are recorded calls."""

    def __init__(self, ids: Snowflakes, router: ApiRouter, base_url: Callable[[], str]) -> None:
        self._ids = ids
        self._router = router
        self._base_url = base_url
        self._files: dict[str, _CdnFile] = {}

    def store(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store a file; returns its attachment payload (``extra`` fields added, ``None`` skipped)."""
        att_id = self._ids.next()
        safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", filename) or "file"
        path = f"/attachments/{channel_id}/{att_id}/{safe_name}"
        content_type = content_type or guess_content_type(filename, data)
        self._files[path] = _CdnFile(data=data, content_type=content_type, filename=filename)
        url = f"{self._base_url()}{path}"
        payload: dict[str, Any] = {
            "id": str(att_id),
            "filename": safe_name,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }
        size = image_size(data)
        if size:
            payload["width"], payload["height"] = size
        for key, value in (extra or {}).items():
            if value is None:
                continue
            if key == "waveform" and isinstance(value, (bytes, bytearray)):
                value = base64.b64encode(bytes(value)).decode()
            payload[key] = value
        return payload

    def store_upload(
        self, channel_id: int, file: RecordedFile, spec: Mapping[str, Any] | None, *, ephemeral: bool
    ) -> dict[str, Any]:
        """Store a file the bot uploaded (``spec``: its entry in the body's ``attachments``)."""
        filename = (spec or {}).get("filename") or file.filename
        return self.store(
            channel_id,
            filename,
            file.data,
            guess_content_type(filename, file.data),
            {"description": (spec or {}).get("description"), "ephemeral": ephemeral or None},
        )

    def store_incoming(self, channel_id: int, spec: AttachmentSpec) -> dict[str, Any]:
        """Store an attachment a (fake) user sends, given as an :data:`AttachmentSpec`."""
        extra: dict[str, Any] = {}
        if isinstance(spec, Mapping):
            spec = dict(spec)
            filename = spec.pop("filename")
            data = spec.pop("data")
            content_type = spec.pop("content_type", None)
            extra = spec
        else:
            filename, data = spec[0], spec[1]
            content_type = spec[2] if len(spec) > 2 else None
            if len(spec) > 3:
                extra = dict(spec[3])
        return self.store(channel_id, filename, bytes(data), content_type, extra)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler for the attachment route."""
        call = await self._router.record(request, "cdn", request.path)
        call.params = dict(request.match_info)
        stored = self._files.get(request.path)
        if stored is None:
            return self._router.finish(call, web.Response(status=404, text="Not Found"))
        return self._router.finish(call, web.Response(body=stored.data, content_type=stored.content_type))

    @property
    def downloads(self) -> list[RecordedCall]:
        """Every CDN download."""
        return [c for c in self._router.calls if c.kind == "cdn"]

    def was_downloaded(self, url_or_attachment: str | int | Mapping[str, Any]) -> bool:
        """Whether an attachment (its URL, id or payload) was fetched from the CDN."""
        if isinstance(url_or_attachment, Mapping):
            url_or_attachment = url_or_attachment["url"]
        if isinstance(url_or_attachment, int) or str(url_or_attachment).isdigit():
            return any(c.params.get("attachment_id") == str(url_or_attachment) for c in self.downloads)
        path = str(url_or_attachment).replace(self._base_url(), "").split("?")[0]
        return any(c.path == unquote(path) for c in self.downloads)
