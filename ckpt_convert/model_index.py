"""``model_index.json``: the list of a model folder's parts."""
from __future__ import annotations

import json
from pathlib import Path

from mindglm_image.weights.safetensors_io import CheckpointError


def read_model_index(folder: Path) -> dict:
    path = folder / "model_index.json"
    if not path.is_file():
        raise CheckpointError(f"{path} not found: point --src at a GLM-Image model folder (it holds model_index.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from err


def component_names(index: dict) -> list[str]:
    """Subfolders named by model_index.json (entries whose value is a [library, class] pair)."""
    return [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0] is not None]


def is_model_folder(folder: Path) -> bool:
    """A GLM-Image model folder (ours or Hugging Face's): the only kind ``--overwrite`` may replace."""
    return (folder / "model_index.json").is_file()
