"""Compiled graphs are shared across requests: no recompilation per prompt length within a bucket."""
from __future__ import annotations

import pytest

from mindglm_image.generation.sampling import SamplingConfig
from mindglm_image.pipeline.glm_image_pipeline import GlmImagePipeline
from mindglm_image.tiny_model import make_tiny_model


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return GlmImagePipeline.from_pretrained(make_tiny_model(tmp_path_factory.mktemp("reuse") / "tiny", progress=False))


def test_glyph_encoder_shares_one_graph_across_lengths(pipe):
    for prompt in ['a sign "hi"', "no quotes at all", '"' + "x" * 20 + '"']:  # one span each, 1-22 bytes
        pipe.glyph.encode([prompt])
    assert len(pipe.text_encoder.compile_cache) == 1
    pipe.glyph.encode(['two signs: "hello there" and \'GLM\''])  # two spans: the next row bucket
    pipe.glyph.encode(['"a" "b"'])
    assert len(pipe.text_encoder.compile_cache) == 2


def test_ar_prefill_and_decode_graphs_reused_across_prompts(pipe):
    greedy = SamplingConfig(do_sample=False)
    for prompt in ["a cat", "a much longer prompt about a red cat holding a sign in the rain"]:
        pipe.generate_prior([prompt], 64, 64, greedy, progress=False)
    sessions = list(pipe.generator._sessions.values())
    assert len(sessions) == 1
    assert len(sessions[0].graph.compile_cache) == 2  # one prefill graph (bucketed length), one decode graph
