"""``GlmImagePipeline``: prompt (+ reference images) in, image out, the same steps as the reference.

1. AR prior: chat-templated prompt -> static-KV decoding of the preview and full token grids (I2I: the
   reference images' VQ ids sit in the prompt and only the full grid is generated).
2. Glyph-byT5 embeddings of the quoted text (and of "" for the unconditional branch).
3. I2I: every reference image is VAE-encoded (at the size its AR grid implies, see ``vae_image``) and
   run once through the DiT to fill its KV cache.
4. CFG flow-match denoising from seeded noise, on the device: one DiT call per step over the conditional
   and unconditional rows (``denoise``); 5. VAE decode to pixels.

Arguments are checked before any model work (``check_request``); non-finite numbers at any stage
raise ``NonFiniteError`` naming the stage, so no black image is ever returned.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import time
from collections.abc import Sequence
from pathlib import Path

import mindspore as ms
import numpy as np
from PIL import Image

from ..finite import check_finite
from ..generation.prior import PriorGenerationConfig, PriorGenerator, PriorTokens
from ..generation.sampling import SamplingConfig, TokenSampler
from ..graph_inputs import graph_input
from ..models.ar.image_tokens import encode_reference_images
from ..models.dit.kv_cache import GlmImageKVCache
from ..models.dit.prior_tokens import upsample_prior_tokens
from ..models.glyph.glyph_encoder import GlyphEncoder, PromptEmbeddings
from ..models.vae.processing import denormalize_latents, normalize_latents, postprocess_images, to_uint8
from ..ops import inference_cells
from ..processor.byt5_tokenizer import ByT5Tokenizer
from ..processor.image_processing import GlmImageImageProcessorConfig, load_image, preprocess_images
from ..processor.prompt import GRID_FACTOR, PromptProcessor
from ..scheduler.flow_match import FlowMatchEulerScheduler
from ..training.lora import apply_adapters
from ..weights.components import COMPONENTS, load_component
from .denoise import DenoiseConfig, denoise
from .vae_image import size_for_grid, vae_input

REQUIRED_PARTS = ("processor", "tokenizer", "text_encoder", "vision_language_encoder", "transformer", "vae", "scheduler")


@dataclasses.dataclass(frozen=True)
class SizeLimits:
    """Sides must be multiples of 32 (one AR token) within these bounds (the real model: 512-2048)."""

    min_side: int = 32
    max_side: int = 4096

    def check(self, height: int, width: int) -> None:
        for name, side in (("height", height), ("width", width)):
            if not isinstance(side, (int, np.integer)) or side % GRID_FACTOR:
                raise ValueError(f"{name}={side} is not a multiple of {GRID_FACTOR}; round it to e.g. "
                                 f"{max(GRID_FACTOR, int(side) // GRID_FACTOR * GRID_FACTOR)}")
            if not self.min_side <= side <= self.max_side:
                raise ValueError(f"{name}={side} is outside the supported range {self.min_side}-{self.max_side} px")


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}")
    return int(value)


def check_request(prompt, height, width, num_inference_steps, guidance_scale, seed, num_images_per_prompt,
                  limits: SizeLimits = SizeLimits(), names: dict[str, str] | None = None) -> list[str]:
    """Reject nonsense arguments before any model work; returns the prompts as a list.

    Types are checked (``height="64"`` is a TypeError naming ``height``), guidance must be a finite
    number >= 0 (<= 1 disables CFG, as in the reference), seeds non-negative integers (one, or one per
    prompt), prompts text that encodes as UTF-8. ``names`` renames arguments in the messages (the CLI's flags).
    """
    label = (names or {}).get
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"{label('prompt', 'prompt')} must be a string or a list of strings, "
                        f"got {type(prompt).__name__}")
    if not prompts:
        raise ValueError("no prompt given")
    for i, text in enumerate(prompts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"{label('prompt', 'prompt')} {i} holds an undecodable byte at character {err.start} "
                             f"({text[err.start:err.end]!r}); pass UTF-8 text") from None
    for name, side in (("height", height), ("width", width)):
        _check_int(label(name, name), side, 1)
    limits.check(int(height), int(width))
    _check_int(label("num_inference_steps", "num_inference_steps"), num_inference_steps, 1)
    _check_int(label("num_images_per_prompt", "num_images_per_prompt"), num_images_per_prompt, 1)
    guidance = label("guidance_scale", "guidance_scale")
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real):
        raise TypeError(f"{guidance} must be a number, got {type(guidance_scale).__name__} {guidance_scale!r}")
    if not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"{guidance}={guidance_scale} must be a finite number >= 0 (1.5 is the default; "
                         "<= 1 turns classifier-free guidance off)")
    seeds = [seed] if isinstance(seed, numbers.Integral) else seed
    if not isinstance(seeds, Sequence) or isinstance(seeds, str):
        raise TypeError(f"{label('seed', 'seed')} must be an integer or one integer per prompt, "
                        f"got {type(seed).__name__}")
    for s in seeds:
        _check_int(label("seed", "seed"), s, 0)
    if not isinstance(seed, numbers.Integral) and len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts: give one seed, or one per prompt")
    return list(prompts)


@dataclasses.dataclass
class Timings:
    """Wall seconds of each stage of one call (first calls include graph compilation)."""

    ar_seconds: float = 0.0
    ar_tokens: int = 0            # generated tokens per sample
    denoise_seconds: float = 0.0
    steps: int = 0
    denoise_host_syncs: int = 0   # device-to-host readbacks of the denoising loop, whole batch
    images: int = 0               # images of the call
    decode_seconds: float = 0.0

    @property
    def denoise_syncs_per_image(self) -> float:
        return self.denoise_host_syncs / max(self.images, 1)

    def summary(self) -> str:
        ar = f"AR {self.ar_tokens} tokens in {self.ar_seconds:.2f} s ({self.ar_tokens / max(self.ar_seconds, 1e-9):.1f} tok/s)"
        return (f"{ar}; denoise {self.steps} steps in {self.denoise_seconds:.2f} s "
                f"({self.denoise_seconds / max(self.steps, 1):.3f} s/step, {self.denoise_host_syncs} host syncs); "
                f"VAE decode {self.decode_seconds:.2f} s")


@dataclasses.dataclass
class PipelineOutput:
    images: list[Image.Image]
    pixels: np.ndarray            # (B, H, W, 3) float32 in [0, 1], before uint8 rounding
    prior: PriorTokens | None     # None when prior_token_ids were given
    timings: Timings


class GlmImagePipeline:
    """Loads a model folder (official Hugging Face layout or our converted one) and generates images."""

    def __init__(self, folder: Path, dtype: ms.Type = ms.float32, limits: SizeLimits = SizeLimits(),
                 prior_cfg: PriorGenerationConfig = PriorGenerationConfig(),
                 lora: Sequence[tuple[str | Path, float]] = ()):
        """``lora``: PEFT-format LoRA adapters ``(folder, scale)`` for the DiT or the AR model (each goes to
        the model its module names belong to), merged into the weights once at load."""
        self.folder = folder
        missing = [p for p in ("model_index.json", *REQUIRED_PARTS) if not (folder / p).exists()]
        if missing:
            raise FileNotFoundError(f"{folder} is not a complete GLM-Image model folder: missing {missing}; pass the "
                                    "folder that holds model_index.json and its subfolders (mindglm-image make-tiny "
                                    "writes a small one)")
        self.limits = limits
        with inference_cells():  # never trained: the CPU's fused twins by default too (ops/registry.py)
            self.vision_language_encoder = load_component(COMPONENTS["vision_language_encoder"],
                                                          folder / "vision_language_encoder", dtype)
            self.text_encoder = load_component(COMPONENTS["text_encoder"], folder / "text_encoder", dtype)
            self.transformer = load_component(COMPONENTS["transformer"], folder / "transformer", dtype)
            self.vae = load_component(COMPONENTS["vae"], folder / "vae", dtype)
        self.scheduler = FlowMatchEulerScheduler.from_folder(folder / "scheduler")
        self.image_config = GlmImageImageProcessorConfig.from_pretrained(folder / "processor")
        self.prompts = PromptProcessor.from_folder(folder / "processor", merge_size=self.image_config.merge_size)
        self.glyph = GlyphEncoder(self.text_encoder, ByT5Tokenizer.from_pretrained(folder / "tokenizer"))
        self.generator = PriorGenerator(self.vision_language_encoder, prior_cfg)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.adapters = apply_adapters({"transformer": self.transformer,
                                        "vision_language_encoder": self.vision_language_encoder}, lora)

    @classmethod
    def from_pretrained(cls, folder: str | Path, **kwargs) -> "GlmImagePipeline":
        return cls(Path(folder), **kwargs)

    def sampling_config(self, **overrides) -> SamplingConfig:
        return SamplingConfig.from_generation_config(
            self.folder / "vision_language_encoder" / "generation_config.json", **overrides)

    def _reference_images(self, image, batch: int) -> list[list[Image.Image]] | None:
        """Normalise ``image`` to one list of RGB images per prompt (the reference's accepted forms)."""
        if image is None:
            return None
        if not isinstance(image, (list, tuple)):
            image = [image]
        if not image:
            return None
        if isinstance(image[0], (list, tuple)):
            rows = [list(r) for r in image]
        elif batch == 1:
            rows = [list(image)]
        else:
            raise ValueError("with several prompts, give one list of reference images per prompt")
        if len(rows) != batch:
            raise ValueError(f"{len(rows)} reference-image lists for {batch} prompts: give one list per prompt")
        if len({len(r) for r in rows}) != 1:
            raise ValueError("every prompt of a batch needs the same number of reference images")
        return [[load_image(i).convert("RGB") for i in row] for row in rows]

    def encode_references(self, images: list[list[Image.Image]]) -> tuple[np.ndarray, list, list]:
        """VQ ids of all reference images (prompt order), their AR grids per prompt, and per image the
        ids upsampled to the DiT's patch grid (for the KV-cache writes)."""
        processed = preprocess_images([img for row in images for img in row], self.image_config)
        ids = encode_reference_images(self.vision_language_encoder.model.visual, self.vision_language_encoder.model.vqmodel,
                                      processed.pixel_values, processed.image_grid_thw)
        grids = processed.image_grid_thw.reshape(len(images), -1, 3).tolist()
        upsampled, start = [], 0
        for row in grids:
            sample = []
            for _, h, w in row:
                sample.append(upsample_prior_tokens(ids[start:start + h * w], h, w).reshape(-1))
                start += h * w
            upsampled.append(sample)
        return ids, grids, upsampled

    def generate_prior(self, prompts: list[str], height: int, width: int, sampling: SamplingConfig,
                       reference_ids: np.ndarray | None = None, grids: list | None = None,
                       progress: bool = True, row_seeds: Sequence[int] | None = None) -> PriorTokens:
        """AR step: the prior tokens of every prompt's target image (``row_seeds``: one seed per prompt)."""
        batch = self.prompts(prompts, height, width, grids)
        pad_id = self.prompts.token_id(self.prompts.special.pad_token) if self.prompts.special.pad_token else 0
        return self.generator(batch, TokenSampler(sampling, row_seeds), reference_ids, pad_id, progress)

    def __call__(self, prompt: str | list[str], image=None, height: int = 1024, width: int = 1024,
                 num_inference_steps: int = 50, guidance_scale: float = 1.5, seed: int | Sequence[int] = 0,
                 sampling: SamplingConfig | None = None, prior_token_ids: np.ndarray | None = None,
                 latents: np.ndarray | None = None, num_images_per_prompt: int = 1,
                 progress: bool = True) -> PipelineOutput:
        """Generate ``num_images_per_prompt`` images per prompt (one AR prior each prompt, as the reference;
        the images differ by their noise). ``image`` holds reference images (I2I); ``prior_token_ids``
        (one row per prompt) and ``latents`` (one per image) replace the AR step and the seeded noise. ``seed``
        may be one seed per prompt: its images then depend on that seed only, whatever the batch."""
        n = num_images_per_prompt
        # 1. check every argument before any model work
        prompts = self.check_inputs(prompt, height, width, num_inference_steps, guidance_scale, seed,
                                    prior_token_ids, latents, n)
        row_seeds = None if isinstance(seed, numbers.Integral) else [int(s) for s in seed]
        timings = Timings(steps=num_inference_steps, images=len(prompts) * n)
        # 2. reference images (I2I): their VQ ids for the prompt, their AR grids, their ids at the DiT's grid
        images = self._reference_images(image, len(prompts))
        reference_ids, grids, upsampled = self.encode_references(images) if images is not None else (None, None, None)
        # 3. AR prior tokens, unless given
        prior = None
        if prior_token_ids is None:
            start = time.perf_counter()
            prior = self.generate_prior(prompts, height, width,
                                        sampling or self.sampling_config(seed=row_seeds[0] if row_seeds else seed),
                                        reference_ids, grids, progress, row_seeds)
            timings.ar_seconds, timings.ar_tokens = time.perf_counter() - start, prior.generated.shape[1]
            prior_token_ids = prior.prior_ids
        # 4. glyph embeddings of the quoted text (and of "" for the unconditional pass), per image
        glyph = self.encode_glyphs(prompts, guidance_scale > 1, n)
        # 5. I2I: the reference images' keys/values in the DiT's cache
        cache = self.write_kv_cache(images, grids, upsampled) if images is not None else None
        # 6. initial noise, one per image
        latents = self.prepare_latents(len(prompts), n, height, width, seed, row_seeds, latents)
        # 7. CFG denoising on the device
        start = time.perf_counter()
        denoised = denoise(self.transformer, self.scheduler, latents,
                           np.repeat(np.asarray(prior_token_ids, dtype=np.int64), n, axis=0),
                           glyph.positive, glyph.negative, height, width,
                           DenoiseConfig(num_inference_steps, guidance_scale, self.vae_scale_factor, progress=progress),
                           cache, glyph.mask)
        timings.denoise_seconds, timings.denoise_host_syncs = time.perf_counter() - start, denoised.host_syncs
        # 8. VAE decode to pixels
        start = time.perf_counter()
        pixels = self.decode_latents(denoised.latents)
        timings.decode_seconds = time.perf_counter() - start
        return PipelineOutput([Image.fromarray(p) for p in to_uint8(pixels)], pixels, prior, timings)

    def check_inputs(self, prompt, height, width, num_inference_steps, guidance_scale, seed, prior_token_ids,
                     latents, num_images_per_prompt) -> list[str]:
        """``check_request`` plus the shapes of given prior tokens and latents; returns the prompts as a list."""
        prompts = check_request(prompt, height, width, num_inference_steps, guidance_scale, seed,
                                num_images_per_prompt, self.limits)
        shape = self.latent_shape(len(prompts) * num_images_per_prompt, height, width)
        if latents is not None and tuple(np.shape(latents)) != shape:
            raise ValueError(f"latents must have shape {shape} (one per image), got {tuple(np.shape(latents))}")
        if prior_token_ids is not None and (np.ndim(prior_token_ids) != 2 or len(prior_token_ids) != len(prompts)):
            raise ValueError(f"prior_token_ids must have one row per prompt ({len(prompts)}), "
                             f"got shape {np.shape(prior_token_ids)}")
        return prompts

    def latent_shape(self, images: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(images, C, H/8, W/8): the DiT's latent shape for ``images`` images of ``height x width`` pixels."""
        return (images, self.transformer.config.in_channels, height // self.vae_scale_factor,
                width // self.vae_scale_factor)

    def encode_glyphs(self, prompts: list[str], guided: bool, num_images_per_prompt: int) -> PromptEmbeddings:
        """Glyph-byT5 embeddings per image (``guided``: also those of "" for the unconditional pass), checked finite."""
        glyph = self.glyph.encode_prompt(prompts, guided, num_images_per_prompt)
        for embeddings in (glyph.positive, glyph.negative):
            if embeddings is not None:
                check_finite(embeddings, "Glyph-byT5 text encoder")
        return glyph

    def prepare_latents(self, prompts: int, num_images_per_prompt: int, height: int, width: int,
                        seed: int | Sequence[int], row_seeds: Sequence[int] | None,
                        latents: np.ndarray | None = None) -> np.ndarray:
        """Initial noise (images, C, H/8, W/8) float32: from ``seed`` for the whole batch, or each prompt's
        images from its own row seed (so they do not depend on the batch); given ``latents`` are checked finite."""
        shape = self.latent_shape(prompts * num_images_per_prompt, height, width)
        if latents is None:
            latents = (np.random.default_rng(seed).standard_normal(shape, dtype=np.float32) if row_seeds is None else
                       np.concatenate([np.random.default_rng(s).standard_normal((num_images_per_prompt, *shape[1:]),
                                                                              dtype=np.float32) for s in row_seeds]))
        return check_finite(np.asarray(latents), "initial latents")

    def decode_latents(self, latents: np.ndarray) -> np.ndarray:
        """Final latents -> (B, H, W, 3) float32 pixels in [0, 1], checked finite before the clipping that
        would hide an inf."""
        latents = denormalize_latents(graph_input("latents", latents, ms.float32), self.vae.config)
        decoded = check_finite(self.vae.decode(latents), "VAE decode")
        return postprocess_images(decoded)

    def write_kv_cache(self, images: list[list[Image.Image]], grids: list, upsampled: list) -> GlmImageKVCache:
        """Every reference image VAE-encoded at the size its AR grid implies and run through the DiT's write pass."""
        cache = GlmImageKVCache(self.transformer)
        multiple = self.vae_scale_factor * self.transformer.config.patch_size
        for row, grid_row, ids_row in zip(images, grids, upsampled):
            for img, (_, grid_h, grid_w), ids in zip(row, grid_row, ids_row):
                size = size_for_grid(grid_h, grid_w, multiple)
                pixels = vae_input(img, size)
                latent = check_finite(normalize_latents(self.vae.encode_mode(pixels), self.vae.config),
                                      "VAE encode of a reference image")
                cache.write(latent, ids[None], size)
            cache.next_sample()
        return cache

