"""AR SFT with LoRA end to end on the tiny model: prepare-data -> ARSFTLoss -> LoRA gradients -> a few
optimizer steps -> PEFT-format adapter -> ``GlmImagePipeline(lora=...)``: the loss falls by a large factor
and greedy generation then reproduces the edit's target tokens, which the base model does not."""
from __future__ import annotations

import json

import mindspore as ms
import numpy as np
import pytest
from grad_utils import LossAndGrads
from PIL import Image

from mindglm_image.generation.sampling import SamplingConfig
from mindglm_image.pipeline.glm_image_pipeline import GlmImagePipeline
from mindglm_image.tiny_model import make_tiny_model
from mindglm_image.training.ar_loss import ARSFTLoss, collate_ar
from mindglm_image.training.data import PrepareDataConfig, PreparedDataset, prepare_dataset
from mindglm_image.training.lora import LoraConfig, inject_lora, lora_parameters, save_adapter

pytestmark = pytest.mark.training  # its own pytest process: README, Two commands

STEPS = 60


def _adam(params, grads, state, step, lr=1e-2, b1=0.9, b2=0.999, eps=1e-8):
    """A minimal host-side Adam for this test; jobs use the engine's TrainStep and AdamW."""
    for i, (p, g) in enumerate(zip(params, grads)):
        g = g.asnumpy()
        m, v = state.get(i, (0.0, 0.0))
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        state[i] = (m, v)
        p.set_data(ms.Tensor(p.asnumpy() - lr * (m / (1 - b1**step)) / (np.sqrt(v / (1 - b2**step)) + eps)))


@pytest.mark.slow
def test_lora_sft_learns_an_edit_and_the_adapter_generates_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDGLM_KERNELS", "composite")  # the pipeline's own AR model is trained below: no twins
    tiny = make_tiny_model(tmp_path / "tiny", progress=False)
    rng = np.random.default_rng(0)
    for name in ("src", "dst"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    (tmp_path / "data.jsonl").write_text(json.dumps({"id": "e", "source": "src.png", "instruction": "swap",
                                                     "target": "dst.png"}) + "\n")
    pipe = GlmImagePipeline.from_pretrained(tiny)
    sample = PreparedDataset(prepare_dataset(tmp_path / "data.jsonl", tiny, tmp_path / "prepared",
                                             PrepareDataConfig(resolution=64, min_side=32), pipe=pipe,
                                             progress=False))[0]
    target = sample["ar_labels"][sample["ar_labels"] != -100]

    def greedy(p):
        return p("swap", image=[str(tmp_path / "src.png")], height=64, width=64, num_inference_steps=1,
                 sampling=SamplingConfig(do_sample=False), progress=False).prior.generated[0]

    assert not np.array_equal(greedy(pipe), target)
    model = pipe.vision_language_encoder
    cfg = LoraConfig(r=8, lora_alpha=16.0)
    inject_lora(model, cfg, "vision_language_encoder")
    params = lora_parameters(model)
    step_fn = LossAndGrads(ARSFTLoss(model), params)
    batch = collate_ar([sample], model.config)
    state, losses = {}, []
    for step in range(1, STEPS + 1):
        loss, grads = step_fn(*batch)
        losses.append(float(loss.asnumpy()))
        _adam(params, grads, state, step)
    final = float(step_fn(*batch)[0].asnumpy())
    assert final < losses[0] / 20, (losses[0], final)
    save_adapter(model, tmp_path / "adapter", cfg, "vision_language_encoder")

    tuned = GlmImagePipeline.from_pretrained(tiny, lora=[(tmp_path / "adapter", 1.0)])
    np.testing.assert_array_equal(greedy(tuned), target)
