"""The demo model that ships inside the package (``mindglm_image/demo/model/``): the default of ``generate``.

It is the official-layout folder that ``scripts/train_demo.sh mindglm_image/demo/model`` ends in (every
component trained by our jobs on the synthetic shapes data, at 128 x 128; the recipe copies it here
atomically). It draws what the demo captions describe; for anything else use the real checkpoint with
``--model``.
"""
from __future__ import annotations

import json
from pathlib import Path

#: the shipped model folder (package data, see setup.py)
DEMO_MODEL_DIR = Path(__file__).resolve().parent / "model"
#: side in pixels when a model folder does not name one (the real model's default request)
DEFAULT_SIDE = 1024


def demo_model_dir() -> Path:
    """The shipped demo model folder, or a clear error if this installation lacks it."""
    if not (DEMO_MODEL_DIR / "model_index.json").is_file():
        raise FileNotFoundError(f"the built-in demo model is missing from this installation ({DEMO_MODEL_DIR}); "
                                "reinstall mindglm-image, or pass --model with a GLM-Image model folder")
    return DEMO_MODEL_DIR


def native_side(model: str | Path) -> int:
    """The image side a model folder was made for: its VAE config's ``sample_size`` when that is an int (the
    demo model's 128), else ``DEFAULT_SIDE``."""
    config = Path(model) / "vae" / "config.json"
    if config.is_file():
        size = json.loads(config.read_text(encoding="utf-8")).get("sample_size")
        if isinstance(size, int) and size % 32 == 0 and size >= 64:
            return size
    return DEFAULT_SIDE


def folder_megabytes(folder: Path) -> float:
    """Size of every file under ``folder`` in MB (the one line ``generate`` prints names it)."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
