"""LazyModel: the one way every stage (Whisper, diffusion, CLIP) loads its weights — once, on first
use, thread-safe, with failures that name the setting to change."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from pipeline.errors import ModelUnavailable
from pipeline.models import LazyModel


class Counted(LazyModel[dict[str, object]]):
    """Loads a dictionary slowly and counts the loads; fails while ``broken`` is true."""

    setting = "EXAMPLE_MODEL"

    def __init__(self, model: str, device: str = "cpu") -> None:
        super().__init__(model, device)
        self.loads = 0
        self.broken = False

    def _load(self, device: torch.device, dtype: torch.dtype) -> dict[str, object]:
        self.loads += 1
        time.sleep(0.05)  # long enough for the other threads to arrive while loading
        if self.broken:
            raise OSError(f"{self.model_id} is not a directory with a config.json\nsecond line")
        return {"device": device, "dtype": dtype}


def test_loads_once_even_when_many_threads_ask_at_once():
    holder = Counted("example/model")
    assert not holder.loaded and holder.device is None
    seen: list[dict[str, object]] = []
    threads = [threading.Thread(target=lambda: seen.append(holder.load())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert holder.loads == 1 and holder.loaded
    assert all(weights is seen[0] for weights in seen) and len(seen) == 8
    assert (holder.device, holder.dtype) == (torch.device("cpu"), torch.float32)
    assert seen[0] == {"device": torch.device("cpu"), "dtype": torch.float32}


def test_a_failure_names_the_setting_in_one_line_and_the_next_use_tries_again():
    holder = Counted("example/model")
    holder.broken = True
    with pytest.raises(ModelUnavailable) as failed:
        holder.load()
    message = str(failed.value)
    assert "EXAMPLE_MODEL='example/model'" in message and "config.json" in message and "\n" not in message
    assert not holder.loaded and holder.device is None
    holder.broken = False
    assert holder.load()["dtype"] == torch.float32 and holder.loads == 2


def test_unload_drops_the_weights_and_the_next_use_loads_again():
    holder = Counted("example/model")
    first = holder.load()
    holder.unload()
    assert not holder.loaded
    assert holder.load() is not first and holder.loads == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without a GPU")
def test_device_cuda_without_a_gpu_names_the_device_setting():
    holder = Counted("example/model", device="cuda")
    with pytest.raises(ModelUnavailable, match="DEVICE") as failed:
        holder.load()
    assert "EXAMPLE_MODEL" not in str(failed.value) and holder.loads == 0
