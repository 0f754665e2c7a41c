"""Demo data generator and quality checker: determinism, captions that say what is drawn, disjoint
splits, the dataset files, and a checker that accepts degraded renders but rejects wrong attributes."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image, ImageFilter

from mindglm_image.cli import main
from mindglm_image.config.base import ConfigError
from mindglm_image.demo import synthetic
from mindglm_image.demo.checker import check_records, detect, read_word, rejects, report, score
from mindglm_image.demo.degrade import degrade
from mindglm_image.demo.palette import COLOURS
from mindglm_image.demo.synthetic import (
    DemoDataConfig, Scene, Shape, caption, demo_items, parse_caption, render, sample_edit, sample_scene, split_of,
    write_demo_dataset)


def _scenes(n: int, seed: int = 0, **overrides) -> list[Scene]:
    cfg = DemoDataConfig(**overrides)
    return [sample_scene(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(9, i))), cfg) for i in range(n)]


def test_generator_is_deterministic_and_seeded():
    cfg = DemoDataConfig(train_size=6, heldout_size=3)
    first = list(demo_items(cfg, "train")) + list(demo_items(cfg, "heldout"))
    again = list(demo_items(cfg, "train")) + list(demo_items(cfg, "heldout"))
    assert first == again
    pixels = [np.asarray(render(s)).tobytes() for _, s, _ in first]
    assert pixels == [np.asarray(render(s)).tobytes() for _, s, _ in again]
    other = list(demo_items(DemoDataConfig(seed=1, train_size=6), "train"))
    assert [c for _, _, c in other] != [c for _, _, c in first[:6]]
    # shrinking the training set leaves the held-out items unchanged
    assert list(demo_items(DemoDataConfig(train_size=1, heldout_size=3), "heldout")) == first[6:]


def test_captions_parse_back_to_their_scene():
    example = 'a red circle on the left and a blue square on the right, on a yellow background, with the text "HI"'
    assert parse_caption(example, 256, 256) == Scene(
        256, 256, "yellow", (Shape("circle", "red", "left"), Shape("square", "blue", "right")), "HI")
    for i, scene in enumerate(_scenes(150, text_probability=0.5)):
        for template in range(5):
            text = caption(scene, template, phrasing=i)
            parsed = parse_caption(text, scene.width, scene.height)
            assert parsed.key() == scene.key(), text
            assert [s.label for s in parsed.shapes] == [s.label for s in scene.shapes]
            assert text.count('"') == (2 if scene.text else 0)
    with pytest.raises(ValueError, match="names no background colour or no shape"):
        parse_caption("a cat holding a sign", 128, 128)


def test_scenes_follow_the_layout_rules():
    for scene in _scenes(300, text_probability=0.5):
        assert scene.width % 32 == 0 and scene.height % 32 == 0
        colours = [s.colour for s in scene.shapes]
        assert scene.background not in colours and len(set(colours)) == len(colours)
        if scene.text:  # the word's band at the bottom stays free
            assert not any("bottom" in s.position for s in scene.shapes)


def test_splits_share_no_scene():
    cfg = DemoDataConfig(train_size=400, heldout_size=40, edit_train_size=60, edit_heldout_size=10)
    train = {s.key() for _, s, _ in demo_items(cfg, "train")}
    heldout = {s.key() for _, s, _ in demo_items(cfg, "heldout")}
    assert len(heldout) >= 35 and not train & heldout
    for split in ("train", "heldout"):
        for _, source, edit in demo_items(cfg, split, edits=True):
            assert split_of(source, cfg.heldout_fraction) == split_of(edit.target, cfg.heldout_fraction) == split
            assert edit.source == source and edit.target != source
    # the key ignores size and jitter, so a scene keeps its split at every size
    scene = _scenes(1)[0]
    moved = tuple(dataclasses.replace(s, dx=0.0) for s in scene.shapes)
    resized = dataclasses.replace(scene, width=64 * 5, shapes=moved)
    assert resized.key() == scene.key()


def test_writer_produces_the_prepare_data_format(tmp_path, capsys):
    assert main(["make-demo-data", str(tmp_path / "d"), "--train", "5", "--heldout", "3", "--edit-train", "2",
                 "--edit-heldout", "1"]) == 0
    assert "train.jsonl (5 items)" in capsys.readouterr().out
    out = tmp_path / "d"
    records = {name: [json.loads(l) for l in (out / f"{name}.jsonl").read_text().splitlines()]
               for name in ("train", "heldout", "edit_train", "edit_heldout")}
    assert [len(r) for r in records.values()] == [5, 3, 2, 1]
    for r in records["train"] + records["heldout"]:
        assert set(r) == {"id", "image", "caption", "spec"}
        img = Image.open(out / r["image"])
        scene = Scene.from_dict(r["spec"])
        assert img.size == (scene.width, scene.height) and img.mode == "RGB"
        assert np.array_equal(np.asarray(img), np.asarray(render(scene)))
        assert parse_caption(r["caption"], *img.size).key() == scene.key()
    for r in records["edit_train"] + records["edit_heldout"]:
        assert set(r) == {"id", "images", "instruction", "target", "spec"}
        assert (out / r["images"][0]).is_file() and (out / r["target"]).is_file()
    assert not list(out.rglob("*.partial"))
    assert DemoDataConfig.from_json_file(out / "demo_data.json").train_size == 5
    for name in ("train", "edit_train"):
        summary, _ = check_records(out / f"{name}.jsonl")
        assert summary["all_correct"] == 1.0
    # a prompts file as batch generation reads it, scored against the <id>.png it writes
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": r["id"], "prompt": r["caption"]}) + "\n" for r in records["heldout"]))
    summary, per_item = check_records(prompts, out / "images")
    assert summary["images"] == 3 and summary["all_correct"] == 1.0
    assert [i for i, _ in per_item] == [r["id"] for r in records["heldout"]]
    assert main(["check-demo", str(prompts), "--images", str(tmp_path)]) == 2
    assert "image of 'heldout-000000' not found" in capsys.readouterr().err
    # a rerun of the same config keeps finished images; another config needs --overwrite
    first = out / records["train"][0]["image"]
    first.write_bytes(b"kept")
    cfg = DemoDataConfig(train_size=5, heldout_size=3, edit_train_size=2, edit_heldout_size=1)
    write_demo_dataset(out, cfg, progress=False)
    assert first.read_bytes() == b"kept"
    with pytest.raises(ValueError, match="another config .* pass --overwrite"):
        write_demo_dataset(out, dataclasses.replace(cfg, seed=1), progress=False)
    write_demo_dataset(out, dataclasses.replace(cfg, seed=1), overwrite=True, progress=False)
    assert Image.open(first).size[0] % 32 == 0 and DemoDataConfig.from_json_file(out / "demo_data.json").seed == 1


def test_bad_scene_and_config_values_are_named(monkeypatch):
    with pytest.raises(ValueError, match="multiples of 32"):
        Scene(100, 128, "red", (Shape("circle", "blue", "left"),))
    with pytest.raises(ValueError, match="unknown background colour 'teal'"):
        Scene(128, 128, "teal", (Shape("circle", "blue", "left"),))
    with pytest.raises(ConfigError, match="colours=.*non-empty subset"):
        DemoDataConfig.from_dict({"colours": ["red", "mauve", "blue"]})
    with pytest.raises(ConfigError, match="size 100x128"):
        DemoDataConfig.from_dict({"sizes": [[100, 128]]})
    with pytest.raises(ConfigError, match="at least 4"):
        DemoDataConfig.from_dict({"colours": ["red", "green", "blue"]})
    monkeypatch.setattr(synthetic, "_MAX_MISSES", 300)
    with pytest.raises(ValueError, match="300 draws in a row found no heldout scene: .* scene space is too small"):
        next(demo_items(DemoDataConfig(heldout_fraction=1e-12), "heldout"))


def test_checker_accepts_degraded_renders():
    scenes = _scenes(60, seed=3, text_probability=0.5)
    summary = report(score(caption(s, i), degrade(render(s), i)) for i, s in enumerate(scenes))
    assert summary["images"] == 60 and summary["text_images"] >= 20
    for key in ("background", "shape_colour", "shape_kind", "shape_position", "shape_count"):
        assert summary[key] >= 0.95, summary
    assert summary["text_legible"] >= 0.9, summary


def test_checker_rejects_wrong_attributes():
    """Each edit changes one attribute; its target image, scored against the source scene, must fail there."""
    cfg = DemoDataConfig(text_probability=0.5)
    edits = [sample_edit(np.random.default_rng(i), scene, cfg)
             for i, scene in enumerate(_scenes(60, seed=5, text_probability=0.5))]
    assert {e.attribute for e in edits} == {"colour", "kind", "position", "background", "text"}
    verdicts = [rejects(edit, degrade(render(edit.target), i)) for i, edit in enumerate(edits)]
    judged = [v for v in verdicts if v is not None]  # None: e.g. 'left' -> 'top left', still on the left
    assert len(judged) >= 50 and sum(judged) / len(judged) >= 0.95, verdicts


def test_checker_rejects_missing_word_and_missing_shape():
    scene = Scene(128, 128, "white", (Shape("circle", "red", "left"), Shape("triangle", "blue", "right")), "GO")
    verdict = score(scene, degrade(render(scene), 0))
    assert verdict.all_correct
    no_text = score(scene, degrade(render(dataclasses.replace(scene, text=None)), 0))
    assert no_text.text is False and no_text.background and all(no_text.kind)
    other_word = score(scene, degrade(render(dataclasses.replace(scene, text="NO")), 0))
    assert other_word.text is False
    smeared = score(scene, render(scene).filter(ImageFilter.GaussianBlur(6)))  # shapes still there, word gone
    assert smeared.text is False and all(smeared.kind) and all(smeared.colour)
    scores = read_word(render(dataclasses.replace(scene, text="NO")))
    assert max(scores, key=scores.get) == "NO"
    one_shape = score(scene, degrade(render(dataclasses.replace(scene, shapes=scene.shapes[:1])), 0))
    assert not one_shape.count and one_shape.colour == (True, False) and one_shape.position == (True, False)
    blank = Image.new("RGB", (128, 128), COLOURS["white"])
    assert detect(blank).shapes == () and not score(scene, blank).count
