"""On-device sampling (``DeviceTokenSampler`` and the sampled decode loop) against its numpy twin
``TokenSampler``: same token distribution, filters respected, per-row seeds batch invariant, greedy and
seeded generations equal to the host loop, host readbacks counted."""
from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest

from mindglm_image.finite import NonFiniteError
from mindglm_image.generation.decode_session import DecodeSession
from mindglm_image.generation.device_sampling import DeviceTokenSampler, sampling_params
from mindglm_image.generation.prior import PriorGenerationConfig, PriorGenerator
from mindglm_image.generation.sampling import SamplingConfig, TokenSampler
from mindglm_image.pipeline.glm_image_pipeline import GlmImagePipeline
from mindglm_image.tiny_model import make_tiny_model

DRAWS = 6000
END = 3  # the sampler cell's end marker
CONFIGS = [SamplingConfig(), SamplingConfig(temperature=1.0, top_k=5, top_p=1.0),
           SamplingConfig(temperature=0.7, top_k=10, top_p=0.5), SamplingConfig(temperature=1.3, top_p=0.9)]


@pytest.fixture(scope="module", params=["composite", "fused"])
def sampler_cell(request):
    """The sampler with the ops layer's composite, and with its CPU twin (``MINDGLM_KERNELS`` is read when a
    cell is built)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MINDGLM_KERNELS", request.param)
        return DeviceTokenSampler(END)


@pytest.fixture(scope="module")
def logits():
    """One row of 48 distinct logits spread over ~12 nats, repeated for DRAWS independent draws."""
    row = np.random.default_rng(7).permutation(np.linspace(-6.0, 6.0, 48)).astype(np.float32)
    return np.tile(row, (DRAWS, 1))


def _device_draw(cell, logits: np.ndarray, uniforms: np.ndarray, config: SamplingConfig, limit: int | None = None,
                 index: int = 0, finished=None, flags=(0, 0, 0)):
    """One sampled step of token ``index`` for every row -> tokens (B,), finished (B,), flags (3,), token buffer."""
    rows, steps = uniforms.shape
    limits = np.full(steps, logits.shape[1] if limit is None else limit, np.int32)
    finished = np.zeros(rows, np.int32) if finished is None else np.asarray(finished, np.int32)
    out = cell(ms.Tensor(logits), ms.Tensor(np.array([index], np.int32)), ms.Tensor(uniforms.astype(np.float32)),
               sampling_params(config), ms.Tensor(limits), ms.Tensor(finished), ms.Tensor(np.array(flags, np.int32)),
               ms.Tensor(np.zeros((rows, steps), np.int32)))
    token, finished, flags, tokens = (t.asnumpy() for t in out)
    assert token.shape == (rows, 1)
    return token[:, 0], finished, flags, tokens


@pytest.mark.parametrize("config", CONFIGS, ids=["default", "topk", "topk_topp", "topp"])
def test_frequencies_match_numpy_sampler(sampler_cell, logits, config):
    """Token counts over 6000 draws lie within 5 binomial sigmas of the numpy sampler's probabilities, and
    for the same uniform both samplers pick the same token (they share the random stream)."""
    host = TokenSampler(config, row_seeds=range(DRAWS))
    uniforms = TokenSampler(config, row_seeds=range(DRAWS)).uniforms(DRAWS, 1)
    tokens, *_ = _device_draw(sampler_cell, logits, uniforms, config)
    assert np.mean(tokens == host(logits)) > 0.999  # only float32 rounding at a CDF boundary may differ
    scores = host.filtered_logits(logits[:1])[0].astype(np.float64)
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    counts = np.bincount(tokens, minlength=logits.shape[1])
    sigma = np.sqrt(DRAWS * probs * (1 - probs))
    assert (np.abs(counts - DRAWS * probs) <= 5 * sigma + 1).all(), (counts, DRAWS * probs)
    assert (probs > 0.05).sum() >= 2 and (counts > 0).sum() >= 2  # a real distribution, not argmax


@pytest.mark.parametrize("config", CONFIGS[1:3], ids=["topk", "topk_topp"])
def test_top_k_and_top_p_never_emit_an_excluded_token(sampler_cell, config):
    rng = np.random.default_rng(3)
    rows = (rng.standard_normal((8, 64)) * 1.5).astype(np.float32)
    logits = np.repeat(rows, DRAWS // 8, axis=0)
    tokens, *_ = _device_draw(sampler_cell, logits, rng.random((len(logits), 1)), config)
    kept = np.isfinite(TokenSampler(config).filtered_logits(rows))
    sizes = []
    for r in range(len(rows)):
        emitted = set(tokens[r * (DRAWS // 8):(r + 1) * (DRAWS // 8)].tolist())
        assert emitted <= set(np.flatnonzero(kept[r]).tolist())
        sizes.append(len(emitted))
    assert max(sizes) > 1  # it samples (top-p 0.5 may leave one token in a row)
    assert kept.sum(-1).max() <= (config.top_k or 64)


def test_greedy_argmax_and_non_finite_count(sampler_cell):
    logits = np.array([[0.1, 2.0, -1.0, 0.5], [3.0, 0.0, 2.9, np.inf], [np.nan, 1.0, np.nan, 0.0]], np.float32)
    tokens, _, flags, _ = _device_draw(sampler_cell, logits[:2, :3], np.full((2, 1), 0.5),
                                       SamplingConfig(do_sample=False))
    np.testing.assert_array_equal(tokens, [1, 0])
    assert flags.tolist() == [0, 0, 0]
    _, _, flags, _ = _device_draw(sampler_cell, logits, np.full((3, 2), 0.5), SamplingConfig(), index=1)
    assert flags.tolist() == [2, 3, 0]  # token 1 (1-based 2) is the first with non-finite logits: 0 + 1 + 2 of them
    _, _, flags, _ = _device_draw(sampler_cell, logits, np.full((3, 3), 0.5), SamplingConfig(), index=2, flags=(2, 3, 0))
    assert flags.tolist() == [2, 3, 0]  # the first occurrence is kept


def test_step_bookkeeping(sampler_cell):
    """A finished row keeps emitting the end marker, a row that samples it finishes, the token lands in its
    column of the buffer, and the last flag says when every row has finished."""
    logits = np.full((3, 6), -5.0, np.float32)
    logits[0, 4], logits[1, END], logits[2, 1] = 5.0, 5.0, 5.0  # each row's best id
    greedy = SamplingConfig(do_sample=False)
    tokens, finished, flags, buffer = _device_draw(sampler_cell, logits, np.full((3, 4), 0.5), greedy, index=2,
                                                   finished=[0, 0, 1])
    assert tokens.tolist() == [4, END, END] and finished.tolist() == [0, 1, 1] and flags.tolist() == [0, 0, 0]
    assert buffer[:, 2].tolist() == [4, END, END] and (np.delete(buffer, 2, axis=1) == 0).all()
    _, finished, flags, _ = _device_draw(sampler_cell, logits[[1]], np.full((1, 4), 0.5), greedy, index=3)
    assert finished.tolist() == [1] and flags.tolist() == [0, 0, 1]


def test_row_uniforms_depend_on_their_own_seed_only():
    config = SamplingConfig(seed=0)
    alone = TokenSampler(config, row_seeds=[11]).uniforms(1, 20)
    batched = TokenSampler(config, row_seeds=[4, 11, 9]).uniforms(3, 20)
    np.testing.assert_array_equal(batched[1], alone[0])
    streamed = TokenSampler(config, row_seeds=[4, 11, 9])
    np.testing.assert_array_equal(np.concatenate([streamed.uniforms(3, 5), streamed.uniforms(3, 15)], 1), batched)


@pytest.mark.parametrize("config", [SamplingConfig(do_sample=False), CONFIGS[0], CONFIGS[3]], ids=["greedy", "default", "topp"])
def test_limit_excludes_the_ids_above_it_as_the_numpy_sampler(sampler_cell, logits, config):
    """With the 16 best ids above the limit neither sampler picks them; both agree draw for draw, and greedy
    picks the best id below the limit."""
    limit = 32
    rows = logits[:2000].copy()
    order = np.argsort(rows[0])
    rows[:, order[-16:]], rows[:, order[:16]] = rows[:, order[:16]], rows[:, order[-16:]]  # best ids last
    rows = np.concatenate([rows[:, 16:], rows[:, :16]], axis=1)
    uniforms = TokenSampler(config, row_seeds=range(2000)).uniforms(2000, 1)
    tokens, _, flags, _ = _device_draw(sampler_cell, rows, uniforms, config, limit)
    host = TokenSampler(config, row_seeds=range(2000))(rows, limit)
    assert tokens.max() < limit and flags[0] == 0
    assert np.mean(tokens == host) > 0.999
    if not config.do_sample:
        assert (tokens == np.argmax(rows[:, :limit], -1)).all()
    else:
        assert len(np.unique(tokens)) > 3


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return GlmImagePipeline.from_pretrained(make_tiny_model(tmp_path_factory.mktemp("ds") / "tiny", progress=False))


@pytest.fixture(scope="module")
def device(pipe):
    """On-device loop reading the flags every 8 steps (its compiled sessions are shared by the tests)."""
    return PriorGenerator(pipe.vision_language_encoder, PriorGenerationConfig(check_every=8))


def _prior(pipe, generator, prompts, sampling, seeds=None):
    pipe.generator = generator
    return pipe.generate_prior(prompts, 64, 64, sampling, progress=False, row_seeds=seeds)


PROMPTS = ["a cat", "a red bird on a long branch"]


@pytest.mark.parametrize("sampling, seeds", [(SamplingConfig(do_sample=False), None),
                                             (SamplingConfig(seed=5, top_k=20), [3, 8])], ids=["greedy", "seeded"])
def test_device_loop_equals_host_loop(pipe, device, sampling, seeds):
    """Same tokens as the numpy loop; readbacks: floor((N - 1) / check_every) + 1 against N."""
    host = PriorGenerator(pipe.vision_language_encoder, PriorGenerationConfig(device_sampling=False))
    ours, twin = _prior(pipe, device, PROMPTS, sampling, seeds), _prior(pipe, host, PROMPTS, sampling, seeds)
    np.testing.assert_array_equal(ours.generated, twin.generated)
    np.testing.assert_array_equal(ours.prior_ids, twin.prior_ids)
    n = ours.generated.shape[1]
    assert (ours.host_syncs, twin.host_syncs) == ((n - 1) // 8 + 1, n)
    assert len(set(ours.grid_ids[0].tolist())) > 1


def test_grids_hold_image_ids_even_where_the_model_prefers_a_marker(pipe, device):
    """An lm_head that scores every image id 0 and some grid marker above 0: the reference's unrestricted
    sampling (``grid_ids_only=False``) breaks the grid and the call fails naming it; the default samples
    only image ids inside both grids, on the device and on the host alike."""
    model = pipe.vision_language_encoder
    weight = dict(model.parameters_and_names())["lm_head.weight"]
    saved = weight.asnumpy().copy()
    codes = model.config.vq_config.num_embeddings
    rigged = np.zeros_like(saved)
    markers = rigged[codes:]
    markers[0::2], markers[1::2] = saved[codes::2][:len(markers[0::2])], -saved[codes::2][:len(markers[1::2])]
    weight.set_data(ms.Tensor(rigged))
    greedy = SamplingConfig(do_sample=False)
    try:
        free = PriorGenerator(model, PriorGenerationConfig(grid_ids_only=False, check_every=8))
        with pytest.raises(RuntimeError, match="broke the image grid"):
            _prior(pipe, free, PROMPTS, greedy)
        host = PriorGenerator(model, PriorGenerationConfig(device_sampling=False))
        ours, twin = _prior(pipe, device, PROMPTS, greedy), _prior(pipe, host, PROMPTS, greedy)
    finally:
        weight.set_data(ms.Tensor(saved))
    np.testing.assert_array_equal(ours.generated, twin.generated)
    assert (ours.generated[:, :-1] == 0).all()  # every image id scores 0: argmax takes the first
    assert ours.generated[0, -1] >= codes  # the token after the grids stays free: a marker


def test_row_seed_batch_invariance(pipe, device):
    sampling = SamplingConfig(seed=0)
    alone = _prior(pipe, device, PROMPTS[1:], sampling, [8]).generated[0]
    batched = _prior(pipe, device, PROMPTS, sampling, [3, 8]).generated
    np.testing.assert_array_equal(batched[1], alone)
    assert (batched[0] != batched[1]).any()


def test_non_finite_logits_fail_naming_the_token(pipe, device):
    model = pipe.vision_language_encoder
    weight = dict(model.parameters_and_names())["lm_head.weight"]
    saved = weight.asnumpy().copy()
    poisoned = saved.copy()
    poisoned[:, 0] = np.nan
    weight.set_data(ms.Tensor(poisoned))
    try:
        vocab = model.config.text_config.vision_vocab_size
        with pytest.raises(NonFiniteError, match=rf"AR prior \(token 1 logits\) produced {2 * vocab} non-finite "
                                                 rf"values \(NaN/inf\) of {2 * vocab}"):
            _prior(pipe, device, PROMPTS, SamplingConfig())
    finally:
        weight.set_data(ms.Tensor(saved))


def test_all_rows_ended_stops_at_the_next_check(pipe, device):
    """With the end marker set to the greedy first token every row ends at token 0: the loop stops at
    the first flag check (step 8) and fills the rest with the marker."""
    greedy = SamplingConfig(do_sample=False)
    first = int(_prior(pipe, device, PROMPTS[:1], greedy).generated[0, 0])
    key = next(k for k in device._sessions if k[0] == 1)
    session = device._sessions[key]
    device._sessions[key] = DecodeSession(pipe.vision_language_encoder, session.cache, first)
    try:
        prior = _prior(pipe, device, PROMPTS[:1], greedy)
    finally:
        device._sessions[key] = session
    assert (prior.generated == first).all() and prior.host_syncs == 2
    assert session.length == 64 + 7  # the bucketed prompt and 7 decode steps


def test_session_refuses_steps_past_its_plan(pipe, device):
    _prior(pipe, device, PROMPTS[:1], SamplingConfig(do_sample=False))
    session = next(s for k, s in device._sessions.items() if k[0] == 1)
    session.reset()
    ids, mask = np.zeros((1, 64), np.int64), np.ones((1, 64), np.int64)
    prompt_positions = np.broadcast_to(np.arange(64), (3, 1, 64))
    decode_positions = np.broadcast_to(np.arange(64, 66), (1, 3, 2))
    params = sampling_params(SamplingConfig())
    state = session.sample_step(session.sample_prefill(ids, prompt_positions, mask, decode_positions,
                                                       np.full((1, 2), 0.5), params))
    assert state.tokens.shape == (1, 2) and session.length == 65
    with pytest.raises(ValueError, match="every token planned by sample_prefill is sampled"):
        session.sample_step(state)
    session.reset()
    with pytest.raises(ValueError, match="overflow the cache"):
        session.sample_prefill(ids, prompt_positions, mask, decode_positions, np.full((1, 10_000), 0.5), params)
    assert session.length == 0
