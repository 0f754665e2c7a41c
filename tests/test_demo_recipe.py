"""The demo training recipe end to end at a micro size (one step per job, one-layer model configs): every
stage runs, records its time and is skipped on a rerun; the result is an official-layout model folder
that the pipeline loads and draws with, holding the trained VAE's latent statistics, the demo tokenizer
and no training-only tensor."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mindglm_image.config.base import ConfigError
from mindglm_image.demo.init_model import DEMO_CONFIG_DIR
from mindglm_image.demo.recipe import STAGES, TIMINGS, DemoRecipeConfig, run_recipe, stage_outputs
from mindglm_image.training.checkpoint import TRAINING_ONLY_PREFIX
from mindglm_image.weights.safetensors_io import SafetensorsFile

pytestmark = pytest.mark.training  # its own pytest process: README, Two commands

_JOB = {"batch_size": 2, "checkpoint_every": 1, "keep_last": 1, "schedule": {"total_steps": 1},
        "optimizer": {"lr": 1e-3, "ema_decay": 0.0}}


def _micro_configs(folder: Path) -> Path:
    """configs/demo with one layer per transformer stack (the recipe's code paths, a fraction of the compile)."""
    shutil.copytree(DEMO_CONFIG_DIR, folder)
    edits = {"transformer.json": lambda c: c.update(num_layers=1),
             "text_encoder.json": lambda c: c.update(num_layers=1),
             "vision_language_encoder.json": lambda c: (c["text_config"].update(num_hidden_layers=1),
                                                        c["vision_config"].update(depth=1))}
    for name, edit in edits.items():
        config = json.loads((folder / name).read_text())
        edit(config)
        (folder / name).write_text(json.dumps(config))
    return folder


def test_bad_recipe_config_fails_before_any_stage(tmp_path):
    with pytest.raises(ConfigError, match="batch_size"):
        DemoRecipeConfig.from_dict({"work_dir": str(tmp_path), "dit": {"batch_size": 0}})
    assert not any(tmp_path.iterdir())


def test_init_from_starts_the_stages_from_a_finished_model(tmp_path):
    """``init_from``: the init stage copies that folder (the later stages then continue training it); a folder
    that is not a model is refused before any stage."""
    with pytest.raises(ConfigError, match="init_from='nowhere' is not a model folder"):
        DemoRecipeConfig.from_dict({"work_dir": str(tmp_path / "w"), "init_from": "nowhere"})
    source = tmp_path / "finished"
    files = {"model_index.json": '{"_class_name": "GlmImagePipeline"}', "vae/config.json": '{"latent_channels": 4}',
             "vae/diffusion_pytorch_model.safetensors": "weights"}
    for name, text in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    work = tmp_path / "work"
    for stage, marker in stage_outputs(work).items():  # every other stage counts as finished
        if stage != "init":
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("{}")
    logs: list[str] = []
    run_recipe(DemoRecipeConfig.from_dict({"work_dir": str(work), "init_from": str(source)}), progress=False,
               log=logs.append)
    assert [line for line in logs if "running" in line] == ["[train-demo] init: running"]
    assert {str(f.relative_to(work / "init")): f.read_text() for f in (work / "init").rglob("*") if f.is_file()} == files


@pytest.mark.slow
def test_micro_recipe_trains_every_stage_into_a_loadable_model(tmp_path):
    cfg = DemoRecipeConfig.from_dict({
        "work_dir": str(tmp_path / "work"), "model_configs": str(_micro_configs(tmp_path / "configs")),
        "data": {"train_size": 4, "heldout_size": 1, "edit_train_size": 1, "edit_heldout_size": 1,
                 "sizes": [[128, 128]]},
        "prepare": {"resolution": 128, "min_side": 128, "max_aspect": 1.0},
        "vae": {**_JOB, "vae_loss": {"crop": 32}}, "vae_full": {**_JOB, "vae_loss": {"crop": 128}}, "vq": _JOB,
        "dit": _JOB, "ar": _JOB})
    logs: list[str] = []
    out = run_recipe(cfg, tmp_path / "model", progress=False, log=logs.append)
    timings = json.loads((tmp_path / "work" / TIMINGS).read_text())
    assert [t["stage"] for t in timings] == list(STAGES) and all(t["seconds"] > 0 for t in timings)
    # 1. a rerun skips every finished stage
    logs.clear()
    assert run_recipe(cfg, progress=False, log=logs.append) == tmp_path / "work" / "ar" / "model"
    assert len(logs) == len(STAGES) and all(line.startswith(f"[train-demo] {s}: done") for line, s in zip(logs, STAGES))
    # 2. the exported folder: measured latent statistics, the demo tokenizer, no training-only tensors
    vae = json.loads((out / "vae" / "config.json").read_text())
    assert vae["latents_std"] != [1.0] * 4 and all(s > 0 for s in vae["latents_std"])
    vocab = json.loads((out / "processor" / "tokenizer.json").read_text())["model"]["vocab"]
    assert "Ġcircle" in vocab and "Ġbackground" in vocab
    ar_files = sorted((out / "vision_language_encoder").glob("*.safetensors"))
    assert ar_files and not any(k.startswith(TRAINING_ONLY_PREFIX) for f in ar_files for k in SafetensorsFile(f).keys())
    # 3. the pipeline loads it and draws a 128-px image
    from mindglm_image.pipeline.glm_image_pipeline import GlmImagePipeline

    result = GlmImagePipeline.from_pretrained(out)("a red circle on the left, on a yellow background", height=128,
                                                   width=128, num_inference_steps=2, progress=False)
    assert result.pixels.shape == (1, 128, 128, 3) and np.isfinite(result.pixels).all()
