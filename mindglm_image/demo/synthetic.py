"""Synthetic scenes for the demo model: a scene spec, its renderer, captions, edits, splits and the writer.

A scene is a background colour, one or two shapes (kind, colour, named position) and sometimes a short
quoted word. Everything is drawn by Pillow (4x supersampled, box-reduced) from the spec alone, so an item
is a pure function of ``(seed, index)``. The split of a scene is a hash of its *semantic* key (no size, no
jitter), so a held-out scene never appears in training at any size; an edit pair is kept only when its
source and target scenes both belong to the split it is written to.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from ..atomic import save_image_atomic, write_json_atomic, write_text_atomic
from ..config.base import ConfigError, HFConfig
from .palette import COLOURS, POSITIONS, SHAPE_KINDS, SHAPE_SCALE, TEXT_BAND, WORDS, font, text_colour

#: draws without an item of the wanted split after which the config is declared unable to fill it
_MAX_MISSES = 10_000
#: supersampling factor of the renderer (antialiased edges without a resampling filter's overshoot)
_SUPERSAMPLE = 4
#: caption phrases of each position (a caption picks one; the parser knows them all)
POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "on the left side"),
    "right": ("on the right", "on the right side"),
    "top": ("at the top",),
    "bottom": ("at the bottom",),
    "center": ("in the center", "in the middle"),
    "top left": ("in the top left corner", "at the top left"),
    "top right": ("in the top right corner", "at the top right"),
    "bottom left": ("in the bottom left corner", "at the bottom left"),
    "bottom right": ("in the bottom right corner", "at the bottom right"),
}
#: position pairs of two-shape scenes whose shapes never overlap
_PAIRS: tuple[tuple[str, str], ...] = (
    ("left", "right"), ("top", "bottom"), ("top left", "bottom right"), ("top right", "bottom left"),
    ("top left", "top right"), ("bottom left", "bottom right"), ("top left", "bottom left"),
    ("top right", "bottom right"),
)
#: caption templates: {shapes}, {bg}, then the text clause of the same template (empty without text)
_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("{shapes}, on {a} {bg} background{text}", ', with the text "{word}"'),
    ("{a} {bg} background with {shapes}{text}", ' and the word "{word}" written below'),
    ("a flat minimalist illustration: {shapes} on {a} {bg} background{text}",
     '. The text "{word}" is written at the bottom'),
    ("{shapes} on a plain {bg} canvas{text}", ', and a caption that says "{word}"'),
    ("simple geometric poster, {bg} background, {shapes}{text}", ', the word "{word}" in large letters'),
)


@dataclasses.dataclass(frozen=True)
class Shape:
    """One shape; ``scale``/``dx``/``dy`` only vary the drawing, never the caption."""

    kind: str
    colour: str
    position: str
    scale: float = SHAPE_SCALE  # half-size as a fraction of the shorter canvas side (at most SHAPE_SCALE)
    dx: float = 0.0  # offset of the centre from its position anchor, fraction of the width
    dy: float = 0.0  # offset of the centre from its position anchor, fraction of the height

    @property
    def label(self) -> str:
        return f"{self.colour} {self.kind}"


@dataclasses.dataclass(frozen=True)
class Scene:
    """What an image shows; ``shapes`` are in caption order."""

    width: int
    height: int
    background: str
    shapes: tuple[Shape, ...]
    text: str | None = None

    def __post_init__(self) -> None:
        if self.width % 32 or self.height % 32 or min(self.width, self.height) < 64:
            raise ValueError(f"scene size {self.width}x{self.height}: sides must be multiples of 32, at least 64")
        for s in self.shapes:
            if s.kind not in SHAPE_KINDS or s.colour not in COLOURS or s.position not in POSITIONS:
                raise ValueError(f"unknown shape {s}; kinds {SHAPE_KINDS}, colours {tuple(COLOURS)}, "
                                 f"positions {tuple(POSITIONS)}")
        if self.background not in COLOURS:
            raise ValueError(f"unknown background colour {self.background!r}; use one of {tuple(COLOURS)}")
        if self.text is not None and (not self.text.strip() or '"' in self.text):
            raise ValueError(f"text {self.text!r}: a word must be non-empty and hold no double quote")

    def key(self) -> str:
        """The semantic identity of the scene (what a caption says), independent of size and jitter."""
        shapes = ";".join(sorted(f"{s.label}@{s.position}" for s in self.shapes))
        return f"{self.background}|{shapes}|{self.text or ''}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Scene":
        return cls(**{**data, "shapes": tuple(Shape(**s) for s in data["shapes"])})


@dataclasses.dataclass
class DemoDataConfig(HFConfig):
    """What ``make-demo-data`` writes; every item is a function of ``seed`` and its index."""

    seed: int = 0  # seed of the whole dataset
    train_size: int = 2000  # text-to-image training items
    heldout_size: int = 50  # text-to-image held-out items (scenes never seen in training)
    edit_train_size: int = 500  # editing pairs for training
    edit_heldout_size: int = 50  # editing pairs whose source and target scenes are both held out
    # [width, height] choices
    sizes: list = dataclasses.field(default_factory=lambda: [[128, 128], [256, 256], [256, 128], [128, 256]])
    colours: list = dataclasses.field(default_factory=lambda: list(COLOURS))  # colour names used
    kinds: list = dataclasses.field(default_factory=lambda: list(SHAPE_KINDS))  # shape kinds used
    words: list = dataclasses.field(default_factory=lambda: list(WORDS))  # quoted words used
    text_probability: float = 0.3  # share of scenes with a word
    two_shape_probability: float = 0.4  # share of scenes with two shapes
    heldout_fraction: float = 0.1  # share of the scene-key space reserved for the held-out split

    def validate(self) -> None:
        for size in self.sizes:
            if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
                raise ConfigError(f"sizes: {size!r} is not a [width, height] pair of ints")
            if size[0] % 32 or size[1] % 32 or min(size) < 64:
                raise ConfigError(f"size {size[0]}x{size[1]}: sides must be multiples of 32 and at least 64")
        for name in ("text_probability", "two_shape_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)} must lie between 0 and 1")
        for name, known in (("colours", COLOURS), ("kinds", SHAPE_KINDS)):
            values = getattr(self, name)
            if not values or any(v not in known for v in values):
                raise ConfigError(f"{name}={values}: must be a non-empty subset of {list(known)}")
        if not self.words or any(not isinstance(w, str) or not w.strip() or '"' in w for w in self.words):
            raise ConfigError(f"words={self.words}: must be non-empty strings without double quotes")
        if len(self.colours) < 4:
            raise ConfigError("colours: at least 4 are needed (a background, two shape colours and one to edit to)")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"heldout_fraction={self.heldout_fraction} must lie strictly between 0 and 1")


def split_of(scene: Scene, heldout_fraction: float) -> str:
    """'heldout' or 'train', from a hash of the scene key (stable across runs, sizes and machines)."""
    digest = hashlib.sha256(scene.key().encode()).digest()
    return "heldout" if int.from_bytes(digest[:8], "big") / 2.0**64 < heldout_fraction else "train"


# --- sampling -----------------------------------------------------------------------------------------

def _choice(rng: np.random.Generator, options: list | tuple) -> Any:
    return options[int(rng.integers(len(options)))]


def _allowed_positions(text: str | None) -> list[str]:
    """With a word, shapes stay out of the bottom row, where the word is written."""
    return [p for p in POSITIONS if not (text and "bottom" in p)]


def sample_scene(rng: np.random.Generator, cfg: DemoDataConfig) -> Scene:
    """One random scene: size, background, one or two shapes of distinct colours, maybe a word."""
    width, height = _choice(rng, cfg.sizes)
    background = _choice(rng, cfg.colours)
    text = _choice(rng, cfg.words) if rng.random() < cfg.text_probability else None
    allowed = _allowed_positions(text)
    if rng.random() < cfg.two_shape_probability:
        positions = list(_choice(rng, [p for p in _PAIRS if set(p) <= set(allowed)]))
        rng.shuffle(positions)
    else:
        positions = [_choice(rng, allowed)]
    colours = [c for c in cfg.colours if c != background]
    picked = rng.choice(len(colours), size=len(positions), replace=False)
    shapes = tuple(
        Shape(_choice(rng, cfg.kinds), colours[int(i)], pos, scale=round(SHAPE_SCALE * rng.uniform(0.8, 1.0), 4),
              dx=round(rng.uniform(-0.02, 0.02), 4), dy=round(rng.uniform(-0.02, 0.02), 4))
        for i, pos in zip(picked, positions))
    return Scene(int(width), int(height), background, shapes, text)


def article(word: str) -> str:
    """The indefinite article of a colour name (an orange circle)."""
    return "an" if word[0] in "aeiou" else "a"


def caption(scene: Scene, template: int = 0, phrasing: int = 0) -> str:
    """The prompt of a scene in one of the templates (``phrasing`` picks among a position's phrases)."""
    fmt, text_fmt = _TEMPLATES[template % len(_TEMPLATES)]
    parts = []
    for s in scene.shapes:
        phrases = POSITION_PHRASES[s.position]
        parts.append(f"{article(s.colour)} {s.label} {phrases[phrasing % len(phrases)]}")
    text = text_fmt.format(word=scene.text) if scene.text else ""
    return fmt.format(shapes=" and ".join(parts), bg=scene.background, text=text, a=article(scene.background))


_COLOUR_RE = "|".join(COLOURS)
_PHRASE_TO_POSITION = {p: pos for pos, phrases in POSITION_PHRASES.items() for p in phrases}
_SHAPE_RE = re.compile(rf"\b({_COLOUR_RE}) ({'|'.join(SHAPE_KINDS)}) "
                       rf"({'|'.join(sorted(_PHRASE_TO_POSITION, key=len, reverse=True))})")
_BACKGROUND_RE = re.compile(rf"\b({_COLOUR_RE}) (?:background|canvas)\b")


def parse_caption(text: str, width: int, height: int) -> Scene:
    """The scene a caption of our templates describes (size from the image it is checked against)."""
    word = re.search(r'"([^"]+)"', text)
    plain = re.sub(r'"[^"]*"', '""', text)
    background = _BACKGROUND_RE.search(plain)
    shapes = tuple(Shape(kind, colour, _PHRASE_TO_POSITION[phrase])
                   for colour, kind, phrase in _SHAPE_RE.findall(plain))
    if background is None or not shapes:
        raise ValueError(f"caption {text!r} names no background colour or no shape in the demo vocabulary")
    return Scene(width, height, background.group(1), shapes, word.group(1) if word else None)


# --- editing pairs -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Edit:
    """An instruction that changes exactly one attribute of ``source`` into ``target``."""

    instruction: str
    source: Scene
    target: Scene
    attribute: str  # 'colour', 'kind', 'position', 'background' or 'text'
    shape: int | None = None  # index of the changed shape (shape attributes only)


def sample_edit(rng: np.random.Generator, scene: Scene, cfg: DemoDataConfig) -> Edit:
    """Change one attribute: a shape's colour or kind, the background, the position (one shape) or the word."""
    used = {s.colour for s in scene.shapes} | {scene.background}
    free_colours = [c for c in cfg.colours if c not in used]
    kinds = (["colour", "background"] if free_colours else []) + (["kind"] if len(cfg.kinds) > 1 else []) \
        + (["position"] if len(scene.shapes) == 1 else []) + (["text"] if scene.text and len(cfg.words) > 1 else [])
    what = _choice(rng, kinds)
    index = int(rng.integers(len(scene.shapes)))
    shape = scene.shapes[index]
    unique_kind = sum(s.kind == shape.kind for s in scene.shapes) == 1
    name = shape.kind if unique_kind else shape.label
    if what == "background":
        new = _choice(rng, free_colours)
        return Edit(_choice(rng, (f"make the background {new}", f"change the background to {new}")), scene,
                    dataclasses.replace(scene, background=new), what)
    if what == "text":
        new = _choice(rng, [w for w in cfg.words if w != scene.text])
        return Edit(_choice(rng, (f'change the text to "{new}"', f'replace the word "{scene.text}" with "{new}"')),
                    scene, dataclasses.replace(scene, text=new), what)
    if what == "colour":
        new = _choice(rng, free_colours)
        changed = dataclasses.replace(shape, colour=new)
        instruction = _choice(rng, (f"make the {name} {new}", f"change the colour of the {name} to {new}",
                                    f"paint the {name} {new}"))
    elif what == "kind":
        new = _choice(rng, [k for k in cfg.kinds if k != shape.kind])
        changed = dataclasses.replace(shape, kind=new)
        instruction = _choice(rng, (f"turn the {name} into a {new}",
                                    f"replace the {name} with {article(shape.colour)} {shape.colour} {new}"))
    else:
        new = _choice(rng, [p for p in _allowed_positions(scene.text) if p != shape.position])
        changed = dataclasses.replace(shape, position=new)
        corner = " corner" if " " in new else ""
        instruction = f"move the {name} to the {new}{corner}"
    shapes = scene.shapes[:index] + (changed,) + scene.shapes[index + 1:]
    return Edit(instruction, scene, dataclasses.replace(scene, shapes=shapes), what, index)


# --- rendering -----------------------------------------------------------------------------------------

def _outline(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Polygon of a kind inside the square box of half-size ``r`` (None: drawn as an ellipse)."""
    if kind == "square":
        r *= 0.9  # the same visual weight as the circle
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if kind == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if kind == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    return None


def text_box(width: int, height: int, word: str) -> tuple[float, float, int]:
    """Centre (x, y) and font size of the word in a ``width`` x ``height`` canvas (fits 80% of the width)."""
    top, bottom = TEXT_BAND
    size = max(8, int((bottom - top) * height * 1.1))  # capitals fill about 80% of the band
    left, _, right, _ = font(size).getbbox(word)
    if right - left > 0.8 * width:
        size = max(8, int(size * 0.8 * width / (right - left)))
    return width / 2, (top + bottom) / 2 * height, size


def render(scene: Scene) -> Image.Image:
    """The RGB image of a scene."""
    s = _SUPERSAMPLE
    width, height = scene.width * s, scene.height * s
    img = Image.new("RGB", (width, height), COLOURS[scene.background])
    draw = ImageDraw.Draw(img)
    for shape in scene.shapes:
        ax, ay = POSITIONS[shape.position]
        cx, cy, r = (ax + shape.dx) * width, (ay + shape.dy) * height, shape.scale * min(width, height)
        points = _outline(shape.kind, cx, cy, r)
        if points is None:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=COLOURS[shape.colour])
        else:
            draw.polygon(points, fill=COLOURS[shape.colour])
    if scene.text:
        x, y, size = text_box(width, height, scene.text)
        draw.text((x, y), scene.text, fill=COLOURS[text_colour(scene.background)], font=font(size), anchor="mm")
    return img.reduce(s)


# --- dataset writer ------------------------------------------------------------------------------------

def _stream(cfg: DemoDataConfig, stream: int, split: str, edits: bool) -> Iterator[tuple[Scene, Edit | None, int]]:
    """Scenes (and edits) of one split, in a fixed order: draw ``i`` has its own independent generator."""
    misses = 0
    for i in itertools.count():
        rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(stream, i)))
        scene = sample_scene(rng, cfg)
        edit = sample_edit(rng, scene, cfg) if edits else None
        scenes = (scene, edit.target) if edit else (scene,)
        if any(split_of(s, cfg.heldout_fraction) != split for s in scenes):
            misses += 1
            if misses > _MAX_MISSES:
                raise ValueError(f"{_MAX_MISSES} draws in a row found no {split} {'edit' if edits else 'scene'}: "
                                 "this config's scene space is too small; add colours, kinds or words, or change "
                                 "heldout_fraction")
            continue
        misses = 0
        yield scene, edit, int(rng.integers(len(_TEMPLATES) * 2))


def demo_items(cfg: DemoDataConfig, split: str, edits: bool = False) -> Iterator[tuple[str, Scene, str | Edit]]:
    """``(id, scene, caption)`` text-to-image items or ``(id, source scene, edit)`` pairs of a split."""
    size = {("train", False): cfg.train_size, ("heldout", False): cfg.heldout_size,
            ("train", True): cfg.edit_train_size, ("heldout", True): cfg.edit_heldout_size}[(split, edits)]
    prefix = f"edit-{split}" if edits else split
    stream = _stream(cfg, 1 if edits else 0, split, edits)
    for n in range(size):
        scene, edit, style = next(stream)
        template, phrasing = style % len(_TEMPLATES), style // len(_TEMPLATES)
        yield f"{prefix}-{n:06d}", scene, edit if edit else caption(scene, template, phrasing)


def _write_jsonl_atomic(path: Path, records: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _render_once(scene: Scene, path: Path) -> None:
    """Render unless a previous run of the same config finished this file (items are deterministic)."""
    if not path.exists():
        save_image_atomic(render(scene), path)


def write_demo_dataset(out_dir: str | os.PathLike, cfg: DemoDataConfig, overwrite: bool = False,
                       progress: bool = True) -> dict[str, Path]:
    """Write images and the ``.jsonl`` files that ``prepare-data`` reads; returns them by name.

    ``train.jsonl``/``heldout.jsonl``: ``{"id", "image", "caption", "spec"}``; ``edit_train.jsonl``/
    ``edit_heldout.jsonl``: ``{"id", "images": [source], "instruction", "target", "spec"}`` where ``spec``
    is the (target) scene the checker scores against. Image paths are relative to ``out_dir``. Each image
    and each ``.jsonl`` is written atomically. ``demo_data.json`` (the config) is written first: a rerun
    of the same config resumes (finished images are kept), one of another config is refused unless
    ``overwrite``, which empties the folder first, so files of two configs are never mixed.
    """
    out = Path(out_dir)
    manifest = out / "demo_data.json"
    if manifest.exists() and json.loads(manifest.read_text(encoding="utf-8")) != cfg.to_dict():
        if not overwrite:
            raise ValueError(f"{out} holds a demo dataset of another config ({manifest}); "
                             "choose a new folder or pass --overwrite to replace it")
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    write_json_atomic(manifest, cfg.to_dict())
    total = cfg.train_size + cfg.heldout_size + 2 * (cfg.edit_train_size + cfg.edit_heldout_size)
    bar = tqdm(total=total, desc="demo data", unit="img", disable=not progress)
    files = {}
    for split in ("train", "heldout"):
        for edits in (False, True):
            records = []
            for item_id, scene, item in demo_items(cfg, split, edits):
                if isinstance(item, Edit):
                    src, dst = f"images/{item_id}-source.png", f"images/{item_id}-target.png"
                    _render_once(scene, out / src)
                    _render_once(item.target, out / dst)
                    records.append({"id": item_id, "images": [src], "instruction": item.instruction, "target": dst,
                                    "spec": item.target.to_dict()})
                    bar.update(2)
                else:
                    path = f"images/{item_id}.png"
                    _render_once(scene, out / path)
                    records.append({"id": item_id, "image": path, "caption": item, "spec": scene.to_dict()})
                    bar.update(1)
            name = f"{'edit_' if edits else ''}{split}"
            files[name] = out / f"{name}.jsonl"
            _write_jsonl_atomic(files[name], records)
    bar.close()
    return files
