"""Several candidates per job (issue #13): one batched render with consecutive seeds, every
candidate scored (CLIP in one pass; Gemini in one call returning per-picture reviews, the fake
Gemini answering that shape), the best driving the correction, the grid and the recorded scores."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pipeline.executor import ProgressEvent
from pipeline.grid import GAP, cell_box, grid_shape, make_grid
from pipeline.studio import Idea
from tests.pipeline import test_studio
from tests.pipeline.test_studio import IDEA, gemini, run

make_studio = test_studio.make_studio  # the studio fixture, shared

pytestmark = pytest.mark.timeout(120)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data)).size


def review(score: int, *missing: str) -> dict:
    return {
        "alignment_score": score,
        "missing_elements": list(missing),
        "correction_prompt": "a red apple, prominent, on a wooden table",
        "notes": f"scored {score}",
    }


async def test_four_candidates_one_batch_clip_scores_all_and_the_best_leads(make_studio):
    studio = await make_studio(STEPS=2, QA_MAX_ROUNDS=0)
    job = studio.executor.admit("u")
    events: list[ProgressEvent] = []
    job.listener = events.append
    try:
        output = await studio.run(job, Idea(text=IDEA, seed=1000, candidates=4))
    finally:
        job.finish()
    result = output.result
    assert job.candidates == 4
    assert [c.index for c in result.candidates] == [0, 1, 2, 3]
    assert [c.seed for c in result.candidates] == [1000, 1001, 1002, 1003]
    scores = [c.score for c in result.candidates]
    assert all(isinstance(s, int) and 0 <= s <= 100 for s in scores)
    best = result.best_candidate
    assert scores[best] == max(scores) and best == scores.index(max(scores))  # the earliest wins a tie
    # Round 0 is the best candidate's; it came from one pipeline call of four.
    assert len(result.rounds) == 1 and result.rounds[0].seed == 1000 + best
    assert result.rounds[0].batch_size == 4 and result.score == scores[best]
    # The pictures: four 64² PNGs, the best one is the job's picture, and a 2×2 grid.
    assert len(output.candidate_pngs) == 4 and all(png_size(p) == (64, 64) for p in output.candidate_pngs)
    assert output.candidate_pngs[best] == output.image_png
    assert output.grid_png is not None and png_size(output.grid_png) == (128 + GAP, 128 + GAP)
    assert output.shown_png == output.grid_png
    # Progress said how many were reviewed.
    assert any(e.stage == "review" and e.total == 4 for e in events)
    assert any(e.stage == "render" and e.total == 2 for e in events)


async def test_candidate_scores_match_single_reviews_and_renders_repeat_from_the_seed(make_studio):
    """The batched CLIP pass scores each picture as a single review would, and candidate n
    rendered alone from its recorded seed is the same picture (what U/V buttons rely on)."""
    studio = await make_studio(STEPS=2, QA_MAX_ROUNDS=0)
    output = await run(studio, Idea(text=IDEA, seed=77, candidates=3))
    result = output.result
    assert len(result.candidates) == 3 and output.grid_png is not None
    pictures = [Image.open(io.BytesIO(p)).convert("RGB") for p in output.candidate_pngs]
    job = studio.executor.admit("u")
    try:
        singles = [await studio.executor.review(job, p, result.scene, result.rounds[0].prompt) for p in pictures]
    finally:
        job.finish()
    assert [r.alignment_score for r in singles] == [c.score for c in result.candidates]

    again = await run(studio, Idea(text=IDEA, seed=result.candidates[2].seed, candidates=1))
    assert again.result.candidates == [] and again.grid_png is None and again.candidate_pngs == []
    alone = Image.open(io.BytesIO(again.image_png)).convert("RGB")
    diff = max(abs(a - b) for a, b in zip(alone.tobytes(), pictures[2].tobytes(), strict=True))
    assert diff <= 2  # same seed, same picture (batched vs alone: float noise at most)


async def test_one_candidate_is_exactly_as_before(make_studio):
    studio = await make_studio(STEPS=2, QA_MAX_ROUNDS=0)
    output = await run(studio, Idea(text=IDEA, seed=5))
    assert studio.candidate_count(None) == 1  # DEVICE=cpu
    assert output.result.candidates == [] and output.grid_png is None
    assert output.shown_png == output.image_png and output.result.rounds[0].batch_size == 1


async def test_candidates_setting_and_bounds(make_studio):
    studio = await make_studio(CANDIDATES=2)
    assert studio.candidate_count(None) == 2 and studio.candidate_count(4) == 4
    from pipeline.errors import BadRequest

    with pytest.raises(BadRequest):
        studio.candidate_count(5)


async def test_gemini_reviews_all_candidates_in_one_call(
    make_studio, gemini_settings, tiny_sd_dir, tiny_clip_dir, fake_gemini
):
    fake_gemini.script("critic", {"reviews": [review(40, "wooden table"), review(95), review(60), review(90)]})
    studio = await make_studio(gemini(gemini_settings, tiny_sd_dir, tiny_clip_dir, STEPS=2))
    output = await run(studio, Idea(text=IDEA, seed=10, candidates=4))
    result = output.result
    assert result.critic == "gemini" and result.critic_fallback is None
    assert [c.score for c in result.candidates] == [40, 95, 60, 90]
    assert result.best_candidate == 1 and result.rounds[0].seed == 11
    assert len(result.rounds) == 1  # 95 passes the bar: no correction
    critic_requests = fake_gemini.requests_for("critic")
    assert len(critic_requests) == 1 and len(critic_requests[0].images) == 4


async def test_gemini_below_the_bar_corrects_from_the_best_candidate(
    make_studio, gemini_settings, tiny_sd_dir, tiny_clip_dir, fake_gemini
):
    first = [review(30), review(50), review(70, "wooden table"), review(20)]
    fake_gemini.script("critic", {"reviews": first}, review(93))
    studio = await make_studio(gemini(gemini_settings, tiny_sd_dir, tiny_clip_dir, STEPS=2))
    output = await run(studio, Idea(text=IDEA, seed=10, candidates=4))
    result = output.result
    assert [r.score for r in result.rounds] == [70, 93]
    assert result.rounds[1].prompt == "a red apple, prominent, on a wooden table"  # the best one's correction
    assert result.best_round == 1 and result.best_candidate == 2
    cell = result.candidates[2]
    assert cell.corrected and cell.score == 93 and cell.seed == result.rounds[1].seed
    assert output.candidate_pngs[2] == output.image_png  # the correction took the best candidate's cell


async def test_gemini_single_report_shape_and_a_wrong_count_fall_back(
    make_studio, gemini_settings, tiny_sd_dir, tiny_clip_dir, fake_gemini
):
    studio = await make_studio(gemini(gemini_settings, tiny_sd_dir, tiny_clip_dir, STEPS=2, QA_MAX_ROUNDS=0))
    fake_gemini.script("critic", review(88))  # the old single shape: every picture gets it
    result = (await run(studio, Idea(text=IDEA, candidates=2))).result
    assert [c.score for c in result.candidates] == [88, 88] and result.best_candidate == 0

    fake_gemini.script("critic", {"reviews": [review(88)]})  # one review for two pictures
    result = (await run(studio, Idea(text=IDEA, candidates=2))).result
    assert result.critic == "local" and "not the 2 candidates" in (result.critic_fallback or "")
    assert len(result.candidates) == 2


def test_grid_shapes_labels_and_cells():
    assert [grid_shape(n) for n in (1, 2, 3, 4)] == [(1, 1), (2, 1), (2, 2), (2, 2)]
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0)]
    grid = make_grid([Image.new("RGB", (96, 64), c) for c in colours], best=3)
    assert grid.size == (2 * 96 + GAP, 2 * 64 + GAP)
    for index, colour in enumerate(colours):
        box = cell_box(4, index, grid.size)
        assert box[2] - box[0] == 96 and box[3] - box[1] == 64
        centre = ((box[0] + box[2]) // 2, (box[1] + box[3]) // 2)
        assert grid.getpixel(centre) == colour  # the picture itself, untouched in the middle
        corner = grid.crop((box[0], box[1], box[0] + 24, box[1] + 24))
        assert (0, 0, 0) in {c for _, c in corner.getcolors(24 * 24) or []}  # the label sits at the top-left
    best_corner = cell_box(4, 3, grid.size)
    assert grid.getpixel((best_corner[0], best_corner[3] - 1)) == (255, 196, 0)  # the best one is framed
    big = make_grid([Image.new("RGB", (1024, 1024))] * 2)
    assert big.size == (2 * 768 + GAP, 768)  # cells scaled down: the grid stays bounded


async def test_a_correction_round_renders_as_many_candidates_and_keeps_its_best(
    make_studio, gemini_settings, tiny_sd_dir, tiny_clip_dir, fake_gemini
):
    first = [review(30), review(50), review(70, "wooden table"), review(20)]
    correction = [review(60), review(93), review(80), review(10)]
    fake_gemini.script("critic", {"reviews": first}, {"reviews": correction})
    studio = await make_studio(gemini(gemini_settings, tiny_sd_dir, tiny_clip_dir, STEPS=2))
    output = await run(studio, Idea(text=IDEA, seed=10, candidates=4))
    result = output.result
    assert [r.score for r in result.rounds] == [70, 93]  # the correction's best of four
    assert result.rounds[1].batch_size == 4  # four new seeds in one pipeline call
    assert result.rounds[1].seed not in {c.seed for c in result.candidates[:2] + result.candidates[3:]}
    assert [len(r.images) for r in fake_gemini.requests_for("critic")] == [4, 4]  # each batch in one call
    assert result.best_round == 1 and result.candidates[2].corrected and result.candidates[2].score == 93
