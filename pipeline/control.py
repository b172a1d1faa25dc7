"""ControlNet: guide a render's layout and colours with a control image (diffusers backend).

Modes (``/imagine control:``):

``canny``
    edges of the user's control image (or the init image). The edge map is computed here with
    numpy and scipy's ``ndimage`` (Gaussian blur, Sobel gradients, non-maximum suppression,
    hysteresis) rather than OpenCV: it is the one image operation we need, scipy is already
    installed (librosa needs it), and ``opencv-python-headless`` would add ~50 MB for it.
``depth``
    a depth map of the control image from a depth estimator run through transformers'
    ``depth-estimation`` pipeline (``DEPTH_MODEL``: DPT, Depth-Anything, ...), loaded on first use.
``palette``
    the director's palette as a colour-layout image: horizontal bands of the palette's colours,
    the first (dominant) colour widest, softened at the seams. It is meant for a ControlNet that
    reads a low-resolution colour image as layout and colour (the SD 1.5 *tile* ControlNet by
    default), which is what the source design's "the palette drives the colours" asks for.
``pose``
    not built in (it needs an OpenPose detector); a ``pose`` entry in ``CONTROLNET_MODELS`` is
    used with a control image that already *is* a pose skeleton.

``CONTROLNET_MODELS`` maps ``[family:]mode=hub-id-or-directory`` (comma-separated); an entry
without a family is for SD 1.x. The ControlNet pipeline is made from the loaded text-to-image
pipeline with ``from_pipe`` (same modules, no second copy of the weights), so every model of a
family shares one ControlNet per mode.

Everything that runs torch here runs on the GPU executor thread (from :mod:`.synthesis`).
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageFilter

from .errors import BadRequest
from .images import decode_init_image
from .palette import normalise_hex

log = logging.getLogger(__name__)

ControlMode = Literal["canny", "depth", "pose", "palette"]
CONTROL_MODES: tuple[str, ...] = ("canny", "depth", "pose", "palette")
#: Modes that need the user's control image (palette is made from the director's palette).
IMAGE_MODES = ("canny", "depth", "pose")
MIN_CONTROL_STRENGTH = 0.0
MAX_CONTROL_STRENGTH = 2.0
DEFAULT_CONTROL_STRENGTH = 1.0
FAMILIES = ("sd", "sdxl")  # diffusers has ControlNet pipelines for these (SD3/FLUX: not here yet)

DEFAULT_CONTROLNET_MODELS = (
    "canny=lllyasviel/control_v11p_sd15_canny, depth=lllyasviel/control_v11f1p_sd15_depth, "
    "palette=lllyasviel/control_v11f1e_sd15_tile, pose=lllyasviel/control_v11p_sd15_openpose, "
    "sdxl:canny=diffusers/controlnet-canny-sdxl-1.0, sdxl:depth=diffusers/controlnet-depth-sdxl-1.0"
)
DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"

_ENTRY = re.compile(r"^(?:(?P<family>[a-z0-9]+):)?(?P<mode>[a-z]+)=(?P<source>\S+)$")


def parse_controlnet_models(text: str) -> dict[tuple[str, str], str]:
    """``CONTROLNET_MODELS`` → {(family, mode): source}. Raises ValueError naming the bad entry."""
    models: dict[tuple[str, str], str] = {}
    for raw in (text or "").split(","):
        part = raw.strip()
        if not part:
            continue
        match = _ENTRY.match(part)
        if not match:
            raise ValueError(f"CONTROLNET_MODELS entry {part!r} must look like [family:]mode=hub-id-or-directory")
        family, mode = match["family"] or "sd", match["mode"]
        if family not in FAMILIES:
            raise ValueError(f"CONTROLNET_MODELS entry {part!r}: family must be one of {', '.join(FAMILIES)}")
        if mode not in CONTROL_MODES:
            raise ValueError(f"CONTROLNET_MODELS entry {part!r}: mode must be one of {', '.join(CONTROL_MODES)}")
        if (family, mode) in models:
            raise ValueError(f"CONTROLNET_MODELS names {family}:{mode} twice")
        models[(family, mode)] = match["source"]
    return models


def parse_remote_controlnet_models(text: str, setting: str) -> dict[str, str]:
    """``A1111_CONTROLNET_MODELS`` / ``COMFYUI_CONTROLNET_MODELS`` → {mode: the server's model name}.
    Raises ValueError naming the setting and the bad entry."""
    models: dict[str, str] = {}
    for raw in (text or "").split(","):
        part = raw.strip()
        if not part:
            continue
        mode, sep, name = (piece.strip() for piece in part.partition("="))
        if not sep or not name or len(name) > 200:
            raise ValueError(f"{setting} entry {part!r} must look like mode=model-name")
        if mode not in CONTROL_MODES:
            raise ValueError(f"{setting} entry {part!r}: mode must be one of {', '.join(CONTROL_MODES)}")
        if mode in models:
            raise ValueError(f"{setting} names {mode} twice")
        models[mode] = name
    return models


def remote_control_image(spec: ControlSpec, width: int, height: int) -> tuple[bytes, str]:
    """The control image a remote backend is sent (PNG at the render size) and the preprocessor the
    server must still run on it: canny edges and palette bands are made here, a pose skeleton is
    sent as given; depth needs an estimator, so the user's picture goes with ``depth_midas`` (A1111's
    preprocessor; a backend without one refuses depth). Pure numpy/PIL: any thread."""
    if spec.mode == "palette":
        return png(palette_image(spec.palette, width, height)), "none"
    if spec.source is None:
        raise BadRequest(f"The {spec.mode} control needs an image.")
    source = decode_init_image(spec.source).convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    if spec.mode == "canny":
        return png(canny_edges(source)), "none"
    if spec.mode == "depth":
        return png(source), "depth_midas"
    return png(source), "none"


def check_control(mode: str | None, strength: float | None) -> tuple[str | None, float]:
    """A user's ``control:`` and ``control_strength:`` → (mode or None, strength). BadRequest."""
    if mode is None or not str(mode).strip() or str(mode).strip().lower() == "none":
        return None, DEFAULT_CONTROL_STRENGTH
    key = str(mode).strip().lower()
    if key not in CONTROL_MODES:
        raise BadRequest(f"Unknown control mode {mode!r}. Choose one of: {', '.join(CONTROL_MODES)}.")
    value = DEFAULT_CONTROL_STRENGTH if strength is None else float(strength)
    if not MIN_CONTROL_STRENGTH <= value <= MAX_CONTROL_STRENGTH:
        raise BadRequest(
            f"The control strength must be between {MIN_CONTROL_STRENGTH:g} and {MAX_CONTROL_STRENGTH:g} "
            f"(got {value:g})."
        )
    return key, round(value, 4)


# ------------------------------------------------------------------------------------------------
# Control images (pure numpy/PIL: any thread)
# ------------------------------------------------------------------------------------------------
def canny_edges(image: Image.Image, low: float = 0.1, high: float = 0.2, sigma: float = 1.4) -> Image.Image:
    """Canny edges of ``image`` as a white-on-black RGB image of the same size. ``low``/``high``:
    hysteresis thresholds as fractions of the strongest gradient."""
    from scipy import ndimage

    grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    grey = ndimage.gaussian_filter(grey, sigma)
    gx = ndimage.sobel(grey, axis=1)
    gy = ndimage.sobel(grey, axis=0)
    magnitude = np.hypot(gx, gy)
    peak = float(magnitude.max())
    if peak <= 1e-6:  # a flat image has no edges
        return Image.new("RGB", image.size, (0, 0, 0))
    magnitude /= peak
    # Non-maximum suppression along the gradient direction, quantised to 0/45/90/135 degrees.
    angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    direction = ((angle + 22.5) // 45).astype(np.int8) % 4
    padded = np.pad(magnitude, 1)
    h, w = magnitude.shape
    offsets = {0: (0, 1), 1: (1, 1), 2: (1, 0), 3: (1, -1)}  # (dy, dx) for each direction
    keep = np.zeros_like(magnitude, dtype=bool)
    for d, (dy, dx) in offsets.items():
        forward = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        backward = padded[1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]
        keep |= (direction == d) & (magnitude >= forward) & (magnitude >= backward)
    thin = np.where(keep, magnitude, 0.0)
    strong = thin >= high
    weak = thin >= low
    # Hysteresis: keep weak pixels connected (8-neighbourhood) to a strong one.
    labels, count = ndimage.label(weak, structure=np.ones((3, 3), dtype=bool))
    if count:
        connected = np.zeros(count + 1, dtype=bool)
        connected[np.unique(labels[strong])] = True
        connected[0] = False
        edges = connected[labels]
    else:
        edges = strong
    mask = (edges * 255).astype(np.uint8)
    return Image.fromarray(mask, mode="L").convert("RGB")


def palette_image(colours: list[str] | tuple[str, ...], width: int, height: int) -> Image.Image:
    """The palette as a colour layout: horizontal bands, the first colour widest (weights 2:1:1...),
    blurred a little at the seams so the model reads regions, not stripes."""
    hexes = [normalise_hex(c) for c in colours][:6]
    if not hexes:
        raise BadRequest("The palette control needs at least one colour.")
    weights = [2.0] + [1.0] * (len(hexes) - 1)
    total = sum(weights)
    image = Image.new("RGB", (width, height))
    top = 0
    for index, (colour, weight) in enumerate(zip(hexes, weights, strict=True)):
        bottom = height if index == len(hexes) - 1 else top + round(height * weight / total)
        rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        image.paste(rgb, (0, top, width, max(bottom, top + 1)))
        top = bottom
    return image.filter(ImageFilter.GaussianBlur(radius=max(1.0, height / 32)))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class ControlSpec:
    """What a request asks of ControlNet (part of :class:`~pipeline.synthesis.RenderRequest`)."""

    mode: str
    strength: float = DEFAULT_CONTROL_STRENGTH
    source: bytes | None = None  # the user's control image (canny/depth/pose); PNG/JPEG/WebP bytes
    palette: tuple[str, ...] = ()  # the director's palette (palette mode)

    def validated(self) -> ControlSpec:
        mode, strength = check_control(self.mode, self.strength)
        if mode is None:
            raise BadRequest("A control needs a mode.")
        if mode in IMAGE_MODES and self.source is None:
            raise BadRequest(f"The {mode} control needs an image: attach one as control_image (or an init image).")
        if self.source is not None:
            decode_init_image(self.source)  # bounded, checked: BadRequest
        if mode == "palette":
            if not self.palette:
                raise BadRequest("The palette control needs the scene's palette.")
            for colour in self.palette:
                normalise_hex(colour)
        return ControlSpec(mode, strength, self.source, tuple(self.palette))


# ------------------------------------------------------------------------------------------------
# Models (GPU executor thread)
# ------------------------------------------------------------------------------------------------
class ControlNets:
    """The ControlNets of ``CONTROLNET_MODELS`` and the depth estimator, loaded on first use."""

    def __init__(self, models: str | dict[tuple[str, str], str], depth_model: str = DEFAULT_DEPTH_MODEL) -> None:
        self.models = parse_controlnet_models(models) if isinstance(models, str) else dict(models)
        self.depth_model = depth_model
        self._nets: dict[tuple[str, str], Any] = {}
        self._depth: Any = None
        self.loads = 0

    def modes(self, family: str | None = None) -> list[str]:
        """The modes configured (for ``family``, when given)."""
        return sorted({m for f, m in self.models if family is None or f == family})

    def source_of(self, family: str, mode: str) -> str:
        source = self.models.get((family, mode))
        if source is None:
            offered = ", ".join(self.modes(family)) or "none"
            raise BadRequest(
                f"There is no {mode} ControlNet for {family.upper()} models here (CONTROLNET_MODELS; "
                f"configured for this model: {offered})."
            )
        return source

    def controlnet(self, family: str, mode: str, device: Any, dtype: Any) -> Any:
        key = (family, mode)
        net = self._nets.get(key)
        if net is None:
            from diffusers import ControlNetModel

            source = self.source_of(family, mode)
            log.info("loading %s ControlNet for %s from %s", mode, family, source)
            net = ControlNetModel.from_pretrained(source, dtype=dtype).to(device)  # type: ignore[no-untyped-call]
            self._nets[key] = net
            self.loads += 1
        return net

    def pipeline(self, base: Any, family: str, mode: str, *, img2img: bool) -> Any:
        """A ControlNet pipeline over ``base``'s modules (``from_pipe``: no copy of the weights)."""
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

        net = self.controlnet(family, mode, base.device, base.dtype)
        auto = AutoPipelineForImage2Image if img2img else AutoPipelineForText2Image
        pipe = auto.from_pipe(base, controlnet=net)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def depth_map(self, image: Image.Image, device: Any = "cpu") -> Image.Image:
        """A depth map of ``image`` (same size, greyscale as RGB) from the depth estimator."""
        if self._depth is None:
            from transformers import pipeline

            log.info("loading depth estimator %s", self.depth_model)
            self._depth = pipeline("depth-estimation", model=self.depth_model, device=device)
            self.loads += 1
        result = self._depth(image)
        depth = result["depth"] if isinstance(result, dict) else result[0]["depth"]
        return depth.convert("RGB").resize(image.size, Image.Resampling.BICUBIC)

    def control_image(self, spec: ControlSpec, width: int, height: int, device: Any = "cpu") -> Image.Image:
        """The control image for one request at the render size."""
        if spec.mode == "palette":
            return palette_image(spec.palette, width, height)
        if spec.source is None:
            raise BadRequest(f"The {spec.mode} control needs an image.")
        source = decode_init_image(spec.source).convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
        if spec.mode == "canny":
            return canny_edges(source)
        if spec.mode == "depth":
            return self.depth_map(source, device)
        return source  # pose: the image is the skeleton already
