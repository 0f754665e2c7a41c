"""Vocabulary and geometry shared by the demo-data generator and the quality checker.

Colours are spread in CIELAB (nearest pair 37 dE apart) so that a blurred, noisy or slightly off-colour
generated image still maps to the intended name. Positions are anchors in fractions of the canvas; the
checker judges a position only along the axes its name mentions ('left' says nothing about height).
"""
from __future__ import annotations

import numpy as np
from PIL import ImageFont

#: named colours (sRGB) a caption may use for the background, a shape or nothing else
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 40),
    "orange": (250, 140, 20),
    "yellow": (250, 220, 40),
    "green": (30, 160, 60),
    "cyan": (50, 205, 230),
    "blue": (30, 70, 220),
    "purple": (150, 40, 170),
    "pink": (250, 150, 210),
    "white": (248, 248, 248),
    "gray": (128, 128, 128),
    "black": (20, 20, 20),
}

#: shape kinds, each drawn axis-aligned inside a square box (triangle apex up, diamond = square on its corner)
SHAPE_KINDS: tuple[str, ...] = ("circle", "square", "triangle", "diamond")

#: named positions -> (x, y) anchor of the shape centre as fractions of the canvas width and height
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "center": (0.5, 0.5),
    "top left": (0.25, 0.25),
    "top right": (0.75, 0.25),
    "bottom left": (0.25, 0.75),
    "bottom right": (0.75, 0.75),
}

#: words the generator writes; the checker also uses them as distractors when it reads a word
WORDS: tuple[str, ...] = ("HI", "OK", "GO", "YES", "NO", "SUN", "CAT", "DOG", "TOP", "GLM", "MIND", "STOP")

#: the text is written centred in this band of the canvas height; shapes with text stay above it
TEXT_BAND: tuple[float, float] = (0.76, 0.98)
#: largest half-size of a shape as a fraction of the shorter canvas side (scenes draw 80-100% of it)
SHAPE_SCALE = 0.2
#: bins of the shape centre (fraction of width / height): below LOW is left/top, above HIGH right/bottom
POSITION_BINS: tuple[float, float] = (0.4, 0.6)


def position_axes(position: str) -> tuple[str | None, str | None]:
    """('left'|'center'|'right' or None, 'top'|'middle'|'bottom' or None): what a position name claims."""
    if position == "center":
        return "center", "middle"
    horizontal = next((h for h in ("left", "right") if h in position.split()), None)
    vertical = next((v for v in ("top", "bottom") if v in position.split()), None)
    return horizontal, vertical


def position_matches(position: str, bins: tuple[str, str]) -> bool:
    """Whether a centre in these bins satisfies a position name ('top left' satisfies 'left')."""
    horizontal, vertical = position_axes(position)
    return horizontal in (None, bins[0]) and vertical in (None, bins[1])


def position_of(cx: float, cy: float) -> tuple[str, str]:
    """Horizontal and vertical bin of a centre given as fractions of the canvas."""
    low, high = POSITION_BINS
    horizontal = "left" if cx < low else "right" if cx > high else "center"
    vertical = "top" if cy < low else "bottom" if cy > high else "middle"
    return horizontal, vertical


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB values in 0..255, shape (..., 3): distances there follow perceived colour."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = c @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


_NAMES = tuple(COLOURS)
_LAB = srgb_to_lab(np.array([COLOURS[n] for n in _NAMES]))


def nearest_colour(rgb: np.ndarray) -> str:
    """Name of the palette colour closest (in CIELAB) to one sRGB value."""
    return _NAMES[int(np.argmin(np.linalg.norm(_LAB - srgb_to_lab(np.asarray(rgb)), axis=-1)))]


def text_colour(background: str) -> str:
    """Black on light backgrounds, white on dark ones (the darker/lighter choice by CIELAB lightness)."""
    return "black" if _LAB[_NAMES.index(background), 0] > 60 else "white"


def font(size: int) -> ImageFont.FreeTypeFont:
    """The scalable font that ships inside Pillow (>= 10.1), so every install renders the same glyphs."""
    loaded = ImageFont.load_default(size=size)
    if not isinstance(loaded, ImageFont.FreeTypeFont):  # a Pillow built without FreeType ignores the size
        raise RuntimeError("this Pillow has no FreeType support, so its built-in font cannot be scaled; "
                           "install a Pillow wheel from PyPI (pip install --force-reinstall 'pillow>=10.1')")
    return loaded
