"""Prompt side of the GLM-Image processor: chat template, grid markers, image placeholders, token ids.

Reads the checkpoint's own ``processor/`` files (``tokenizer.json`` through the ``tokenizers`` library,
``tokenizer_config.json`` for the special tokens, ``chat_template.jinja``) and reproduces what
``GlmImageProcessor.apply_chat_template`` does for the pipeline, so the ids equal the reference's.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import jinja2
import jinja2.ext
import jinja2.sandbox
import numpy as np
from tokenizers import Tokenizer

#: one token of the AR grid covers 32x32 pixels; the preview grid holds about 16x16 tokens
GRID_FACTOR = 32


class ProcessorError(ValueError):
    """Processor files or request parameters that cannot be used."""


@dataclasses.dataclass(frozen=True)
class TargetGrid:
    """Token grids of one request: the full target grid and the low-resolution preview grid."""

    height: int
    width: int
    preview_height: int
    preview_width: int

    @classmethod
    def for_size(cls, height: int, width: int) -> "TargetGrid":
        """Grids for an image of ``height`` x ``width`` pixels (floored to multiples of 32)."""
        h = (height // GRID_FACTOR) * GRID_FACTOR // GRID_FACTOR
        w = (width // GRID_FACTOR) * GRID_FACTOR // GRID_FACTOR
        if h < 1 or w < 1:
            raise ProcessorError(f"height and width must be at least {GRID_FACTOR} px, got {height}x{width}")
        ratio = h / w
        half = GRID_FACTOR // 2
        return cls(h, w, int(math.sqrt(ratio) * half), int(math.sqrt(1 / ratio) * half))


@dataclasses.dataclass
class PromptBatch:
    """Model inputs for a batch of prompts (left-padded when the tokenizer pads on the left)."""

    input_ids: np.ndarray        # (B, L) int64
    attention_mask: np.ndarray   # (B, L) int64
    image_grid_thw: np.ndarray   # (sum of grids, 3) int64: per sample, its reference images then its target grid(s)
    images_per_sample: np.ndarray  # (B,) int64
    grid: TargetGrid


def _tojson(value, indent=None):
    return json.dumps(value, indent=indent, ensure_ascii=False)


def _raise(message: str):
    raise jinja2.exceptions.TemplateError(message)


def compile_chat_template(source: str) -> jinja2.Template:
    """Compile a chat template in the same sandboxed environment and options transformers uses."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                       extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    return env.from_string(source)


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
    bos_token: str
    eos_token: str | None
    pad_token: str | None
    image_token: str
    grid_bos_token: str
    grid_eos_token: str

    @classmethod
    def from_tokenizer_config(cls, config: dict) -> "SpecialTokens":
        named = dict(config.get("extra_special_tokens") or {}) if isinstance(config.get("extra_special_tokens"), dict) else {}

        def pick(key: str, default: str | None = None) -> str | None:
            value = config.get(key, named.get(key, default))
            return value.get("content") if isinstance(value, dict) else value

        bos = pick("bos_token")
        if bos is None:
            raise ProcessorError("tokenizer_config.json has no bos_token: GLM-Image needs it to open the image grid")
        return cls(bos, pick("eos_token"), pick("pad_token"), pick("image_token", "<|image|>"),
                   pick("grid_bos_token", "<sop>"), pick("grid_eos_token", "<eop>"))

    def template_variables(self) -> dict[str, str]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


class PromptProcessor:
    """Turns prompts (+ the grids of their reference images) into the AR model's input ids."""

    def __init__(self, tokenizer: Tokenizer, special: SpecialTokens, chat_template: str, padding_side: str = "right",
                 merge_size: int = 1):
        self.tokenizer = tokenizer
        self.special = special
        self.template = compile_chat_template(chat_template)
        self.padding_side = padding_side
        self.merge_size = merge_size
        for token in (special.bos_token, special.image_token, special.grid_bos_token, special.grid_eos_token):
            if tokenizer.token_to_id(token) is None:
                raise ProcessorError(f"special token {token!r} is not in tokenizer.json; the processor files do not match")

    @classmethod
    def from_folder(cls, folder: str | Path, merge_size: int = 1) -> "PromptProcessor":
        folder = Path(folder)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            if not (folder / name).is_file():
                raise ProcessorError(f"{folder / name} not found: copy the checkpoint's processor/ folder completely")
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        template = cls._find_template(folder, config)
        return cls(Tokenizer.from_file(str(folder / "tokenizer.json")), SpecialTokens.from_tokenizer_config(config),
                   template, config.get("padding_side", "right"), merge_size)

    @staticmethod
    def _find_template(folder: Path, config: dict) -> str:
        if (folder / "chat_template.jinja").is_file():
            return (folder / "chat_template.jinja").read_text(encoding="utf-8")
        for name in ("processor_config.json", "chat_template.json"):
            path = folder / name
            if path.is_file():
                template = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
                if template:
                    return template
        if config.get("chat_template"):
            return config["chat_template"]
        raise ProcessorError(f"{folder}: no chat template (chat_template.jinja) found")

    def token_id(self, token: str) -> int:
        return int(self.tokenizer.token_to_id(token))

    def render(self, prompt: str, num_images: int) -> str:
        """The chat-templated text of one user turn: its reference images first, then the prompt."""
        content = [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": prompt}]
        return self.template.render(messages=[{"role": "user", "content": content}], tools=None, documents=None,
                                    add_generation_prompt=False, **self.special.template_variables())

    def __call__(self, prompts: Sequence[str], height: int, width: int,
                 reference_grids: Sequence[Sequence[Sequence[int]]] | None = None) -> PromptBatch:
        """Build the AR inputs; ``reference_grids[i]`` holds the (t, h, w) patch grid of each image of prompt i."""
        if isinstance(prompts, str):
            prompts = [prompts]
        grid = TargetGrid.for_size(height, width)
        t2i = not reference_grids or all(len(g) == 0 for g in reference_grids)
        refs = [[] for _ in prompts] if t2i else [list(map(list, g)) for g in reference_grids]
        if len(refs) != len(prompts):
            raise ProcessorError(f"{len(prompts)} prompts but reference images for {len(refs)}: give one list per prompt")
        if len({len(r) for r in refs}) > 1:
            raise ProcessorError("every prompt of a batch needs the same number of reference images")
        sp = self.special
        tail = f"{sp.grid_bos_token}{grid.height} {grid.width}{sp.grid_eos_token}"
        if t2i:
            tail += f"{sp.grid_bos_token}{grid.preview_height} {grid.preview_width}{sp.grid_eos_token}"
        tail += sp.bos_token
        sequences, grids = [], []
        for prompt, images in zip(prompts, refs):
            text = self.render(prompt, len(images)) + tail
            pieces = text.split(sp.image_token)
            if len(pieces) - 1 != len(images):
                raise ProcessorError(f"the chat template produced {len(pieces) - 1} image placeholders for {len(images)} images")
            expanded = pieces[0]
            for thw, piece in zip(images, pieces[1:]):
                expanded += sp.image_token * (int(np.prod(thw)) // self.merge_size**2) + piece
            add_special = not expanded.startswith(sp.bos_token)
            sequences.append(self.tokenizer.encode(expanded, add_special_tokens=add_special).ids)
            grids.extend(images)
            grids.append([1, grid.height, grid.width])
            if t2i:
                grids.append([1, grid.preview_height, grid.preview_width])
        ids, mask = self._pad(sequences)
        per_sample = len(refs[0]) + (2 if t2i else 1)
        return PromptBatch(ids, mask, np.asarray(grids, dtype=np.int64).reshape(-1, 3),
                           np.full(len(prompts), per_sample, dtype=np.int64), grid)

    def _pad(self, sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        length = max(len(s) for s in sequences)
        ids = np.zeros((len(sequences), length), dtype=np.int64)
        mask = np.zeros_like(ids)
        pad_id = self.token_id(self.special.pad_token) if self.special.pad_token else 0
        for i, seq in enumerate(sequences):
            n = len(seq)
            ids[i] = pad_id
            sl = slice(length - n, length) if self.padding_side == "left" else slice(0, n)
            ids[i, sl] = seq
            mask[i, sl] = 1
        return ids, mask
