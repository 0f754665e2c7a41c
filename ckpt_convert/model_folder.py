"""Convert a whole GLM-Image model folder (``model_index.json`` + one subfolder per part), resumably.

Weight components go through ``convert_component``; the others (processor, tokenizer, scheduler) are
copied. Work happens in ``.<dst>.partial/``: each finished component is moved in atomically, so a rerun
after a crash keeps finished components (their manifests verify) and redoes the rest; the whole folder
replaces ``dst`` only when every part is done.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from mindglm_image.atomic import copy_file, copy_tree, partial_dir, replace_dir
from mindglm_image.weights.components import COMPONENTS
from mindglm_image.weights.safetensors_io import CheckpointError

from .convert import MANIFEST, ConversionConfig, convert_component
from .model_index import component_names, read_model_index
from .verify import verify_component


def convert_model_folder(src: str | Path, dst: str | Path, cfg: ConversionConfig = ConversionConfig()) -> Path:
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise CheckpointError("--src and --dst are the same folder; write the conversion to a new folder")
    index = read_model_index(src)
    work = partial_dir(dst)
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.glob(".*"):  # temporaries of a run that was killed before it could clean up
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink()
    for name in component_names(index):
        part_src, part_work = src / name, work / name
        if not part_src.is_dir():
            raise CheckpointError(f"model_index.json names {name!r} but {part_src} is missing")
        spec = COMPONENTS.get(name)
        if spec is None:
            if not part_work.exists():
                copy_tree(part_src, part_work)
            continue
        if (part_work / MANIFEST).is_file() and not verify_component(part_work):
            continue  # finished by an earlier run and intact
        convert_component(spec, part_src, part_work, cfg)
    for item in src.iterdir():
        if item.is_file() and not item.name.startswith("."):
            copy_file(item, work / item.name)
    replace_dir(work, dst)
    return dst
