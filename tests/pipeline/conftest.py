"""Fixtures shared by the pipeline tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from devkit import builders


@pytest.fixture(scope="session")
def byte_tokens(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], int]:
    """Exact token counts with the tiny SD model's byte-level CLIP tokenizer (every byte is a
    token, so it is far stricter than the real BPE)."""
    from transformers import CLIPTokenizer

    directory = builders.write_clip_tokenizer(tmp_path_factory.mktemp("tok"))
    tokenizer = CLIPTokenizer.from_pretrained(directory)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False, truncation=False).input_ids)

    return count
