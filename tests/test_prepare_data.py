"""prepare-data on the tiny model: the contract's keys/shapes, values equal to the inference path, aspect
buckets, bad samples reported by id and skipped, resume after a kill, clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mindglm_image.cli import main
from mindglm_image.models.dit.prior_tokens import upsample_prior_tokens
from mindglm_image.models.vae.processing import normalize_latents
from mindglm_image.pipeline.glm_image_pipeline import GlmImagePipeline
from mindglm_image.pipeline.vae_image import vae_input
from mindglm_image.processor.prompt import TargetGrid
from mindglm_image.tiny_model import make_tiny_model
from mindglm_image.training import data as data_mod
from mindglm_image.training.ar_loss import collate_ar
from mindglm_image.training.data import (PrepareDataConfig, PreparedDataset, SampleEncoder, aspect_buckets,
                                         prepare_dataset, read_dataset)

pytestmark = pytest.mark.slow
CONFIG = PrepareDataConfig(resolution=64, min_side=32, shard_size=2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    tiny = make_tiny_model(root / "tiny", progress=False)
    rng = np.random.default_rng(0)

    def image(name, w, h, mode="RGB"):
        arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).convert(mode).save(root / name)

    image("wide.png", 120, 50)
    image("square.png", 70, 64)
    image("gray.png", 40, 90, "L")
    image("src.png", 64, 64)
    image("small.png", 16, 16)
    Image.fromarray(rng.integers(0, 65535, (64, 64), dtype=np.uint16).astype(np.int32)).convert("I;16").save(root / "deep.png")
    (root / "broken.png").write_bytes(b"not a png at all")
    lines = [{"id": "wide", "image": "wide.png", "caption": 'a sign that says "hi"'},
             {"id": "square", "image": "square.png", "caption": "a square"},
             {"id": "broken", "image": "broken.png", "caption": "x"},
             {"id": "deep", "image": "deep.png", "caption": "x"},
             {"id": "small", "image": "small.png", "caption": "x"},
             {"id": "nocap", "image": "square.png", "caption": "  "},
             {"id": "edit", "source": "src.png", "instruction": "make it tall", "target": "gray.png"},
             {"id": "gray", "image": "gray.png", "caption": "a tall gray one"}]
    (root / "data.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    pipe = GlmImagePipeline.from_pretrained(tiny)
    return root, tiny, pipe


def test_prepared_samples_follow_the_contract(setup):
    root, tiny, pipe = setup
    out = prepare_dataset(root / "data.jsonl", tiny, root / "prepared", CONFIG, pipe=pipe, progress=False)
    ds = PreparedDataset(out)
    assert [s["id"] for s in ds.samples] == ["wide", "square", "edit", "gray"]
    reasons = {s["id"]: s["reason"] for s in ds.skipped}
    assert set(reasons) == {"broken", "deep", "small", "nocap"}
    assert "unreadable image" in reasons["broken"] and "mode 'I;16'" in reasons["deep"]
    assert "smaller than min_side=32" in reasons["small"] and reasons["nocap"] == "empty caption"
    assert len(ds.index["shards"]) == 2
    buckets = ds.buckets()
    assert all(h % 32 == 0 and w % 32 == 0 for h, w, *_ in buckets)
    # the edit and "gray" share a target size but not a bucket: an edit batch carries its reference images
    bucket_of = {ds.samples[i]["id"]: key for key, members in buckets.items() for i in members}
    assert bucket_of["edit"] == (*bucket_of["gray"][:2], 1, 64, 64) and bucket_of["gray"][2:] == (0,)
    assert {ds.samples[i]["id"]: tuple(ds.samples[i]["size"]) for i in range(4)}["wide"][1] > 64  # landscape bucket

    cfg = pipe.vision_language_encoder.config
    for i in range(len(ds)):
        s = ds[i]
        h, w = (int(v) for v in s["size"])
        grid = TargetGrid.for_size(h, w)
        assert s["latents"].dtype == np.float32 and s["latents"].shape == (pipe.transformer.config.in_channels, h // 8, w // 8)
        assert s["prior_ids"].dtype == np.int32 and s["prior_ids"].shape == (h // 16 * w // 16,)
        assert s["glyph"].dtype == np.float32 and s["glyph"].shape[1] == pipe.transformer.config.text_embed_dim
        ids, labels = s["ar_input_ids"], s["ar_labels"]
        labelled = labels != -100
        full_ids = labels[labelled][-1 - grid.height * grid.width:-1]
        assert labels[labelled][-1] == cfg.image_end_token_id and np.array_equal(ids[labelled], labels[labelled])
        np.testing.assert_array_equal(s["prior_ids"], upsample_prior_tokens(full_ids, grid.height, grid.width).reshape(-1))
        edit = ds.samples[i]["id"] == "edit"
        preview = 0 if edit else grid.preview_height * grid.preview_width
        assert labelled.sum() == preview + grid.height * grid.width + 1
        assert len(s["ar_image_grid_thw"]) == 2 and ("ref_latents_0" in s) == edit
    edit = ds[2]
    assert edit["ref_size_0"].tolist() == [64, 64] and edit["ref_latents_0"].shape[1:] == (8, 8)
    assert edit["ref_prior_ids_0"].shape == (16,)
    assert (ds[0]["ar_input_ids"] == cfg.image_token_id).sum() == 0  # I2I placeholders were replaced by ids
    collate_ar([ds[i] for i in range(len(ds))], cfg)  # positions rebuild for every sample

    # the latents are the inference path's: VAE of the bucket-fitted image, normalised
    img = data_mod.fit_to_bucket(Image.open(root / "square.png").convert("RGB"), *ds[1]["size"].tolist())
    pixels = vae_input(img, tuple(ds[1]["size"].tolist()))
    ref = normalize_latents(pipe.vae.encode_mode(pixels), pipe.vae.config).asnumpy()[0]
    np.testing.assert_allclose(ds[1]["latents"], ref, atol=1e-6)
    # a finished run is not redone
    assert prepare_dataset(root / "data.jsonl", tiny, out, CONFIG, pipe=pipe, progress=False) == out


def test_resume_after_a_kill_gives_the_same_dataset(setup, monkeypatch):
    root, tiny, pipe = setup
    calls = []
    real = SampleEncoder.__call__

    def dies_at_sample_7(self, sample):
        calls.append(sample.id)
        if len(calls) == 7:
            raise KeyboardInterrupt  # killed mid-run
        return real(self, sample)

    monkeypatch.setattr(SampleEncoder, "__call__", dies_at_sample_7)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(root / "data.jsonl", tiny, root / "resumed", CONFIG, pipe=pipe, progress=False)
    with pytest.raises(FileNotFoundError, match="unfinished: rerun prepare-data"):
        PreparedDataset(root / "resumed")
    progress = json.loads((root / "resumed" / "progress.json").read_text())
    assert progress["done"] == 2 and len(progress["shards"]) == 1  # the first shard (2 samples) is kept
    monkeypatch.setattr(SampleEncoder, "__call__", lambda self, s: (calls.append(s.id), real(self, s))[1])
    calls.clear()
    out = prepare_dataset(root / "data.jsonl", tiny, root / "resumed", CONFIG, pipe=pipe, progress=False)
    assert calls == ["broken", "deep", "small", "nocap", "edit", "gray"]  # finished samples are not redone
    fresh = PreparedDataset(root / "prepared")
    resumed = PreparedDataset(out)
    assert resumed.skipped == fresh.skipped and len(resumed) == len(fresh)
    for i in range(len(fresh)):
        a, b = fresh[i], resumed[i]
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_cli_and_errors(setup, tmp_path, capsys):
    root, tiny, _ = setup
    with pytest.raises(FileNotFoundError, match="not found"):
        read_dataset(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    assert main(["prepare-data", "--data", str(tmp_path / "empty.jsonl"), "--model", str(tiny), "--out",
                 str(tmp_path / "o")]) == 2
    assert "holds no samples" in capsys.readouterr().err
    assert main(["prepare-data", "--data", str(root / "data.jsonl"), "--model", str(tiny), "--out",
                 str(tmp_path / "o"), "--resolution", "70"]) == 2
    assert "multiple of 32" in capsys.readouterr().err
    folder = tmp_path / "folder"
    folder.mkdir()
    Image.fromarray(np.zeros((64, 96, 3), np.uint8) + 90).save(folder / "a.png")
    (folder / "a.txt").write_text("a flat picture\n")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "b.png")
    assert main(["prepare-data", "--data", str(folder), "--model", str(tiny), "--out", str(tmp_path / "o"),
                 "--resolution", "64", "--min-side", "32"]) == 0
    text = capsys.readouterr().out
    assert "prepared 1 samples" in text and "skipped b: no caption file b.txt" in text
    assert (64, 96) in aspect_buckets(64, 3.0) or (64, 64) in aspect_buckets(64, 3.0)


def test_demo_edit_records_read_as_editing_samples(tmp_path):
    """make-demo-data's edit files name the source images ``images``: prepare-data reads them as editing samples."""
    from mindglm_image.demo.synthetic import DemoDataConfig, write_demo_dataset

    files = write_demo_dataset(tmp_path, DemoDataConfig(train_size=1, heldout_size=0, edit_train_size=2,
                                                        edit_heldout_size=0, sizes=[[128, 128]]), progress=False)
    samples = read_dataset(files["edit_train"])
    assert len(samples) == 2 and all(s.problem is None for s in samples)
    for sample, record in zip(samples, map(json.loads, files["edit_train"].read_text().splitlines())):
        assert sample.text == record["instruction"] and sample.target == str(tmp_path / record["target"])
        assert sample.sources == (str(tmp_path / record["images"][0]),)
