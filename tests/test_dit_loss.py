"""DiT flow-matching loss: loss and every parameter gradient equal torch autograd on diffusers'
GlmImageTransformer2DModel (text-to-image and editing through the KV cache), with and without per-block
recompute; host-side sampling of sigma, noise and CFG dropout."""
from __future__ import annotations

import numpy as np
import pytest

from mindglm_image.models.dit.transformer import transformer_inputs
from mindglm_image.scheduler.flow_match import FlowMatchEulerScheduler, FlowMatchEulerSchedulerConfig
from mindglm_image.training.config import DiTLossConfig, OptimizerConfig
from mindglm_image.training.dit_loss import DiTBatchMaker, DiTFlowMatchLoss
from mindglm_image.training.train_step import TrainStep, recompute_blocks
from parity_utils import assert_parity, load_converted

pytestmark = pytest.mark.training  # its own pytest process: README, Two commands

SCHEDULER = FlowMatchEulerSchedulerConfig(use_dynamic_shifting=True, time_shift_type="linear", base_shift=0.25,
                                          max_shift=0.75)


@pytest.fixture(scope="module")
def dit_train(reference_fixture):
    ref = reference_fixture("dit_train")
    return ref, dict(np.load(ref / "dit_train.npz"))


def _loss_inputs(config, a, case):
    p = lambda k: a[f"{case}_{k}"]  # noqa: E731
    main = transformer_inputs(config, p("latents"), p("glyph"), p("prior_ids"), p("prior_drop"), p("timestep") - 1,
                              p("size"), np.zeros_like(p("size")))
    latents, glyph, ids, drop, step, size, crop, cos, sin, text_bias = main
    from mindspore import Tensor
    refs = ()
    if case == "edit":
        size_ref = np.array([[64.0, 64.0]] * 2, np.float32)
        r = transformer_inputs(config, a["edit_ref_latents"], None, a["edit_ref_ids"],
                               np.zeros(a["edit_ref_ids"].shape, bool), np.zeros(2, np.float32), size_ref, size_ref * 0)
        refs = (r[0], r[2], r[5], r[7], r[8])
    return (latents, Tensor(p("noise")), Tensor(p("sigma")), step, glyph, ids, drop, size, crop, cos, sin, text_bias,
            *refs)


@pytest.mark.parity
@pytest.mark.parametrize("recompute", [False, True], ids=["plain", "recompute"])
def test_loss_and_every_gradient_match_torch(dit_train, parity_report, tmp_path, recompute):
    ref, a = dit_train
    model = load_converted("transformer", ref / "transformer", tmp_path)
    if recompute:
        recompute_blocks(model.transformer_blocks)
    for case in ("t2i",) if recompute else ("t2i", "edit"):  # recompute changes the backward graph, not the maths
        step = TrainStep(DiTFlowMatchLoss(model), list(model.get_parameters()), OptimizerConfig())
        loss = step(*_loss_inputs(model.config, a, case)).asnumpy()
        assert_parity(parity_report, f"training/dit_loss_{case}", loss, a[f"{case}_loss"])
        grads = {p.name: g.asnumpy() for p, g in zip(step.params, step.grad_sums)}
        ref_names = sorted(k[len(f"{case}_grad."):] for k in a if k.startswith(f"{case}_grad."))
        assert ref_names == sorted(grads)  # our parameter names are the reference's
        for name in ref_names:
            assert_parity(parity_report, f"training/dit_grads_{case}", grads[name], a[f"{case}_grad.{name}"])


def _sample(h, w, text, rng, refs=()):
    s = {"latents": rng.standard_normal((4, h, w)).astype(np.float32),
         "prior_ids": rng.integers(0, 64, (h // 2) * (w // 2)).astype(np.int32),
         "glyph": rng.standard_normal((text, 24)).astype(np.float32), "size": np.array([8 * h, 8 * w], np.int32)}
    for k, (rh, rw) in enumerate(refs):
        s.update({f"ref_latents_{k}": rng.standard_normal((4, rh, rw)).astype(np.float32),
                  f"ref_prior_ids_{k}": rng.integers(0, 64, (rh // 2) * (rw // 2)).astype(np.int32),
                  f"ref_size_{k}": np.array([8 * rh, 8 * rw], np.int32)})
    return s


def _maker(**loss):
    from mindglm_image.config.dit import GlmImageTransformerConfig

    config = GlmImageTransformerConfig(in_channels=4, out_channels=4, num_layers=1, attention_head_dim=16,
                                       num_attention_heads=2, text_embed_dim=24, prior_vq_quantizer_codebook_size=64)
    return DiTBatchMaker(config, FlowMatchEulerScheduler(SCHEDULER), DiTLossConfig.from_dict(loss),
                         np.full((1, 24), 7.0, np.float32))


def test_sigmas_are_the_schedulers_at_that_resolution():
    """A timestep gets exactly the sigma the inference schedule gives it at that image size."""
    maker = _maker()
    for h, w in ((8, 12), (32, 32)):
        sched = FlowMatchEulerScheduler(SCHEDULER)
        steps = sched.set_timesteps(50, (h * w) // 4)
        np.testing.assert_array_equal(maker.sigmas(steps, (2, 4, h, w)), sched.sigmas[:-1])
    rng = np.random.default_rng(0)
    t = np.array([maker.draw((4, 8, 8), rng)[0] for _ in range(3000)])
    assert t.min() >= 1 and t.max() <= 1000 and len(np.unique(t)) > 900
    # a larger image shifts sigma towards noise (higher mu), as at inference
    assert maker.sigmas(t, (4, 64, 64)).mean() > maker.sigmas(t, (4, 8, 8)).mean() + 0.1


def test_batch_maker_dropout_padding_and_reproducibility():
    rng = np.random.default_rng(0)
    samples = [_sample(8, 12, 5, rng), _sample(8, 12, 3, rng)]
    maker = _maker(prior_drop_prob=0.5, glyph_drop_prob=0.5, text_bucket=4)
    batches = [maker(samples, [np.random.default_rng([s, i]) for i in range(2)]) for s in range(40)]
    again = maker(samples, [np.random.default_rng([0, i]) for i in range(2)])
    for x, y in zip(batches[0], again):
        np.testing.assert_array_equal(x.asnumpy(), y.asnumpy())
    glyph_drops = prior_drops = 0
    for batch in batches:
        glyph, drop = batch[4].asnumpy(), batch[6].asnumpy()
        kept = [s["glyph"].shape[0] for s, g in zip(samples, glyph) if not (g == 7.0).any()]
        # padded to the longest kept glyph (5 or 3 tokens; 1 for the "" embedding) rounded up to the bucket of 4
        assert glyph.shape == (2, -(-max(kept + [1]) // 4) * 4, 24) and drop.shape == (2, 24)
        t = glyph.shape[1]
        for i, s in enumerate(samples):
            if (glyph[i] == 7.0).any():  # dropped: the "" embedding, left-padded with zeros
                glyph_drops += 1
                assert (glyph[i, -1] == 7.0).all() and not glyph[i, :-1].any()
            else:
                n = s["glyph"].shape[0]
                np.testing.assert_array_equal(glyph[i, t - n:], s["glyph"])
                assert not glyph[i, :t - n].any()
            assert drop[i].all() or not drop[i].any()
            prior_drops += int(drop[i].all())
    assert 20 <= glyph_drops <= 60 and 20 <= prior_drops <= 60  # 80 draws at p = 0.5 each


def test_batch_maker_editing_inputs_and_errors():
    rng = np.random.default_rng(0)
    maker = _maker()
    batch = maker([_sample(8, 12, 5, rng, refs=[(8, 8), (4, 4)]) for _ in range(2)], [rng, rng])
    assert len(batch) == 12 + 2 * 5 and tuple(batch[12].shape) == (2, 4, 8, 8) and tuple(batch[17].shape) == (2, 4, 4, 4)
    with pytest.raises(ValueError, match="different 'latents' shapes"):
        maker([_sample(8, 12, 5, rng), _sample(8, 8, 5, rng)], [rng, rng])
    with pytest.raises(ValueError, match="reference images"):
        maker([_sample(8, 12, 5, rng, refs=[(8, 8)]), _sample(8, 12, 5, rng)], [rng, rng])
