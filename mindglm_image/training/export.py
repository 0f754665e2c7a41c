"""The export of a finished training job: what inference and other tools load.

LoRA: the trained adapter in PEFT format (``<out_dir>/adapter``; ``generate --lora``, PEFT on the
reference model). Full fine-tune: the trained component written into a copy of the model folder in
the official layout (``<out_dir>/model``). The weights come from the job's final checkpoint, raw or
their EMA (``TrainConfig.export_ema``). Both folders are built aside and renamed into place, so a
finished export is only ever replaced by another finished one. ``export_checkpoint`` does the same for
any finished checkpoint of a job after the fact (``mindglm-image export``).
"""
from __future__ import annotations

import json
from pathlib import Path

from mindspore import nn

from ..weights.components import COMPONENTS, load_component
from ..weights.safetensors_io import CheckpointError
from .checkpoint import TRAINER_FILE, list_checkpoints, load_trained_weights
from .config import TrainConfig
from .lora import LoraConfig, inject_lora, save_adapter, save_merged_model

ADAPTER_DIR = "adapter"
MODEL_DIR = "model"


def export_trained(cfg: TrainConfig, cell: nn.Cell, component: str, checkpoint: str | Path) -> Path:
    """Load ``checkpoint``'s trained weights (or EMA) into ``cell`` (the model ``component`` the job trained,
    LoRA injected when ``cfg.lora`` is set) and write the export; returns its folder."""
    load_trained_weights(checkpoint, cell, ema=cfg.export_ema)
    out = Path(cfg.out_dir)
    if cfg.lora is not None:
        return save_adapter(cell, out / ADAPTER_DIR, LoraConfig.from_dict(cfg.lora), component,
                            base_model_name_or_path=cfg.model)
    return save_merged_model(cfg.model, out / MODEL_DIR, {component: cell}, overwrite=True)


def export_checkpoint(source: str | Path, out_dir: str | Path | None = None, ema: bool | None = None) -> Path:
    """Export a finished checkpoint (``source``: its folder, or a job's ``out_dir`` for the newest one) as its
    job would have at the end, into ``out_dir`` (default: the job's) with ``ema`` overriding ``export_ema``;
    the model, component and LoRA settings come from the checkpoint's own job config."""
    source = Path(source)
    if not (source / TRAINER_FILE).is_file():
        found = list_checkpoints(source)
        if not found:
            raise FileNotFoundError(f"{source} is neither a finished checkpoint (no {TRAINER_FILE}) nor a job out_dir "
                                    "with one; pass <out_dir>/checkpoints/step-N or the job's out_dir")
        source = found[-1]
    state = json.loads((source / TRAINER_FILE).read_text(encoding="utf-8"))
    component = state.get("fingerprint", {}).get("component")
    if component not in COMPONENTS:
        raise CheckpointError(f"{source} does not name the component it trained (written by an older version); "
                              "rerun its job with export=true instead")
    overrides = {"export_ema": ema} if ema is not None else {}
    if out_dir is not None:
        overrides["out_dir"] = str(out_dir)
    cfg = TrainConfig.from_dict({**state["config"], **overrides})
    model = Path(cfg.model) / component
    if not model.is_dir():
        raise FileNotFoundError(f"the checkpoint was trained on {cfg.model}, which lacks {component}/; the export "
                                "needs that model folder (the base weights) at the same path")
    cell = load_component(COMPONENTS[component], model)
    if cfg.lora is not None:
        inject_lora(cell, LoraConfig.from_dict(cfg.lora), component)
    return export_trained(cfg, cell, component, source)
