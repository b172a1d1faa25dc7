"""The prompt blocklist (pipeline/moderation.py): the shipped default list, a server's words and
regexes, normalisation against simple evasions, refusals that name the rule but not the word."""

from __future__ import annotations

import asyncio

import pytest

from pipeline import moderation
from pipeline.moderation import BadRule, Blocklist, PromptBlocked


def test_default_list_is_shipped_and_parsed():
    default = Blocklist.default()
    labels = [rule.label for rule in default.rules]
    assert "sexual content" in labels and "graphic violence" in labels
    assert len(labels) == len(set(labels)) >= 4


@pytest.mark.parametrize(
    "text, label",
    [
        ("a NUDE woman on a beach", "sexual content"),
        ("a n4k3d figure drawing", "sexual content"),  # l33t digits
        ("nu\u200bde statue", "sexual content"),  # a zero-width space inside
        ("pornographic poster", "sexual content"),  # the wildcard ending
        ("an explicit   sex scene", "sexual content"),  # phrases across any spacing
        ("a knight decapitating a dragon", "graphic violence"),
        ("Nudité en plein air", None),  # accents dropped: "nudite" is not "nudity" — no over-reach
    ],
)
def test_default_rules_match_whole_words_after_normalising(text, label):
    rule = Blocklist.default().find(text)
    assert (rule.label if rule else None) == label


@pytest.mark.parametrize("text", ["a snuffbox on a shelf", "Scunthorpe at dawn", "a nudibranch in a reef", "gorilla"])
def test_ordinary_words_containing_a_term_pass(text):
    assert Blocklist.default().find(text) is None


def test_guild_words_and_regexes():
    blocklist = Blocklist.default().with_guild_rules(["clown*", r"re:\bred\s+(apple|cherry)\b"])
    assert blocklist.find("three clowns juggling").label == "server rule #1"
    assert blocklist.find("a Red   Apple on a table").label == "server rule #2"
    assert blocklist.find("a green apple") is None


@pytest.mark.parametrize("entry", ["", "x" * 101, "re:(unclosed"])
def test_bad_guild_rules_are_refused(entry):
    with pytest.raises(BadRule):
        moderation.guild_rule(1, entry)


def test_a_catastrophic_regex_times_out_and_counts_as_a_match():
    blocklist = Blocklist([moderation.guild_rule(1, "re:(a+)+$")])
    rule = blocklist.find("a" * 5000 + "!")
    assert rule is not None and rule.label == "server rule #1"


def test_screen_names_the_rule_and_never_the_word():
    with pytest.raises(PromptBlocked) as caught:
        moderation.screen("a hentai drawing", "typed idea")
    message = str(caught.value)
    assert "sexual content" in message and "typed idea" in message
    assert "hentai" not in message.lower()


async def test_job_rules_apply_within_the_block_and_its_tasks_only():
    moderation.screen("a circus clown", "typed idea")  # default list: allowed
    with moderation.job_rules(["clown", "re:(broken"]):  # the invalid entry is skipped, not fatal

        async def in_a_task() -> None:
            moderation.screen("a circus clown", "director's prompt")

        with pytest.raises(PromptBlocked, match="server rule #1"):
            await asyncio.create_task(in_a_task())
    moderation.screen("a circus clown", "typed idea")
