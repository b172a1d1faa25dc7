"""Named diffusion models (``MODELS``) and which of them stay loaded (least recently used out).

``MODELS`` is a comma-separated list of ``name=source`` entries, each optionally followed by
``;key=value`` defaults for that model::

    MODELS=sd15=stable-diffusion-v1-5/stable-diffusion-v1-5, sdxl=stabilityai/stable-diffusion-xl-base-1.0,
           turbo=stabilityai/sdxl-turbo;steps=2, flux=black-forest-labs/FLUX.1-schnell

Keys: ``steps``, ``guidance``, ``width``, ``height`` (the model's defaults) and ``few_step=true``
(a few-step distilled model whose repository does not say so); what a model's entry leaves out
comes from the ``STEPS``/``GUIDANCE``/``WIDTH``/``HEIGHT`` settings when set, else from its family
(:mod:`.families`). ``DIFFUSION_MODEL`` is the default:
a name from ``MODELS`` or a hub id / directory of its own (then called ``default``).

:class:`ModelPool` (model thread only) keeps at most ``MAX_RESIDENT_MODELS`` pipelines loaded and,
with ``GPU_MEMORY_BUDGET_GB`` set, at most that many GiB of their weights; loading another unloads
the least recently used first.
"""

from __future__ import annotations

import functools
import gc
import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from . import limits
from .errors import BadRequest
from .families import ModelDefaults

if TYPE_CHECKING:
    from .control import ControlNets
    from .settings import Settings
    from .synthesis import Synthesizer

log = logging.getLogger(__name__)

DEFAULT_NAME = "default"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    source: str  # hub id or local directory
    defaults: ModelDefaults


def parse_models(text: str) -> dict[str, ModelEntry]:
    """``MODELS`` → entries by name. Raises ValueError with a message naming the bad part."""
    entries: dict[str, ModelEntry] = {}
    for raw in (text or "").split(","):
        part = raw.strip()
        if not part:
            continue
        head, *options = [p.strip() for p in part.split(";")]
        name, sep, source = head.partition("=")
        name, source = name.strip(), source.strip()
        if not sep or not source or not _NAME.match(name):
            raise ValueError(f"MODELS entry {part!r} must look like name=hub-id-or-directory[;steps=4;...]")
        if name in entries:
            raise ValueError(f"MODELS names {name!r} twice")
        values: dict[str, Any] = {}
        for option in options:
            key, _, value = option.partition("=")
            key, value = key.strip().lower(), value.strip()
            try:
                if key == "steps":
                    values[key] = int(value)
                    if not limits.MIN_STEPS <= values[key] <= limits.MAX_STEPS:
                        raise ValueError
                elif key == "guidance":
                    values[key] = float(value)
                    if not limits.MIN_GUIDANCE <= values[key] <= limits.MAX_GUIDANCE:
                        raise ValueError
                elif key in ("width", "height"):
                    values[key] = int(value)
                    if values[key] % limits.SIDE_MULTIPLE or not limits.MIN_SIDE <= values[key] <= limits.MAX_SIDE:
                        raise ValueError
                elif key == "few_step":
                    values[key] = value.lower() in ("1", "true", "yes", "on")
                else:
                    raise ValueError(f"unknown option {key!r}")
            except ValueError as exc:
                detail = f" ({exc})" if str(exc) else ""
                raise ValueError(f"MODELS entry {name!r}: bad option {option!r}{detail}") from None
        entries[name] = ModelEntry(name, source, ModelDefaults(**values))
    return entries


class ModelPool:
    """The diffusion models by name, loaded on demand, the least recently used unloaded first."""

    def __init__(self, settings: Settings, factory: Callable[[ModelEntry], Synthesizer] | None = None) -> None:
        self.settings = settings
        self.entries = parse_models(settings.MODELS)
        default = settings.DIFFUSION_MODEL
        if default in self.entries:
            self.default_name = default
        else:
            self.default_name = DEFAULT_NAME
            self.entries = {DEFAULT_NAME: ModelEntry(DEFAULT_NAME, default, ModelDefaults()), **self.entries}
        self.max_resident = settings.MAX_RESIDENT_MODELS
        self.budget_bytes = int(settings.GPU_MEMORY_BUDGET_GB * 1024**3)
        self._factory = factory or self._make
        self._synths: dict[str, Synthesizer] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()  # loaded names, least recent first
        self.loads = 0
        self.evictions = 0

    def _make(self, entry: ModelEntry) -> Synthesizer:
        from .lora import LoraSet
        from .synthesis import Synthesizer

        own, settings = entry.defaults, self.settings
        defaults = ModelDefaults(
            steps=own.steps if own.steps is not None else settings.STEPS,
            guidance=own.guidance if own.guidance is not None else settings.GUIDANCE,
            width=own.width if own.width is not None else settings.WIDTH,
            height=own.height if own.height is not None else settings.HEIGHT,
            few_step=own.few_step,
        )
        synth = Synthesizer(
            entry.source,
            self.settings.DEVICE,
            safety_checker=self.settings.SAFETY_CHECKER,
            name=None if entry.name == self.default_name else entry.name,
            defaults=defaults,
        )
        synth.loras = LoraSet(self.settings.LORA_DIR)
        if self.settings.CONTROLNET_MODELS.strip():
            synth.controls = self.controlnets
        return synth

    @functools.cached_property
    def controlnets(self) -> ControlNets:
        """The ControlNets of ``CONTROLNET_MODELS``, shared by every model (one copy per mode)."""
        from .control import ControlNets

        return ControlNets(self.settings.CONTROLNET_MODELS, depth_model=self.settings.DEPTH_MODEL)

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def canonical(self, name: str | None) -> str:
        """The entry name a request's ``model`` means (None: the default). Unknown: BadRequest."""
        if name is None or name == self.default_name or name == DEFAULT_NAME:
            return self.default_name
        if name not in self.entries:
            raise BadRequest(f"There is no model called {name!r}. Choose one of: {', '.join(self.names)}.")
        return name

    def get(self, name: str | None) -> Synthesizer:
        """The model's synthesizer (created, not loaded)."""
        key = self.canonical(name)
        synth = self._synths.get(key)
        if synth is None:
            synth = self._synths[key] = self._factory(self.entries[key])
        return synth

    def is_loaded(self, name: str | None) -> bool:
        try:
            return self.get(name).loaded
        except BadRequest:
            return True  # nothing to load: the render fails with the message

    @property
    def resident(self) -> list[str]:
        return [name for name in self._recent if self._synths[name].loaded]

    def use(self, name: str | None) -> Synthesizer:
        """The model, loaded now if needed (evicting the least recently used first), marked as
        just used."""
        key = self.canonical(name)
        synth = self.get(key)
        if not synth.loaded:
            others = [n for n in self.resident if n != key]
            while others and len(others) + 1 > self.max_resident:
                self._evict(others.pop(0))
            synth.load()
            self.loads += 1
        self._recent[key] = None
        self._recent.move_to_end(key)
        if self.budget_bytes:
            others = [n for n in self.resident if n != key]
            while others and self.resident_bytes() > self.budget_bytes:
                self._evict(others.pop(0))
        return synth

    def _evict(self, name: str) -> None:
        log.info("unloading diffusion model %s (least recently used)", name)
        self._synths[name].unload()
        self._recent.pop(name, None)
        self.evictions += 1
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def resident_bytes(self) -> int:
        return sum(weights_bytes(self._synths[n]) for n in self.resident)


def model_names(settings: Settings) -> list[str]:
    """The names ``/imagine model:`` offers: the default first, then ``MODELS`` in order."""
    entries = parse_models(settings.MODELS)
    names = list(entries)
    if settings.DIFFUSION_MODEL in entries:
        names.remove(settings.DIFFUSION_MODEL)
        return [settings.DIFFUSION_MODEL, *names]
    return [DEFAULT_NAME, *names]


def weights_bytes(synth: Synthesizer) -> int:
    """Bytes of every parameter and buffer of a loaded pipeline's modules."""
    if not synth.loaded:
        return 0
    total = 0
    for component in synth.load().text2img.components.values():
        if isinstance(component, torch.nn.Module):
            total += sum(t.numel() * t.element_size() for t in component.parameters())
            total += sum(t.numel() * t.element_size() for t in component.buffers())
    return total
