"""Settings of the images server (``mindglm-image serve``): one config dataclass, flags override its fields."""
from __future__ import annotations

import dataclasses

from ..config.base import ConfigError, HFConfig
from ..processor.prompt import GRID_FACTOR


@dataclasses.dataclass
class ServerConfig(HFConfig):
    """Everything the server needs; a JSON file of these keys may be passed as ``--config``."""

    model: str = ""                      # model folder (official Hugging Face layout or converted)
    model_name: str = "glm-image"        # the id clients send as ``model`` and ``GET /v1/models`` lists
    host: str = "127.0.0.1"              # listen address (loopback unless asked otherwise)
    port: int = 8000                     # listen port
    api_key: str | None = None           # bearer token required on /v1/* when set (also $MINDGLM_API_KEY)
    device: str | None = None            # CPU or Ascend (default: $MINDGLM_DEVICE or CPU)
    output_dir: str = "outputs/serve"    # the only folder the server writes to (``response_format=url``)
    public_base_url: str | None = None   # base of returned urls behind a proxy (default: the request's host)
    queue_size: int = 16                 # requests waiting for the worker; one more gets 429
    max_batch_images: int = 4            # images generated together in one pipeline call
    request_timeout_s: float = 600.0     # a request not answered by then gets 504 (dropped if still queued)
    shutdown_grace_s: float = 30.0       # on SIGTERM queued requests still run this long, then get 503
    max_prompt_chars: int = 4000         # longer prompts get 400
    max_n: int = 4                       # images per request
    max_images: int = 4                  # reference images per edit request
    max_image_bytes: int = 20 * 1024**2  # per uploaded image; larger uploads get 413
    max_image_pixels: int = 4096 * 4096  # per uploaded image (checked from the header, before decoding)
    min_side: int = 256                  # generated sides: multiples of 32 within [min_side, max_side]
    max_side: int = 2048
    default_size: str = "1024x1024"      # used when a request gives no size
    default_steps: int = 50              # num_inference_steps when a request gives none
    max_steps: int = 100                 # num_inference_steps above this get 400
    default_guidance: float = 1.5        # guidance_scale when a request gives none
    warmup: bool = False                 # before ready: one 1-step call per batch size 1..max_batch_images at
                                         # default_size, so graph compilation is not paid by the first requests

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("the server needs a model folder: pass --model DIR")
        for name in ("queue_size", "max_batch_images", "max_n", "max_images", "max_prompt_chars", "max_steps",
                     "default_steps", "max_image_bytes", "max_image_pixels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
        if self.max_n > self.max_batch_images:
            raise ConfigError(f"max_n={self.max_n} exceeds max_batch_images={self.max_batch_images}: one request "
                              "must fit in one batch")
        for name in ("min_side", "max_side"):
            if getattr(self, name) % GRID_FACTOR or getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be a positive multiple of {GRID_FACTOR}")
        if self.min_side > self.max_side:
            raise ConfigError(f"min_side={self.min_side} is above max_side={self.max_side}")
        if self.request_timeout_s <= 0 or self.shutdown_grace_s < 0:
            raise ConfigError("request_timeout_s must be > 0 and shutdown_grace_s >= 0")
        from .errors import ApiError
        from .schemas import parse_size

        try:
            parse_size(self.default_size, self)
        except ApiError as err:
            raise ConfigError(f"default_size: {err.message}") from None
