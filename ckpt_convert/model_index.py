"""``model_index.json``: the list of a model folder's parts."""
from __future__ import annotations

from pathlib import Path

from mindglm_image.config.base import read_json_config
from mindglm_image.weights.safetensors_io import CheckpointError


def read_model_index(folder: Path) -> dict:
    return read_json_config(folder / "model_index.json", "model_index.json", "point --src at a GLM-Image model folder "
                            "(it holds model_index.json)", "restore it from the original checkpoint", CheckpointError)


def component_names(index: dict) -> list[str]:
    """Subfolders named by model_index.json (entries whose value is a [library, class] pair)."""
    return [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0] is not None]


def is_model_folder(folder: Path) -> bool:
    """A GLM-Image model folder (ours or Hugging Face's): the only kind ``--overwrite`` may replace."""
    return (folder / "model_index.json").is_file()
