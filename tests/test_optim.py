"""AdamW + EMA + clipping + LR schedule against torch.optim.AdamW, clip_grad_norm_ and an EMA update."""
from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn

from mindglm_image.config.base import ConfigError
from mindglm_image.training.config import OptimizerConfig, ScheduleConfig
from mindglm_image.training.optim import AdamW, StateShard, learning_rate, step_scalars
from mindglm_image.training.train_step import TrainStep
from parity_utils import assert_parity

pytestmark = pytest.mark.training  # its own pytest process: README, Two commands

CFG = OptimizerConfig(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, ema_decay=0.9, max_grad_norm=1.0)
SCHEDULE = ScheduleConfig(warmup_steps=2, total_steps=5, min_lr_ratio=0.1, cosine=True)


@pytest.mark.parity
@pytest.mark.parametrize("dtype", [ms.float32, ms.float16], ids=["fp32", "fp16-weights"])
def test_adamw_ema_matches_torch(reference_fixture, parity_report, dtype):
    a = dict(np.load(reference_fixture("adamw_ema") / "adamw_ema.npz"))
    n = sum(k.startswith("init_") for k in a)
    params = [Parameter(Tensor(a[f"init_{i}"], dtype), name=f"w{i}") for i in range(n)]
    opt = AdamW(params, CFG)
    for i in range(n):  # fp16 cells: start master and EMA from the exact fp32 values, as torch's weights
        opt.masters[i].set_data(Tensor(a[f"init_{i}"]))
        opt.ema[i].set_data(Tensor(a[f"init_{i}"]))
    for step in range(1, 6):
        lr = learning_rate(step, CFG.lr, SCHEDULE)
        assert lr == pytest.approx(float(a[f"lr_{step}"]), rel=1e-12)
        grads = tuple(Tensor(a[f"grad_{step}_{i}"]) for i in range(n))
        norm = opt(grads, *step_scalars(step, lr, CFG)).asnumpy()
        assert norm == pytest.approx(float(a[f"norm_{step}"]), rel=1e-6)
    tag = "fp32" if dtype == ms.float32 else "fp16"
    for i in range(n):  # the fp32 master weights follow torch's fp32 weights whatever the cell's dtype
        assert_parity(parity_report, f"training/adamw_{tag}_weights", opt.masters[i].asnumpy(), a[f"final_{i}"])
        assert_parity(parity_report, f"training/adamw_{tag}_moments", opt.exp_avg[i].asnumpy(), a[f"exp_avg_{i}"])
        assert_parity(parity_report, f"training/adamw_{tag}_moments", opt.exp_avg_sq[i].asnumpy(), a[f"exp_avg_sq_{i}"])
        assert_parity(parity_report, f"training/adamw_{tag}_ema", opt.ema[i].asnumpy(), a[f"ema_{i}"])
        if dtype == ms.float16:  # the fp16 weight is the master rounded, not a separately drifting copy
            np.testing.assert_array_equal(params[i].asnumpy(), opt.masters[i].asnumpy().astype(np.float16))


def test_non_finite_gradient_updates_nothing():
    params = [Parameter(Tensor(np.ones((2, 3), np.float32)), name="w")]
    opt = AdamW(params, CFG)
    before = {k: [t.asnumpy().copy() for t in group] for k, group in opt.state().items()}
    norm = opt((Tensor(np.array([[1, np.nan, 0], [0, 0, 0]], np.float32)),), *step_scalars(1, 1e-2, CFG)).asnumpy()
    assert not np.isfinite(norm)
    for k, group in opt.state().items():
        for old, new in zip(before[k], group):
            np.testing.assert_array_equal(old, new.asnumpy())


def test_schedule_shape_and_config_errors():
    cosine = ScheduleConfig(warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert learning_rate(5, 1.0, cosine) == 0.5 and learning_rate(10, 1.0, cosine) == 1.0
    assert learning_rate(60, 1.0, cosine) == pytest.approx(0.55) and learning_rate(110, 1.0, cosine) == pytest.approx(0.1)
    assert learning_rate(50, 2.0, ScheduleConfig(total_steps=100, cosine=False)) == 2.0
    with pytest.raises(ConfigError, match="betas"):
        OptimizerConfig.from_dict({"betas": [0.9, 1.5]})
    with pytest.raises(ConfigError, match="warmup_steps=20 exceeds total_steps=10"):
        ScheduleConfig.from_dict({"warmup_steps": 20, "total_steps": 10})


def test_state_shard_pieces_cover_every_element_once():
    """ZeRO-1 layout: the flattened, zero-padded pieces of all ranks concatenate (what AllGather returns) back
    to the tensor, each holding ceil(numel / world) elements whatever the shape; one worker shards nothing."""
    full = np.arange(21, dtype=np.float32).reshape(3, 7) + 1
    for world in (1, 2, 3, 8):
        pieces = [StateShard(r, world).piece(full) for r in range(world)]
        assert {p.size for p in pieces} == {-(-21 // world)}
        np.testing.assert_array_equal(StateShard.unpiece(np.concatenate(pieces), full.shape), full)
        assert np.count_nonzero(np.concatenate(pieces)) == 21  # the padding is zeros
    cell = nn.Cell()
    cell.w, cell.b = Parameter(Tensor(full), name="w"), Parameter(Tensor(full[0].astype(np.float16)), name="b")
    step = TrainStep(cell, [cell.w, cell.b], OptimizerConfig(ema_decay=0.5, shard_state=True), world_size=1)
    assert step.optimizer.shard is None and step.optimizer.masters[0] is cell.w  # shard_state on 1 worker: no-op
    assert step.optimizer.state_elements() == 3 * 21 + 4 * 7  # moments + EMA; the fp16 bias also has a master
    with pytest.raises(ConfigError, match="set optimizer.shard_state=true with it"):
        OptimizerConfig.from_dict({"shard_grads": True})
