"""CLIP-token counting, prompt fitting and tidying."""

from __future__ import annotations

from pipeline.prompts import PROMPT_TOKEN_LIMIT, estimate_clip_tokens, fit_prompt, tidy_prompt


def test_estimate_counts_common_words_once_and_charges_rare_and_foreign_text_more():
    assert estimate_clip_tokens("a red apple on a wooden table") == 7
    assert estimate_clip_tokens("apples, cats") == 3  # plural of known words + the comma
    assert estimate_clip_tokens("Llanfairpwllgwyngyll") > 5
    assert estimate_clip_tokens("東京の夜景") >= 2 * len("東京の夜景")
    assert estimate_clip_tokens("1890s") == 5
    assert estimate_clip_tokens("") == 0


def test_fit_prompt_drops_trailing_parts_then_words(byte_tokens):
    prompt = "a red apple on a wooden table, oil painting, warm light, " + ", ".join(
        f"quality term {i}" for i in range(40)
    )
    fitted = fit_prompt(prompt)
    assert estimate_clip_tokens(fitted) <= PROMPT_TOKEN_LIMIT
    assert fitted.startswith("a red apple on a wooden table, oil painting")
    assert prompt.startswith(fitted)  # only the tail was dropped

    strict = fit_prompt(prompt, count_tokens=byte_tokens)
    assert byte_tokens(strict) <= PROMPT_TOKEN_LIMIT
    assert strict.startswith("a red apple")

    rambling = " ".join(["word"] * 200)  # no commas: trailing words go
    assert estimate_clip_tokens(fit_prompt(rambling)) <= PROMPT_TOKEN_LIMIT
    assert fit_prompt("  a  cat,  sitting ") == "a cat, sitting"  # short: only whitespace tidied
    assert fit_prompt("a cat", count_tokens=lambda text: None) == "a cat"  # None → the estimate


def test_tidy_prompt_removes_weighting_syntax():
    assert tidy_prompt('(red apple:1.3), [table:0.8], ((masterpiece)), "quoted"') == (
        "red apple, table, masterpiece, quoted"
    )
