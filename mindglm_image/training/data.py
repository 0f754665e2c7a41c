"""Training data: a dataset of image/caption pairs (and editing triples) pre-encoded once with our cells.

Input: a ``.jsonl`` file, one sample per line, paths relative to the file:
``{"id": "cat1", "image": "cat.png", "caption": "a cat"}`` (text-to-image) or
``{"id": "e1", "source": ["a.png"], "instruction": "make it blue", "target": "b.png"}`` (editing; ``source``
may be one path, and may be called ``images`` as in ``make-demo-data``'s edit files); or a folder of images
each with a same-named ``.txt`` caption.

Output (``prepare_dataset``): sharded safetensors ``shard-00000.safetensors`` ... holding each sample's
arrays under ``<index>/<key>``, and ``index.json`` listing samples, their aspect bucket and the skipped
samples with the reason. Every sample is resized (cover + centre crop) to the aspect-ratio bucket
nearest to it (sides multiples of 32, about ``resolution``^2 pixels), then encoded exactly as inference
sees it: normalised VAE latents, the VQ ids of the target at the generator's full and preview grids, the
chat-templated prompt, glyph embeddings; editing sources go through the pipeline's reference-image path.
Shards are written atomically and ``progress.json`` records finished shards, so a killed run resumes
where it stopped; ``index.json`` appears only when every sample is done.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
from PIL import Image
from tqdm import tqdm

from ..atomic import write_json_atomic
from ..config.base import ConfigError, HFConfig
from ..models.ar.image_tokens import encode_reference_images
from ..models.dit.prior_tokens import upsample_prior_tokens
from ..models.vae.processing import normalize_latents
from ..pipeline.vae_image import size_for_grid, vae_input
from ..processor.image_processing import load_image, preprocess_images
from ..processor.prompt import GRID_FACTOR, TargetGrid
from ..weights.safetensors_io import SafetensorsFile, TensorData, write_safetensors
from .ar_loss import IGNORE_INDEX

INDEX = "index.json"
PROGRESS = "progress.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
#: modes PIL converts to RGB without losing meaning (others, e.g. 16-bit or CMYK, are reported)
RGB_MODES = ("RGB", "RGBA", "L", "LA", "P")


@dataclasses.dataclass
class PrepareDataConfig(HFConfig):
    """Options of ``prepare-data``; stored in ``index.json`` (a resumed run must use the same)."""

    resolution: int = 1024     # buckets hold about resolution^2 pixels
    min_side: int = 256        # images whose shorter side is below this are skipped as too small
    max_aspect: float = 3.0    # buckets span aspect ratios 1/max_aspect .. max_aspect
    shard_size: int = 64       # samples per shard file (and per resume checkpoint)

    def validate(self) -> None:
        if self.resolution < GRID_FACTOR or self.resolution % GRID_FACTOR:
            raise ConfigError(f"prepare-data: resolution={self.resolution} must be a positive multiple of {GRID_FACTOR}")
        if self.min_side < 1 or self.shard_size < 1 or self.max_aspect < 1:
            raise ConfigError("prepare-data: min_side and shard_size must be >= 1 and max_aspect >= 1")


class BadSample(ValueError):
    """A sample that cannot be used; the message says why (reported with its id, then skipped)."""


@dataclasses.dataclass(frozen=True)
class RawSample:
    id: str
    text: str                    # caption (T2I) or instruction (editing)
    target: str | None          # image path (None when the line itself was unusable)
    sources: tuple[str, ...] = ()
    problem: str | None = None  # why the line cannot be used, found while reading the dataset


def aspect_buckets(resolution: int, max_aspect: float) -> list[tuple[int, int]]:
    """(height, width) pairs, sides multiples of 32, each about ``resolution``^2 pixels."""
    area, step = resolution * resolution, GRID_FACTOR
    buckets = set()
    for h in range(step, int(resolution * math.sqrt(max_aspect)) + step, step):
        w = max(step, int(round(area / h / step)) * step)
        if max(h / w, w / h) <= max_aspect:
            buckets.update({(h, w), (w, h)})
    return sorted(buckets)


def nearest_bucket(height: int, width: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    ratio = math.log(height / width)
    return min(buckets, key=lambda hw: (abs(math.log(hw[0] / hw[1]) - ratio), -hw[0] * hw[1]))


def fit_to_bucket(image: Image.Image, height: int, width: int) -> Image.Image:
    """Scale to cover (height, width), then crop the centre."""
    scale = max(height / image.height, width / image.width)
    w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    image = image.resize((w, h), resample=Image.LANCZOS)
    left, top = (w - width) // 2, (h - height) // 2
    return image.crop((left, top, left + width, top + height))


def read_dataset(path: str | os.PathLike) -> list[RawSample]:
    """Samples of a ``.jsonl`` file or an image folder; unusable lines become samples with a ``problem``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {path} not found; pass a .jsonl file or a folder of images with .txt captions")
    samples = _read_folder(path) if path.is_dir() else _read_jsonl(path)
    if not samples:
        raise ValueError(f"dataset {path} holds no samples; a .jsonl needs one JSON object per line, a folder "
                         f"images ({', '.join(IMAGE_SUFFIXES)}) with same-named .txt captions")
    ids = [s.id for s in samples]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"dataset {path}: sample ids {duplicates[:5]} occur more than once; ids must be unique")
    return samples


def _read_folder(folder: Path) -> list[RawSample]:
    samples = []
    for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        caption = image.with_suffix(".txt")
        if not caption.is_file():
            samples.append(RawSample(image.stem, "", str(image), problem=f"no caption file {caption.name}"))
            continue
        samples.append(RawSample(image.stem, caption.read_text(encoding="utf-8").strip(), str(image)))
    return samples


def _read_jsonl(path: Path) -> list[RawSample]:
    samples = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            samples.append(RawSample(f"line-{n}", "", None, problem=f"line {n} is not valid JSON ({err})"))
            continue
        sample_id = str(item.get("id", f"line-{n}"))
        if "target" in item or "source" in item or "images" in item:
            sources = item.get("source", item.get("images")) or []  # make-demo-data's edit records say "images"
            sources = [sources] if isinstance(sources, str) else list(sources)
            text, target = item.get("instruction", ""), item.get("target")
            problem = None if target and sources else "an editing sample needs 'source' and 'target' images"
        else:
            text, target, sources = item.get("caption", item.get("prompt", "")), item.get("image"), []
            problem = None if target else "no 'image' path"
        resolve = lambda p: str(path.parent / p)  # noqa: E731
        samples.append(RawSample(sample_id, str(text or "").strip(), resolve(target) if target else None,
                                 tuple(resolve(s) for s in sources), problem))
    return samples


def _host_f32(x) -> np.ndarray:
    """float32 numpy copy of a graph output (bf16 on Ascend, which numpy cannot hold)."""
    return x.astype(ms.float32).asnumpy()


class SampleEncoder:
    """Encodes one sample with a loaded ``GlmImagePipeline``'s cells, the way inference uses them."""

    def __init__(self, pipe, config: PrepareDataConfig):
        self.pipe = pipe
        self.config = config
        self.buckets = aspect_buckets(config.resolution, config.max_aspect)
        image_cfg = pipe.image_config
        if image_cfg.merge_size != 1:
            raise ValueError(f"prepare-data expects the image processor's merge_size 1 (GLM-Image), got {image_cfg.merge_size}")
        # target grids are tokenised at exactly the generator's grid size: no resize by the processor
        self.token_config = dataclasses.replace(image_cfg, do_resize=False)
        self.ar_config = pipe.vision_language_encoder.config

    def _image(self, path: str) -> Image.Image:
        try:
            image = load_image(path)
        except ValueError as err:
            raise BadSample(f"unreadable image: {err}") from err
        if image.mode not in RGB_MODES:
            raise BadSample(f"image {path} has mode {image.mode!r}; convert it to 8-bit RGB")
        if min(image.size) < self.config.min_side:
            raise BadSample(f"image {path} is {image.width}x{image.height} px, smaller than min_side="
                            f"{self.config.min_side}")
        return image.convert("RGB")

    def _grid_ids(self, image: Image.Image, grid_h: int, grid_w: int) -> np.ndarray:
        """VQ ids (grid_h * grid_w,) of ``image`` at exactly that token grid."""
        patch = self.token_config.patch_size
        image = image.resize((grid_w * patch, grid_h * patch), resample=Image.Resampling(self.token_config.resample))
        processed = preprocess_images([image], self.token_config)
        model = self.pipe.vision_language_encoder.model
        return encode_reference_images(model.visual, model.vqmodel, processed.pixel_values, processed.image_grid_thw)

    def _latents(self, image: Image.Image, size: tuple[int, int]) -> np.ndarray:
        """Normalised VAE latents (C, h/8, w/8) float32 of ``image`` at pixel ``size`` (h, w), as the pipeline
        encodes it."""
        latents = normalize_latents(self.pipe.vae.encode_mode(vae_input(image, size)), self.pipe.vae.config)
        return _host_f32(latents)[0]

    def __call__(self, sample: RawSample) -> dict[str, np.ndarray]:
        if sample.problem:
            raise BadSample(sample.problem)
        if not sample.text:
            raise BadSample("empty caption" if not sample.sources else "empty instruction")
        target = self._image(sample.target)
        sources = [self._image(s) for s in sample.sources]
        height, width = nearest_bucket(target.height, target.width, self.buckets)
        target = fit_to_bucket(target, height, width)
        grid = TargetGrid.for_size(height, width)
        full = self._grid_ids(target, grid.height, grid.width)
        out = {"latents": self._latents(target, (height, width)),
               "prior_ids": upsample_prior_tokens(full, grid.height, grid.width).reshape(-1).astype(np.int32),
               "glyph": _host_f32(self.pipe.glyph.encode(sample.text))[0],
               "size": np.array([height, width], np.int32)}
        if sources:
            ref_ids, grids, upsampled = self.pipe.encode_references([sources])
            multiple = self.pipe.vae_scale_factor * self.pipe.transformer.config.patch_size
            for k, (img, (_, grid_h, grid_w), ids) in enumerate(zip(sources, grids[0], upsampled[0])):
                size = size_for_grid(grid_h, grid_w, multiple)  # the pipeline's reference-image size
                out[f"ref_latents_{k}"] = self._latents(img, size)
                out[f"ref_prior_ids_{k}"] = np.asarray(ids, np.int32)
                out[f"ref_size_{k}"] = np.array(size, np.int32)
            batch = self.pipe.prompts([sample.text], height, width, grids)
            generated = full
        else:
            ref_ids, batch = None, self.pipe.prompts([sample.text], height, width)
            generated = np.concatenate([self._grid_ids(target, grid.preview_height, grid.preview_width), full])
        prompt = batch.input_ids[0][batch.attention_mask[0] == 1].copy()
        placeholders = prompt == self.ar_config.image_token_id
        if ref_ids is not None:
            if placeholders.sum() != len(ref_ids):
                raise BadSample(f"the prompt holds {int(placeholders.sum())} image placeholders for {len(ref_ids)} "
                                "reference-image ids")
            prompt[placeholders] = ref_ids
        generated = np.concatenate([generated, [self.ar_config.image_end_token_id]])
        out["ar_input_ids"] = np.concatenate([prompt, generated]).astype(np.int32)
        out["ar_labels"] = np.concatenate([np.full(len(prompt), IGNORE_INDEX), generated]).astype(np.int32)
        out["ar_image_grid_thw"] = batch.image_grid_thw.astype(np.int32)
        for key, value in out.items():
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise BadSample(f"{key} has non-finite values (model or image problem)")
        return out


def _fingerprint(samples: list[RawSample], model: Path, config: PrepareDataConfig) -> str:
    digest = hashlib.sha256(json.dumps([dataclasses.astuple(s) for s in samples]).encode())
    digest.update(json.dumps({"model": str(Path(model).resolve()), **config.to_dict()}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def prepare_dataset(dataset: str | os.PathLike, model: str | os.PathLike, out: str | os.PathLike,
                    config: PrepareDataConfig = PrepareDataConfig(), pipe=None, progress: bool = True,
                    overwrite: bool = False) -> Path:
    """Encode ``dataset`` with the model folder ``model`` into ``out``; resumes a killed run.

    ``pipe`` (a loaded ``GlmImagePipeline`` of ``model``) avoids loading the model again. Returns ``out``.
    """
    samples = read_dataset(dataset)   # bad paths and empty datasets fail before the model loads
    out = Path(out)
    fingerprint = _fingerprint(samples, Path(model), config)
    state = {"fingerprint": fingerprint, "done": 0, "samples": [], "skipped": [], "shards": []}
    if (out / INDEX).is_file():
        if json.loads((out / INDEX).read_text())["fingerprint"] == fingerprint and not overwrite:
            return out
        if not overwrite:
            raise FileExistsError(f"{out} holds a prepared dataset of other data or options; choose a new folder "
                                  "or pass --overwrite")
    if (out / PROGRESS).is_file():
        previous = json.loads((out / PROGRESS).read_text())
        if previous["fingerprint"] == fingerprint and not overwrite:
            state = previous
        elif not overwrite:
            raise FileExistsError(f"{out} holds an unfinished run over other data or options; choose a new folder "
                                  "or pass --overwrite")
    if overwrite or state["done"] == 0:
        for stale in (*out.glob("shard-*.safetensors"), out / INDEX, out / PROGRESS):
            stale.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.partial"):  # temporaries of a killed run
        stale.unlink()
    if pipe is None:
        from ..pipeline.glm_image_pipeline import GlmImagePipeline

        pipe = GlmImagePipeline.from_pretrained(model)
    encode = SampleEncoder(pipe, config)
    pending: list[tuple[dict, dict]] = []
    bar = tqdm(total=len(samples), initial=state["done"], desc="prepare-data", unit="sample", disable=not progress)

    def flush(position: int) -> None:
        if pending:
            name = f"shard-{len(state['shards']):05d}.safetensors"
            tensors = [TensorData.from_array(f"{entry['index']}/{k}", v) for entry, arrays in pending
                       for k, v in arrays.items()]
            write_safetensors(out / name, tensors)
            state["shards"].append(name)
            for entry, _ in pending:
                state["samples"].append({**entry, "shard": name})
            pending.clear()
        state["done"] = position
        write_json_atomic(out / PROGRESS, state)

    skipped_now = []
    for position in range(state["done"], len(samples)):
        sample = samples[position]
        try:
            arrays = encode(sample)
        except BadSample as err:
            skipped_now.append({"id": sample.id, "reason": str(err)})
            tqdm.write(f"skipped sample {sample.id}: {err}", file=sys.stderr)
        else:
            index = len(state["samples"]) + len(pending)
            pending.append(({"id": sample.id, "index": index, "size": arrays["size"].tolist(),
                             "references": len(sample.sources),
                             "reference_sizes": [arrays[f"ref_size_{k}"].tolist() for k in range(len(sample.sources))]},
                            arrays))
        bar.update(1)
        if len(pending) >= config.shard_size:
            state["skipped"] += skipped_now
            skipped_now = []
            flush(position + 1)
    state["skipped"] += skipped_now
    flush(len(samples))
    bar.close()
    if not state["samples"]:
        raise ValueError(f"every sample of {dataset} was skipped ({len(state['skipped'])}); see the reasons above")
    write_json_atomic(out / INDEX, {"format": 1, "fingerprint": fingerprint, "model": str(model),
                                    "config": config.to_dict(), "samples": state["samples"],
                                    "skipped": state["skipped"], "shards": state["shards"]})
    (out / PROGRESS).unlink()
    return out


class PreparedDataset:
    """Read side of ``prepare_dataset``'s output: ``len``, ``buckets()`` and ``ds[i]`` -> dict of arrays."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        index = self.folder / INDEX
        if not index.is_file():
            hint = ("the run is unfinished: rerun prepare-data to resume it" if (self.folder / PROGRESS).is_file()
                    else "run mindglm-image prepare-data first")
            raise FileNotFoundError(f"{index} not found; {hint}")
        self.index = json.loads(index.read_text(encoding="utf-8"))
        self.samples = self.index["samples"]
        self.skipped = self.index["skipped"]
        self._files: dict[str, SafetensorsFile] = {}
        self._keys: dict[int, list[str]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def buckets(self) -> dict[tuple[int, ...], list[int]]:
        """Samples that can share a batch: same size, same number and sizes of reference images (a
        text-to-image sample and an edit need different DiT graphs)."""
        out: dict[tuple[int, ...], list[int]] = {}
        for i, entry in enumerate(self.samples):
            refs = [side for size in entry.get("reference_sizes", []) for side in size]
            out.setdefault((*entry["size"], entry.get("references", 0), *refs), []).append(i)
        return out

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not 0 <= i < len(self.samples):
            raise IndexError(f"sample {i} is outside the {len(self.samples)} prepared samples")
        entry = self.samples[i]
        shard = entry["shard"]
        if shard not in self._files:
            self._files[shard] = SafetensorsFile(self.folder / shard)
            for key in self._files[shard].keys():
                index, _, _ = key.partition("/")
                self._keys.setdefault(int(index), []).append(key)
        f = self._files[shard]
        return {key.partition("/")[2]: np.array(f.get(key).array()) for key in self._keys[entry["index"]]}
