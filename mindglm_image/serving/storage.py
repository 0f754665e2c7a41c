"""The output folder of ``response_format=url``: the only place a request can make the server write or read.

File names are chosen by the server (128 random bits + ``.png``); a name from a request is accepted only
if it has exactly that form, so no request can reach any other path.
"""
from __future__ import annotations

import re
import secrets
from pathlib import Path

from PIL import Image

from ..atomic import save_image_atomic

_NAME = re.compile(r"^[0-9a-f]{32}\.png$")


class ImageStore:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)

    def save(self, image: Image.Image) -> str:
        """Write ``image`` atomically under a fresh random name; returns the name."""
        name = f"{secrets.token_hex(16)}.png"
        save_image_atomic(image, self.folder / name)
        return name

    def path(self, name: str) -> Path | None:
        """The file of a name this store gave out, or None for any other name."""
        if not _NAME.match(name):
            return None
        path = self.folder / name
        return path if path.is_file() else None
