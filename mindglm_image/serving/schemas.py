"""Request parsing and validation: a JSON body or an edit form in, a checked ``ImageRequest`` out.

Every rule raises ``ApiError`` naming the parameter and the fix, before the request reaches the queue.
Form fields arrive as strings, JSON fields typed; both go through the same checks.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image, UnidentifiedImageError

from ..processor.prompt import GRID_FACTOR
from .errors import ApiError
from .settings import ServerConfig

RESPONSE_FORMATS = ("b64_json", "url")
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_MAX_SEED = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class ImageRequest:
    """One checked generation or edit request (``images`` empty for text-to-image)."""

    prompt: str
    n: int
    height: int
    width: int
    response_format: str
    seed: int                        # chosen by the server when the client gives none
    steps: int
    guidance_scale: float
    temperature: float | None        # None: the checkpoint's generation_config
    top_p: float | None
    images: tuple[Image.Image, ...] = ()

    @property
    def batch_key(self) -> tuple | None:
        """Requests with equal keys run in one pipeline call; edits (reference images) never share one."""
        if self.images:
            return None
        return (self.height, self.width, self.steps, self.guidance_scale, self.temperature, self.top_p, self.n)


def parse_size(size: Any, cfg: ServerConfig) -> tuple[int, int]:
    """``"WxH"`` (or ``"auto"``: the configured default) -> (height, width), sides % 32 within the limits."""
    if size is None or size == "auto":
        size = cfg.default_size
    match = _SIZE.match(size) if isinstance(size, str) else None
    if not match:
        raise ApiError(400, f"size={size!r} is not of the form 'WIDTHxHEIGHT', e.g. '1024x1024'", "invalid_size", "size")
    width, height = int(match.group(1)), int(match.group(2))
    for name, side in (("width", width), ("height", height)):
        if side % GRID_FACTOR:
            rounded = max(GRID_FACTOR, side // GRID_FACTOR * GRID_FACTOR)
            raise ApiError(400, f"size={size!r}: {name} {side} is not a multiple of {GRID_FACTOR}; use e.g. {rounded}",
                           "invalid_size", "size")
        if not cfg.min_side <= side <= cfg.max_side:
            raise ApiError(400, f"size={size!r}: {name} {side} is outside {cfg.min_side}-{cfg.max_side} px",
                           "invalid_size", "size")
    return height, width


def _number(values: Mapping[str, Any], name: str, kind: type, default, low: float, high: float,
            low_open: bool = False):
    """``values[name]`` as ``kind`` within [low, high] (``(low, high]`` with ``low_open``), else ``default``."""
    raw = values.get(name)
    if raw is None or raw == "":
        return default
    try:
        if isinstance(raw, bool) or (kind is int and isinstance(raw, float)):
            raise ValueError
        value = kind(raw)
    except (TypeError, ValueError):
        raise ApiError(400, f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}", "invalid_type",
                       name) from None
    if (kind is float and not math.isfinite(value)) or value > high or value < low or (low_open and value == low):
        bounds = f"{'(' if low_open else '['}{low}, {high}]"
        raise ApiError(400, f"{name}={raw!r} is outside {bounds}", "invalid_value", name)
    return value


def parse_request(values: Mapping[str, Any], cfg: ServerConfig, images: Sequence[Image.Image] = ()) -> ImageRequest:
    """Check the fields shared by generations and edits (OpenAI's plus our extensions)."""
    model = values.get("model")
    if model is not None and model != cfg.model_name:
        raise ApiError(404, f"the model {model!r} does not exist; this server serves {cfg.model_name!r}",
                       "model_not_found", "model")
    prompt = values.get("prompt")
    if prompt is None:
        raise ApiError(400, "missing required parameter 'prompt'", "missing_required_parameter", "prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ApiError(400, "prompt must be a non-empty string", "invalid_value", "prompt")
    if len(prompt) > cfg.max_prompt_chars:
        raise ApiError(400, f"prompt has {len(prompt)} characters; the limit is {cfg.max_prompt_chars}",
                       "string_above_max_length", "prompt")
    if values.get("stream") not in (None, False, "false", "False"):
        raise ApiError(400, "streaming is not supported; leave 'stream' unset", "unsupported_value", "stream")
    if values.get("output_format") not in (None, "png"):
        raise ApiError(400, f"output_format={values['output_format']!r}: only 'png' is produced", "unsupported_value",
                       "output_format")
    response_format = values.get("response_format") or "b64_json"
    if response_format not in RESPONSE_FORMATS:
        raise ApiError(400, f"response_format={response_format!r} must be one of {list(RESPONSE_FORMATS)}",
                       "invalid_value", "response_format")
    height, width = parse_size(values.get("size"), cfg)
    seed = _number(values, "seed", int, None, 0, _MAX_SEED)
    return ImageRequest(
        prompt=prompt, n=_number(values, "n", int, 1, 1, cfg.max_n), height=height, width=width,
        response_format=response_format, seed=secrets.randbelow(2**31) if seed is None else seed,
        steps=_number(values, "num_inference_steps", int, cfg.default_steps, 1, cfg.max_steps),
        guidance_scale=_number(values, "guidance_scale", float, cfg.default_guidance, 0.0, 100.0),
        temperature=_number(values, "temperature", float, None, 0.0, 100.0, low_open=True),
        top_p=_number(values, "top_p", float, None, 0.0, 1.0, low_open=True), images=tuple(images))


def parse_json_body(body: bytes) -> dict[str, Any]:
    try:
        values = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, f"the request body is not valid JSON ({err}); send a JSON object with "
                       "'Content-Type: application/json'", "invalid_json") from None
    if not isinstance(values, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(values).__name__}", "invalid_json")
    return values


def parse_image(data: bytes, cfg: ServerConfig, name: str) -> Image.Image:
    """An uploaded image: bytes and pixel limits (pixels from the header, before decoding), then decoded RGB."""
    if len(data) > cfg.max_image_bytes:
        raise ApiError(413, f"image {name!r} is larger than {cfg.max_image_bytes} bytes; send a smaller file",
                       "image_too_large", "image")
    try:
        image = Image.open(io.BytesIO(data))
        pixels = image.width * image.height
        if pixels > cfg.max_image_pixels:
            raise ApiError(400, f"image {name!r} is {image.width}x{image.height} = {pixels} pixels; the limit is "
                           f"{cfg.max_image_pixels}", "image_too_large", "image")
        image.load()
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError, ValueError) as err:
        raise ApiError(400, f"{name!r} is not a readable image ({type(err).__name__}); upload a PNG or JPEG file",
                       "invalid_image", "image") from None
    return image.convert("RGB")
