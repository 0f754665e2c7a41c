"""Configs: defaults equal the real checkpoint's, config.json round-trips unchanged, bad values are named."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mindglm_image.config.ar import GlmImageConfig
from mindglm_image.config.base import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_real_ar_defaults():
    c = GlmImageConfig()
    t, v, q = c.text_config, c.vision_config, c.vq_config
    assert (t.num_hidden_layers, t.hidden_size, t.num_attention_heads, t.num_key_value_heads) == (40, 4096, 32, 2)
    assert (t.intermediate_size, t.vocab_size, t.vision_vocab_size, t.rms_norm_eps) == (13696, 168064, 16512, 1e-5)
    assert (t.resolved_head_dim, t.rotary_dim, t.mrope_section) == (128, 64, [8, 12, 12])
    assert (v.depth, v.hidden_size, v.num_heads, v.intermediate_size, v.patch, v.layer_norm_eps) == (40, 1536, 16, 6144, 16, 1e-6)
    assert (q.num_embeddings, q.embed_dim, q.latent_channels) == (16384, 2048, 1536)
    assert (c.image_start_token_id, c.image_end_token_id, c.image_token_id) == (16384, 16385, 167855)


def test_shipped_real_config_round_trips_unchanged():
    path = ROOT / "configs" / "glm_image" / "vision_language_encoder" / "config.json"
    data = json.loads(path.read_text())
    cfg = GlmImageConfig.from_json_file(path)
    assert cfg.text_config.num_hidden_layers == 40
    assert cfg.to_dict() == data and list(cfg.to_dict()) == list(data)


def test_unknown_keys_kept_and_none_fields_not_invented():
    data = {"text_config": {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                "mrope_section": [2, 3, 3], "partial_rotary_factor": 1.0},
                            "some_new_key": [1, 2]},
            "architectures": ["GlmImageForConditionalGeneration"], "transformers_version": "5.23.0"}
    cfg = GlmImageConfig.from_dict(data)
    out = cfg.to_dict()
    assert out["architectures"] == ["GlmImageForConditionalGeneration"]
    assert out["text_config"]["some_new_key"] == [1, 2]
    assert "head_dim" not in out["text_config"]


@pytest.mark.parametrize("patch, message", [
    ({"text_config": {"num_hidden_layers": "40"}}, r"text_config|num_hidden_layers: expected int"),
    ({"text_config": {"num_attention_heads": 32, "num_key_value_heads": 5}}, "not a multiple of num_key_value_heads"),
    ({"text_config": {"rope_parameters": {"mrope_section": [8, 8, 8], "partial_rotary_factor": 0.5}}}, "mrope_section"),
    ({"vq_config": {"latent_channels": 7}}, "latent_channels=7 must equal"),
])
def test_bad_values_are_named(patch, message):
    with pytest.raises(ConfigError, match=message):
        GlmImageConfig.from_dict(patch)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        GlmImageConfig.from_json_file(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        GlmImageConfig.from_json_file(tmp_path / "config.json")
