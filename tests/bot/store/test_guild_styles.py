"""Server styles in the store (migration 5, table ``guild_styles``): per server, name order,
replace by name, a per-server limit that still lets an existing name be replaced, removal, and
they survive closing and reopening the database; :class:`bot.guilds.Guilds` reads them back into
templates and refuses past MAX_SERVER_STYLES in words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.guilds import Guilds
from bot.store import JobStore
from pipeline.errors import BadRequest
from pipeline.styles import MAX_SERVER_STYLES, server_style


async def test_guild_styles_are_per_server_bounded_and_durable(data_dir: Path) -> None:
    store = await JobStore.open(data_dir)
    try:
        assert await store.add_guild_style(1, "b", '{"v": 1}', limit=2, by=7) is True
        assert await store.add_guild_style(1, "a", '{"v": 2}', limit=2, by=7) is True
        assert await store.add_guild_style(1, "c", '{"v": 3}', limit=2, by=7) is False  # full
        assert await store.add_guild_style(1, "b", '{"v": 4}', limit=2, by=8) is True  # replaced
        assert await store.add_guild_style(2, "a", '{"v": 5}', limit=2, by=9) is True  # another server
        assert await store.guild_styles(1) == [("a", '{"v": 2}'), ("b", '{"v": 4}')]
        assert await store.remove_guild_style(1, "a") is True
        assert await store.remove_guild_style(1, "a") is False
    finally:
        await store.close()
    store = await JobStore.open(data_dir)
    try:
        assert await store.guild_styles(1) == [("b", '{"v": 4}')]
        assert await store.guild_styles(2) == [("a", '{"v": 5}')]
        assert await store.guild_styles(3) == []
    finally:
        await store.close()


async def test_guilds_reads_templates_back_and_refuses_past_the_limit(data_dir: Path) -> None:
    store = await JobStore.open(data_dir)
    try:
        guilds = Guilds(store)
        for i in range(MAX_SERVER_STYLES):
            await guilds.add_style(5, server_style(f"s{i}", "a style", f"kw{i}, more"), by=1)
        with pytest.raises(BadRequest, match=f"at most {MAX_SERVER_STYLES} styles"):
            await guilds.add_style(5, server_style("one more", "a style", "kw"), by=1)
        await store.add_guild_style(5, "broken", "not json", limit=100, by=1)  # skipped when read
        guilds._styles.clear()
        own = await guilds.styles(5)
        assert len(own) == MAX_SERVER_STYLES and own["s3"].medium == "kw3" and "broken" not in own
        assert await guilds.styles(None) == {} and await guilds.styles(6) == {}
        assert json.loads(dict(await store.guild_styles(5))["s0"])["name"] == "s0"
    finally:
        await store.close()
