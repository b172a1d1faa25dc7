"""``count`` in the HTTP API (issue #13): 1–4 candidates in one job, each scored by the critic,
the grid and each candidate's picture served, and the bounds checked — uvicorn on 127.0.0.1
driven by httpx, the tiny models behind it."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pipeline.grid import GAP
from pipeline.studio import Result
from tests.web.conftest import read_events

pytestmark = pytest.mark.timeout(240)


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


async def test_four_candidates_scored_with_a_grid_and_each_picture(serve):
    served = await serve(QA_MAX_ROUNDS=0)
    async with served.client() as client:
        created = await client.post("/api/jobs", json={"text": "a red apple on a wooden table", "seed": 40, "count": 4})
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        events = await read_events(client, created.json()["events_url"])
        assert events[-1][0] == "done", events[-1]
        done = events[-1][1]
        result = Result.model_validate(done["result"])
        assert [c.seed for c in result.candidates] == [40, 41, 42, 43]
        scores = [c.score for c in result.candidates]
        assert all(isinstance(s, int) and 0 <= s <= 100 for s in scores)
        assert scores[result.best_candidate] == max(scores)
        assert done["grid_url"] == f"{served.url}/api/jobs/{job_id}/grid.png"
        assert done["candidate_urls"] == [f"{served.url}/api/jobs/{job_id}/candidates/{n}.png" for n in range(1, 5)]

        status = (await client.get(f"/api/jobs/{job_id}")).json()
        assert status["grid_url"] == done["grid_url"] and status["candidate_urls"] == done["candidate_urls"]
        grid = await client.get(status["grid_url"])
        assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
        assert png_size(grid.content) == (128 + GAP, 128 + GAP)  # 2 × 2 cells of 64 px
        cells = [await client.get(u) for u in status["candidate_urls"]]
        assert all(c.status_code == 200 and png_size(c.content) == (64, 64) for c in cells)
        image = await client.get(status["image_url"])
        assert cells[result.best_candidate].content == image.content  # the best one is the job's picture

        # One candidate: no grid, no candidate list.
        single = await client.post("/api/jobs", json={"text": "a blue pear", "seed": 3, "count": 1})
        events = await read_events(client, single.json()["events_url"])
        one = single.json()["job_id"]
        status = (await client.get(f"/api/jobs/{one}")).json()
        assert status["state"] == "done" and status["grid_url"] is None and status["candidate_urls"] is None
        assert Result.model_validate(status["result"]).candidates == []
        missing = await client.get(f"/api/jobs/{one}/grid.png")
        assert missing.status_code == 404 and "one picture" in missing.json()["message"]


@pytest.mark.parametrize("count", [0, 5, "many"])
async def test_count_out_of_bounds_is_422(serve, count):
    served = await serve()
    async with served.client() as client:
        refused = await client.post("/api/jobs", json={"text": "a red apple", "count": count})
        assert refused.status_code == 422, refused.text
        assert "count" in refused.text
