"""LoRA on our cells: injection by targets, zero-init identity, merge = unmerged forward, PEFT-format
round trip, merge-at-load, merged model folder in the official layout."""
from __future__ import annotations

import json

import mindspore as ms
import numpy as np
import pytest

from mindglm_image.cli import main
from mindglm_image.models.dit.transformer import transformer_inputs
from mindglm_image.tiny_model import make_tiny_model
from mindglm_image.training.lora import (LoraConfig, apply_adapter, inject_lora, load_adapter, load_adapter_into,
                                         lora_modules, lora_parameters, merge_lora, merged_state, parse_lora_arg,
                                         save_adapter, save_merged_model, unmerge_lora)
from mindglm_image.weights.checkpoint import ShardedCheckpoint
from mindglm_image.weights.components import COMPONENTS, load_component
from mindglm_image.weights.safetensors_io import SafetensorsFile, TensorData


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("lora") / "tiny", progress=False)


def _dit(tiny):
    return load_component(COMPONENTS["transformer"], tiny / "transformer")


def _inputs(cfg):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.prior_vq_quantizer_codebook_size, (1, 16))
    return transformer_inputs(cfg, rng.standard_normal((1, cfg.in_channels, 8, 8), dtype=np.float32),
                              rng.standard_normal((1, 3, cfg.text_embed_dim), dtype=np.float32), ids,
                              np.zeros(ids.shape, bool), np.array([700.0], np.float32),
                              np.array([[64.0, 64.0]], np.float32), np.zeros((1, 2), np.float32))


def _randomise_b(cell, seed=1):
    rng = np.random.default_rng(seed)
    for m in lora_modules(cell).values():
        m.lora_B.weight.set_data(ms.Tensor(0.3 * rng.standard_normal(m.lora_B.weight.shape, dtype=np.float32)))


def test_injection_zero_init_merge_and_round_trip(tiny, tmp_path):
    dit = _dit(tiny)
    inputs = _inputs(dit.config)
    base = dit(*inputs).asnumpy()
    cfg = LoraConfig(r=4, lora_alpha=8.0)
    names = inject_lora(dit, cfg, "transformer")
    assert len(names) == 6 * dit.config.num_layers
    assert "transformer_blocks.0.attn1.to_out.0" in names and "transformer_blocks.1.ff.net.0.proj" in names
    params = dit.parameters_dict()
    assert "transformer_blocks.0.attn1.to_q.weight" in params and "transformer_blocks.0.attn1.to_q.lora_A.weight" in params
    assert len(lora_parameters(dit)) == 2 * len(names)
    np.testing.assert_array_equal(dit(*inputs).asnumpy(), base)  # B = 0: the model is unchanged

    _randomise_b(dit)
    unmerged = dit(*inputs).asnumpy()
    assert np.abs(unmerged - base).max() > 1e-2 * np.abs(base).max()
    before = {n: p.asnumpy().copy() for n, p in dit.parameters_and_names()}
    folded = merged_state(dit)
    merge_lora(dit)
    merged = dit(*inputs).asnumpy()
    np.testing.assert_allclose(merged, unmerged, rtol=0, atol=1e-5 * np.abs(unmerged).max())
    w = "transformer_blocks.0.attn1.to_q.weight"
    np.testing.assert_array_equal(dit.parameters_dict()[w].asnumpy(), folded[w])
    assert not any(".lora_" in n for n in folded)
    unmerge_lora(dit)
    np.testing.assert_allclose(dit.parameters_dict()[w].asnumpy(), before[w], atol=1e-6)

    # PEFT-format export / import
    save_adapter(dit, tmp_path / "adapter", cfg, "transformer")
    conf = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert conf["peft_type"] == "LORA" and conf["r"] == 4 and conf["lora_alpha"] == 8.0
    keys = SafetensorsFile(tmp_path / "adapter" / "adapter_model.safetensors").keys()
    assert "base_model.model.transformer_blocks.0.attn1.to_q.lora_A.weight" in keys and len(keys) == 2 * len(names)
    adapter = load_adapter(tmp_path / "adapter")
    a, b = adapter.weights["transformer_blocks.1.ff.net.2"]
    m = lora_modules(dit)["transformer_blocks.1.ff.net.2"]
    np.testing.assert_array_equal(a, m.lora_A.weight.asnumpy())
    np.testing.assert_array_equal(b, m.lora_B.weight.asnumpy())

    fresh = _dit(tiny)
    load_adapter_into(fresh, adapter, "transformer")
    np.testing.assert_array_equal(fresh(*inputs).asnumpy(), unmerged)
    at_load = _dit(tiny)
    apply_adapter(at_load, adapter, "transformer", scale=1.0)
    np.testing.assert_allclose(at_load(*inputs).asnumpy(), unmerged, rtol=0, atol=1e-5 * np.abs(unmerged).max())

    # merged weights as an official-layout model folder, in the source's dtype (bf16 for make-tiny)
    out = save_merged_model(tiny, tmp_path / "merged", {"transformer": dit}, max_shard_bytes=50_000)
    assert (out / "model_index.json").is_file() and (out / "vae" / "config.json").is_file()
    ckpt = ShardedCheckpoint(out / "transformer", "diffusion_pytorch_model")
    assert ckpt.index_path is not None and ckpt.info(w).dtype == "BF16"
    np.testing.assert_array_equal(ckpt.get(w).array(), TensorData.from_array(w, folded[w], "BF16").array())
    reloaded = load_component(COMPONENTS["transformer"], out / "transformer")
    assert set(reloaded.parameters_dict()) == set(folded)
    # the same through the CLI, from the adapter folder
    assert main(["merge-lora", "--model", str(tiny), "--lora", str(tmp_path / "adapter"), "--out", str(tmp_path / "cli")]) == 0
    np.testing.assert_array_equal(ShardedCheckpoint(tmp_path / "cli" / "transformer", "diffusion_pytorch_model").get(w).array(),
                                  ckpt.get(w).array())


def test_targets_and_errors(tiny, tmp_path):
    dit = _dit(tiny)
    with pytest.raises(ValueError, match=r"\['to_qq'\] name no Linear module"):
        inject_lora(dit, LoraConfig(target_modules=["to_q", "to_qq"]), "transformer")
    names = inject_lora(dit, LoraConfig(r=2, target_modules=r".*blocks\.0\.attn1\.to_(q|v)"), "transformer")
    assert names == ["transformer_blocks.0.attn1.to_q", "transformer_blocks.0.attn1.to_v"]
    with pytest.raises(ValueError, match="already injected"):
        inject_lora(dit, LoraConfig(target_modules=["to_q"]), "transformer")
    ar = load_component(COMPONENTS["vision_language_encoder"], tiny / "vision_language_encoder")
    ar_names = inject_lora(ar, LoraConfig(r=2), "vision_language_encoder")
    assert all(n.startswith("model.language_model.layers.") for n in ar_names) and len(ar_names) % 4 == 0
    with pytest.raises(ValueError, match="not supported"):
        LoraConfig.from_dict({"use_dora": True})
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(tmp_path)
    assert parse_lora_arg("a/b:0.5") == ("a/b", 0.5) and parse_lora_arg("a/b") == ("a/b", 1.0)


def test_adapter_merges_into_bf16_weights(tiny, tmp_path):
    """The Ascend path: bf16 cells take the update in fp32, rounded once to bf16 (CPU runs no bf16 matmul,
    so only the weights are checked)."""
    dit = _dit(tiny)
    cfg = LoraConfig(r=2, target_modules=["to_q"])
    inject_lora(dit, cfg, "transformer")
    _randomise_b(dit)
    save_adapter(dit, tmp_path / "a", cfg, "transformer")
    expected = merged_state(dit)
    bf16 = load_component(COMPONENTS["transformer"], tiny / "transformer", ms.bfloat16)
    apply_adapter(bf16, load_adapter(tmp_path / "a"), "transformer")
    w = "transformer_blocks.1.attn1.to_q.weight"
    got = bf16.parameters_dict()[w]
    assert got.dtype == ms.bfloat16
    np.testing.assert_array_equal(got.float().asnumpy(), TensorData.from_array(w, expected[w], "BF16").array())
