"""A small GLM-Image-style tokenizer and processor folder, for tiny test models.

Same structure as the real checkpoint's ``processor/`` (a ``tokenizers`` BPE in ``tokenizer.json``, the
special tokens in ``tokenizer_config.json``, a GLM-style ``chat_template.jinja``): vision ids come first
(``<|dit_token_i|>``, i < vision_vocab_size), text tokens after them, as in the real 168064-entry vocab.
Needs only ``tokenizers`` (no MindSpore), so the reference environment can build the same files.
"""
from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

_CORPUS = [
    "a red cat holds a sign that says hello world",
    "a photo of a mountain lake at sunset, with the text 'GLM' written on a boat",
    "draw a blue bird on a green tree; style: oil painting",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 20 24 32 48 64",
    "make the sky purple and add a moon in the corner",
]
TEXT_SPECIALS = ["<|endoftext|>", "[gMASK]", "<sop>", "<eop>", "<|user|>", "<|assistant|>", "<|image|>"]
CHAT_TEMPLATE = (
    "[gMASK]<sop>{% for m in messages %}<|{{ m['role'] }}|>\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}{{ bos_token }}<|image|>{{ eos_token }}"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tokenizer(vision_vocab_size: int, text_vocab_size: int = 96) -> Tokenizer:
    """Byte-level BPE whose first ``vision_vocab_size`` ids are the vision tokens."""
    vision = [f"<|dit_token_{i}|>" for i in range(vision_vocab_size)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vision_vocab_size + len(TEXT_SPECIALS) + text_vocab_size,
                                  special_tokens=vision + TEXT_SPECIALS, initial_alphabet=[], show_progress=False)
    tok.train_from_iterator(_CORPUS, trainer)
    return tok


def write_processor_files(folder: str | Path, vision_vocab_size: int, image_start_id: int, image_end_id: int,
                          image_processor: dict) -> Tokenizer:
    """Write ``tokenizer.json``, ``tokenizer_config.json``, ``chat_template.jinja``, ``processor_config.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(vision_vocab_size)
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "backend": "tokenizers",
        "bos_token": f"<|dit_token_{image_start_id}|>",
        "eos_token": f"<|dit_token_{image_end_id}|>",
        "pad_token": "<|endoftext|>",
        "image_token": "<|image|>",
        "grid_bos_token": "<sop>",
        "grid_eos_token": "<eop>",
        "padding_side": "left",
        "model_max_length": 131072,
        "processor_class": "GlmImageProcessor",
        "tokenizer_class": "TokenizersBackend",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (folder / "processor_config.json").write_text(
        json.dumps({"image_processor": image_processor, "processor_class": "GlmImageProcessor"}, indent=2) + "\n")
    return tok
