"""Parity of the AR model's vision encoder, VQ quantizer and reference-image processor with the reference."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mindglm_image.config.ar import GlmImageConfig
from mindglm_image.models.ar.image_tokens import encode_reference_images
from mindglm_image.models.ar.vision import GlmImageVisionModel, vision_inputs
from mindglm_image.models.ar.vqvae import GlmImageVQVAE
from mindglm_image.processor.image_processing import (GlmImageImageProcessorConfig, preprocess_images,
                                                      target_size)
from mindglm_image.weights.checkpoint import ShardedCheckpoint
from mindglm_image.weights.components import COMPONENTS
from mindglm_image.weights.loading import load_tensors_into_cell
from parity_utils import assert_parity, load_converted

ROOT = Path(__file__).resolve().parents[1]

SPEC = COMPONENTS["vision_language_encoder"]


@pytest.fixture(scope="module")
def ref(reference_fixture):
    return reference_fixture("ar_vision")


@pytest.fixture(scope="module")
def arrays(ref):
    return dict(np.load(ref / "ar_vision.npz"))


@pytest.fixture(scope="module")
def cells(ref, tmp_path_factory):
    """(visual, vqmodel) of the AR model, loaded through the converter and ``load_component``."""
    model = load_converted("vision_language_encoder", ref / "vision_language_encoder", tmp_path_factory.mktemp("ar_vision"))
    return model.model.visual, model.model.vqmodel


@pytest.mark.parity
def test_vision_features_of_two_packed_images(cells, arrays, parity_report):
    visual, _ = cells
    ours = visual.encode(arrays["features_pixels"], arrays["features_grid"]).asnumpy()
    assert_parity(parity_report, "ar_vision/features", ours, arrays["features"], 1e-5)


@pytest.mark.parity
def test_vq_ids_of_photo_like_images(ref, cells, arrays, parity_report):
    config = GlmImageImageProcessorConfig.from_pretrained(ref / "processor")
    batch = preprocess_images([ref / "photo0.png", ref / "photo1.png"], config)
    np.testing.assert_array_equal(batch.image_grid_thw, arrays["photo_grid"])
    assert_parity(parity_report, "ar_vision/photo_pixel_values", batch.pixel_values, arrays["photo_pixels"], 1e-6)
    ids = encode_reference_images(*cells, batch.pixel_values, batch.image_grid_thw)
    assert ids.dtype == np.int64
    assert len(np.unique(ids)) > 8, "reference ids are too uniform to prove the quantizer"
    np.testing.assert_array_equal(ids, arrays["photo_ids"])


@pytest.mark.parity
def test_image_processor_sizes_and_configs(ref, arrays, parity_report):
    cases = json.loads((ref / "processor_cases.json").read_text())
    assert len(cases) == 10
    for case in cases:
        config = GlmImageImageProcessorConfig.from_pretrained(ref / case["processor"])
        batch = preprocess_images(ref / case["image"], config)
        key = case["key"]
        np.testing.assert_array_equal(batch.image_grid_thw, arrays[f"{key}_grid"], err_msg=key)
        assert batch.pixel_values.dtype == np.float32
        assert_parity(parity_report, "ar_vision/processor_pixel_values", batch.pixel_values,
                      arrays[f"{key}_pixels"], 1e-6)


def test_processor_config_round_trips(ref):
    path = ref / "processor" / "preprocessor_config.json"
    config = GlmImageImageProcessorConfig.from_json_file(path)
    assert config.to_dict() == json.loads(path.read_text())
    assert (config.patch_size, config.temporal_patch_size, config.merge_size) == (16, 1, 1)


def test_bad_inputs_are_named(cells, tmp_path):
    visual, _ = cells
    with pytest.raises(ValueError, match="needs"):
        visual.encode(np.zeros((5, 768), np.float32), np.array([[1, 2, 2]]))
    with pytest.raises(ValueError, match="temporal"):
        vision_inputs(np.array([[2, 2, 2]]), 8)
    with pytest.raises(ValueError, match="smaller than"):
        target_size(10, 100, 16, 64 * 64, 256 * 256)
    with pytest.raises(ValueError, match="aspect ratio"):
        target_size(100, 500, 16, 64 * 64, 256 * 256)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        preprocess_images(broken, GlmImageImageProcessorConfig())


def test_bilinear_weights_sum_to_one_and_mask_is_per_image():
    inputs = vision_inputs(np.array([[1, 3, 5], [1, 9, 2]]), 4)
    np.testing.assert_allclose(inputs.pos_weight.sum(1), 1.0, rtol=0, atol=1e-6)
    assert inputs.pos_index.min() >= 0 and inputs.pos_index.max() < 16
    assert (inputs.attn_mask[:15, :15] == 0).all() and (inputs.attn_mask[15:, 15:] == 0).all()
    assert (inputs.attn_mask[:15, 15:] < -1e29).all()


@pytest.mark.fullsize
def test_real_width_vision_block_and_real_vq(reference_fixture, parity_report):
    """One vision block at hidden 1536 / MLP 6144 and the 16384 x 2048 codebook, bf16 weights; a real
    photograph goes through our own preprocessing, the encoder and the quantizer."""
    folder = reference_fixture("ar_vision_fullsize")
    data = np.load(folder / "vision_fullsize.npz")
    config = GlmImageConfig.from_json_file(ROOT / "configs" / "glm_image" / "vision_language_encoder" / "config.json")
    config.vision_config.depth = 1
    ckpt = ShardedCheckpoint(folder)
    visual, vqmodel = GlmImageVisionModel(config.vision_config), GlmImageVQVAE(config.vq_config)
    for prefix, cell in (("visual.", visual), ("vqmodel.", vqmodel)):
        tensors = (ckpt.get(n) for n in ckpt.keys() if n.startswith(prefix))
        load_tensors_into_cell(cell, tensors, str(folder), lambda n, p=prefix: n[len(p):])
    processed = preprocess_images([folder / "grace_hopper.png"], GlmImageImageProcessorConfig.from_dict(
        {"patch_size": 16, "temporal_patch_size": 1, "merge_size": 1, "min_pixels": 64 * 64, "max_pixels": 256 * 256}))
    first = int(np.prod(data["grid"][0]))
    np.testing.assert_array_equal(processed.image_grid_thw, data["grid"][:1])
    assert_parity(parity_report, "ar_vision/real_photo_pixel_values", processed.pixel_values, data["pixels"][:first], 1e-6)
    features = visual.encode(data["pixels"], data["grid"]).asnumpy()
    assert_parity(parity_report, "ar_vision/real_width_features", features, data["features"])
    ids = encode_reference_images(visual, vqmodel, data["pixels"], data["grid"])
    assert len(np.unique(ids)) > 20
    np.testing.assert_array_equal(ids, data["ids"])
