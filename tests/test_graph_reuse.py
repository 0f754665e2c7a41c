"""Compiled graphs are shared across requests: no recompilation per prompt length within a bucket."""
from __future__ import annotations

import pytest

from mindglm_image.generation.sampling import SamplingConfig
from mindglm_image.graph_calls import static_graph
from mindglm_image.pipeline.denoise import DenoiseStep
from mindglm_image.pipeline.glm_image_pipeline import GlmImagePipeline
from mindglm_image.tiny_model import make_tiny_model


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return GlmImagePipeline.from_pretrained(make_tiny_model(tmp_path_factory.mktemp("reuse") / "tiny", progress=False))


def test_glyph_encoder_shares_one_graph_across_lengths(pipe):
    for prompt in ['a sign "hi"', "no quotes at all", '"' + "x" * 20 + '"']:  # one span each, 1-22 bytes
        pipe.glyph.encode([prompt])
    assert static_graph(pipe.text_encoder).compiled_graphs == 1
    pipe.glyph.encode(['two signs: "hello there" and \'GLM\''])  # two spans: the next row bucket
    pipe.glyph.encode(['"a" "b"'])
    assert static_graph(pipe.text_encoder).compiled_graphs == 2


def test_ar_prefill_and_decode_graphs_reused_across_prompts(pipe):
    greedy = SamplingConfig(do_sample=False)
    for prompt in ["a cat", "a much longer prompt about a red cat holding a sign in the rain"]:
        pipe.generate_prior([prompt], 64, 64, greedy, progress=False)
    sessions = list(pipe.generator._sessions.values())
    assert len(sessions) == 1
    # one prefill graph (bucketed length), one decode graph, sampling inside both
    assert sessions[0].sampling_prefill.compiled_graphs == 1 and sessions[0].sampling_step.compiled_graphs == 1


def test_dit_cond_and_uncond_share_one_graph_across_prompt_lengths(pipe):
    """Glyph embeddings are padded (masked) to a 32-token bucket for both CFG passes: one step graph (the DiT
    and the sampler step) serves the conditional and unconditional rows of prompts with 1-22 quoted bytes (each graph holds all its
    intermediate buffers, ~2 GB at 512 px for a mid-size DiT)."""
    for prompt in ['a sign "hi"', "no quotes", '"' + "x" * 20 + '"']:
        pipe(prompt, height=64, width=64, num_inference_steps=1, progress=False)
    assert static_graph(pipe.transformer, wrapper=DenoiseStep).compiled_graphs == 1
    assert static_graph(pipe.transformer, "prepare_denoising").compiled_graphs == 1
    # another step count: only the small graph that embeds every step's time compiles again, not the DiT step
    pipe('a sign "hi"', height=64, width=64, num_inference_steps=2, progress=False)
    assert static_graph(pipe.transformer, wrapper=DenoiseStep).compiled_graphs == 1
    assert static_graph(pipe.transformer, "prepare_denoising").compiled_graphs == 2
