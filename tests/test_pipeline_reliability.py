"""Pipeline guarantees on the tiny model: batch invariance, non-finite detection, argument checks,
large reference images."""
from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

from mindglm_image.finite import NonFiniteError
from mindglm_image.pipeline.glm_image_pipeline import GlmImagePipeline
from mindglm_image.tiny_model import make_tiny_model

SIZE = dict(height=64, width=64, num_inference_steps=2, progress=False)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return GlmImagePipeline.from_pretrained(make_tiny_model(tmp_path_factory.mktemp("rel") / "tiny", progress=False))


def test_image_does_not_depend_on_batch_neighbours(pipe):
    """A prompt without quoted text batched with one whose quoted text is long (its glyph embeddings are
    then left-padded) gives the image it gives alone, with the same seed."""
    plain, quoted = "a red cat on a chair", 'a shop sign that says "GRAND OPENING TODAY: EVERYTHING HALF PRICE"'
    alone = pipe(plain, seed=[3], **SIZE).pixels[0]
    batched = pipe([quoted, plain], seed=[7, 3], **SIZE)
    assert (batched.timings.denoise_host_syncs, batched.timings.images) == (1, 2)  # one readback for the batch
    np.testing.assert_allclose(batched.pixels[1], alone, atol=1e-5)
    np.testing.assert_allclose(batched.pixels[0], pipe(quoted, seed=[7], **SIZE).pixels[0], atol=1e-5)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(height="64"), TypeError, "height must be an integer, got str '64'"),
    (dict(num_inference_steps=2.5), TypeError, "num_inference_steps must be an integer"),
    (dict(num_inference_steps=0), ValueError, "num_inference_steps=0 must be at least 1"),
    (dict(guidance_scale=float("inf")), ValueError, "guidance_scale=inf must be a finite number >= 0"),
    (dict(guidance_scale=float("nan")), ValueError, "guidance_scale=nan must be a finite number"),
    (dict(guidance_scale=-2.0), ValueError, "guidance_scale=-2.0 must be a finite number >= 0"),
    (dict(guidance_scale="1.5"), TypeError, "guidance_scale must be a number"),
    (dict(seed=-1), ValueError, "seed=-1 must be at least 0"),
    (dict(seed=[1, 2]), ValueError, "2 seeds for 1 prompts"),
    (dict(num_images_per_prompt=0), ValueError, "num_images_per_prompt=0 must be at least 1"),
    (dict(prompt=["ok", 3]), TypeError, "prompt must be a string or a list of strings"),
    (dict(prompt="bad \udcff byte"), ValueError, "prompt 0 holds an undecodable byte at character 4"),
    (dict(latents=np.zeros((1, 4, 8, 8), np.float32)), ValueError, "latents must have shape"),
])
def test_nonsense_arguments_rejected_before_model_work(pipe, monkeypatch, kwargs, error, match):
    def fail(*args, **kw):
        raise AssertionError("model work started before the arguments were checked")

    monkeypatch.setattr(pipe.glyph, "encode_prompt", fail)
    monkeypatch.setattr(pipe, "generate_prior", fail)
    call = {"prompt": "a cat", **SIZE, **kwargs}
    with pytest.raises(error, match=match):
        pipe(**call)


@pytest.fixture
def poisoned(pipe):
    """Set one weight of a component to NaN for the test, then restore it."""
    touched = []

    def poison(param):
        touched.append((param, param.asnumpy().copy()))
        values = param.asnumpy().copy()
        values.flat[0] = np.nan
        param.set_data(ms.Tensor(values))

    yield poison
    for param, values in touched:
        param.set_data(ms.Tensor(values))


@pytest.mark.parametrize("component, stage", [
    ("transformer", r"denoising step 1/2 \(DiT velocity\)"),
    ("vae", "VAE decode"),
    ("text_encoder", "Glyph-byT5 text encoder"),
    ("vision_language_encoder", r"AR prior \(token 1 logits\)"),
])
def test_non_finite_weights_fail_naming_the_stage(pipe, poisoned, component, stage):
    cell = getattr(pipe, component)
    name = {"transformer": "proj_out.weight", "vae": "decoder.conv_out.weight",
            "text_encoder": "encoder.final_layer_norm.weight", "vision_language_encoder": "lm_head.weight"}[component]
    poisoned(dict(cell.parameters_and_names())[name])
    with pytest.raises(NonFiniteError, match=f"{stage} produced .* non-finite values"):
        pipe('a sign "hi"', seed=0, **SIZE)


def test_cli_writes_nothing_for_non_finite_output(pipe, poisoned, monkeypatch, tmp_path, capsys):
    from mindglm_image import cli

    monkeypatch.setattr(GlmImagePipeline, "from_pretrained", classmethod(lambda cls, *a, **k: pipe))
    poisoned(dict(pipe.transformer.parameters_and_names())["proj_out.weight"])
    out = tmp_path / "out.png"
    rc = cli.main(["generate", "--model", str(tmp_path), "--prompt", "a cat", "--height", "64", "--width", "64",
                   "--steps", "2", "--out", str(out)])
    assert rc == 2 and "denoising step 1/2" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("width, height", [(4000, 3000), (200, 120)])
def test_reference_photo_of_any_size_works(pipe, monkeypatch, width, height):
    """The VAE encodes a reference image at the size its AR token grid implies (a 4000 x 3000 phone photo
    used to be VAE-encoded at full size, and its grid then disagreed with the AR one)."""
    from mindglm_image.pipeline import glm_image_pipeline

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))
    sizes = []
    real = glm_image_pipeline.vae_input
    monkeypatch.setattr(glm_image_pipeline, "vae_input", lambda img, size: sizes.append(size) or real(img, size))
    out = pipe("make it blue", image=[photo], seed=[0], **SIZE)
    assert out.pixels.shape == (1, 64, 64, 3) and np.isfinite(out.pixels).all()
    _, grids, _ = pipe.encode_references([[photo]])
    (_, grid_h, grid_w), = grids[0]
    assert sizes == [(grid_h * 2 * 16, grid_w * 2 * 16)]  # 2x2 DiT patches of 16 px per AR token
    assert max(sizes[0]) <= 2 * 256  # the tiny processor's budget: longest side 256 px after halving


def test_cli_batch_gives_each_prompt_its_solo_image(pipe, tmp_path):
    """The i-th --prompt uses seed SEED + i: batched with a quoted-text prompt (through the stage-overlap
    engine), it gives its solo image."""
    from mindglm_image import cli

    common = ["generate", "--model", str(pipe.folder), "--height", "64", "--width", "64", "--steps", "2"]
    assert cli.main([*common, "--seed", "5", "--prompt", 'a sign "OPEN ALL NIGHT"', "--prompt", "a dog", "--out",
                     str(tmp_path / "batch.png")]) == 0
    assert cli.main([*common, "--seed", "6", "--prompt", "a dog", "--out", str(tmp_path / "solo.png")]) == 0
    batched = np.asarray(Image.open(tmp_path / "batch-1.png"), dtype=np.int16)
    solo = np.asarray(Image.open(tmp_path / "solo.png"), dtype=np.int16)
    assert np.abs(batched - solo).max() <= 1  # float rounding of batched matmuls may flip a uint8 level
