"""The demo model's training recipe (``mindglm-image train-demo``): every component trained by our jobs on
the synthetic shapes data, stage by stage, ending in one official-layout model folder.

Stages, each in its own folder under ``work_dir`` and skipped once its output exists (a stage that was
killed resumes from its newest checkpoint, as every training job does):

1. ``data``     synthetic scenes (``make-demo-data``)
2. ``init``     the random model at ``configs/demo`` sizes with the demo tokenizer, or a copy of a finished
                model (``init_from``: every later stage then continues training it)
3. ``vae``      AutoencoderKL from pixels (``train-vae``) on small random crops (cheap steps)
4. ``vae_full`` the same VAE fine-tuned on whole images, latent statistics into its config: its GroupNorm
                statistics and mid-block attention were fitted on crops, and on a whole flat-coloured scene
                they see other statistics (a crops-only VAE decoded whole images with wrong colours)
5. ``vq``       vision encoder + VQ codebook (``train-vq``): the prior tokens that carry the scene
6. ``prepared`` ``prepare-data`` with the trained VAE and tokenizer (latents, prior ids, AR targets, glyphs)
7. ``dit``      full DiT training on the prepared latents (``train-dit``)
8. ``ar``       full AR SFT on the prepared token targets (``train-ar``); its export is the finished model

The glyph encoder (byT5) stays at its random initialisation, frozen, as the real model keeps its
pretrained byT5 frozen: the DiT learns to read its embeddings of the quoted word. The finished model is
copied to ``out`` (atomically).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, ClassVar

from ..atomic import copy_tree, write_json_atomic
from ..config.base import ConfigError, HFConfig
from ..training.config import TrainConfig
from ..training.data import INDEX, PrepareDataConfig
from ..training.export import MODEL_DIR
from .synthetic import DemoDataConfig

STAGES = ("data", "init", "vae", "vae_full", "vq", "prepared", "dit", "ar")
#: per-stage wall times of every run, appended (``<work_dir>/timings.json``)
TIMINGS = "timings.json"


@dataclasses.dataclass
class DemoRecipeConfig(HFConfig):
    """The whole recipe (``configs/jobs/train_demo.json``); the stages' model/data/out_dir are filled in."""

    nested: ClassVar[dict[str, type[HFConfig]]] = {"data": DemoDataConfig, "prepare": PrepareDataConfig}

    work_dir: str = "outputs/demo"   # one sub-folder per stage; rerunning the recipe resumes here
    seed: int = 0                    # seed of the random initial model
    model_configs: str = ""          # folder of the initial model's per-part config JSONs (default configs/demo)
    init_from: str = ""              # a finished model folder to continue from instead of a random model ("": random)
    device: str | None = None        # CPU or Ascend for every training stage (default: $MINDGLM_DEVICE or CPU)
    data: DemoDataConfig = dataclasses.field(default_factory=DemoDataConfig)          # make-demo-data options
    prepare: PrepareDataConfig = dataclasses.field(default_factory=PrepareDataConfig)  # prepare-data options
    vae: dict = dataclasses.field(default_factory=dict)  # TrainConfig fields of train-vae (model/data/out_dir: set here)
    vae_full: dict = dataclasses.field(default_factory=dict)  # TrainConfig fields of the whole-image VAE fine-tune
    vq: dict = dataclasses.field(default_factory=dict)   # TrainConfig fields of train-vq
    dit: dict = dataclasses.field(default_factory=dict)  # TrainConfig fields of train-dit
    ar: dict = dataclasses.field(default_factory=dict)   # TrainConfig fields of train-ar

    def validate(self) -> None:
        if self.init_from and not (Path(self.init_from) / "model_index.json").is_file():
            raise ConfigError(f"init_from={self.init_from!r} is not a model folder (no model_index.json); point it at a "
                              f"finished model such as mindglm_image/demo/model, or leave it empty for a random model")
        for stage in ("vae", "vae_full", "vq", "dit", "ar"):  # every job config is checked before the first stage runs
            _job(self, stage, Path("model"), Path("data"))


def _job(cfg: DemoRecipeConfig, stage: str, model: Path, data: Path) -> TrainConfig:
    values: dict[str, Any] = {**getattr(cfg, stage), "model": str(model), "data": str(data),
                              "out_dir": str(Path(cfg.work_dir) / stage), "export": True}
    if cfg.device is not None:
        values["device"] = cfg.device
    return TrainConfig.from_dict(values)


def stage_outputs(work: Path) -> dict[str, Path]:
    """The file or folder whose presence marks each stage finished."""
    return {"data": work / "data" / "edit_heldout.jsonl", "init": work / "init" / "model_index.json",
            "vae": work / "vae" / MODEL_DIR / "model_index.json",
            "vae_full": work / "vae_full" / MODEL_DIR / "model_index.json", "vq": work / "vq" / MODEL_DIR / "model_index.json",
            "prepared": work / "prepared" / INDEX, "dit": work / "dit" / MODEL_DIR / "model_index.json",
            "ar": work / "ar" / MODEL_DIR / "model_index.json"}


def run_recipe(cfg: DemoRecipeConfig, out: str | Path | None = None, progress: bool = True,
               log=print) -> Path:
    """Run the unfinished stages in order; returns the finished model folder (``out`` when given)."""
    from ..jobs.train_ar import train_ar
    from ..jobs.train_dit import train_dit
    from ..jobs.train_vae import train_vae
    from ..jobs.train_vq import train_vq
    from ..runtime import setup_runtime
    from ..training.data import prepare_dataset
    from .init_model import DEMO_CONFIG_DIR, make_demo_init
    from .synthetic import write_demo_dataset

    setup_runtime(cfg.device)  # graph mode for every stage, also when the training stages before prepare-data are skipped
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    done = stage_outputs(work)
    data, train_jsonl = work / "data", work / "data" / "train.jsonl"
    model_of = {"vae": work / "init", "vae_full": work / "vae" / MODEL_DIR, "vq": work / "vae_full" / MODEL_DIR,
                "dit": work / "vq" / MODEL_DIR, "ar": work / "dit" / MODEL_DIR}
    runs = {
        "data": lambda: write_demo_dataset(data, cfg.data, progress=progress),
        "init": lambda: (copy_tree(Path(cfg.init_from), work / "init") if cfg.init_from else
                         make_demo_init(work / "init", seed=cfg.seed, overwrite=True,
                                        config_dir=cfg.model_configs or DEMO_CONFIG_DIR)),
        "vae": lambda: train_vae(_job(cfg, "vae", model_of["vae"], train_jsonl), progress=progress),
        "vae_full": lambda: train_vae(_job(cfg, "vae_full", model_of["vae_full"], train_jsonl), progress=progress),
        "vq": lambda: train_vq(_job(cfg, "vq", model_of["vq"], train_jsonl), progress=progress),
        "prepared": lambda: prepare_dataset(train_jsonl, work / "vq" / MODEL_DIR, work / "prepared", cfg.prepare,
                                            progress=progress),
        "dit": lambda: train_dit(_job(cfg, "dit", model_of["dit"], work / "prepared"), progress=progress),
        "ar": lambda: train_ar(_job(cfg, "ar", model_of["ar"], work / "prepared"), progress=progress),
    }
    timings_file = work / TIMINGS
    timings = json.loads(timings_file.read_text(encoding="utf-8")) if timings_file.is_file() else []
    for stage in STAGES:
        if done[stage].exists():
            log(f"[train-demo] {stage}: done ({done[stage]})")
            continue
        log(f"[train-demo] {stage}: running")
        start = time.perf_counter()
        runs[stage]()
        seconds = round(time.perf_counter() - start, 3)
        timings.append({"stage": stage, "seconds": seconds})
        write_json_atomic(timings_file, timings)
        log(f"[train-demo] {stage}: finished in {seconds} s")
    final = done["ar"].parent
    if out is None:
        return final
    copy_tree(final, Path(out))
    return Path(out)
