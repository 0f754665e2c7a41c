"""Command-line errors are one clear line (no traceback), found before the model loads; --help shows defaults;
compiling the DiT prints no MindSpore side-effect warnings."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from mindglm_image import cli
from mindglm_image.runtime import DeviceUnavailableError, setup_runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _generate(tmp_path, *flags: str) -> list[str]:
    return ["generate", "--model", str(tmp_path / "no-model-here"), "--prompt", "a cat", "--height", "64",
            "--width", "64", "--out", str(tmp_path / "out.png"), *flags]


@pytest.mark.parametrize("flags, message", [
    (["--guidance", "nan"], "--guidance=nan must be a finite number >= 0"),
    (["--guidance", "inf"], "--guidance=inf must be a finite number >= 0"),
    (["--guidance", "-1"], "--guidance=-1.0 must be a finite number >= 0"),
    (["--num-images", "0"], "--num-images=0 must be at least 1"),
    (["--seed", "-3"], "--seed=-3 must be at least 0"),
    (["--prompt", "bad \udcff byte"], "--prompt 1 holds an undecodable byte at character 4"),
])
def test_bad_arguments_fail_before_the_model_loads(tmp_path, capsys, flags, message):
    assert cli.main(_generate(tmp_path, *flags)) == 2
    err = capsys.readouterr().err
    assert message in err and "no-model-here" not in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_device_without_runtime_is_one_clear_error(tmp_path):
    """A fresh process (the device can be chosen once per process): Ascend/GPU on a CPU-only MindSpore."""
    for device in ("Ascend", "gpu"):
        run = subprocess.run([sys.executable, "-m", "mindglm_image.cli", *_generate(tmp_path, "--device", device)],
                             capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
        expected = {"Ascend": "Ascend", "gpu": "GPU"}[device]
        assert run.returncode == 2, run.stderr[-2000:]
        assert f"error: device {expected} is not available" in run.stderr and "--device CPU" in run.stderr
        assert "Traceback" not in run.stderr and "C++ Call Stack" not in run.stderr


def test_unknown_device_named():
    with pytest.raises(DeviceUnavailableError, match="device 'TPU' is not one of CPU, Ascend, GPU"):
        setup_runtime("TPU")


def test_help_shows_defaults():
    text = cli.build_parser()._subparsers._group_actions[0].choices["generate"].format_help()
    for shown in ("(default: 1.5)", "(default: 50)", "the built-in demo model", "(default: out.png)"):
        assert shown in text


def test_dit_compiles_without_side_effect_warnings(tmp_path, capfd):
    """Velocity-only calls used to compile the key/value collection and drop it, warning on every compile."""
    from mindglm_image.models.dit.transformer import transformer_inputs
    from mindglm_image.tiny_model import make_tiny_model
    from mindglm_image.weights.components import COMPONENTS, load_component

    folder = make_tiny_model(tmp_path / "tiny", progress=False)
    model = load_component(COMPONENTS["transformer"], folder / "transformer")
    cfg = model.config
    ids = np.zeros((1, 16), np.int64)
    capfd.readouterr()
    out = model(*transformer_inputs(cfg, np.zeros((1, cfg.in_channels, 8, 8), np.float32),
                                    np.zeros((1, 3, cfg.text_embed_dim), np.float32), ids, ids.astype(bool),
                                    np.ones(1, np.float32), np.full((1, 2), 64, np.float32), np.zeros((1, 2), np.float32)))
    assert out.shape == (1, cfg.out_channels, 8, 8)
    assert "side effect nodes were eliminated" not in capfd.readouterr().err
