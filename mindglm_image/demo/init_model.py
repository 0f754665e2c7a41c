"""The untrained demo model folder: the official-layout writer of ``make-tiny`` on ``configs/demo/`` sizes,
with a tokenizer fitted to the demo captions.

The tiny test tokenizer knows five sentences, so a demo caption would cost ~80 tokens and lose the
letters it never saw; the demo tokenizer is the same kind of byte-level BPE (vision ids first, the same
specials and chat template, all 256 bytes in its alphabet so no character is ever dropped) trained on the
demo captions and edit instructions, so each colour, shape and position word is about one token.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ..atomic import check_destination, replace_dir
from ..processor.tiny_tokenizer import TEXT_SPECIALS
from ..tiny_model import load_tiny_configs, make_tiny_model
from .palette import WORDS
from .synthetic import DemoDataConfig, demo_items

#: the demo model's configs, one JSON per part (``configs/demo/`` at the repository root)
DEMO_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "demo"
#: text tokens the BPE learns beyond the 256 byte symbols
TEXT_MERGES = 200
#: captions and instructions the tokenizer is fitted on (the training split's first ones)
CORPUS_ITEMS = 1000


def demo_corpus(items: int = CORPUS_ITEMS) -> list[str]:
    """Captions and edit instructions of the default demo data config (training split only)."""
    cfg = DemoDataConfig(train_size=items, edit_train_size=items // 4)
    captions = [c for _, _, c in demo_items(cfg, "train")]
    instructions = [e.instruction for _, _, e in itertools.islice(demo_items(cfg, "train", edits=True), items // 4)]
    return captions + instructions + [f'"{w}"' for w in WORDS]


def build_demo_tokenizer(vision_vocab_size: int, corpus: list[str]) -> Tokenizer:
    """Byte-level BPE: ``<|dit_token_i|>`` for i < vision_vocab_size, the GLM specials, then text tokens."""
    vision = [f"<|dit_token_{i}|>" for i in range(vision_vocab_size)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=vision_vocab_size + len(TEXT_SPECIALS) + len(alphabet) + TEXT_MERGES,
                                  special_tokens=vision + TEXT_SPECIALS, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return tok


def make_demo_init(folder: str | os.PathLike, seed: int = 0, overwrite: bool = False,
                   config_dir: str | os.PathLike = DEMO_CONFIG_DIR) -> Path:
    """Write the randomly initialised demo model (official layout) to ``folder``, atomically."""
    from ckpt_convert.model_index import is_model_folder

    folder = Path(folder)
    check_destination(folder, overwrite, is_model_folder, "model folder", "overwrite=True")
    vision_vocab = load_tiny_configs(config_dir)["vision_language_encoder"]["text_config"]["vision_vocab_size"]
    work = folder.with_name(f".{folder.name}.init")  # the random folder gets its tokenizer before it lands
    make_tiny_model(work, seed=seed, overwrite=True, progress=False, config_dir=config_dir)
    build_demo_tokenizer(vision_vocab, demo_corpus()).save(str(work / "processor" / "tokenizer.json"))
    replace_dir(work, folder)
    return folder
