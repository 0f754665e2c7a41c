"""The training jobs end to end on real prepared data from the tiny model: synthetic captioned scenes ->
``prepare-data`` -> ``train-dit`` / ``train-ar`` (LoRA and full) -> the export in out_dir -> ``generate --lora``.
LoRA-config errors come before any compute; an AR job killed after a checkpoint resumes bit-exactly."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mindglm_image.cli import main
from mindglm_image.demo.synthetic import DemoDataConfig, caption, render, sample_scene
from mindglm_image.tiny_model import make_tiny_model
from mindglm_image.training.checkpoint import STATE_FILE, list_checkpoints
from mindglm_image.weights.safetensors_io import SafetensorsFile

pytestmark = [pytest.mark.slow, pytest.mark.training]  # training: its own pytest process (README)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(tiny model, prepared dataset) of four 64x64 synthetic scenes with their captions."""
    root = tmp_path_factory.mktemp("jobs")
    tiny = make_tiny_model(root / "tiny", progress=False)
    rng, cfg = np.random.default_rng(0), DemoDataConfig(sizes=[[64, 64]])
    lines = []
    for i in range(4):
        scene = sample_scene(rng, cfg)
        render(scene).save(root / f"{i}.png")
        lines.append(json.dumps({"id": str(i), "image": f"{i}.png", "caption": caption(scene)}))
    (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["prepare-data", "--data", str(root / "data.jsonl"), "--model", str(tiny), "--out", str(root / "prep"),
                 "--resolution", "64", "--min-side", "32"]) == 0
    return tiny, root / "prep"


def _job(kind: str, tiny: Path, data: Path, out: Path, **fields) -> list[str]:
    cfg = {"model": str(tiny), "data": str(data), "out_dir": str(out), "batch_size": 2, "checkpoint_every": 100,
           "optimizer": {"lr": 1e-2, "ema_decay": 0.5}, "schedule": {"total_steps": 4, "warmup_steps": 1}, **fields}
    path = out.with_suffix(".json")
    path.write_text(json.dumps(cfg))
    return [kind, "--config", str(path)]


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_lora_target_error_comes_before_any_compute(prepared, tmp_path, capsys, monkeypatch):
    from mindglm_image.jobs import train_ar, train_dit

    def no_load(*args):
        raise AssertionError("the model was loaded before the LoRA targets were checked")

    tiny, data = prepared
    for kind, module, target in (("train-dit", train_dit, "to_q"), ("train-ar", train_ar, "q_proj")):
        monkeypatch.setattr(module, "load_component", no_load)
        out = tmp_path / kind
        assert main(_job(kind, tiny, data, out, lora={"target_modules": [target, "no_such_proj"]})) == 2
        assert "LoRA target(s) ['no_such_proj'] name no Linear module" in capsys.readouterr().err
        assert not out.exists()  # no checkpoint, no metrics: nothing ran


def test_dit_lora_job_exports_an_adapter_that_changes_generation(prepared, tmp_path):
    tiny, data = prepared
    out = tmp_path / "dit"
    assert main(_job("train-dit", tiny, data, out, lora={"r": 4, "lora_alpha": 8.0},
                     dit_loss={"glyph_drop_prob": 0.0})) == 0
    adapter = out / "adapter"
    conf = json.loads((adapter / "adapter_config.json").read_text())
    keys = SafetensorsFile(adapter / "adapter_model.safetensors").keys()
    assert conf["peft_type"] == "LORA" and conf["r"] == 4 and conf["base_model_name_or_path"] == str(tiny)
    assert "base_model.model.transformer_blocks.0.attn1.to_q.lora_B.weight" in keys
    # the exported B factors are the checkpoint's raw trained weights (export_ema=false), no longer zero
    state = SafetensorsFile(list_checkpoints(out)[-1] / STATE_FILE)
    b = SafetensorsFile(adapter / "adapter_model.safetensors").get("base_model.model.transformer_blocks.0.attn1.to_q.lora_B.weight").array()
    np.testing.assert_array_equal(b, state.get("weight/transformer_blocks.0.attn1.to_q.lora_B.weight").array())
    assert np.abs(b).max() > 0
    images = {}
    # 4 steps move the factors only a little: scale 4 (PATH:SCALE) makes the change clear of uint8 rounding
    for name, extra in (("base", []), ("lora", ["--lora", f"{adapter}:4"])):
        assert main(["generate", "--model", str(tiny), "--prompt", "a red circle", "--height", "64", "--width", "64",
                     "--steps", "2", "--seed", "1", "--out", str(tmp_path / f"{name}.png"), *extra]) == 0
        images[name] = np.asarray(Image.open(tmp_path / f"{name}.png")).astype(int)
    assert np.abs(images["base"] - images["lora"]).mean() > 1.0


def test_ar_lora_job_learns_and_resumes_bit_exactly(prepared, tmp_path):
    tiny, data = prepared
    out = tmp_path / "ar"
    # all four samples in every batch: each step scores the same tokens, so the loss curve is the learning
    args = _job("train-ar", tiny, data, out, lora={"r": 8, "lora_alpha": 16.0}, batch_size=4, checkpoint_every=20,
                keep_last=3, optimizer={"lr": 3e-2, "ema_decay": 0.5, "max_grad_norm": 0.0},
                schedule={"total_steps": 40, "warmup_steps": 1, "cosine": False})
    assert main(args) == 0
    losses = _losses(out)
    # measured (tiny model, attention-only rank-8 LoRA, deterministic on CPU): 5.44 -> 3.37
    assert len(losses) == 40 and losses[-1] < 0.7 * losses[0], losses
    assert (out / "adapter" / "adapter_config.json").is_file()
    keys = SafetensorsFile(out / "adapter" / "adapter_model.safetensors").keys()
    assert {k.split(".")[-3] for k in keys} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    final = list_checkpoints(out)[-1]
    straight = (final / STATE_FILE).read_bytes()
    shutil.rmtree(final)  # as if killed after the step-20 checkpoint
    assert main(args) == 0
    assert [p.name for p in list_checkpoints(out)] == ["step-00000020", "step-00000040"]
    assert (list_checkpoints(out)[-1] / STATE_FILE).read_bytes() == straight


def test_ar_full_job_exports_an_official_layout_model_with_the_ema(prepared, tmp_path):
    tiny, data = prepared
    out = tmp_path / "full"
    assert main(_job("train-ar", tiny, data, out, export_ema=True, schedule={"total_steps": 2, "warmup_steps": 1})) == 0
    model = out / "model"
    assert (model / "model_index.json").is_file()
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in tiny.iterdir() if not p.name.startswith("."))
    state = SafetensorsFile(list_checkpoints(out)[-1] / STATE_FILE)
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    written = {t.name: t for f in (model / "vision_language_encoder").glob("*.safetensors") for t in SafetensorsFile(f)}
    stored = [k[len("ema/"):] for k in state.keys() if k.startswith("ema/") and k.endswith(name)]  # loss-cell prefix
    assert len(stored) == 1, stored
    ema = state.get(f"ema/{stored[0]}").array()
    raw = state.get(f"weight/{stored[0]}").array()
    value = written[name].array().astype(np.float32)
    assert written[name].dtype == "BF16"  # the tiny model's dtype: the export keeps each tensor's source dtype
    np.testing.assert_allclose(value, ema, rtol=2**-8, atol=0)  # the EMA, rounded to bf16
    assert np.abs(value - raw).max() > 4 * np.abs(value - ema).max()  # not the raw weights
    # the standalone export of the same checkpoint, raw weights this time, into another folder (a fresh model
    # cell without the loss cell's name prefix)
    assert main(["export", str(out), "--out", str(tmp_path / "raw"), "--no-ema"]) == 0
    again = {t.name: t for f in (tmp_path / "raw" / "model" / "vision_language_encoder").glob("*.safetensors")
             for t in SafetensorsFile(f)}
    np.testing.assert_allclose(again[name].array().astype(np.float32), raw, rtol=2**-8, atol=0)
    assert main(["export", str(tmp_path / "nothing")]) == 2  # no checkpoint there: a clear error, not a traceback
    # a second export of a finished job replaces the folder with a complete one
    assert main(_job("train-ar", tiny, data, out, export_ema=True, schedule={"total_steps": 2, "warmup_steps": 1})) == 0
    assert (model / "model_index.json").is_file()
