"""torch at the edge of the executor: CPU thread count, CUDA out-of-memory detection and recovery.
Every import of torch is local, so importing the executor stays cheap."""

from __future__ import annotations

import logging
import os

from ..errors import OutOfMemory

log = logging.getLogger(__name__)


def leave_a_core_for_the_event_loop(device_setting: str) -> None:
    """On the CPU, torch's OpenMP team would take every core; its threads spin at barriers, and
    when the machine is oversubscribed (the event loop, other processes) every barrier waits for
    a descheduled thread — renders slow down by orders of magnitude. Keep one core free."""
    try:
        import torch

        if device_setting == "cpu" or not torch.cuda.is_available():
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            threads = max(1, cores - 1)
            if torch.get_num_threads() > threads:
                torch.set_num_threads(threads)
                log.info("CPU inference: %d torch thread(s) on %d core(s)", threads, cores)
    except Exception:  # pragma: no cover - never fatal
        log.debug("could not set torch threads", exc_info=True)


def is_out_of_memory(exc: BaseException) -> bool:
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except Exception:  # pragma: no cover
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def user_facing(exc: Exception) -> Exception:
    """CUDA out-of-memory becomes :class:`OutOfMemory` (its message is fit to show a user)."""
    return OutOfMemory() if is_out_of_memory(exc) else exc


def free_cuda_cache_if_oom(exc: BaseException) -> None:
    if not is_out_of_memory(exc):
        return
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover
        pass
