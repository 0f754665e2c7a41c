"""Training checkpoints: atomic, every N steps, last K kept, enough to resume bit-exactly.

One checkpoint is a folder ``<out_dir>/checkpoints/step-<N>/`` holding ``state.safetensors`` (the fp32
master weights of the trained parameters, both Adam moments and the EMA, streamed one tensor at a time)
and ``trainer_state.json`` (step, data position, seed, the model fingerprint, the job config). It is built
in ``.step-<N>.partial`` and renamed into place only when complete, so a kill at any moment leaves
every finished checkpoint intact; a folder without ``trainer_state.json`` is never read. All randomness
of a step is drawn from generators keyed by (seed, epoch, sample), so the data position is the RNG state.

A sharded optimizer state (``shard_state``) is all-gathered one tensor at a time while rank 0 streams it out,
so the file has the same full layout either way: only one full fp32 tensor is ever extra in memory, the
export and ``load_trained_weights`` read it unchanged, and a job resumes from it sharded or not, at any
world size (each rank keeps its piece of every tensor it reads).
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


def _state_tensors(train_step: TrainStep) -> list[tuple[str, int, Any]]:
    """(file name, parameter index, state tensor) of every state tensor: ``<group>/<parameter name>``."""
    opt = train_step.optimizer
    groups = {"weight": opt.masters, "exp_avg": opt.exp_avg, "exp_avg_sq": opt.exp_avg_sq, "ema": opt.ema}
    out = []
    for group, tensors in groups.items():
        for i, (param, tensor) in enumerate(zip(train_step.params, tensors)):
            out.append((f"{group}/{param.name}", i, tensor))
    return out


def save_checkpoint(out_dir: str | Path, train_step: TrainStep, trainer_state: dict, keep_last: int,
                    write: bool = True) -> Path:
    """Write the checkpoint of ``trainer_state['step']`` atomically, then delete all but the newest ``keep_last``.

    Every data-parallel worker calls this, with ``write`` true on rank 0 only: a sharded state is gathered
    from all of them. An existing finished checkpoint of the same step is kept as it is (a resumed run
    reaching it again holds the same state)."""
    final = checkpoint_dir(out_dir, trainer_state["step"])
    opt = train_step.optimizer
    tensors = _state_tensors(train_step)
    values = (opt.full_value(t, i) for _, i, t in tensors)  # sharded: each is a collective of all workers
    if not write or (final / TRAINER_FILE).is_file():
        if opt.sharded:  # the others gather whether or not this rank writes (no file system race decides it)
            for _ in values:
                pass
        if not write:
            return final
    else:
        work = final.with_name(f".{final.name}.partial")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        shapes = [(name, "F32", tuple(train_step.params[i].shape)) for name, i, _ in tensors]
        write_safetensors_streamed(work / STATE_FILE, shapes, values)
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
    tensors = {name: t for name, _, t in _state_tensors(train_step)}
    stored = SafetensorsFile(folder / STATE_FILE)
    if sorted(stored.keys()) != sorted(tensors):
        raise CheckpointError(f"{folder / STATE_FILE} does not hold this job's optimizer state (its tensors differ); "
                              "it is corrupt or from another job: delete it to resume from an older checkpoint")
    opt = train_step.optimizer
    for name, target in tensors.items():
        opt.load_value(target, stored.get(name).array())
    for param, own in zip(train_step.params, opt.own_master):
        if own:  # a low-precision (or sharded) master's parameter is the stored fp32 weight in its dtype
            param.set_data(Tensor(stored.get(f"weight/{param.name}").array().copy(), param.dtype))
    return state


def _stored_prefix(names: list[str], params: dict) -> str:
    """The prefix the training job's loss cell put before the model's own parameter names (e.g. ``model.``
    for the AR loss cell; none for the DiT's), found as the one that maps every stored name onto ``params``."""
    parts = names[0].split(".") if names else []
    for k in range(len(parts)):
        prefix = "".join(f"{p}." for p in parts[:k])
        if all(n.startswith(prefix) and n[len(prefix):] in params for n in names):
            return prefix
    raise CheckpointError(f"the checkpoint's tensors (e.g. {names[:3]}) are no parameters of this cell; load it into "
                          "the model it was trained on")


def load_trained_weights(folder: str | Path, cell, ema: bool = False) -> list[str]:
    """Put a checkpoint's trained weights (or their EMA) into ``cell``'s parameters of the same names (e.g. a
    freshly loaded model for sampling or export, with or without the job's loss cell around it); returns
    the names set. Training-only parameters (``TRAINING_ONLY_PREFIX``) are left out."""
    stored = SafetensorsFile(Path(folder) / STATE_FILE)
    group = "ema/" if ema else "weight/"
    params = cell.parameters_dict()
    names = [k[len(group):] for k in stored.keys()
             if k.startswith(group) and not k.startswith(group + TRAINING_ONLY_PREFIX)]
    if not names:
        raise CheckpointError(f"{folder} holds no {group[:-1]} tensors"
                              + ("; it was trained without an EMA (ema_decay 0): export the raw weights" if ema else ""))
    prefix = _stored_prefix(names, params)
    for name in names:
        param = params[name[len(prefix):]]
        param.set_data(Tensor(stored.get(group + name).array().copy(), param.dtype))
    return [n[len(prefix):] for n in names]
