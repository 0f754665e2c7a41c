"""Reference images -> packed patches for the AR model's vision encoder (numpy + PIL).

Reproduces the checkpoint's image processor (``processor/preprocessor_config.json``): an aspect-keeping
resize to a multiple of ``patch_size * merge_size`` at about half the input resolution, clamped between
``min_pixels`` and ``max_pixels``; PIL resampling on the uint8 image; rescale and mean/std normalisation;
then patches flattened channel-major, ordered row-major over merge blocks.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import NamedTuple, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..config.base import ConfigError, HFConfig

ImageLike = Union[Image.Image, np.ndarray, str, os.PathLike]

_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
_MAX_ASPECT = 4


def _default_size() -> dict:
    return {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280}


@dataclasses.dataclass
class GlmImageImageProcessorConfig(HFConfig):
    """Fields of ``preprocessor_config.json``; defaults equal the reference image processor's."""

    do_resize: bool = True
    size: dict = dataclasses.field(default_factory=_default_size)
    min_pixels: int | None = None
    max_pixels: int | None = None
    resample: int = 3  # PIL bicubic
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: list | float = dataclasses.field(default_factory=lambda: list(_CLIP_MEAN))
    image_std: list | float = dataclasses.field(default_factory=lambda: list(_CLIP_STD))
    do_convert_rgb: bool = True
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2

    def validate(self) -> None:
        if self.do_resize and (not self.shortest_edge or not self.longest_edge):
            raise ConfigError(f"preprocessor config: size {self.size} needs 'shortest_edge' and 'longest_edge' "
                              "(or set min_pixels and max_pixels)")
        for name in ("patch_size", "temporal_patch_size", "merge_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"preprocessor config: {name}={getattr(self, name)} must be >= 1")
        if self.resample not in {int(r) for r in Image.Resampling}:
            raise ConfigError(f"preprocessor config: resample={self.resample} is not a PIL resampling filter (0-5)")

    @property
    def shortest_edge(self) -> int | None:
        """Minimum pixel count; ``min_pixels`` overrides ``size`` as in the reference."""
        return self.min_pixels if self.min_pixels is not None else self.size.get("shortest_edge")

    @property
    def longest_edge(self) -> int | None:
        """Maximum pixel count; ``max_pixels`` overrides ``size`` as in the reference."""
        return self.max_pixels if self.max_pixels is not None else self.size.get("longest_edge")

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "GlmImageImageProcessorConfig":
        """Read the checkpoint's ``processor/`` folder: ``preprocessor_config.json``, or the
        ``image_processor`` entry of ``processor_config.json`` (the layout transformers 5 writes)."""
        folder = Path(folder)
        if (folder / "preprocessor_config.json").is_file() or not (folder / "processor_config.json").is_file():
            return cls.from_json_file(folder / "preprocessor_config.json")
        data = json.loads((folder / "processor_config.json").read_text(encoding="utf-8"))
        if "image_processor" not in data:
            raise ConfigError(f"{folder / 'processor_config.json'} has no image_processor entry")
        return cls.from_dict(data["image_processor"])


class ProcessedImages(NamedTuple):
    """``pixel_values`` (total_patches, C*temporal_patch_size*p*p) float32; ``image_grid_thw`` (num_images, 3) int64."""

    pixel_values: np.ndarray
    image_grid_thw: np.ndarray


def target_size(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Resized (height, width): multiples of ``factor``, about half the input size, within the pixel bounds.

    The scale is chosen on the full size (grow the short side to sqrt(min_pixels), shrink the long side
    to sqrt(max_pixels)), then applied to the halved size, rounded to ``factor`` (Python rounding, half
    to even) and, if the long side still exceeds sqrt(max_pixels), floored to fit.
    """
    if height < factor or width < factor:
        raise ValueError(f"image of {height}x{width} pixels is smaller than {factor} on a side; use a larger image")
    if max(height, width) / min(height, width) > _MAX_ASPECT:
        raise ValueError(f"image of {height}x{width} pixels has an aspect ratio above {_MAX_ASPECT}; crop it first")
    short_limit = int(round(math.sqrt(min_pixels)))
    long_limit = int(round(math.sqrt(max_pixels)))
    scale = 1.0
    if min(height, width) < short_limit:
        scale = short_limit / min(height, width)
    if max(height, width) * scale > long_limit:
        scale = long_limit / max(height, width)
    new_h = max(factor, int(round((height // 2) * scale / factor)) * factor)
    new_w = max(factor, int(round((width // 2) * scale / factor)) * factor)
    if max(new_h, new_w) > long_limit:
        shrink = max(new_h, new_w) / long_limit
        new_h = max(factor, int(math.floor(new_h / shrink / factor)) * factor)
        new_w = max(factor, int(math.floor(new_w / shrink / factor)) * factor)
    return new_h, new_w


def load_image(image: ImageLike) -> Image.Image:
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as opened:
                opened.load()
                return opened.copy()
        except (OSError, UnidentifiedImageError) as err:
            raise ValueError(f"cannot read image {os.fspath(image)!r} ({err}); pass a readable PNG/JPEG file") from err
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))):
            raise ValueError(f"image array of shape {image.shape} and dtype {image.dtype} is not supported; "
                             "pass uint8 (H, W), (H, W, 3) or (H, W, 4)")
        return Image.fromarray(image)
    if isinstance(image, Image.Image):
        return image
    raise TypeError(f"unsupported image type {type(image).__name__}; pass a PIL image, a uint8 array or a path")


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy; transparency is composited onto white, as the reference does."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _patchify(image: np.ndarray, patch: int, merge: int, temporal: int) -> tuple[np.ndarray, int, int]:
    """(C, H, W) -> (grid_h*grid_w, C*temporal*patch*patch); rows follow merge blocks, each block row-major."""
    channels, height, width = image.shape
    grid_h, grid_w = height // patch, width // patch
    blocks = image.reshape(channels, grid_h // merge, merge, patch, grid_w // merge, merge, patch)
    blocks = blocks.transpose(1, 4, 2, 5, 0, 3, 6)  # (gh/m, gw/m, m, m, C, p, p)
    blocks = np.broadcast_to(blocks[:, :, :, :, :, None], blocks.shape[:5] + (temporal, patch, patch))
    return blocks.reshape(grid_h * grid_w, channels * temporal * patch * patch), grid_h, grid_w


def _channel_values(value: list | float, channels: int, name: str) -> np.ndarray:
    values = [value] * channels if isinstance(value, (int, float)) else list(value)
    if len(values) != channels:
        raise ValueError(f"preprocessor config: {name} has {len(values)} values for {channels} channels")
    return np.asarray(values, dtype=np.float32)[:, None, None]


def preprocess_images(images: ImageLike | list[ImageLike], config: GlmImageImageProcessorConfig) -> ProcessedImages:
    """Reference images -> packed patches and grids, in the order given."""
    images = list(images) if isinstance(images, (list, tuple)) else [images]
    if not images:
        raise ValueError("preprocess_images: no images given")
    patches, grids = [], []
    factor = config.patch_size * config.merge_size
    for item in images:
        image = load_image(item)
        if config.do_convert_rgb:
            image = _to_rgb(image)
        elif image.mode != "RGB":
            raise ValueError(f"image mode {image.mode!r} with do_convert_rgb off: pass RGB images")
        if config.do_resize:
            height, width = target_size(image.height, image.width, factor, config.shortest_edge, config.longest_edge)
            image = image.resize((width, height), resample=Image.Resampling(config.resample))
        pixels = np.asarray(image).transpose(2, 0, 1)  # (C, H, W) uint8
        if pixels.shape[1] % factor or pixels.shape[2] % factor:
            raise ValueError(f"image of {pixels.shape[1]}x{pixels.shape[2]} pixels is not a multiple of {factor}; "
                             "enable do_resize or resize it first")
        if config.do_rescale:
            # the reference rescales in float64 and stores float32
            pixels = (pixels.astype(np.float64) * config.rescale_factor).astype(np.float32)
        if config.do_normalize:
            channels = pixels.shape[0]
            pixels = pixels.astype(np.float32, copy=False)
            pixels = (pixels - _channel_values(config.image_mean, channels, "image_mean")) \
                / _channel_values(config.image_std, channels, "image_std")
        flat, grid_h, grid_w = _patchify(pixels.astype(np.float32, copy=False), config.patch_size,
                                         config.merge_size, config.temporal_patch_size)
        patches.append(flat)
        grids.append([1, grid_h, grid_w])
    return ProcessedImages(np.concatenate(patches, axis=0), np.asarray(grids, dtype=np.int64))
