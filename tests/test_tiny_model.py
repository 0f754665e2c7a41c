"""``make_tiny_model`` / ``mindglm-image make-tiny``: a random GLM-Image folder in the official layout that our
loaders and the unmodified reference ``GlmImagePipeline.from_pretrained`` both open."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from ckpt_convert.convert import ConversionConfig
from ckpt_convert.model_folder import convert_model_folder
from mindglm_image.cli import main as cli_main
from mindglm_image.processor.byt5_tokenizer import ByT5Tokenizer
from mindglm_image.processor.image_processing import GlmImageImageProcessorConfig, preprocess_images
from mindglm_image.processor.prompt import PromptProcessor
from mindglm_image.scheduler.flow_match import FlowMatchEulerScheduler
from mindglm_image.tiny_model import MODEL_INDEX, TINY_CONFIG_DIR, WEIGHT_PARTS, make_tiny_model
from mindglm_image.weights.checkpoint import ShardedCheckpoint
from mindglm_image.weights.components import COMPONENTS, MS_STEM, load_component
from parity_utils import assert_parity

PARTS = ("vision_language_encoder", "text_encoder", "transformer", "vae", "scheduler", "tokenizer", "processor")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "glm-image-tiny", seed=0, progress=False)


def _checkpoint(folder, name):
    return ShardedCheckpoint(folder / name, COMPONENTS[name].hf_stem)


def test_layout_matches_the_official_folder(tiny):
    assert json.loads((tiny / "model_index.json").read_text()) == MODEL_INDEX
    assert sorted(p.name for p in tiny.iterdir()) == sorted(["model_index.json", *PARTS])
    for name in WEIGHT_PARTS:
        config = json.loads((tiny / name / "config.json").read_text())
        assert config == json.loads((TINY_CONFIG_DIR / f"{name}.json").read_text())
    assert (tiny / "vision_language_encoder" / "generation_config.json").is_file()
    assert (tiny / "scheduler" / "scheduler_config.json").is_file()
    assert {p.name for p in (tiny / "tokenizer").iterdir()} == {"tokenizer_config.json", "added_tokens.json"}
    assert {p.name for p in (tiny / "processor").iterdir()} == {
        "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "processor_config.json"}
    # the AR model is sharded like the official checkpoint: model-0000i-of-0000n + index
    ar = _checkpoint(tiny, "vision_language_encoder")
    assert ar.index_path.name == "model.safetensors.index.json" and len(ar.files) > 1
    assert all(f.startswith("model-") and f.endswith(f"-of-{len(ar.files):05d}.safetensors") for f in ar.files)
    for name in WEIGHT_PARTS:
        ckpt = _checkpoint(tiny, name)
        assert {ckpt.get(n).dtype for n in ckpt.keys()} == {"BF16"}, name
    no_dot_files = [p for p in tiny.parent.iterdir() if p.name.startswith(".")]
    assert not no_dot_files, f"temporary folders left behind: {no_dot_files}"


def test_weights_are_seeded_and_not_degenerate(tiny, tmp_path):
    again = make_tiny_model(tmp_path / "again", seed=0, progress=False)
    other = make_tiny_model(tmp_path / "other", seed=1, progress=False)
    for name in WEIGHT_PARTS:
        a, b, c = (_checkpoint(f, name) for f in (tiny, again, other))
        assert a.keys() == b.keys() == c.keys()
        for key in a.keys():
            ta = a.get(key)
            assert bytes(ta.raw) == bytes(b.get(key).raw), f"{name}.{key} is not reproducible from the seed"
            values = ta.array()
            assert np.isfinite(values).all()
            if not (key.endswith("bias") and "norm" in key.split(".")[-2]):  # norm biases are 0 by design
                assert np.abs(values).max() > 0, f"{name}.{key} is all zero"
        assert any(bytes(a.get(k).raw) != bytes(c.get(k).raw) for k in a.keys()), f"{name}: seed has no effect"


def test_our_loaders_open_every_part(tiny):
    for name in WEIGHT_PARTS:
        cell = load_component(COMPONENTS[name], tiny / name)
        ckpt = _checkpoint(tiny, name)
        assert len(cell.parameters_dict()) == len(ckpt.keys()), name
    processor = PromptProcessor.from_folder(tiny / "processor")
    batch = processor(["a red cat holds a sign"], 256, 256)
    assert batch.input_ids.shape[0] == 1 and batch.image_grid_thw.tolist() == [[1, 8, 8], [1, 16, 16]]
    scheduler = FlowMatchEulerScheduler.from_folder(tiny / "scheduler")
    assert scheduler.config.use_dynamic_shifting and scheduler.config.time_shift_type == "linear"
    tokenizer = ByT5Tokenizer.from_pretrained(tiny / "tokenizer")
    assert tokenizer.encode("GLM") == [ord(c) + 3 for c in "GLM"] + [1]
    image_cfg = json.loads((tiny / "processor" / "processor_config.json").read_text())["image_processor"]
    cfg = GlmImageImageProcessorConfig.from_dict(image_cfg)
    assert (cfg.patch_size, cfg.temporal_patch_size, cfg.merge_size) == (16, 1, 1)


def test_round_trip_hf_ms_hf_is_bit_exact(tiny, tmp_path):
    small = ConversionConfig(max_shard_bytes=64 * 1024)
    convert_model_folder(tiny, tmp_path / "ms", small)
    convert_model_folder(tmp_path / "ms", tmp_path / "back", ConversionConfig(direction="ms2hf", max_shard_bytes=64 * 1024))
    for name in WEIGHT_PARTS:
        src, back = _checkpoint(tiny, name), _checkpoint(tmp_path / "back", name)
        assert sorted(back.keys()) == sorted(src.keys()), name
        for key in src.keys():
            assert bytes(back.get(key).raw) == bytes(src.get(key).raw), f"{name}.{key}"
        assert ShardedCheckpoint(tmp_path / "ms" / name, MS_STEM).keys()
        assert (tmp_path / "back" / name / "config.json").read_bytes() == (tiny / name / "config.json").read_bytes()
    for name in ("scheduler", "tokenizer", "processor"):
        for f in (tiny / name).iterdir():
            assert (tmp_path / "back" / name / f.name).read_bytes() == f.read_bytes()


def test_refuses_a_non_empty_folder(tiny, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in tiny.rglob("*")}
    with pytest.raises(FileExistsError, match=f"{re.escape(str(tiny))}.*not empty.*overwrite=True"):
        make_tiny_model(tiny, progress=False)
    assert {p: p.stat().st_mtime_ns for p in tiny.rglob("*")} == before
    (tmp_path / "empty").mkdir()
    assert (make_tiny_model(tmp_path / "empty", progress=False) / "model_index.json").is_file()
    target = tmp_path / "old"
    target.mkdir()
    (target / "stale.txt").write_text("x")
    with pytest.raises(FileExistsError, match="is not a model folder"):  # overwrite replaces only a model folder
        make_tiny_model(target, overwrite=True, progress=False)
    assert (target / "stale.txt").read_text() == "x"
    (target / "model_index.json").write_text("{}")
    make_tiny_model(target, overwrite=True, progress=False)
    assert not (target / "stale.txt").exists() and (target / "model_index.json").is_file()


def test_cli_make_tiny(tmp_path, capsys):
    assert cli_main(["make-tiny", str(tmp_path / "m"), "--seed", "3"]) == 0
    assert str(tmp_path / "m") in capsys.readouterr().out
    assert cli_main(["make-tiny", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err
    assert cli_main(["make-tiny", str(tmp_path / "m"), "--overwrite"]) == 0


@pytest.mark.parity
@pytest.mark.slow
def test_reference_pipeline_loads_the_folder(tiny, reference_run, parity_report):
    """diffusers' GlmImagePipeline.from_pretrained opens the folder unchanged: classes, tensors, forwards."""
    import mindspore as ms

    out = reference_run("tiny_model_load", tiny)
    res = json.loads((out / "results.json").read_text())
    assert res["classes"] == {"tokenizer": "ByT5Tokenizer", "processor": "GlmImageProcessor",
                              "text_encoder": "T5EncoderModel", "vision_language_encoder": "GlmImageForConditionalGeneration",
                              "vae": "AutoencoderKL", "transformer": "GlmImageTransformer2DModel",
                              "scheduler": "FlowMatchEulerDiscreteScheduler"}
    for name in WEIGHT_PARTS:  # the script checked names and values; here the counts agree with our cells
        assert res["tensors"][name] == len(_checkpoint(tiny, name).keys()), name
    for key in ("ar_logits", "t5", "dit", "vae"):
        assert res[key]["finite"] and res[key]["std"] > 0.05, (key, res[key])
    codes = 128
    assert res["ar_code_mass"] > 0.999  # the random AR model samples only VQ codes, as a trained one does
    vq_ids = np.asarray(res["vision"]["ids"]).reshape(-1)
    assert vq_ids.size == 12 and vq_ids.max() < codes and len(set(vq_ids.tolist())) > 1
    assert res["pipeline"]["finite"] and res["pipeline"]["shape"] == [64, 64, 3] and res["pipeline"]["std"] > 0.01

    # our processor, image processor and T5 on the same folder give the reference's results
    batch = PromptProcessor.from_folder(tiny / "processor")(["a red cat holds a sign"], 256, 256)
    assert batch.input_ids.tolist() == res["processor"]["input_ids"]
    assert batch.image_grid_thw.tolist() == res["processor"]["image_grid_thw"]
    image_cfg = json.loads((tiny / "processor" / "processor_config.json").read_text())["image_processor"]
    processed = preprocess_images(Image.open(out / "image.png"), GlmImageImageProcessorConfig.from_dict(image_cfg))
    assert list(processed.pixel_values.shape) == res["vision"]["pixel_values"]
    assert processed.image_grid_thw.tolist() == res["vision"]["grid"]
    t5 = np.load(out / "t5.npz")
    encoder = load_component(COMPONENTS["text_encoder"], tiny / "text_encoder")
    ids, mask = t5["input_ids"].astype(np.int32), t5["attention_mask"].astype(np.int32)
    ours = encoder(ms.Tensor(ids), ms.Tensor(mask), encoder.position_bucket_for(ids.shape[1])).asnumpy()
    assert_parity(parity_report, "tiny_model/text_encoder", ours, t5["last_hidden_state"])
