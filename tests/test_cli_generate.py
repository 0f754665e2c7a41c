"""`mindglm-image generate` on the tiny model: a PNG of the asked size, seeded runs reproducible, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mindglm_image.cli import main
from mindglm_image.tiny_model import make_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("cli") / "tiny", progress=False)


def _generate(tiny, out, *extra):
    return main(["generate", "--model", str(tiny), "--prompt", 'a sign that says "hi"', "--height", "64",
                 "--width", "96", "--steps", "2", "--out", str(out), *extra])


@pytest.fixture(scope="module")
def seed3(tiny, tmp_path_factory):
    """One generation with seed 3 and its printed output, shared by the tests that compare against it."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("seed3") / "a.png"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert _generate(tiny, out, "--seed", "3") == 0
    return out, printed.getvalue()


def test_t2i_png_and_seeded_reproducibility(tiny, seed3, tmp_path):
    """The same seed repeats the image exactly, another seed changes it; the format follows --out's extension;
    an existing --out is refused (before any loading) unless --overwrite."""
    first, printed = seed3
    a = np.asarray(Image.open(first))
    assert a.shape == (64, 96, 3) and a.std() > 1
    assert "tok/s" in printed and "s/step" in printed
    (tmp_path / "b.png").write_bytes(b"keep me")
    assert _generate(tiny, tmp_path / "b.png", "--seed", "3") == 2
    assert (tmp_path / "b.png").read_bytes() == b"keep me"
    assert _generate(tiny, tmp_path / "b.png", "--seed", "3", "--overwrite") == 0
    np.testing.assert_array_equal(a, np.asarray(Image.open(tmp_path / "b.png")))
    assert _generate(tiny, tmp_path / "c.jpg", "--seed", "4") == 0
    assert Image.open(tmp_path / "c.jpg").format == "JPEG"
    assert np.abs(a.astype(int) - np.asarray(Image.open(tmp_path / "c.jpg")).astype(int)).max() > 0


def test_i2i_with_two_reference_images_and_a_batch(tiny, tmp_path):
    for i, size in enumerate([(96, 64), (64, 64)]):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(tmp_path / f"r{i}.png")
    assert _generate(tiny, tmp_path / "i2i.png", "--image", str(tmp_path / "r0.png"), "--image", str(tmp_path / "r1.png"),
                     "--greedy") == 0
    assert np.asarray(Image.open(tmp_path / "i2i.png")).shape == (64, 96, 3)
    assert main(["generate", "--model", str(tiny), "--prompt", "one", "--prompt", "two", "--height", "32", "--width", "32",
                 "--steps", "1", "--out", str(tmp_path / "batch.png")]) == 0
    assert (tmp_path / "batch-0.png").is_file() and (tmp_path / "batch-1.png").is_file()
    assert _generate(tiny, tmp_path / "two.png", "--num-images", "2") == 0
    two = [np.asarray(Image.open(tmp_path / f"two-{i}.png")) for i in range(2)]
    assert two[0].shape == (64, 96, 3) and np.abs(two[0].astype(int) - two[1]).max() > 0


@pytest.mark.parametrize("args, message", [
    (["--height", "100"], "height=100 is not a multiple of 32"),
    (["--width", "8192"], "width=8192 is outside the supported range"),
    (["--image", "/nonexistent/ref.png"], "cannot read image '/nonexistent/ref.png'"),
])
def test_bad_arguments_fail_with_a_named_problem(tiny, tmp_path, capsys, args, message):
    assert _generate(tiny, tmp_path / "x.png", *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_missing_model_folder(tmp_path, capsys):
    assert _generate(tmp_path / "nope", tmp_path / "x.png") == 2
    assert "not a complete GLM-Image model folder" in capsys.readouterr().err


def test_converted_layout_generates_the_same_image(tiny, seed3, tmp_path):
    assert main(["convert", "--from", "hf", "--src", str(tiny), "--dst", str(tmp_path / "ms")]) == 0
    assert not list((tmp_path / "ms" / "transformer").glob("diffusion_pytorch_model*"))  # only our weights there
    assert _generate(tmp_path / "ms", tmp_path / "ms.png", "--seed", "3") == 0
    np.testing.assert_array_equal(np.asarray(Image.open(seed3[0])), np.asarray(Image.open(tmp_path / "ms.png")))


def test_output_problems_are_found_before_the_model_loads(tmp_path, capsys):
    """Regression (issue 13, defect 7): --out and --steps problems surfaced only after the whole generation.
    --model points nowhere, so each message proves the check ran before any loading."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "taken.png").write_bytes(b"keep me")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "taken-1.png").write_bytes(b"keep me")
    cases = [(["--steps", "0"], tmp_path / "a.png", "--steps=0 must be at least 1"),
             ([], tmp_path / "file" / "a.png", f"--out {tmp_path / 'file' / 'a.png'}: {tmp_path / 'file'} is a file"),
             ([], tmp_path / "folder.png", f"--out {tmp_path / 'folder.png'} is a folder"),
             ([], "/sys/a.png", "--out /sys/a.png: cannot write in /sys"),
             ([], tmp_path / "taken.png", f"--out {tmp_path / 'taken.png'} already exists; pass --overwrite"),
             (["--num-images", "2"], tmp_path / "taken.png", f"--out {tmp_path / 'taken-1.png'} already exists"),
             ([], tmp_path / "a.txt", "--out " + str(tmp_path / "a.txt") + ": the extension '.txt' names no image format")]
    for extra, out, message in cases:
        assert _generate(tmp_path / "no-model", out, *extra) == 2
        err = capsys.readouterr().err
        assert message in err and "not a complete GLM-Image model folder" not in err, (out, err)
    assert (tmp_path / "taken.png").read_bytes() == b"keep me"
    assert _generate(tmp_path / "no-model", tmp_path / "taken.png", "--overwrite") == 2
    assert "not a complete GLM-Image model folder" in capsys.readouterr().err  # --overwrite: past the output checks


def test_lora_adapters_for_dit_and_ar(tiny, tmp_path, capsys):
    """--lora PATH[:SCALE], repeated: scale 0 changes nothing, real adapters on both models change the image."""
    import mindspore as ms

    from mindglm_image.training.lora import LoraConfig, inject_lora, lora_modules, save_adapter
    from mindglm_image.weights.components import COMPONENTS, load_component

    rng = np.random.default_rng(0)
    for component in ("transformer", "vision_language_encoder"):
        cell = load_component(COMPONENTS[component], tiny / component)
        inject_lora(cell, LoraConfig(r=2), component)
        for m in lora_modules(cell).values():
            m.lora_B.weight.set_data(ms.Tensor(rng.standard_normal(m.lora_B.weight.shape, dtype=np.float32)))
        save_adapter(cell, tmp_path / component, LoraConfig(r=2), component)
    dit, ar = str(tmp_path / "transformer"), str(tmp_path / "vision_language_encoder")
    assert _generate(tiny, tmp_path / "base.png", "--greedy") == 0
    assert _generate(tiny, tmp_path / "zero.png", "--greedy", "--lora", f"{dit}:0") == 0
    assert _generate(tiny, tmp_path / "both.png", "--greedy", "--lora", f"{dit}:0.5", "--lora", ar) == 0
    out = capsys.readouterr().out
    assert "x0.5 merged into transformer" in out and "x1 merged into vision_language_encoder" in out
    base, zero, both = (np.asarray(Image.open(tmp_path / f"{n}.png")).astype(int) for n in ("base", "zero", "both"))
    np.testing.assert_array_equal(base, zero)
    assert np.abs(both - base).max() > 10
    assert _generate(tiny, tmp_path / "bad.png", "--lora", str(tmp_path / "none")) == 2
    assert "is not a PEFT adapter folder" in capsys.readouterr().err
