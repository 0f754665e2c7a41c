"""Quality checker for demo images: classical image analysis, no learned model.

From an image and the scene it should show (a ``Scene`` or a caption of our templates) it measures:
background colour (median of the border, nearest named colour in CIELAB); each shape as a connected
region that differs from the background: its colour (median of its eroded interior), its kind (best
overlap with an ideal circle/square/triangle/diamond drawn in its bounding box) and its position (bins
of its box centre, judged only along the axes the position's name claims); and whether the quoted word
is legible (normalised cross-correlation of the text band's ink with the word rendered in the same
font, which must beat every other word of the vocabulary). Median filtering and a two-stage threshold
make it accept blurred, noisy, JPEG-compressed approximations of the intended picture.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .palette import (POSITIONS, SHAPE_KINDS, TEXT_BAND, WORDS, font, nearest_colour, position_matches, position_of,
                      srgb_to_lab)
from .synthetic import Edit, Scene, Shape, parse_caption

#: CIELAB distance from the background above which a pixel may belong to a shape (half the closest pair)
_FOREGROUND_DE = 18.0
#: regions smaller than this fraction of the image are noise or letters, not shapes
_MIN_SHAPE_AREA = 0.01
#: a word is legible when its template correlates at least this well (and better than any other word)
_MIN_TEXT_NCC = 0.5
#: height (pixels) at which a word's ink and its template are compared
_TEXT_HEIGHT = 16


@dataclasses.dataclass(frozen=True)
class DetectedShape:
    kind: str
    colour: str
    cx: float  # box centre, fraction of the width
    cy: float  # box centre, fraction of the height
    area: float  # fraction of the image

    @property
    def bins(self) -> tuple[str, str]:
        return position_of(self.cx, self.cy)


@dataclasses.dataclass(frozen=True)
class Detection:
    background: str
    shapes: tuple[DetectedShape, ...]  # largest first


@dataclasses.dataclass(frozen=True)
class Score:
    """Per-attribute verdicts of one image against its scene (``text`` is None when no word was asked)."""

    background: bool
    colour: tuple[bool, ...]  # per shape of the scene, in its order
    kind: tuple[bool, ...]
    position: tuple[bool, ...]
    count: bool  # as many shape-sized regions as the scene has shapes
    text: bool | None

    @property
    def all_correct(self) -> bool:
        shapes_ok = all(self.colour + self.kind + self.position)
        return self.background and self.count and shapes_ok and self.text is not False


def _text_top(height: int) -> int:
    """First row the checker treats as the word's band (a little above the band: blur spreads the ink)."""
    return int((TEXT_BAND[0] - 0.02) * height)


def _components(mask: np.ndarray) -> np.ndarray:
    """4-connected labels (label = smallest flat index in the region, ``mask.size`` outside): min-propagation
    to the neighbours with pointer jumping, so it converges in a few dozen numpy passes."""
    h, w = mask.shape
    outside = mask.size
    labels = np.where(mask, np.arange(mask.size).reshape(h, w), outside)
    while True:
        new = labels.copy()
        np.minimum(new[1:], labels[:-1], out=new[1:])
        np.minimum(new[:-1], labels[1:], out=new[:-1])
        np.minimum(new[:, 1:], labels[:, :-1], out=new[:, 1:])
        np.minimum(new[:, :-1], labels[:, 1:], out=new[:, :-1])
        new[~mask] = outside
        flat = new.reshape(-1)
        inside = flat < outside
        flat[inside] = flat[flat[inside]]  # a label is a pixel of the same region whose label is smaller
        if np.array_equal(new, labels):
            return labels
        labels = new


@lru_cache(maxsize=512)
def _ideal(kind: str, w: int, h: int) -> np.ndarray:
    """Boolean mask of a kind filling a ``w`` x ``h`` box (drawn 4x larger, box-reduced, cut at half)."""
    s = 4
    img = Image.new("L", (w * s, h * s), 0)
    draw = ImageDraw.Draw(img)
    W, H = w * s - 1, h * s - 1
    if kind == "circle":
        draw.ellipse((0, 0, W, H), fill=255)
    elif kind == "square":
        draw.rectangle((0, 0, W, H), fill=255)
    elif kind == "triangle":
        draw.polygon([(W / 2, 0), (W, H), (0, H)], fill=255)
    else:
        draw.polygon([(W / 2, 0), (W, H / 2), (W / 2, H), (0, H / 2)], fill=255)
    return np.asarray(img.reduce(s)) >= 128


def _kind(region: np.ndarray) -> str:
    """The kind whose ideal mask in the region's bounding box overlaps it best (intersection over union)."""
    ys, xs = np.nonzero(region)
    crop = region[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    ious = [(crop & ideal).sum() / (crop | ideal).sum()
            for ideal in (_ideal(k, crop.shape[1], crop.shape[0]) for k in SHAPE_KINDS)]
    return SHAPE_KINDS[int(np.argmax(ious))]


def detect(image: Image.Image, text_band: bool = False) -> Detection:
    """Background and shapes of an image; with ``text_band`` the band where a word is written is ignored."""
    rgb = np.asarray(image.convert("RGB").filter(ImageFilter.MedianFilter(3)), dtype=np.float64)
    h, w, _ = rgb.shape
    ring = max(2, min(h, w) // 64)
    border = np.concatenate([rgb[:ring].reshape(-1, 3), rgb[-ring:].reshape(-1, 3),
                             rgb[:, :ring].reshape(-1, 3), rgb[:, -ring:].reshape(-1, 3)])
    bg_rgb = np.median(border, axis=0)
    lab = srgb_to_lab(rgb)
    bg_lab = srgb_to_lab(bg_rgb)
    distance = np.linalg.norm(lab - bg_lab, axis=-1)
    mask = distance > _FOREGROUND_DE
    if text_band:
        mask[_text_top(h):] = False
    labels = _components(mask)
    ids, areas = np.unique(labels[mask], return_counts=True)
    shapes = []
    for label in ids[np.argsort(-areas)]:
        region = labels == label
        if region.sum() < _MIN_SHAPE_AREA * h * w:
            break
        # 1. colour: the interior (eroded by 2 px inside its box), away from edges softened by blur
        ys, xs = np.nonzero(region)
        box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        eroded = Image.fromarray(np.pad(region[box], 2).astype(np.uint8) * 255).filter(ImageFilter.MinFilter(5))
        interior = np.asarray(eroded)[2:-2, 2:-2] > 0
        colour_rgb = np.median(rgb[box][interior] if interior.any() else rgb[region], axis=0)
        # 2. outline at half the contrast of this shape, where a blurred edge really lies
        contrast = np.linalg.norm(srgb_to_lab(colour_rgb) - bg_lab)
        outline = region & (distance > 0.5 * contrast)
        if not outline.any():
            continue
        ys, xs = np.nonzero(outline)
        shapes.append(DetectedShape(_kind(outline), nearest_colour(colour_rgb), (xs.min() + xs.max() + 1) / 2 / w,
                                    (ys.min() + ys.max() + 1) / 2 / h, float(region.sum()) / (h * w)))
    return Detection(nearest_colour(bg_rgb), tuple(shapes))


@lru_cache(maxsize=64)
def _word_template(word: str) -> Image.Image:
    """The word's ink rendered large in the generator's font, cropped to its ink box."""
    size = 48
    left, top, right, bottom = font(size).getbbox(word)
    img = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(img).text((4 - left, 4 - top), word, fill=255, font=font(size))
    return img.crop(img.point(lambda v: 255 if v > 127 else 0).getbbox())


def _normalised(img: Image.Image, width: int) -> np.ndarray:
    """Ink at the comparison scale, softened so that thin strokes and blurred strokes line up."""
    resample = Image.Resampling.BOX if img.height > _TEXT_HEIGHT else Image.Resampling.BILINEAR
    small = img.resize((width, _TEXT_HEIGHT), resample)
    return np.asarray(small.filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float64)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def read_word(image: Image.Image, candidates: Iterable[str] = WORDS) -> dict[str, float]:
    """Correlation of the text band's ink with each candidate word's template (empty: no ink found)."""
    # no median filter here: it erases strokes two pixels wide; the comparison blur absorbs the noise
    rgb = np.asarray(image.convert("RGB").filter(ImageFilter.GaussianBlur(0.5)), dtype=np.float64)
    band = srgb_to_lab(rgb[_text_top(rgb.shape[0]):])
    ink = np.linalg.norm(band - np.median(band.reshape(-1, 3), axis=0), axis=-1)
    ink = np.clip(ink / max(np.percentile(ink, 99.5), 25.0), 0.0, 1.0)  # 25 dE: no real word is fainter
    # the word's box: around the letters, i.e. the ink regions not much smaller than the largest one
    strong = ink > 0.5
    labels = _components(strong)
    ids, areas = np.unique(labels[strong], return_counts=True)
    if len(ids) == 0 or areas.max() < 6:
        return {}
    rows, cols = np.nonzero(np.isin(labels, ids[areas >= 0.15 * areas.max()]))
    crop = Image.fromarray((ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1] * 255).astype(np.uint8))
    scores = {}
    for word in candidates:
        template = _word_template(word)
        width = max(4, round(_TEXT_HEIGHT * template.width / template.height))
        scores[word] = _ncc(_normalised(crop, width), _normalised(template, width))
    return scores


def _shape_verdicts(want: Shape, got: DetectedShape | None) -> tuple[bool, bool, bool]:
    if got is None:
        return False, False, False
    return want.colour == got.colour, want.kind == got.kind, position_matches(want.position, got.bins)


def score(spec: Scene | str, image: Image.Image) -> Score:
    """Per-attribute verdicts of ``image`` against a scene (or a caption of our templates)."""
    scene = parse_caption(spec, image.width, image.height) if isinstance(spec, str) else spec
    found = detect(image, text_band=scene.text is not None)
    n = len(scene.shapes)
    candidates = list(found.shapes[:n]) + [None] * (n - len(found.shapes[:n]))
    # pair detected regions with the scene's shapes in the order that agrees on the most attributes
    orders = [candidates] if n == 1 else [candidates, candidates[::-1]]
    verdicts = max(([_shape_verdicts(want, got) for want, got in zip(scene.shapes, order)] for order in orders),
                   key=lambda v: sum(map(sum, v)))
    text = None
    if scene.text is not None:
        scores = read_word(image, dict.fromkeys([*WORDS, scene.text]))
        text = bool(scores) and max(scores, key=scores.get) == scene.text and scores[scene.text] >= _MIN_TEXT_NCC
    colour, kind, position = (tuple(v[i] for v in verdicts) for i in range(3))
    return Score(found.background == scene.background, colour, kind, position, len(found.shapes) == n, text)


def rejects(edit: Edit, image: Image.Image) -> bool | None:
    """Whether ``image`` (a drawing of ``edit.target``), scored against ``edit.source``, fails on the edited
    attribute; None when the edit leaves the source's claim true ('left' -> 'top left' is still left)."""
    verdict = score(edit.source, image)
    if edit.attribute in ("background", "text"):
        return getattr(verdict, edit.attribute) is False
    if edit.attribute == "position":
        if position_matches(edit.source.shapes[edit.shape].position,
                            position_of(*POSITIONS[edit.target.shapes[edit.shape].position])):
            return None
    return not getattr(verdict, edit.attribute)[edit.shape]


def report(scores: Iterable[Score]) -> dict[str, float | int | None]:
    """Share of correct attributes over many images: per image (background, count, text, all) and per shape."""
    scores = list(scores)
    if not scores:
        raise ValueError("report() needs at least one score")
    shapes = [(c, k, p) for s in scores for c, k, p in zip(s.colour, s.kind, s.position)]
    texts = [s.text for s in scores if s.text is not None]
    return {
        "images": len(scores),
        "background": float(np.mean([s.background for s in scores])),
        "shape_colour": float(np.mean([c for c, _, _ in shapes])),
        "shape_kind": float(np.mean([k for _, k, _ in shapes])),
        "shape_position": float(np.mean([p for _, _, p in shapes])),
        "shape_count": float(np.mean([s.count for s in scores])),
        "text_images": len(texts),
        "text_legible": float(np.mean(texts)) if texts else None,
        "all_correct": float(np.mean([s.all_correct for s in scores])),
    }


def check_records(jsonl: str | Path, images: str | Path | None = None) -> tuple[dict, list[tuple[str, Score]]]:
    """Score the images of a demo ``.jsonl`` (our dataset or a prompts file) and report.

    A record's scene is its ``spec`` (else its ``caption`` or ``prompt`` is parsed). The image is
    ``<images>/<id>.png`` (what batch generation writes) or, without ``images``, the record's own
    ``target``/``image`` path (relative to the ``.jsonl``).
    """
    jsonl = Path(jsonl)
    if not jsonl.is_file():
        raise FileNotFoundError(f"{jsonl} not found; pass a .jsonl written by make-demo-data or a prompts file")
    items = []  # every record is checked before any image is scored
    for index, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        record = json.loads(line)
        item_id = str(record.get("id", f"{index:06d}"))  # batch generation's default id
        spec = Scene.from_dict(record["spec"]) if "spec" in record else record.get("caption") or record.get("prompt")
        own = record.get("target") or record.get("image")
        if spec is None or not (images or own):
            raise ValueError(f"{jsonl}:{index + 1}: record {item_id!r} needs a 'spec', 'caption' or 'prompt' and, "
                             "without --images, an 'image' or 'target' path")
        path = Path(images) / f"{item_id}.png" if images else jsonl.parent / own
        if not path.is_file():
            raise FileNotFoundError(f"{jsonl}:{index + 1}: image of {item_id!r} not found at {path}")
        items.append((item_id, spec, path))
    scored = []
    for item_id, spec, path in items:
        with Image.open(path) as img:
            scored.append((item_id, score(spec, img.convert("RGB"))))
    return report(s for _, s in scored), scored
