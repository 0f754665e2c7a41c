"""Convert a whole GLM-Image model folder (``model_index.json`` + one subfolder per part), resumably.

Weight components go through ``convert_component``; the others (processor, tokenizer, scheduler) are
copied. Work happens in ``.<dst>.partial/``, whose root ``conversion_manifest.json`` records what is being
converted (source folder and a fingerprint of its files, direction, dtype, shard size): a rerun of the same
conversion after a crash keeps finished components (their manifests verify) and redoes the rest; any other
conversion discards the unfinished one first. The whole folder replaces ``dst`` only when every part is
done, and only a ``dst`` that is empty, absent, or (with ``overwrite``) itself a model folder.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from mindglm_image.atomic import atomic_dir, check_destination, copy_file, copy_tree, fingerprint, write_json_atomic
from mindglm_image.weights.components import COMPONENTS
from mindglm_image.weights.safetensors_io import CheckpointError

from .convert import MANIFEST, ConversionConfig, convert_component
from .model_index import component_names, is_model_folder, read_model_index
from .verify import file_sha256, is_tensor_file, verify_component

log = logging.getLogger(__name__)


def conversion_record(src: Path, cfg: ConversionConfig) -> dict:
    """What a run converts; a partial folder is resumed only by a run with the same record."""
    return {"source": str(src.resolve()), "source_fingerprint": fingerprint(src), "direction": cfg.direction,
            "dtype": cfg.dtype, "max_shard_bytes": cfg.max_shard_bytes}


def _check_paths(src: Path, dst: Path, overwrite: bool) -> None:
    s, d = src.resolve(), dst.resolve()
    if s == d or s in d.parents or d in s.parents:
        raise CheckpointError(f"--src {src} and --dst {dst} overlap; write the conversion to a separate folder")
    check_destination(dst, overwrite, is_model_folder, "model folder", "--overwrite")


def _resumable(work: Path, record: dict) -> bool:
    try:
        earlier = json.loads((work / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        earlier = None
    if earlier is not None and {k: earlier.get(k) for k in record} == record:
        return True
    if any(work.iterdir()):
        what = (f"{earlier.get('source')} ({earlier.get('direction')}, dtype {earlier.get('dtype') or 'kept'})"
                if isinstance(earlier, dict) else "an unknown source")
        log.warning("%s holds an unfinished conversion of %s, not of this source/direction/dtype; starting clean",
                    work, what)
    return False


def convert_model_folder(src: str | Path, dst: str | Path, cfg: ConversionConfig = ConversionConfig(),
                         overwrite: bool = False) -> Path:
    src, dst = Path(src), Path(dst)
    index = read_model_index(src)
    _check_paths(src, dst, overwrite)
    record = conversion_record(src, cfg)
    with atomic_dir(dst, resume=True) as work:
        if not _resumable(work, record):
            shutil.rmtree(work)
            work.mkdir()
        for stale in work.glob(".*"):  # temporaries of a run that was killed before it could clean up
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink()
        write_json_atomic(work / MANIFEST, {**record, "files": None})  # files: None until the folder is complete
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
                continue  # finished by an earlier run of the same conversion and intact
            convert_component(spec, part_src, part_work, cfg)
        for item in src.iterdir():
            if item.is_file() and not item.name.startswith(".") and item.name != MANIFEST:
                copy_file(item, work / item.name)
        write_json_atomic(work / MANIFEST, {**record, "files": _file_table(work, src)})
    return dst


def _file_table(folder: Path, src: Path) -> dict[str, dict]:
    """Every file not covered by a component's tensor manifest -> sha256 and whether it is a copy of the source's."""
    table = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == MANIFEST or is_tensor_file(rel):
            continue
        table[rel] = {"sha256": file_sha256(path), "from_source": (src / rel).is_file()}
    return table

