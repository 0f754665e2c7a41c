"""Training objective of the AR model's image tokenizer (``visual`` + ``vqmodel``): VQ with an auxiliary
pixel decoder.

GLM-Image hands the image's meaning to the DiT only through these prior tokens, so a code must say what
its patch looks like. The tokenizer is trained as a VQ autoencoder whose decoder is as weak as possible:
vision features -> ``quant_conv`` -> L2-normalised (the quantizer's cosine geometry) -> nearest code,
straight-through -> ``post_quant_conv`` (a model tensor, so it ships trained) -> a per-token linear head
to the patch downsampled to ``target_side`` x ``target_side`` pixels. The head's parameters carry the
training-only prefix, so export drops them; a linear decoder cannot repair a poor code, so the colour
and layout of each patch has to live in the code itself.

loss = mean((head(post_quant_conv(q_st)) - target)^2) + mean((sg(z) - q)^2) + beta * mean((z - sg(q))^2)
with z the normalised feature, q its normalised code, q_st = z + sg(q - z), sg = stop-gradient.
"""
from __future__ import annotations

import dataclasses

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn, ops
from PIL import Image

from ..config.ar import GlmImageConfig
from ..models.ar.glm_image_ar import GlmImageForConditionalGeneration
from ..models.ar.vision import vision_inputs
from ..models.ar.vqvae import _l2_normalize
from ..processor.image_processing import GlmImageImageProcessorConfig, preprocess_images
from .checkpoint import TRAINING_ONLY_PREFIX


class VQLoss(nn.Cell):
    """``construct(pixel_values (N, C*p*p), pos_index, pos_weight, attn_mask, targets (N, 3*s*s))`` -> loss."""

    def __init__(self, model: GlmImageForConditionalGeneration, target_side: int, commitment: float, seed: int = 0):
        super().__init__(auto_prefix=False)  # parameter names stay the model's own
        self.visual = model.model.visual
        self.vqmodel = model.model.vqmodel
        self.commitment = commitment
        hidden = model.config.vq_config.latent_channels
        out = 3 * target_side * target_side
        rng = np.random.default_rng(seed)
        self.head_weight = Parameter(Tensor((rng.standard_normal((hidden, out)) / np.sqrt(hidden)).astype(np.float32)),
                                     name=f"{TRAINING_ONLY_PREFIX}vq_head.weight")
        self.head_bias = Parameter(Tensor(np.zeros(out, np.float32)), name=f"{TRAINING_ONLY_PREFIX}vq_head.bias")

    def head_parameters(self) -> list[Parameter]:
        return [self.head_weight, self.head_bias]

    def construct(self, pixel_values, pos_index, pos_weight, attn_mask, targets):
        # 1. vision features -> quant_conv (a 1x1 conv: tokens laid out as a (1, C, N, 1) map)
        features = self.visual(pixel_values, pos_index, pos_weight, attn_mask).astype(ms.float32)
        n = features.shape[0]
        z = self.vqmodel.quant_conv(features.T.reshape(1, -1, n, 1)).reshape(-1, n).T
        # 2. nearest code under cosine geometry, as GlmImageVQVAEVectorQuantizer picks it
        z = _l2_normalize(z)
        codes = _l2_normalize(self.vqmodel.quantize.embedding.weight.astype(ms.float32))
        ids = ops.argmin(mint.sum(codes * codes, 1) - 2 * mint.matmul(ops.stop_gradient(z), codes.T), 1)
        q = ops.gather(codes, ids, 0)
        # 3. straight-through estimate -> post_quant_conv -> linear head to the downsampled patch
        q_st = z + ops.stop_gradient(q - z)
        decoded = self.vqmodel.post_quant_conv(q_st.T.reshape(1, -1, n, 1)).reshape(-1, n).T
        recon = mint.matmul(decoded, self.head_weight) + self.head_bias
        # 4. reconstruction + codebook + commitment
        rec = mint.mean((recon - targets) ** 2)
        codebook = mint.mean((ops.stop_gradient(z) - q) ** 2)
        commit = mint.mean((z - ops.stop_gradient(q)) ** 2)
        return rec + codebook + self.commitment * commit


def patch_targets(pixels: np.ndarray, patch: int, side: int) -> np.ndarray:
    """(h*w, 3*side*side) float32 in [-1, 1]: each row-major ``patch`` x ``patch`` patch of the uint8
    (H, W, 3) image, box-averaged to ``side`` x ``side``."""
    h, w = pixels.shape[0] // patch, pixels.shape[1] // patch
    k = patch // side
    x = pixels.astype(np.float32).reshape(h, side, k, w, side, k, 3).mean((2, 5))  # (h, side, w, side, 3)
    return (x.transpose(0, 2, 4, 1, 3).reshape(h * w, -1) / np.float32(127.5) - np.float32(1.0)).astype(np.float32)


@dataclasses.dataclass
class VQBatchMaker:
    """Image samples (``{"pixels": uint8 (H, W, 3), "size": [s, s]}``) -> ``VQLoss`` inputs: each image resized
    to ``size`` (the pixel size whose patches the generator tokenises), preprocessed as the pipeline does."""

    config: GlmImageConfig
    image_config: GlmImageImageProcessorConfig
    target_side: int

    def __post_init__(self):
        patch = self.image_config.patch_size
        if patch % self.target_side:
            raise ValueError(f"vq_loss.target_side={self.target_side} must divide the patch size {patch}")
        self.image_config = dataclasses.replace(self.image_config, do_resize=False)

    def __call__(self, samples: list[dict], rngs: list[np.random.Generator]) -> tuple:
        images, targets = [], []
        for s in samples:
            h, w = (int(v) for v in s["size"])
            image = Image.fromarray(s["pixels"]).resize((w, h), resample=Image.Resampling(self.image_config.resample))
            images.append(image)
            targets.append(patch_targets(np.asarray(image), self.image_config.patch_size, self.target_side))
        processed = preprocess_images(images, self.image_config)
        inputs = vision_inputs(processed.image_grid_thw, self.config.vision_config.position_grid)
        return (Tensor(processed.pixel_values), Tensor(inputs.pos_index), Tensor(inputs.pos_weight),
                Tensor(inputs.attn_mask), Tensor(np.concatenate(targets)))
