"""AR text decoder against the PyTorch reference: 3-D positions, full-forward logits, static-KV-cache
decoding (one compiled decode graph), left-padded batches. Weights go through the converter and
``load_component`` (the product path)."""
from __future__ import annotations

from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import mint, nn
from parity_utils import assert_parity, load_converted

from mindglm_image.config.ar import GlmImageConfig
from mindglm_image.generation.decode_session import DecodeSession
from mindglm_image.graph_inputs import graph_input
from mindglm_image.models.ar.rope import MultimodalRotaryEmbedding, compute_rope_positions
from mindglm_image.models.ar.text_model import GlmImageTextDecoderLayer, causal_key_mask, key_order
from mindglm_image.weights.checkpoint import ShardedCheckpoint
from mindglm_image.weights.components import COMPONENTS
from mindglm_image.weights.loading import load_tensors_into_cell

SPEC = COMPONENTS["vision_language_encoder"]
START, END = 184, 185  # as tests/reference/ar_text.py
STEPS = 5


@pytest.fixture(scope="module")
def ref(reference_fixture):
    folder = reference_fixture("ar_text")
    return folder, dict(np.load(folder / "ar_text.npz"))


@pytest.fixture(scope="module")
def model(ref, tmp_path_factory):
    folder, _ = ref
    work = tmp_path_factory.mktemp("ar")
    model = load_converted("vision_language_encoder", folder / "vision_language_encoder", work)
    assert len(list((work / "vision_language_encoder").glob("mindspore_model-*.safetensors"))) > 1
    return model


def _positions(data: dict, case: str):
    mask = data.get(f"{case}_mask")
    per_sample = data.get(f"{case}_per_sample")
    return compute_rope_positions(data[f"{case}_ids"], START, END, data[f"{case}_grids"], per_sample, mask)


@pytest.mark.parity
@pytest.mark.parametrize("case", ["i2i1", "i2i2", "t2i", "batch"])
def test_rope_positions_equal_reference(ref, case):
    _, data = ref
    pos = _positions(data, case)
    np.testing.assert_array_equal(pos.prefill, data[f"{case}_prefill"])
    np.testing.assert_array_equal(pos.decode, data[f"{case}_decode"])
    assert pos.decode_step(3).shape == (3, pos.prefill.shape[1], 1)


@pytest.mark.parity
def test_parameter_names_equal_reference_keys(ref, model):
    folder, _ = ref
    assert set(model.parameters_dict()) == set(ShardedCheckpoint(folder / "vision_language_encoder", "model").keys())


@pytest.mark.parity
@pytest.mark.parametrize("case", ["i2i1", "t2i"])
def test_full_forward_logits(ref, model, parity_report, case):
    _, data = ref
    logits = model.logits(data[f"{case}_ids"], data[f"{case}_prefill"]).asnumpy()
    assert_parity(parity_report, f"vision_language_encoder/logits_{case}", logits, data[f"{case}_logits"])


@pytest.mark.parity
def test_static_cache_decoding_matches_full_forward(ref, model, parity_report):
    """Prefill + 5 single-token steps vs the reference's full forward over the whole sequence and its own
    incremental generation; the decode graph compiles once."""
    _, data = ref
    ids, tokens = data["t2i_ids"], data["t2i_tokens"]
    pos = _positions(data, "t2i")
    session = DecodeSession(model, model.new_kv_cache(1, ids.shape[1] + STEPS + 3), END)
    for run in range(2):  # the second run checks that reset() really forgets the first
        session.reset()
        got = [session.prefill(ids, pos.prefill).asnumpy()]
        for k in range(STEPS):
            got.append(session.step(tokens[:, k:k + 1], pos.decode_step(k)).asnumpy())
        got = np.stack(got)
        whole = data["t2i_whole_logits"][:, ids.shape[1] - 1:].transpose(1, 0, 2)
        assert_parity(parity_report, "vision_language_encoder/decode_vs_whole_forward", got, whole)
        assert_parity(parity_report, "vision_language_encoder/decode_vs_reference_decode", got, data["t2i_inc_logits"])
    assert session.length == ids.shape[1] + STEPS
    assert session.graph.compiled_graphs == 2, "expected one prefill graph and ONE decode graph"


@pytest.mark.parity
def test_left_padded_batch(ref, model, parity_report):
    _, data = ref
    ids, mask, tokens = data["batch_ids"], data["batch_mask"], data["batch_tokens"]
    pos = _positions(data, "batch")
    valid = mask.astype(bool)
    logits = model.logits(ids, pos.prefill, mask).asnumpy()
    assert_parity(parity_report, "vision_language_encoder/logits_batch", logits[valid], data["batch_logits"][valid])
    session = DecodeSession(model, model.new_kv_cache(2, ids.shape[1] + STEPS), END)
    got = [session.prefill(ids, pos.prefill, mask).asnumpy()]
    got += [session.step(tokens[:, k:k + 1], pos.decode_step(k)).asnumpy() for k in range(STEPS)]
    assert_parity(parity_report, "vision_language_encoder/decode_batch", np.stack(got), data["batch_inc_logits"])


def test_bad_inputs_are_named(ref, model):
    _, data = ref
    ids, grids = data["i2i1_ids"], data["i2i1_grids"]
    with pytest.raises(ValueError, match="needs 12"):
        compute_rope_positions(ids, START, END, np.array([[1, 3, 4], [1, 3, 4]]))
    with pytest.raises(ValueError, match="images_per_sample"):
        compute_rope_positions(ids, START, END, grids, images_per_sample=[1])
    with pytest.raises(ValueError, match="position_ids has shape"):
        model.logits(ids, np.zeros((3, 2, ids.shape[1]), np.int64))
    with pytest.raises(ValueError, match="input_ids must hold integers, got dtype float32"):
        model.logits(ids.astype(np.float32), np.zeros((3, *ids.shape), np.int64))
    on_device = ms.Tensor(ids.astype(np.int32))
    assert graph_input("input_ids", on_device, ms.int32, ids.shape) is on_device  # no host round trip
    session = DecodeSession(model, model.new_kv_cache(1, ids.shape[1]), END)
    with pytest.raises(ValueError, match="expected \\(batch=1"):
        session.prefill(np.concatenate([ids, ids]), np.zeros((3, 2, ids.shape[1])))
    session.prefill(ids, compute_rope_positions(ids, START, END, grids).prefill)
    with pytest.raises(ValueError, match="overflows the cache"):
        session.step(ids[:, :1], np.zeros((3, 1, 1), np.int64))


class _OneLayer(nn.Cell):
    """Rotary tables + causal mask + one decoder layer, named ``layers.0.*`` like the fixture's tensors."""

    def __init__(self, config):
        super().__init__()
        self.rotary_emb = MultimodalRotaryEmbedding(config.rotary_dim, config.rope_theta, config.mrope_section)
        self.layers = nn.CellList([GlmImageTextDecoderLayer(config)])

    def construct(self, hidden, position_ids):
        seq = hidden.shape[1]
        mask = causal_key_mask(key_order(mint.ones((1, seq), dtype=ms.int32)), mint.arange(seq, dtype=ms.int32))
        cos, sin = self.rotary_emb(position_ids)
        return self.layers[0](hidden, cos, sin, mask)


@pytest.mark.parity
@pytest.mark.fullsize
def test_one_real_size_decoder_layer(reference_fixture, parity_report):
    """Hidden 4096, 32 heads / 2 KV heads, MLP 13696, bf16-valued random weights (about 0.8 GB in fp32)."""
    folder = reference_fixture("ar_text_fullsize")
    real = Path(__file__).resolve().parents[1] / "configs" / "glm_image" / "vision_language_encoder" / "config.json"
    config = GlmImageConfig.from_json_file(real).text_config
    cell = _OneLayer(config)
    load_tensors_into_cell(cell, ShardedCheckpoint(folder), str(folder))
    data = np.load(folder / "layer.npz")
    out = cell(ms.Tensor(data["hidden"]), ms.Tensor(data["positions"].astype(np.int32))).asnumpy()
    assert_parity(parity_report, "vision_language_encoder/real_size_layer", out, data["output"])
