"""The Ascend path's weights: a bf16 checkpoint loads into bf16 cells bit for bit (CPU cannot run bf16
MatMul/Gather, so only loading is checked here; the compute path is covered in fp32)."""
from __future__ import annotations

import mindspore as ms
import numpy as np

from mindglm_image.tiny_model import make_tiny_model
from mindglm_image.weights.checkpoint import ShardedCheckpoint
from mindglm_image.weights.components import COMPONENTS, load_component


def test_bf16_checkpoint_loads_exactly_into_bf16_cells(tmp_path):
    tiny = make_tiny_model(tmp_path / "tiny", progress=False)
    for name in ("vision_language_encoder", "transformer", "vae", "text_encoder"):
        spec = COMPONENTS[name]
        cell = load_component(spec, tiny / name, ms.bfloat16)
        ckpt = ShardedCheckpoint(tiny / name, spec.hf_stem)
        params = cell.parameters_dict()
        assert len(params) == len(ckpt.keys())
        for key in ckpt.keys():
            param = params[key]
            assert param.dtype == ms.bfloat16, key
            np.testing.assert_array_equal(param.float().asnumpy(), ckpt.get(key).array(), err_msg=key)
