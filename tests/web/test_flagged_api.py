"""Issue #17: a picture the safety checker flagged is never served raw over the HTTP API. API jobs
black flagged pictures out (the API is never an age-restricted channel); a job whose pictures were
kept as rendered for a Discord spoiler is refused with 451 for its picture, grid and candidates
(its palette — colours only — stays available)."""

from __future__ import annotations

import io
import sqlite3

import numpy as np
import pytest
from PIL import Image

from bot.store.files import DB_NAME
from pipeline.studio import Result
from tests.web.conftest import wait_state

pytestmark = pytest.mark.timeout(180)


def black(png: bytes) -> bool:
    with Image.open(io.BytesIO(png)) as image:
        return int(np.asarray(image).max()) == 0


async def test_flagged_pictures_are_black_over_the_api_and_kept_ones_refused(serve, flagging_sd_dir):
    served = await serve(DIFFUSION_MODEL=str(flagging_sd_dir), QA_MAX_ROUNDS=0)
    async with served.client() as client:
        created = await client.post("/api/jobs", json={"text": "a red apple on a table", "count": 2})
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        status = await wait_state(client, job_id, ("done", "failed"))
        assert status["state"] == "done", status
        result = Result.model_validate(status["result"])
        assert result.flagged and not result.flagged_kept
        image = await client.get(f"/api/jobs/{job_id}/image.png")
        assert image.status_code == 200 and black(image.content)

        # The same job as if its pictures had been kept for a spoiler (what a Discord job in an
        # age-restricted channel of a server with `/settings nsfw spoiler` stores).
        with sqlite3.connect(served.settings.DATA_DIR / DB_NAME) as db:
            db.execute(
                "UPDATE jobs SET result_json = json_set(result_json, '$.flagged_kept', json('true')) WHERE id = ?",
                (job_id,),
            )
        for path in ("image.png", "grid.png", "candidates/1.png", "candidates/2.png"):
            refused = await client.get(f"/api/jobs/{job_id}/{path}")
            assert refused.status_code == 451, (path, refused.status_code)
            assert "spoiler" in refused.json()["message"] and refused.headers["content-type"] == "application/json"
        palette = await client.get(f"/api/jobs/{job_id}/palette.png")
        assert palette.status_code == 200 and palette.headers["content-type"] == "image/png"
