"""AR SFT loss: the batch (ids, 3-D positions, labels) rebuilt from prepared samples equals the reference's,
and the loss and every parameter gradient (MindSpore grad in graph mode) equal torch autograd on
transformers' GlmImageForConditionalGeneration with the same masked next-token CE written in torch."""
from __future__ import annotations

import numpy as np
import pytest
from grad_utils import LossAndGrads
from parity_utils import assert_parity, load_converted

from mindglm_image.training.ar_loss import ARSFTLoss, ar_trainable_parameters, collate_ar, sequence_positions
from mindglm_image.training.lora import load_adapter, load_adapter_into, lora_modules, lora_parameters

pytestmark = pytest.mark.training  # its own pytest process: README, Two commands

PAD = 299  # as tests/reference/ar_text.py


@pytest.fixture(scope="module")
def ref(reference_fixture, tmp_path_factory):
    folder = reference_fixture("ar_sft")
    model = load_converted("vision_language_encoder", folder / "vision_language_encoder", tmp_path_factory.mktemp("sft"))
    return model, dict(np.load(folder / "ar_sft.npz"))


def _samples(data):
    return [{"ar_input_ids": data[f"sample{b}_ids"], "ar_labels": data[f"sample{b}_labels"],
             "ar_image_grid_thw": data[f"sample{b}_grids"]} for b in range(2)]


@pytest.mark.parity
def test_batch_equals_reference(ref):
    model, data = ref
    ids, positions, mask, labels = collate_ar(_samples(data), model.config, PAD, length=data["ids"].shape[1])
    for ours, name in ((ids, "ids"), (positions, "positions"), (mask, "mask"), (labels, "labels")):
        np.testing.assert_array_equal(ours.asnumpy(), data[name])


@pytest.mark.parity
def test_loss_and_every_gradient_equal_torch_autograd(ref, parity_report):
    model, data = ref
    batch = collate_ar(_samples(data), model.config, PAD, length=data["ids"].shape[1])
    params = ar_trainable_parameters(model)
    names = [p.name for p in params]
    assert set(names) == {k[len("grad:"):] for k in data if k.startswith("grad:")}  # torch's non-None grads
    model.set_train(True)
    loss, grads = LossAndGrads(ARSFTLoss(model), params)(*batch)
    assert_parity(parity_report, "training/ar_sft_loss", loss.asnumpy(), data["loss"])
    worst = 0.0
    for name, grad in zip(names, grads):
        worst = max(worst, assert_parity(parity_report, "training/ar_sft_grads", grad.asnumpy(), data[f"grad:{name}"]))
    assert worst > 0  # the comparison really ran over every tensor
    model.set_train(False)


@pytest.mark.parity
def test_lora_loss_and_gradients_equal_peft_autograd(ref, reference_fixture, parity_report, tmp_path):
    """AR SFT with LoRA: the adapter PEFT trained from loads into our model; loss and every lora_A/lora_B
    gradient equal torch autograd through PEFT's LoRA layers."""
    folder = reference_fixture("ar_sft")
    data = ref[1]
    model = load_converted("vision_language_encoder", folder / "vision_language_encoder", tmp_path)
    load_adapter_into(model, load_adapter(folder / "ar_lora"), "vision_language_encoder")
    params = lora_parameters(model)
    names = [f"{m}.lora_{x}" for m in lora_modules(model) for x in "AB"]  # lora_parameters' order
    expected = {k[len("lora_grad:"):]: v for k, v in data.items() if k.startswith("lora_grad:")}
    assert len(params) == len(expected) == 2 * 4 * model.config.text_config.num_hidden_layers
    model.set_train(True)
    loss, grads = LossAndGrads(ARSFTLoss(model), params)(*collate_ar(_samples(data), model.config, PAD,
                                                                     length=data["ids"].shape[1]))
    assert_parity(parity_report, "training/ar_sft_lora_loss", loss.asnumpy(), data["lora_loss"])
    assert abs(float(data["lora_loss"]) - float(data["loss"])) > 1e-3  # the adapter changes the loss
    for name, grad in zip(names, grads):
        assert_parity(parity_report, "training/ar_sft_lora_grads", grad.asnumpy(), expected[name])


def test_bad_samples_are_named(ref):
    model, data = ref
    ids, labels, grids = data["sample1_ids"], data["sample1_labels"], data["sample1_grids"]
    with pytest.raises(ValueError, match="no labelled token"):
        sequence_positions(ids, np.full(ids.shape, -100), grids, model.config)
    with pytest.raises(ValueError, match="plan"):
        sequence_positions(np.concatenate([ids, ids[-3:]]), np.concatenate([labels, ids[-3:]]), grids, model.config)
    with pytest.raises(ValueError, match="shorter than the longest"):
        collate_ar(_samples(data), model.config, PAD, length=4)


def test_padding_to_a_multiple_keeps_the_loss_and_one_graph_shape(ref):
    """The job pads every batch to a multiple of 64 tokens (one compiled graph for prompts of different
    lengths); the extra padding is masked, so the loss equals the tightly padded one."""
    model, data = ref
    samples = _samples(data)
    tight = collate_ar(samples, model.config, PAD)
    padded = collate_ar(samples, model.config, PAD, multiple=64)
    longest = max(len(s["ar_input_ids"]) for s in samples)
    assert padded[0].shape[1] == -(-longest // 64) * 64 > tight[0].shape[1] == longest
    assert collate_ar(samples[:1], model.config, PAD, multiple=64)[0].shape == (1, padded[0].shape[1])
    loss = ARSFTLoss(model)
    np.testing.assert_allclose(loss(*padded).asnumpy(), loss(*tight).asnumpy(), rtol=1e-5)
