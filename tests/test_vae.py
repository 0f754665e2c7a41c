"""VAE parity: diffusers AutoencoderKL (tiny, random) vs ours through the converter and the component loader."""
from __future__ import annotations

import json

import mindspore as ms
import numpy as np
import pytest

from mindglm_image.config.base import ConfigError
from mindglm_image.config.vae import AutoencoderKLConfig
from mindglm_image.models.vae.processing import (
    denormalize_latents,
    normalize_images,
    normalize_latents,
    postprocess_images,
    to_uint8,
)
from parity_utils import assert_parity, load_converted

TOL = 1e-5


@pytest.fixture(scope="module")
def vae_case(reference_fixture, tmp_path_factory):
    ref = reference_fixture("vae")
    vae = load_converted("vae", ref / "vae", tmp_path_factory.mktemp("vae_ms"))
    return vae, dict(np.load(ref / "vae.npz")), ref


@pytest.mark.parity
def test_encode_matches_reference(vae_case, parity_report):
    vae, ref, _ = vae_case
    mean, logvar = vae.encode(ref["images"])
    assert_parity(parity_report, "vae/encode_mean", mean.asnumpy(), ref["mean"], TOL)
    assert_parity(parity_report, "vae/encode_logvar", logvar.asnumpy(), ref["logvar"], TOL)


@pytest.mark.parity
def test_decode_matches_reference(vae_case, parity_report):
    vae, ref, _ = vae_case
    decoded = vae.decode(ms.Tensor(ref["latents"]))
    assert decoded.shape == (2, 3, 8, 12)
    assert_parity(parity_report, "vae/decode", decoded.asnumpy(), ref["decoded"], TOL)


@pytest.mark.parity
def test_pipeline_latent_normalisation_and_postprocess(vae_case, parity_report):
    vae, ref, _ = vae_case
    cond = normalize_latents(vae.encode_mode(ref["images"]), vae.config)
    assert_parity(parity_report, "vae/pipeline_cond_latents", cond.asnumpy(), ref["cond_latents"], TOL)
    vae_latents = denormalize_latents(ms.Tensor(ref["dit_latents"]), vae.config)
    np.testing.assert_array_equal(vae_latents.asnumpy(), ref["vae_latents"])
    decoded = vae.decode(vae_latents)
    assert_parity(parity_report, "vae/pipeline_decode", decoded.asnumpy(), ref["pipe_decoded"], TOL)
    image = postprocess_images(decoded)
    assert image.shape == (2, 8, 12, 3) and image.dtype == np.float32
    assert_parity(parity_report, "vae/pipeline_image", image, ref["pipe_image"], TOL)
    # on the reference's own decoded pixels the post-processing is exact
    np.testing.assert_array_equal(postprocess_images(ref["pipe_decoded"]), ref["pipe_image"])
    np.testing.assert_array_equal(to_uint8(ref["pipe_image"]), ref["pipe_uint8"])
    np.testing.assert_array_equal(normalize_images(ref["pixels"]), ref["pixels_normalized"])


def test_config_round_trips_and_rejects_bad_values(vae_case, tmp_path):
    _, _, ref = vae_case
    original = json.loads((ref / "vae" / "config.json").read_text())
    config = AutoencoderKLConfig.from_dict(original)
    assert config.to_dict() == original and config.downscale_factor == 2
    with pytest.raises(ConfigError, match="latents_mean has 3 values"):
        AutoencoderKLConfig.from_dict({**original, "latents_mean": [0.0, 0.0, 0.0]})
    with pytest.raises(ConfigError, match="not divisible by norm_num_groups"):
        AutoencoderKLConfig.from_dict({**original, "norm_num_groups": 24})
    with pytest.raises(ConfigError, match="same non-zero length"):
        AutoencoderKLConfig.from_dict({**original, "up_block_types": ["UpDecoderBlock2D"]})


def test_bad_input_shapes_are_rejected(vae_case):
    vae, _, _ = vae_case
    with pytest.raises(ValueError, match=r"images must have shape \(batch, 3"):
        vae.encode(np.zeros((1, 4, 32, 32), np.float32))
    with pytest.raises(ValueError, match="multiples of 2"):
        vae.encode(np.zeros((1, 3, 31, 32), np.float32))
    with pytest.raises(ValueError, match=r"latents must have shape \(batch, 16"):
        vae.decode(np.zeros((1, 4, 4, 4), np.float32))
    config_without_stats = AutoencoderKLConfig(latent_channels=16)
    with pytest.raises(ConfigError, match="no latents_mean/latents_std"):
        normalize_latents(ms.Tensor(np.zeros((1, 16, 2, 2), np.float32)), config_without_stats)
