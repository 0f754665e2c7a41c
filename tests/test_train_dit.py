"""The train-dit job end to end on the tiny model: bad input fails before compute, checkpoints (atomic,
keep-last, model-checked), resume after SIGKILL equals an uninterrupted run bit for bit, the model learns
(loss and a pixel reconstruction), and the TensorBoard files are valid TFRecords."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from mindglm_image.cli import main as cli_main
from mindglm_image.config.base import ConfigError
from mindglm_image.config.dit import GlmImageTransformerConfig
from mindglm_image.jobs.train_dit import train_dit
from mindglm_image.tiny_model import make_tiny_model
from mindglm_image.training.checkpoint import (STATE_FILE, TRAINER_FILE, list_checkpoints, load_checkpoint,
                                               model_fingerprint, save_checkpoint)
from mindglm_image.training.config import OptimizerConfig, TrainConfig
from mindglm_image.training.metrics import crc32c, encode_event, tfrecord
from mindglm_image.training.train_step import TrainStep
from mindglm_image.weights.safetensors_io import CheckpointError, SafetensorsFile
from training_data import ArrayDataset, random_samples, run_msrun

pytestmark = pytest.mark.training  # its own pytest process: README, Two commands

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("train") / "tiny", progress=False)


@pytest.fixture(scope="module")
def dit_config(tiny):
    return GlmImageTransformerConfig.from_json_file(tiny / "transformer" / "config.json")


def _cfg(tiny, out, **kw) -> TrainConfig:
    base = {"model": str(tiny), "data": "in-memory", "out_dir": str(out), "batch_size": 2, "checkpoint_every": 5,
            "keep_last": 2, "optimizer": {"lr": 1e-3, "ema_decay": 0.9}, "schedule": {"total_steps": 10, "warmup_steps": 2}}
    for key, value in kw.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
    return TrainConfig.from_dict(base)


def test_bad_input_fails_before_compute(tiny, dit_config, tmp_path, capsys):
    assert cli_main(["train-dit", "--model", str(tiny), "--data", str(tmp_path / "nope")]) == 2
    assert "data folder not found" in capsys.readouterr().err
    assert cli_main(["train-dit", "--model", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert "lacks ['transformer/config.json'" in capsys.readouterr().err
    assert cli_main(["train-dit", "--config", str(tmp_path / "job.json")]) == 2
    assert "job config (--config) not found" in capsys.readouterr().err
    (tmp_path / "job.json").write_text("{")
    assert cli_main(["train-dit", "--config", str(tmp_path / "job.json")]) == 2
    assert "is not valid JSON" in capsys.readouterr().err
    with pytest.raises(ValueError, match="dataset is empty"):
        train_dit(_cfg(tiny, tmp_path / "a"), ArrayDataset([]), progress=False)
    wrong = random_samples(dataclasses.replace(dit_config, text_embed_dim=8), [(64, 64)])
    with pytest.raises(ConfigError, match="sample 0 .* does not fit the model: encoder_hidden_states"):
        train_dit(_cfg(tiny, tmp_path / "b"), ArrayDataset(wrong), progress=False)
    ids = random_samples(dit_config, [(64, 64)])
    ids[0]["prior_ids"][0] = dit_config.prior_vq_quantizer_codebook_size
    with pytest.raises(ConfigError, match="outside the model's codebook"):
        train_dit(_cfg(tiny, tmp_path / "c"), ArrayDataset(ids), progress=False)
    with pytest.raises(ValueError, match="no aspect bucket holds a full global batch of 2"):
        train_dit(_cfg(tiny, tmp_path / "d"), ArrayDataset(random_samples(dit_config, [(64, 64), (64, 96)])),
                  progress=False)
    assert not any((tmp_path / d / "checkpoints").exists() for d in "abcd")


def _toy_step(shapes: dict[str, tuple[int, ...]]) -> TrainStep:
    from mindspore import Parameter, Tensor, nn

    cell = nn.Cell()
    for name, shape in shapes.items():
        setattr(cell, name, Parameter(Tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32)), name=name))
    return TrainStep(cell, list(cell.get_parameters()), OptimizerConfig(ema_decay=0.5))


def test_checkpoints_atomic_keep_last_and_model_checked(tmp_path):
    step = _toy_step({"a": (2, 3), "b": (4,)})
    fingerprint = model_fingerprint(step, {"hidden": 8})
    for n in (1, 2, 3):
        step.optimizer.exp_avg[0].set_data(ms.Tensor(np.full((2, 3), n, np.float32)))
        save_checkpoint(tmp_path, step, {"step": n, "fingerprint": fingerprint}, keep_last=2)
    (tmp_path / "checkpoints" / ".step-00000004.partial").mkdir()       # a kill while writing step 4
    (tmp_path / "checkpoints" / "step-00000005").mkdir()                # no trainer_state.json: unfinished
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    done = list_checkpoints(tmp_path)[-1]
    before = (done / STATE_FILE).read_bytes()
    step.optimizer.exp_avg[0].set_data(ms.Tensor(np.zeros((2, 3), np.float32)))
    save_checkpoint(tmp_path, step, {"step": 3, "fingerprint": fingerprint}, keep_last=2)  # never overwritten
    assert (done / STATE_FILE).read_bytes() == before
    state = load_checkpoint(done, step, fingerprint)
    assert state["step"] == 3 and (step.optimizer.exp_avg[0].asnumpy() == 3).all()
    other = _toy_step({"a": (2, 3), "b": (5,)})
    with pytest.raises(CheckpointError, match="written for another model"):
        load_checkpoint(done, other, model_fingerprint(other, {"hidden": 8}))
    with pytest.raises(CheckpointError, match="written for another model"):
        load_checkpoint(done, step, model_fingerprint(step, {"hidden": 16}))


def _run_job(cfg_path: Path, data: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "training_data.py"), str(cfg_path), str(data)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_exact(tiny, dit_config, tmp_path):
    data = tmp_path / "data.npz"
    ArrayDataset(random_samples(dit_config, [(64, 64)] * 6, seed=1)).save(data)
    configs = {}
    for name in ("straight", "killed"):
        # glyph dropout 0: one glyph length, so each process compiles one graph (the test's time is compilation)
        cfg = _cfg(tiny, tmp_path / name, grad_accum_steps=2, checkpoint_every=10,
                   schedule={"total_steps": 60, "warmup_steps": 5}, dit_loss={"prior_drop_prob": 0.3, "glyph_drop_prob": 0.0})
        configs[name] = tmp_path / f"{name}.json"
        cfg.to_json_file(configs[name])
    straight = _run_job(configs["straight"], data)
    assert straight.wait(600) == 0, straight.stdout.read()[-3000:]
    killed = _run_job(configs["killed"], data)
    deadline = time.time() + 300
    while not list_checkpoints(tmp_path / "killed") and time.time() < deadline and killed.poll() is None:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    reached = [int(p.name[5:]) for p in list_checkpoints(tmp_path / "killed")]
    assert killed.returncode == -signal.SIGKILL and reached and max(reached) < 60, (killed.returncode, reached)
    resumed = _run_job(configs["killed"], data)
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out[-3000:]
    final = [list_checkpoints(tmp_path / name)[-1] for name in ("straight", "killed")]
    assert [p.name for p in final] == ["step-00000060"] * 2
    # weights, both Adam moments and the EMA: every byte equal
    assert (final[0] / STATE_FILE).read_bytes() == (final[1] / STATE_FILE).read_bytes()
    states = [json.loads((p / TRAINER_FILE).read_text()) for p in final]
    assert [(s["epoch"], s["position"], s["samples"]) for s in states] == [(39, 3, 240)] * 2  # 3 micro-batches per epoch, 120 in all
    lines = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 61))  # the repeated steps' old lines were dropped


def _msrun(cfg_path: Path, data: Path, logs: Path) -> list[dict]:
    """Run the train-dit job on two msrun CPU workers; returns the per-rank ``{"done", "state_elements"}`` lines
    (rank 0's summary line is checked too)."""
    lines = [line for text in run_msrun([str(ROOT / "tests" / "training_data.py"), str(cfg_path), str(data)], logs)
             for line in text.splitlines()]
    summaries = [json.loads(line) for line in lines if line.startswith('{"steps"')]
    assert [(s["rank"], s["world_size"]) for s in summaries] == [(0, 2)]  # rank 0 prints it
    return [json.loads(line) for line in lines if line.startswith('{"done"')]


def _max_rel(a: SafetensorsFile, b: SafetensorsFile, group: str) -> float:
    """Worst tensor of ``group``: max |a - b| / max |a|."""
    return max(float(np.abs(a.get(k).array() - b.get(k).array()).max() / np.abs(a.get(k).array()).max())
               for k in a.keys() if k.startswith(f"{group}/"))


@pytest.mark.slow
def test_msrun_two_cpu_workers_equal_one_worker(tiny, dit_config, tmp_path):
    """Data parallel through mindspore.communication: two msrun workers with batch 1 each (gradients all-reduced
    by TrainStep's DistributedGradReducer) reach the weights of one worker with batch 2 on the same samples;
    with ``shard_state`` and ``shard_grads`` (ZeRO-2) each worker holds half the optimizer state, reaches the
    weights, moments and EMA of the unsharded two workers (resuming a sharded run: tests/test_shard_state.py)."""
    data = tmp_path / "data.npz"
    ArrayDataset(random_samples(dit_config, [(64, 64)] * 4, seed=2)).save(data)
    paths = {}
    sharded = {"optimizer": {"shard_state": True, "shard_grads": True}}
    for name, batch, extra in (("one", 2, {}), ("two", 1, {}), ("zero", 1, sharded)):
        paths[name] = tmp_path / f"{name}.json"
        _cfg(tiny, tmp_path / name, batch_size=batch, schedule={"total_steps": 5, "warmup_steps": 1},
             dit_loss={"prior_drop_prob": 0.5, "glyph_drop_prob": 0.0}, **extra).to_json_file(paths[name])
    single = _run_job(paths["one"], data)
    out = single.communicate(timeout=600)[0]
    assert single.returncode == 0, out[-3000:]
    two = _msrun(paths["two"], data, tmp_path / "logs-two")
    zero = _msrun(paths["zero"], data, tmp_path / "logs-zero")
    start = load_component_weights(tiny)
    # state each rank holds besides the weights: unsharded fp32 params are their own master (moments + EMA, 3
    # full copies); sharded, every rank holds master, moments and EMA of its half of each flattened tensor
    half = sum(-(-w.size // 2) for w in start.values())
    assert [d["done"] for d in two + zero] == [5] * 4
    assert [d["state_elements"] for d in two] == [3 * sum(w.size for w in start.values())] * 2
    assert [d["state_elements"] for d in zero] == [4 * half] * 2
    one, two, zero = (SafetensorsFile(tmp_path / n / "checkpoints" / "step-00000005" / STATE_FILE)
                      for n in ("one", "two", "zero"))
    assert sorted(one.keys()) == sorted(two.keys()) == sorted(zero.keys())
    # the update of all weights agrees in L2 to 0.1% (only summation order differs; an element whose gradient is
    # near zero can still flip Adam's sign(g)-like first step, so no per-element bound); without the all-reduce,
    # rank 0 would have followed its own sample's gradient and the update would differ at order 1
    for label, other in (("two workers", two), ("two workers, sharded state and gradients", zero)):
        diff = sum(float(np.sum((one.get(f"weight/{n}").array() - other.get(f"weight/{n}").array()) ** 2))
                   for n in start)
        update = sum(float(np.sum((one.get(f"weight/{n}").array() - w) ** 2)) for n, w in start.items())
        moments = _max_rel(one, other, "exp_avg")
        print(f"{label} vs one: weight update differs by {np.sqrt(diff / update):.2e} (L2, relative); "
              f"first moments by {moments:.2e} (worst tensor, relative)")
        assert update > 0 and np.sqrt(diff / update) <= 1e-3
        assert moments <= 1e-4
    # sharded vs unsharded on the same two workers: the same all-reduced gradients, only the clipping norm is
    # summed in another order (per-rank pieces), so every element of every state tensor agrees to ~1e-7
    worst = {g: _max_rel(two, zero, g) for g in ("weight", "exp_avg", "exp_avg_sq", "ema")}
    print(f"sharded vs unsharded two workers (worst tensor, max abs diff / max abs): {worst}")
    assert max(worst.values()) <= 1e-5, worst


def load_component_weights(tiny: Path) -> dict[str, np.ndarray]:
    from mindglm_image.weights.components import COMPONENTS, load_component

    return {p.name: p.asnumpy() for p in load_component(COMPONENTS["transformer"], tiny / "transformer").get_parameters()}


def test_tensorboard_records_are_valid():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    record = tfrecord(encode_event(1.5, 7, {"train/loss": 0.25}))
    (length,) = struct.unpack("<Q", record[:8])
    data = record[12:12 + length]
    assert len(record) == 16 + length
    assert struct.pack("<d", 1.5) in data and b"train/loss" in data and struct.pack("<f", 0.25) in data
    assert data[9:11] == b"\x10\x07"  # field 2 (step) = 7


def _images(side: int) -> list:
    """Two training pictures unlike any demo scene: a red-to-yellow gradient and a blue checkerboard."""
    from PIL import Image

    x = np.linspace(0, 255, side, dtype=np.float32)
    grad = np.stack([np.full((side, side), 230.0), np.tile(x, (side, 1)), np.full((side, side), 20.0)], -1)
    board = ((np.indices((side, side)) // (side // 4)).sum(0) % 2)[..., None] * np.array([40.0, 80.0, 240.0]) + 10
    return [Image.fromarray(a.astype(np.uint8)) for a in (grad, board)]


@pytest.mark.slow
def test_fine_tune_learns_and_reproduces_its_images(tmp_path):
    """The user's path on the shipped demo model: prepare-data on two captioned pictures unlike anything it
    was trained on, a 300-step full fine-tune of its DiT (train-dit), then the pipeline draws each picture
    from its own prior tokens (what a matching AR writes) and the caption: the drawing lands far closer to
    the picture as the (untrained here) VAE renders it than before the fine-tune, and against the picture
    itself it gets within reach of the VAE's own error."""
    from mindglm_image.demo.default_model import demo_model_dir
    from mindglm_image.models.vae.processing import normalize_images, postprocess_images
    from mindglm_image.pipeline.glm_image_pipeline import GlmImagePipeline
    from mindglm_image.training.checkpoint import load_trained_weights
    from mindglm_image.training.data import PrepareDataConfig, prepare_dataset

    model, side = demo_model_dir(), 128
    captions = ["a smooth gradient from red to yellow", "a blue and black checkerboard"]
    lines = []
    for i, (image, caption) in enumerate(zip(_images(side), captions)):
        image.save(tmp_path / f"{i}.png")
        lines.append(json.dumps({"id": f"pic{i}", "image": f"{i}.png", "caption": caption}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    pipe = GlmImagePipeline.from_pretrained(model)
    prepared = prepare_dataset(tmp_path / "data.jsonl", model, tmp_path / "prepared",
                               PrepareDataConfig(resolution=side, min_side=side, max_aspect=1.0), pipe=pipe,
                               progress=False)
    pictures = [np.asarray(image, np.float32) / 255 for image in _images(side)]
    # what the DiT can reach: the picture through the (frozen) VAE, encoded and decoded
    shown = [postprocess_images(pipe.vae.decode(pipe.vae.encode_mode(normalize_images(p.transpose(2, 0, 1)[None]))))[0]
             for p in pictures]

    def pixel_mse() -> tuple[float, float]:
        """Mean squared pixel error of the drawings against the VAE's rendering of each picture, and against
        the picture itself (which the VAE's own error bounds from below)."""
        drawn = []
        for i, (image, caption) in enumerate(zip(_images(side), captions)):
            prior = pipe.encode_references([[image]])[2][0][0][None]
            out = pipe(caption, height=side, width=side, num_inference_steps=20, guidance_scale=1.0, seed=i,
                       prior_token_ids=prior, progress=False)
            drawn.append(out.pixels[0])
        return tuple(float(np.mean([np.mean((d - t) ** 2) for d, t in zip(drawn, targets)])) for targets in (shown, pictures))

    before, before_picture = pixel_mse()
    cfg = TrainConfig.from_dict({
        "model": str(model), "data": str(prepared), "out_dir": str(tmp_path / "learn"), "batch_size": 2,
        "checkpoint_every": 300, "keep_last": 1, "optimizer": {"lr": 1e-3, "ema_decay": 0.0},
        "schedule": {"total_steps": 300, "warmup_steps": 10, "min_lr_ratio": 0.1},
        "dit_loss": {"prior_drop_prob": 0.0, "glyph_drop_prob": 0.0}})
    summary = train_dit(cfg, progress=False)
    # a rerun of the finished job trains nothing and reports the run that finished it (it once wrote NaN)
    again = train_dit(cfg, progress=False)
    assert again == summary and summary["steps_this_run"] == 300 and np.isfinite(summary["final_loss"])
    losses = [json.loads(line)["loss"] for line in (tmp_path / "learn" / "metrics.jsonl").read_text().splitlines()]
    load_trained_weights(summary["checkpoint"], pipe.transformer)
    after, after_picture = pixel_mse()
    floor = float(np.mean([np.mean((v - p) ** 2) for v, p in zip(shown, pictures)]))
    print(f"median loss {np.median(losses[:50]):.4f} -> {np.median(losses[-50:]):.4f}; pixel MSE of the drawings against the VAE's rendering of the "
          f"pictures {before:.5f} -> {after:.5f}, against the pictures {before_picture:.5f} -> {after_picture:.5f} "
          f"(the VAE's own error {floor:.5f})")
    # one step's loss depends on the timesteps it drew (0.05-0.9 here), so compare the medians of 50 steps: the
    # demo DiT already denoises well, so its loss starts low and falls about twofold on the new pictures
    assert np.median(losses[-50:]) < 0.6 * np.median(losses[:50])
    assert after < before / 10
    assert after_picture < before_picture / 2 and after_picture < 1.5 * floor
