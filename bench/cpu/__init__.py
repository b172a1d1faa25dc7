"""CPU mode: the test suite's tiny random-weight models, on any machine, in a few minutes.

(a) **Bot overhead.** The same jobs (same idea, same seed, ``QA_MAX_ROUNDS=0``) run through the
    whole bot — the real discord.py client connected to the fake Discord, ``/imagine`` dispatched
    over the gateway, the job stored in SQLite, progress edits, the result uploaded — and through
    ``Studio.run`` directly on the *same* executor and models. Pairs alternate their order; the
    overhead is the median of the per-pair ratios. The fake Discord runs on its own thread with its
    own event loop (as the real Discord is another machine), so its request parsing is not counted
    as the bot's event-loop work; it still shares the CPU and the GIL.
(b) **Batching.** A burst of 32 render jobs from 32 users through ``GPUExecutor`` with
    ``DYNAMIC_BATCHING`` on (product default ``MAX_BATCH``) and off, same seeds, same models (one
    :class:`~pipeline.executor.Engine` shared by both executors); throughput ratio and the
    histogram of batch sizes. The images of both runs are compared.
(c) **Event-loop lag** on the bot's loop while 50 users send ``/imagine`` at once: a heartbeat
    task sleeps 10 ms and records how late it wakes up.

(d) **Whisper encodes once**, (e) **time to first sign of life** and (f) **start-up** (issue #19):
    see ``speed``.

Everything is warmed up first (model loading and first calls are not timed); medians of repeats.

Modules: ``harness`` (plan, settings, the fake Discord and the bot), ``bot_overhead`` (a),
``batching`` (b), ``event_loop_lag`` (c), ``speed`` (d, e, f), ``loop_work`` (end-of-job image work
at 512²) and
``summary`` (metrics, tables, notes).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..models import ensure_tiny_models
from .batching import measure_batching
from .bot_overhead import measure_overhead
from .event_loop_lag import measure_lag
from .harness import FULL, QUICK, bot_session, settings_factory
from .loop_work import measure_loop_work
from .speed import heavy_imports_of_bot, measure_first_progress, measure_startup, measure_whisper_encode_once
from .summary import summarise, summarise_speed

log = logging.getLogger(__name__)


async def run(args, results: dict[str, Any]) -> None:
    plan = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="voxcanvas-bench-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        models = ensure_tiny_models(root / "models")  # Whisper too: `python -m bot` warms it up
        log.info("tiny models built in %.1f s", time.perf_counter() - started)
        make_settings = settings_factory(models, plan, root)
        probe = make_settings()
        results["settings"] = {
            "plan": asdict(plan),
            "models": "devkit.builders tiny random-weight SD 1.x / CLIP",
            "steps": plan.steps,
            "width": plan.size,
            "height": plan.size,
            "guidance": probe.GUIDANCE,
            "safety_checker": probe.SAFETY_CHECKER,
            "max_batch": probe.MAX_BATCH,
            "batch_window_ms": probe.BATCH_WINDOW_MS,
            "qa_max_rounds": 0,
        }
        async with bot_session(plan, make_settings) as session:  # (a), (c) and (e) on one bot
            overhead = await measure_overhead(session, plan)
            lag = await measure_lag(session, plan)
            first_progress = await measure_first_progress(session, plan.first_progress_repeats)
        batching = await measure_batching(plan, make_settings)
        loop_work = measure_loop_work()
        speed = {
            "whisper": measure_whisper_encode_once(root / "models", plan.whisper_repeats),
            "first_progress": first_progress,
            "startup": await measure_startup(models, root / "startup-data"),
            "bot_imports": heavy_imports_of_bot(),
        }
    summarise(results, plan, probe, overhead, lag, batching, loop_work)
    summarise_speed(results, speed)
