"""``loop`` section: ``Studio.run`` without Gemini — a 20 s voice note (WAV) and a text idea, with
``QA_MAX_ROUNDS`` 0 and the product default 1; per-stage timings."""

from __future__ import annotations

import collections
import logging
import time

from ..models import IDEAS
from ..report import median, metric
from .harness import GpuBench, fmt_s, put_table, speech_like, wav_bytes

log = logging.getLogger(__name__)


async def section_loop(bench: GpuBench) -> None:
    from pipeline.studio import Idea, Studio

    plan = bench.plan
    note = wav_bytes(speech_like(plan.whisper_seconds))
    cases = [("voice note, QA_MAX_ROUNDS=0", 0, True), ("text idea, QA_MAX_ROUNDS=0", 0, False)]
    if plan.loop_repeats > 1 or bench.args.models == "tiny":
        cases += [("voice note, QA_MAX_ROUNDS=1 (product default)", 1, True)]
    rows, details = [], {}
    for name, rounds, voice in cases:
        studio = Studio(bench.make_settings(QA_MAX_ROUNDS=rounds), bench.executor)
        totals, stages, n_rounds = [], collections.defaultdict(list), []
        for i in range(plan.warmup + plan.loop_repeats):
            idea = Idea(audio=note, audio_filename="note.wav", seed=7) if voice else Idea(text=IDEAS[1], seed=7)
            job = bench.executor.admit(f"bench-loop-{i}")
            started = time.perf_counter()
            try:
                output = await studio.run(job, idea)
            finally:
                job.finish("done")
            if i < plan.warmup:
                continue
            totals.append(time.perf_counter() - started)
            n_rounds.append(len(output.result.rounds))
            for stage, secs in output.result.timings.items():
                stages[stage].append(secs)
        details[name] = {"total_s": totals, "stages_s": dict(stages), "rounds": n_rounds}
        rows.append(
            [name, fmt_s(median(totals)), max(n_rounds)]
            + [
                fmt_s(median(stages[s])) if stages.get(s) else "—"
                for s in ("decode", "transcribe", "direct", "render", "review")
            ]
        )
        log.info("loop %s: %.3f s", name, median(totals))
    bench.details["loop"] = details
    voice0 = details["voice note, QA_MAX_ROUNDS=0"]
    bench.metrics["loop_voice"] = metric(
        f"Full loop without Gemini: {plan.whisper_seconds:g} s voice note → checked picture (one round)",
        median(voice0["total_s"]),
        "s",
        fmt="{:.3f}",
    )
    put_table(
        bench.results,
        {
            "title": "Full loop without Gemini (Studio.run through the executor; seconds, medians)",
            "columns": ["case", "total", "rounds", "decode", "transcribe", "direct", "render", "review"],
            "rows": rows,
        },
    )
