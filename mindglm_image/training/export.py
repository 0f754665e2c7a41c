"""The export of a finished training job: what inference and other tools load.

LoRA: the trained adapter in PEFT format (``<out_dir>/adapter``; ``generate --lora``, PEFT on the
reference model). Full fine-tune: the trained component written into a copy of the model folder in
the official layout (``<out_dir>/model``). The weights come from the job's final checkpoint, raw or
their EMA (``TrainConfig.export_ema``). Both folders are built aside and renamed into place, so a
finished export is only ever replaced by another finished one.
"""
from __future__ import annotations

from pathlib import Path

from mindspore import nn

from .checkpoint import load_trained_weights
from .config import TrainConfig
from .lora import LoraConfig, save_adapter, save_merged_model

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
