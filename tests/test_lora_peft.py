"""LoRA adapters against PEFT on the reference models, both directions: adapters made by PEFT load into
our cells (alone, several with scales, merged at load or unmerged) and give the reference's outputs;
adapters we write load with PEFT and give our outputs."""
from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from parity_utils import assert_parity, load_converted

from mindglm_image.models.dit.transformer import transformer_inputs
from mindglm_image.training.lora import (LoraConfig, adapter_component, apply_adapter, inject_lora, load_adapter,
                                         load_adapter_into, lora_modules, save_adapter)

pytestmark = pytest.mark.parity
DIT_KEYS = ("hidden_states", "encoder_hidden_states", "prior_token_id", "prior_token_drop", "timestep", "target_size",
            "crop_coords")


@pytest.fixture(scope="module")
def ref(reference_fixture):
    folder = reference_fixture("lora_peft")
    return folder, dict(np.load(folder / "lora_peft.npz"))


def _models(ref, work):
    folder, _ = ref
    return (load_converted("transformer", folder / "transformer", work),
            load_converted("vision_language_encoder", folder / "vision_language_encoder", work))


def _dit_out(dit, data):
    return dit(*transformer_inputs(dit.config, *(data[k] for k in DIT_KEYS))).asnumpy()


def test_peft_adapters_load_into_our_models(ref, tmp_path, parity_report):
    folder, data = ref
    dit, ar = _models(ref, tmp_path)
    assert_parity(parity_report, "lora/dit_base", _dit_out(dit, data), data["dit_base"])
    a, b, ar_a = (load_adapter(folder / n) for n in ("dit_a", "dit_b", "ar_a"))
    cells = {"transformer": dit, "vision_language_encoder": ar}
    assert [adapter_component(x, cells) for x in (a, b, ar_a)] == ["transformer", "transformer", "vision_language_encoder"]
    apply_adapter(dit, a, "transformer")
    assert_parity(parity_report, "lora/peft_dit_adapter", _dit_out(dit, data), data["dit_a"])
    apply_adapter(dit, a, "transformer", -0.3)   # now 0.7 x a
    apply_adapter(dit, b, "transformer", 1.5)    # rsLoRA + alpha pattern
    assert_parity(parity_report, "lora/peft_dit_two_adapters_scaled", _dit_out(dit, data), data["dit_a07_b15"])
    apply_adapter(ar, ar_a, "vision_language_encoder")
    logits = ar.logits(data["ar_ids"], data["ar_positions"]).asnumpy()
    assert_parity(parity_report, "lora/peft_ar_adapter", logits, data["ar_a_logits"])

    unmerged, _ = _models(ref, tmp_path / "again")
    load_adapter_into(unmerged, a, "transformer")
    assert_parity(parity_report, "lora/peft_dit_adapter", _dit_out(unmerged, data), data["dit_a"])


def test_our_adapters_load_with_peft(ref, tmp_path, reference_run, parity_report):
    folder, data = ref
    dit, ar = _models(ref, tmp_path)
    rng = np.random.default_rng(7)
    for cell, component, cfg in ((dit, "transformer", LoraConfig(r=3, lora_alpha=6.0)),
                                 (ar, "vision_language_encoder", LoraConfig(r=2, lora_alpha=4.0, use_rslora=True))):
        inject_lora(cell, cfg, component)
        for m in lora_modules(cell).values():
            for p in (m.lora_A.weight, m.lora_B.weight):
                p.set_data(ms.Tensor(0.2 * rng.standard_normal(p.shape, dtype=np.float32)))
        save_adapter(cell, tmp_path / component, cfg, component)
    out = np.load(reference_run("lora_peft_load", folder, tmp_path / "transformer", tmp_path / "vision_language_encoder")
                  / "outputs.npz")
    ours = _dit_out(dit, data)
    assert np.abs(ours - data["dit_base"]).max() > 1e-2 * np.abs(data["dit_base"]).max()  # the adapter matters
    assert_parity(parity_report, "lora/ours_in_peft_dit", ours, out["dit"])
    assert_parity(parity_report, "lora/ours_in_peft_ar", ar.logits(data["ar_ids"], data["ar_positions"]).asnumpy(),
                  out["ar_logits"])
