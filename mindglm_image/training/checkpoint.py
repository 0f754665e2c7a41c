"""Training checkpoints: atomic, every N steps, last K kept, enough to resume bit-exactly.

One checkpoint is a folder ``<out_dir>/checkpoints/step-<N>/`` holding ``state.safetensors`` (the fp32
master weights of the trained parameters, both Adam moments and the EMA, streamed one tensor at a time)
and ``trainer_state.json`` (step, data position, seed, the model fingerprint, the job config). It is built
in ``.step-<N>.partial`` and renamed into place only when complete, so a kill at any moment leaves
every finished checkpoint intact; a folder without ``trainer_state.json`` is never read. All randomness
of a step is drawn from generators keyed by (seed, epoch, sample), so the data position is the RNG state.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import mindspore as ms
from mindspore import Tensor

from ..atomic import write_json_atomic
from ..weights.safetensors_io import CheckpointError, SafetensorsFile, write_safetensors_streamed
from .train_step import TrainStep

STATE_FILE = "state.safetensors"
TRAINER_FILE = "trainer_state.json"
_PREFIX = "step-"
#: name prefix of parameters that only training uses (auxiliary heads): checkpointed, never exported
TRAINING_ONLY_PREFIX = "training_only."


def model_fingerprint(train_step: TrainStep, model_config: dict) -> dict[str, str]:
    """What a checkpoint must match to be resumed: the model's config and the trained parameters' names/shapes."""
    params = sorted(f"{p.name}:{list(p.shape)}" for p in train_step.params)
    digest = lambda obj: hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]  # noqa: E731
    return {"model_config": digest(model_config), "trained_parameters": digest(params), "count": str(len(params))}


def checkpoint_dir(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"{_PREFIX}{step:08d}"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Finished checkpoints, oldest first (partial folders are skipped)."""
    root = Path(out_dir) / "checkpoints"
    found = [p for p in root.glob(f"{_PREFIX}*") if p.is_dir() and (p / TRAINER_FILE).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def _state_tensors(train_step: TrainStep) -> list[tuple[str, Any]]:
    """(file name, parameter) of every state tensor: ``<group>/<parameter name>``."""
    opt = train_step.optimizer
    groups = {"weight": opt.masters, "exp_avg": opt.exp_avg, "exp_avg_sq": opt.exp_avg_sq, "ema": opt.ema}
    out = []
    for group, tensors in groups.items():
        for param, tensor in zip(train_step.params, tensors):
            out.append((f"{group}/{param.name}", tensor))
    return out


def save_checkpoint(out_dir: str | Path, train_step: TrainStep, trainer_state: dict, keep_last: int) -> Path:
    """Write the checkpoint of ``trainer_state['step']`` atomically, then delete all but the newest ``keep_last``.

    An existing finished checkpoint of the same step is kept as it is (a resumed run reaching it again
    holds the same state)."""
    final = checkpoint_dir(out_dir, trainer_state["step"])
    if not (final / TRAINER_FILE).is_file():
        work = final.with_name(f".{final.name}.partial")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        tensors = _state_tensors(train_step)
        write_safetensors_streamed(work / STATE_FILE, [(name, "F32", tuple(t.shape)) for name, t in tensors],
                                   (t.asnumpy() for _, t in tensors))
        write_json_atomic(work / TRAINER_FILE, trainer_state)
        shutil.rmtree(final, ignore_errors=True)  # an unfinished folder of that name (no trainer_state.json)
        os.replace(work, final)
    for old in list_checkpoints(out_dir)[:-keep_last]:
        shutil.rmtree(old)
    return final


def load_checkpoint(folder: str | Path, train_step: TrainStep, fingerprint: dict[str, str]) -> dict:
    """Check ``folder`` was written for this model and these trained parameters, then load it; returns the
    trainer state. Nothing is loaded when the check fails."""
    folder = Path(folder)
    state = json.loads((folder / TRAINER_FILE).read_text(encoding="utf-8"))
    if state.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"{folder} was written for another model or another set of trained parameters "
            f"(checkpoint {state.get('fingerprint')}, this job {fingerprint}); use a new out_dir for this job, "
            "or point the job at the model and LoRA settings that checkpoint was trained with")
    tensors = dict(_state_tensors(train_step))
    stored = SafetensorsFile(folder / STATE_FILE)
    if sorted(stored.keys()) != sorted(tensors):
        raise CheckpointError(f"{folder / STATE_FILE} does not hold this job's optimizer state (its tensors differ); "
                              "it is corrupt or from another job: delete it to resume from an older checkpoint")
    for name, target in tensors.items():
        target.set_data(Tensor(stored.get(name).array().copy(), ms.float32))
    for param, master in zip(train_step.params, train_step.optimizer.masters):
        if param is not master:  # a low-precision weight follows its fp32 master
            param.set_data(Tensor(master.asnumpy(), param.dtype))
    return state


def load_trained_weights(folder: str | Path, cell, ema: bool = False) -> list[str]:
    """Put a checkpoint's trained weights (or their EMA) into ``cell``'s parameters of the same names (e.g. a
    freshly loaded model for sampling or export); returns the names set. Training-only parameters
    (``TRAINING_ONLY_PREFIX``) are left out."""
    stored = SafetensorsFile(Path(folder) / STATE_FILE)
    group = "ema/" if ema else "weight/"
    params = cell.parameters_dict()
    names = [k[len(group):] for k in stored.keys()
             if k.startswith(group) and not k.startswith(group + TRAINING_ONLY_PREFIX)]
    unknown = [n for n in names if n not in params]
    if unknown or not names:
        raise CheckpointError(f"{folder} holds no {group[:-1]} tensors for this cell (unknown: {unknown[:5]}); "
                              "load it into the model it was trained on")
    for name in names:
        params[name].set_data(Tensor(stored.get(group + name).array().copy(), params[name].dtype))
    return names
