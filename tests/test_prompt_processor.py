"""Prompt processor parity: chat template, grid sizes and token ids equal the reference processor's."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mindglm_image.processor.prompt import ProcessorError, PromptProcessor, TargetGrid


@pytest.mark.parity
def test_t2i_ids_equal_reference(reference_fixture):
    folder = reference_fixture("prompt_processor")
    processor = PromptProcessor.from_folder(folder / "processor")
    for case in json.loads((folder / "cases.json").read_text()):
        batch = processor(case["prompts"], case["height"], case["width"])
        np.testing.assert_array_equal(batch.input_ids, np.asarray(case["input_ids"]))
        np.testing.assert_array_equal(batch.attention_mask, np.asarray(case["attention_mask"]))
        np.testing.assert_array_equal(batch.image_grid_thw, np.asarray(case["image_grid_thw"]))
        np.testing.assert_array_equal(batch.images_per_sample, np.asarray(case["images_per_sample"]))


def test_target_grid_sizes():
    assert TargetGrid.for_size(1024, 1024) == TargetGrid(32, 32, 16, 16)
    assert TargetGrid.for_size(768, 1344) == TargetGrid(24, 42, 12, 21)
    assert TargetGrid.for_size(2048, 512) == TargetGrid(64, 16, 32, 8)
    with pytest.raises(ProcessorError, match="at least 32"):
        TargetGrid.for_size(16, 512)


def test_missing_processor_files_are_named(tmp_path):
    with pytest.raises(ProcessorError, match="tokenizer.json not found"):
        PromptProcessor.from_folder(tmp_path)
