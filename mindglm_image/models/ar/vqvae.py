"""VQ quantizer of the AR model: maps vision features to codebook ids (the image's prior tokens).

Only the encoder side is used by GLM-Image; ``post_quant_conv`` is kept so every checkpoint tensor
has a home.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import mint, nn, ops

from ...config.ar import GlmImageVQVAEConfig
from ..layers import Conv2d, Embedding

_NORM_EPS = 1e-12


def _l2_normalize(x):
    norm = mint.sqrt(mint.sum(x * x, -1, keepdim=True))
    return x / mint.clamp(norm, min=_NORM_EPS)


class GlmImageVQVAEVectorQuantizer(nn.Cell):
    """Nearest code under cosine geometry: features and codebook rows are L2-normalised first."""

    def __init__(self, config: GlmImageVQVAEConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        self.embedding = Embedding(config.num_embeddings, config.embed_dim, dtype=dtype)

    def construct(self, hidden_states):
        """``hidden_states``: (M, embed_dim) feature rows -> (M,) code ids."""
        z = _l2_normalize(hidden_states)
        codes = _l2_normalize(self.embedding.weight.astype(z.dtype))
        # |z|^2 + |e|^2 - 2 z.e, summed in this order as the reference does, so near-ties pick the same code
        distances = (mint.sum(z * z, 1, keepdim=True) + mint.sum(codes * codes, 1)
                     - 2 * mint.matmul(z, codes.T))
        return ops.argmin(distances, 1)


class GlmImageVQVAE(nn.Cell):
    """``encode``: vision features (B, latent_channels, h, w) -> code ids (B*h*w,), row-major per image."""

    def __init__(self, config: GlmImageVQVAEConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        self.compute_dtype = dtype
        self.quantize = GlmImageVQVAEVectorQuantizer(config, dtype)
        self.embed_dim = config.embed_dim
        self.quant_conv = Conv2d(config.latent_channels, config.embed_dim, 1, dtype=dtype)
        self.post_quant_conv = Conv2d(config.embed_dim, config.latent_channels, 1, dtype=dtype)

    def construct(self, hidden_states):
        latents = self.quant_conv(hidden_states.astype(self.compute_dtype))
        return self.quantize(latents.permute(0, 2, 3, 1).reshape(-1, self.embed_dim))

    def encode(self, hidden_states: ms.Tensor) -> ms.Tensor:
        """Code ids (int) of features laid out (B, latent_channels, h, w)."""
        return self(hidden_states)
