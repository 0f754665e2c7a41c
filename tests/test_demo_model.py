"""The built-in demo model (``mindglm_image/demo/model``): the default of ``generate``, the real
architecture (the unmodified reference pipeline draws the same picture from it, also after conversion to
our layout), and it draws what held-out demo prompts ask (checker lower bounds on a small subset)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ckpt_convert.model_folder import convert_model_folder
from mindglm_image.cli import main
from mindglm_image.demo.checker import check_records, detect
from mindglm_image.demo.default_model import DEMO_MODEL_DIR, demo_model_dir, native_side
from mindglm_image.demo.synthetic import DemoDataConfig, write_demo_dataset
from mindglm_image.generation.sampling import SamplingConfig
from mindglm_image.pipeline.glm_image_pipeline import GlmImagePipeline
from parity_utils import assert_parity

pytestmark = pytest.mark.slow
#: held-out prompts scored in CI (the first 8 of scripts/eval_demo.py's 50, same seeds and steps), and the lower
#: bounds asserted on them: the shipped model got every background right there (8/8; 48/50 on all 50) and no
#: shape attribute above 0.25, so only the background has a bound (one miss allowed); README: the figures
SUBSET = 8
MIN_SCORES = {"background": 7 / 8}


@pytest.fixture(scope="module")
def pipe():
    return GlmImagePipeline.from_pretrained(demo_model_dir())


@pytest.fixture(scope="module")
def ref(reference_run):
    out = reference_run("demo_pipeline", str(DEMO_MODEL_DIR))
    return dict(np.load(out / "demo.npz")), json.loads((out / "demo.json").read_text())


def _draw(pipe: GlmImagePipeline, meta: dict, data: dict):
    return pipe(meta["prompt"], height=meta["side"], width=meta["side"], num_inference_steps=meta["steps"],
                guidance_scale=meta["guidance"], prior_token_ids=data["prior"], latents=data["latents"], progress=False)


@pytest.mark.parity
def test_reference_pipeline_draws_the_same_picture(pipe, ref, parity_report):
    data, meta = ref
    prior = pipe.generate_prior([meta["prompt"]], meta["side"], meta["side"], SamplingConfig(do_sample=False),
                                progress=False)
    np.testing.assert_array_equal(prior.prior_ids, data["prior"])  # greedy AR tokens: identical
    out = _draw(pipe, meta, data)
    assert_parity(parity_report, "demo_model/pixels", out.pixels, data["pixels"], tol=1e-4)


@pytest.mark.parity
def test_converted_folder_draws_the_same_picture(ref, tmp_path, parity_report):
    data, meta = ref
    converted = convert_model_folder(DEMO_MODEL_DIR, tmp_path / "converted")
    assert sorted(p.name for p in (converted / "transformer").glob("*.safetensors")) != []
    out = _draw(GlmImagePipeline.from_pretrained(converted), meta, data)
    assert_parity(parity_report, "demo_model/converted_pixels", out.pixels, data["pixels"], tol=1e-4)


def test_generate_without_model_uses_the_demo_model(tmp_path, capsys):
    assert native_side(DEMO_MODEL_DIR) == 128
    out = tmp_path / "demo.png"
    assert main(["generate", "--prompt", "a red circle on the left, on a yellow background", "--steps", "4",
                 "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("no --model: using the built-in demo model") and "MB" in lines[0]
    image = Image.open(out)
    assert image.size == (128, 128) and detect(image).background == "yellow"  # the prompt's background


def test_held_out_prompts_score_above_the_bounds(pipe, tmp_path):
    files = write_demo_dataset(tmp_path / "data", DemoDataConfig(train_size=1, heldout_size=SUBSET, edit_train_size=0,
                                                                 edit_heldout_size=0, sizes=[[128, 128]]),
                               progress=False)
    records = [json.loads(line) for line in files["heldout"].read_text().splitlines()]
    images = tmp_path / "images"
    images.mkdir()
    for i, record in enumerate(records):
        result = pipe(record["caption"], height=128, width=128, num_inference_steps=20, seed=i, progress=False)
        result.images[0].save(images / f"{record['id']}.png")
    summary, _ = check_records(files["heldout"], images)
    assert summary["images"] == SUBSET
    for key, bound in MIN_SCORES.items():
        assert summary[key] >= bound, (key, summary)
