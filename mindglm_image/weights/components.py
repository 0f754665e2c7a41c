"""The parts of a GLM-Image model folder and how each maps to a MindSpore cell.

One ``ComponentSpec`` per subfolder of the official layout (``model_index.json`` names them). The
converter and the loaders both read this table, so a component is declared once.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Callable

import mindspore as ms
from mindspore import nn
from mindspore.nn.utils import no_init_parameters

from ..config.base import HFConfig
from .checkpoint import ShardedCheckpoint
from .loading import load_tensors_into_cell

#: file stem of our converted (MindSpore) weights, beside config.json in each component folder
MS_STEM = "mindspore_model"


@dataclasses.dataclass(frozen=True)
class ComponentSpec:
    name: str                      # subfolder, e.g. "vision_language_encoder"
    hf_stem: str                   # "model" (transformers) or "diffusion_pytorch_model" (diffusers)
    config_path: str               # "module:Class" of the HFConfig subclass
    cell_path: str                 # "module:Class" of the cell; built as Class(config, dtype=...)

    def config_class(self) -> type[HFConfig]:
        return _import(self.config_path)

    def cell_class(self) -> Callable[..., nn.Cell]:
        return _import(self.cell_path)


def _import(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


COMPONENTS: dict[str, ComponentSpec] = {}


def register(spec: ComponentSpec) -> ComponentSpec:
    COMPONENTS[spec.name] = spec
    return spec


register(ComponentSpec("vision_language_encoder", "model", "mindglm_image.config.ar:GlmImageConfig",
                       "mindglm_image.models.ar.glm_image_ar:GlmImageForConditionalGeneration"))
register(ComponentSpec("transformer", "diffusion_pytorch_model", "mindglm_image.config.dit:GlmImageTransformerConfig",
                       "mindglm_image.models.dit.transformer:GlmImageTransformer2DModel"))
register(ComponentSpec("vae", "diffusion_pytorch_model", "mindglm_image.config.vae:AutoencoderKLConfig",
                       "mindglm_image.models.vae.autoencoder_kl:AutoencoderKL"))
register(ComponentSpec("text_encoder", "model", "mindglm_image.config.t5:T5Config",
                       "mindglm_image.models.glyph.t5_encoder:T5EncoderModel"))


def load_config(spec: ComponentSpec, folder: str | Path) -> HFConfig:
    return spec.config_class().from_json_file(Path(folder) / "config.json")


def build_cell(spec: ComponentSpec, config: HFConfig, dtype: ms.Type = ms.float32) -> nn.Cell:
    """Build the cell with deferred parameter init: no weight memory is allocated until weights load,
    so a 16B model needs only its own size once loaded (and nothing to list its parameter shapes)."""
    with no_init_parameters():
        return spec.cell_class()(config, dtype=dtype)


def load_component(spec: ComponentSpec, folder: str | Path, dtype: ms.Type = ms.float32) -> nn.Cell:
    """Build the cell from ``folder/config.json`` and fill it from the folder's weights.

    Accepts our converted layout (``mindspore_model*.safetensors``) or, when absent, the original
    Hugging Face files: parameter names are the reference's in both, only the file stem differs.
    """
    folder = Path(folder)
    config = load_config(spec, folder)
    cell = build_cell(spec, config, dtype)
    stem = MS_STEM if any(folder.glob(f"{MS_STEM}*.safetensors*")) else spec.hf_stem
    load_tensors_into_cell(cell, ShardedCheckpoint(folder, stem), str(folder))
    cell.set_train(False)
    return cell
