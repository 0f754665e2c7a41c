"""Parity of the Glyph-byT5 path with the reference: tokenizer ids, span extraction, T5 encoder, glyph embeddings."""
from __future__ import annotations

import json

import numpy as np
import pytest
from parity_utils import assert_parity, load_converted

from mindglm_image.config.base import ConfigError
from mindglm_image.config.t5 import T5Config
from mindglm_image.models.glyph.glyph_encoder import GlyphEncoder, glyph_token_batch
from mindglm_image.models.glyph.t5_encoder import relative_position_bucket
from mindglm_image.processor.byt5_tokenizer import ByT5Tokenizer, TokenizerError
from mindglm_image.processor.glyph_text import extract_glyph_texts

CASES = ("no_quotes", "one_span", "two_spans", "three_spans", "batch")


@pytest.fixture(scope="module")
def ref(reference_fixture):
    folder = reference_fixture("glyph")
    return folder, dict(np.load(folder / "glyph.npz"))


@pytest.fixture(scope="module")
def glyph(ref, tmp_path_factory):
    folder, _ = ref
    encoder = load_converted("text_encoder", folder / "text_encoder", tmp_path_factory.mktemp("glyph"))
    return GlyphEncoder(encoder, ByT5Tokenizer.from_pretrained(folder / "tokenizer"))


def _cases(folder) -> dict:
    return json.loads((folder / "cases.json").read_text(encoding="utf-8"))


def test_tokenizer_matches_reference(ref):
    folder, _ = ref
    expected = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    for tok in (ByT5Tokenizer.from_pretrained(folder / "tokenizer"), ByT5Tokenizer()):
        for item in expected:
            assert tok(item["text"], **item["kwargs"]) == item["out"], (item["text"], item["kwargs"])


@pytest.mark.parametrize("case", CASES)
def test_glyph_span_extraction(ref, case):
    folder, arrays = ref
    assert extract_glyph_texts(_cases(folder)["cases"][case]) == json.loads(str(arrays[f"{case}/spans"]))


def test_relative_position_buckets(ref):
    _, arrays = ref
    for key in (k for k in arrays if k.startswith("bucket/")):
        length, buckets, distance = (int(v) for v in key.split("/")[1].split("_"))
        ours = relative_position_bucket(length, buckets, distance)
        np.testing.assert_array_equal(ours, arrays[key], err_msg=key)


@pytest.mark.parity
def test_t5_encoder_parity(ref, glyph, parity_report):
    import mindspore as ms

    _, arrays = ref
    encoder = glyph.text_encoder
    ids = arrays["encoder/input_ids"].astype(np.int32)
    mask = arrays["encoder/attention_mask"].astype(np.int32)
    out = encoder(ms.Tensor(ids), ms.Tensor(mask), encoder.position_bucket_for(ids.shape[1])).asnumpy()
    assert_parity(parity_report, "text_encoder/last_hidden_state", out, arrays["encoder/last_hidden_state"])


@pytest.mark.parity
@pytest.mark.parametrize("case", CASES)
def test_glyph_embeds_parity(ref, glyph, parity_report, case):
    folder, arrays = ref
    prompts = _cases(folder)["cases"][case]
    for i, spans in enumerate(extract_glyph_texts(prompts)):
        input_ids, mask = glyph_token_batch(glyph.tokenizer, spans, glyph.max_sequence_length)
        np.testing.assert_array_equal(input_ids, arrays[f"{case}/input_ids{i}"])
        np.testing.assert_array_equal(mask, arrays[f"{case}/mask{i}"])
    positive, negative, mask = glyph.encode_prompt(prompts)
    assert_parity(parity_report, "text_encoder/glyph_embeds", positive.asnumpy(), arrays[f"{case}/embeds"])
    assert_parity(parity_report, "text_encoder/negative_glyph_embeds", negative.asnumpy(), arrays[f"{case}/negative"])
    if case == "batch":  # the shorter prompt is zero-padded on the left; images per prompt repeat in place
        twice = glyph.encode_prompt(prompts, do_classifier_free_guidance=False, num_images_per_prompt=2)
        np.testing.assert_array_equal(twice.positive.asnumpy(), np.repeat(positive.asnumpy(), 2, axis=0))
        n_pad = positive.shape[1] - arrays[f"{case}/input_ids0"].size
        assert n_pad > 0 and not positive.asnumpy()[0, :n_pad].any()
        np.testing.assert_array_equal(mask[0], np.arange(positive.shape[1]) >= n_pad)
        assert mask[1].all() and twice.negative is None
        np.testing.assert_array_equal(twice.mask, np.repeat(mask, 2, axis=0))
    else:
        assert mask is None  # one prompt: nothing padded, the DiT runs unmasked as the reference


@pytest.mark.parity
def test_glyph_truncation_parity(ref, glyph, parity_report):
    folder, arrays = ref
    truncated = _cases(folder)["truncated"]
    prompts, max_len = truncated["prompts"], truncated["max_length"]
    short = GlyphEncoder(glyph.text_encoder, glyph.tokenizer, max_sequence_length=max_len)
    input_ids, _ = glyph_token_batch(short.tokenizer, extract_glyph_texts(prompts)[0], max_len)
    np.testing.assert_array_equal(input_ids, arrays["truncated/input_ids0"])
    assert_parity(parity_report, "text_encoder/glyph_embeds", short.encode(prompts).asnumpy(), arrays["truncated/embeds"])


def test_tokenizer_rejects_bad_input(tmp_path):
    tok = ByT5Tokenizer()
    with pytest.raises(TokenizerError, match="expected a string"):
        tok([b"bytes"])
    with pytest.raises(TokenizerError, match="max_length=0"):
        tok("abc", max_length=0, truncation=True)
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not valid JSON"):
        ByT5Tokenizer.from_pretrained(tmp_path)


def test_config_roundtrip_and_errors(ref):
    folder, _ = ref
    raw = json.loads((folder / "text_encoder" / "config.json").read_text())
    cfg = T5Config.from_dict(raw)
    assert cfg.to_dict() == raw
    assert cfg.is_gated_act and cfg.dense_act_fn == "gelu_new"
    with pytest.raises(ConfigError, match="feed_forward_proj"):
        T5Config.from_dict({**raw, "feed_forward_proj": "gelu-gated"})
    with pytest.raises(ConfigError, match="not supported"):
        T5Config.from_dict({**raw, "feed_forward_proj": "gated-tanh"})
    with pytest.raises(ConfigError, match="is_decoder"):
        T5Config.from_dict({**raw, "is_decoder": True})
