"""Optimizer-state sharding (ZeRO-1 ``shard_state``, ZeRO-2 ``shard_grads``) on two msrun CPU workers, in one
toy process per rank (``shard_state_worker.py``): each rank holds only its pieces, the results equal the
whole-state optimizer's, and a run resumed from a sharded checkpoint continues bit-exactly. The train-dit job's sharded run is in
``test_train_dit.py::test_msrun_two_cpu_workers_equal_one_worker``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from training_data import run_msrun

pytestmark = pytest.mark.training  # its own pytest process: README, Two commands

ROOT = Path(__file__).resolve().parents[1]


def test_sharded_state_equals_whole_state_on_two_workers(tmp_path):
    texts = run_msrun([str(ROOT / "tests" / "shard_state_worker.py"), str(tmp_path / "out")], tmp_path / "logs")
    ranks = [json.loads(next(line for line in t.splitlines() if line.startswith('{"rank"'))) for t in texts]
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)]
    for r in ranks:
        # w (5, 3), b (7,) fp32 and h (3, 3) fp16 flattened and padded to 16, 8, 10: each rank holds 8, 4, 5
        assert r["piece_shapes"] == {"w": [8], "b": [4], "h": [5]}
        # whole: moments + EMA of 22 fp32 elements (their own masters) and master + moments + EMA of the 9 fp16
        # ones; sharded: master, moments and EMA of the 17 elements of its pieces
        assert r["state_elements"] == [3 * 22 + 4 * 9, 4 * 17]
        # ZeRO-1 sums full gradients, ZeRO-2 only this rank's pieces (reduced every micro-step)
        assert r["grad_sum_shapes"] == [[[5, 3], [7], [3, 3]], [[8], [4], [5]]]
        # the same update code on the same gradients: only the clipping norm (and, ZeRO-2, the micro-batch sum)
        # is added up in another order (measured: ZeRO-1 weights, masters and EMA identical, moments within 6e-9;
        # ZeRO-2 weights within 2e-9, moments 8e-9)
        for diff in r["max_diff"].values():
            assert max(diff.values()) <= 1e-6, r["max_diff"]
        assert r["resumed_equal"]
