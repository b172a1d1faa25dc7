"""Reading what the VoxCanvas bot posted (message payloads as the fake Discord stores them), shared
by the bot tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["custom_ids", "footer_job"]


def footer_job(message: Mapping[str, Any]) -> str | None:
    """The job id a result message carries in an embed footer ``"job <id>"`` (``None``: none)."""
    for embed in message.get("embeds") or []:
        text = (embed.get("footer") or {}).get("text", "")
        if text.startswith("job "):
            return str(text.removeprefix("job "))
    return None


def custom_ids(message: Mapping[str, Any]) -> list[str]:
    """The ``custom_id`` of every component in the message's action rows, in order."""
    return [c.get("custom_id") for row in message.get("components") or [] for c in row.get("components", [])]
