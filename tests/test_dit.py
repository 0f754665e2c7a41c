"""DiT decoder: parity with diffusers' GlmImageTransformer2DModel (text-to-image, CFG, KV-cache modes),
config round trip, prior-token upsampling, and input errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mindglm_image.config.base import ConfigError
from mindglm_image.config.dit import GlmImageTransformerConfig
from mindglm_image.models.dit.kv_cache import GlmImageKVCache
from mindglm_image.models.dit.prior_tokens import upsample_prior_tokens
from mindglm_image.models.dit.rotary import rotary_tables
from mindglm_image.models.dit.transformer import transformer_inputs
from mindglm_image.weights.components import COMPONENTS
from parity_utils import assert_parity, load_converted

SPEC = COMPONENTS["transformer"]
CACHE_CASES = {"one_ref": [["ref_a"]], "two_refs": [["ref_a", "ref_b"]], "per_sample": [["ref_a"], ["ref_c"]]}


@pytest.fixture(scope="module")
def dit(reference_fixture, tmp_path_factory):
    ref = reference_fixture("dit")
    model = load_converted("transformer", ref / "transformer", tmp_path_factory.mktemp("dit"))
    return model, dict(np.load(ref / "dit.npz")), ref


def _inputs(model, a, text_key, drop):
    ids = a["prior_ids"]
    return transformer_inputs(model.config, a["latents"], a[text_key], ids, np.full(ids.shape, drop),
                              a["timestep"], a["target_size"], a["crop_coords"])


def test_config_defaults_and_round_trip(dit):
    _, _, ref = dit
    default = GlmImageTransformerConfig()
    assert (default.patch_size, default.in_channels, default.out_channels, default.num_layers) == (2, 16, 16, 30)
    assert (default.attention_head_dim, default.num_attention_heads, default.text_embed_dim) == (40, 64, 1472)
    assert (default.time_embed_dim, default.condition_dim, default.prior_vq_quantizer_codebook_size) == (512, 256, 16384)
    data = json.loads((ref / "transformer" / "config.json").read_text())
    cfg = GlmImageTransformerConfig.from_dict(data)
    assert cfg.extra["_class_name"] == "GlmImageTransformer2DModel"
    assert cfg.to_dict() == data


def test_config_rejects_bad_head_dim():
    with pytest.raises(ConfigError, match="multiple of 4"):
        GlmImageTransformerConfig.from_dict({"attention_head_dim": 42})


@pytest.mark.parity
def test_text_to_image_cond_and_uncond(dit, parity_report):
    model, a, _ = dit
    cond = model(*_inputs(model, a, "glyph", False)).asnumpy()
    assert_parity(parity_report, "transformer/t2i_cond", cond, a["t2i_cond"])
    uncond = model(*_inputs(model, a, "negative", True)).asnumpy()
    assert_parity(parity_report, "transformer/t2i_uncond", uncond, a["t2i_uncond"])


@pytest.mark.parity
@pytest.mark.parametrize("case", sorted(CACHE_CASES))
def test_kv_cache_write_read_skip(dit, parity_report, case):
    model, a, _ = dit
    cache = GlmImageKVCache(model)
    for s, names in enumerate(CACHE_CASES[case]):
        for name in names:
            lat = a[f"{name}_latents"]
            out = cache.write(lat, a[f"{name}_ids"], (lat.shape[-2] * 8, lat.shape[-1] * 8)).asnumpy()
            assert_parity(parity_report, "transformer/kv_write", out, a[f"{case}_write_{s}_{name}"])
        cache.next_sample()
    keys0 = np.concatenate([k.asnumpy()[0] for k in cache.keys], 0)
    assert_parity(parity_report, "transformer/kv_cached_keys", keys0, a[f"{case}_cached_keys_layer0"])

    batch = a["latents"].shape[0]
    read = model(*_inputs(model, a, "glyph", False), *cache.read_inputs(batch)).asnumpy()
    assert_parity(parity_report, f"transformer/kv_read_{case}", read, a[f"{case}_read"])
    # the cache must matter: reading it changes the conditional output well beyond the tolerance
    assert np.abs(a[f"{case}_read"] - a["t2i_cond"]).max() > 1e-2 * np.abs(a["t2i_cond"]).max()
    skip = model(*_inputs(model, a, "negative", True)).asnumpy()
    assert_parity(parity_report, "transformer/kv_skip", skip, a[f"{case}_skip"])


def test_kv_cache_read_errors(dit):
    model, a, _ = dit
    cache = GlmImageKVCache(model)
    with pytest.raises(ValueError, match="empty"):
        cache.read_inputs(1)
    for name in ("ref_a", "ref_b"):
        lat = a[f"{name}_latents"]
        cache.write(lat, a[f"{name}_ids"], (lat.shape[-2] * 8, lat.shape[-1] * 8))
        cache.next_sample()
    with pytest.raises(ValueError, match="multiple of the number of cached samples"):
        cache.read_inputs(3)
    with pytest.raises(ValueError, match="different reference token counts"):
        cache.read_inputs(2)
    with pytest.raises(ValueError, match="batch 1"):
        cache.write(a["latents"], a["prior_ids"], (64, 96))


def test_prior_token_upsampling_matches_pipeline(dit):
    _, a, _ = dit
    ours = upsample_prior_tokens(a["upsample_grid"], 3, 5)
    assert ours.dtype == np.int64 and ours.shape == a["upsample_out"].shape
    assert np.array_equal(ours, a["upsample_out"])
    with pytest.raises(ValueError, match="3x5 = 15"):
        upsample_prior_tokens(a["upsample_grid"][:-1], 3, 5)


def test_rotary_tables_leave_text_tokens_unrotated():
    """The glyph tokens' rows in front of the patch grid are the identity (cos 1, sin 0), the grid's rows are
    those of the grid alone: one rotary pass over [text | image] rotates the image tokens only."""
    cos, sin = rotary_tables(8, 3, 5, text_tokens=4)
    grid_cos, grid_sin = rotary_tables(8, 3, 5)
    assert cos.shape == sin.shape == (19, 8) and grid_cos.shape == (15, 8)
    assert np.array_equal(cos[:4], np.ones((4, 8))) and np.array_equal(sin[:4], np.zeros((4, 8)))
    assert np.array_equal(cos[4:], grid_cos) and np.array_equal(sin[4:], grid_sin)
    assert grid_cos[0, 0] == 1.0 and abs(grid_sin[14, 0] - np.sin(2.0)) < 1e-7  # patch (2, 4): row 2 at frequency 1
    with pytest.raises(ValueError, match="-1 text tokens|after -1"):
        rotary_tables(8, 3, 5, text_tokens=-1)


def test_input_errors_name_the_problem(dit):
    model, a, _ = dit
    cfg = model.config
    ids, step, size = a["prior_ids"], a["timestep"], a["target_size"]
    drop = np.zeros(ids.shape, bool)
    with pytest.raises(ValueError, match="not divisible by patch_size=2"):
        transformer_inputs(cfg, np.zeros((2, 4, 8, 11), np.float32), a["glyph"], ids, drop, step, size, size)
    with pytest.raises(ValueError, match=r"prior_token_id must have shape \(2, 24\)"):
        transformer_inputs(cfg, a["latents"], a["glyph"], ids[:, :-1], drop, step, size, size)
    with pytest.raises(ValueError, match="in_channels|latents"):
        transformer_inputs(cfg, np.zeros((2, 3, 8, 12), np.float32), a["glyph"], ids, drop, step, size, size)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        transformer_inputs(cfg, a["latents"], a["glyph"][..., :-1], ids, drop, step, size, size)


@pytest.mark.fullsize
def test_one_block_at_real_width(reference_fixture, parity_report, tmp_path):
    """The real checkpoint's width: 32 heads x 128 (hidden 4096), glyph dim 1472, 16384-code prior table;
    one block, bf16 weights as in the checkpoint, through the converter."""
    ref = reference_fixture("dit_fullsize")
    data = np.load(ref / "dit_fullsize.npz")
    model = load_converted("transformer", ref / "transformer", tmp_path, max_shard_bytes=256 * 1024**2)
    assert (model.config.num_attention_heads, model.config.attention_head_dim, model.config.num_layers) == (32, 128, 1)
    ids = data["ids"]
    inputs = transformer_inputs(model.config, data["latents"], data["glyph"], ids, np.zeros(ids.shape, bool),
                                np.array([730.0], np.float32), np.array([[192.0, 256.0]], np.float32),
                                np.zeros((1, 2), np.float32))
    assert_parity(parity_report, "transformer/real_width_block", model(*inputs).asnumpy(), data["output"])
