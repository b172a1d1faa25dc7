"""Helpers both benchmark modes share: the product's own setting defaults and the executor's
batch-size histogram between two moments."""

from __future__ import annotations

from typing import Any


def product_defaults(*names: str) -> dict[str, Any]:
    """The product's defaults of ``names`` (``Settings`` field defaults), passed explicitly to every
    benchmark ``Settings`` so a developer's environment or .env cannot change what is measured."""
    from pipeline.settings import Settings

    return {name: Settings.model_fields[name].default for name in names}


def batch_size_delta(before: dict[int, int], after: dict[int, int]) -> dict[int, int]:
    """Pipeline calls per batch size between two snapshots of ``executor.metrics().batch_sizes``
    (sizes that did not occur in between are left out)."""
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) - before.get(k, 0)}
