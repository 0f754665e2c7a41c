"""``mindglm-image`` command line: generate images, convert and verify checkpoints, make a tiny test model, train."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _convert(args: argparse.Namespace) -> int:
    from ckpt_convert.convert import ConversionConfig
    from ckpt_convert.model_folder import convert_model_folder

    cfg = ConversionConfig(direction=f"{args.src_format}2{'ms' if args.src_format == 'hf' else 'hf'}", dtype=args.dtype,
                           max_shard_bytes=int(args.max_shard_gb * 1024**3), progress=True)
    out = convert_model_folder(args.src, args.dst, cfg, overwrite=args.overwrite)
    print(f"converted {args.src} -> {out}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ckpt_convert.verify import verify_model_folder

    problems = verify_model_folder(args.dir, args.source, args.dtype)
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"verified {args.dir}: every tensor and file matches its conversion manifest")
    return 0


def _make_tiny(args: argparse.Namespace) -> int:
    import time

    from .tiny_model import make_tiny_model

    start = time.perf_counter()
    out = make_tiny_model(args.dir, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote a tiny random GLM-Image model to {out} in {time.perf_counter() - start:.1f} s")
    return 0


def _make_demo_data(args: argparse.Namespace) -> int:
    from .demo.synthetic import DemoDataConfig, write_demo_dataset

    cfg = DemoDataConfig.from_json_file(args.config) if args.config else DemoDataConfig()
    for field in ("seed", "train_size", "heldout_size", "edit_train_size", "edit_heldout_size"):
        if getattr(args, field) is not None:
            setattr(cfg, field, getattr(args, field))
    cfg.validate()
    for name, path in write_demo_dataset(args.dir, cfg, overwrite=args.overwrite).items():
        print(f"wrote {path} ({sum(1 for _ in path.open())} items)")
    return 0


def _check_demo(args: argparse.Namespace) -> int:
    import json

    from .demo.checker import check_records

    summary, _ = check_records(args.jsonl, args.images)
    print(json.dumps(summary, indent=2))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from .atomic import save_image_atomic
    from .demo.default_model import demo_model_dir, folder_megabytes, native_side
    from .generation.sampling import SamplingConfig
    from .pipeline.glm_image_pipeline import GlmImagePipeline, check_request
    from .runtime import default_compute_dtype, setup_runtime
    from .training.lora import ADAPTER_CONFIG, parse_lora_arg

    if args.model is None:
        args.model = str(demo_model_dir())
        print(f"no --model: using the built-in demo model ({args.model}, {folder_megabytes(Path(args.model)):.1f} MB, "
              "trained on synthetic shapes at 128 px)")
    if args.height is None:  # not `or`: --height 0 must reach check_request's error, not become the default
        args.height = native_side(args.model)
    if args.width is None:
        args.width = args.height
    # before the model loads, with the flags' names in the messages
    check_request(args.prompt, args.height, args.width, args.steps, args.guidance, args.seed, args.num_images,
                  names=CLI_NAMES)
    paths = output_paths(Path(args.out), len(args.prompt) * args.num_images)
    check_output_paths(paths, args.overwrite)
    adapters = [parse_lora_arg(v) for v in args.lora]
    for path, _ in adapters:
        if not (Path(path) / ADAPTER_CONFIG).is_file():
            raise FileNotFoundError(f"--lora {path} is not a PEFT adapter folder: it has no {ADAPTER_CONFIG}")
    if len(args.prompt) > 1 and args.overlap:
        return _generate_overlapped(args, paths, adapters)
    device = setup_runtime(args.device)
    pipe = GlmImagePipeline.from_pretrained(args.model, dtype=default_compute_dtype(device), lora=adapters)
    for source, scale, component in pipe.adapters:
        print(f"LoRA {source} x{scale:g} merged into {component}")
    sampling = pipe.sampling_config(seed=args.seed, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    if args.greedy:
        sampling = SamplingConfig(do_sample=False, seed=args.seed)
    out = pipe(args.prompt, image=args.image or None, height=args.height, width=args.width,
               num_inference_steps=args.steps, guidance_scale=args.guidance, sampling=sampling,
               seed=[args.seed + i for i in range(len(args.prompt))],  # per prompt: batch-invariant images
               num_images_per_prompt=args.num_images)
    for path, image in zip(paths, out.images):
        save_image_atomic(image, path)
        print(f"wrote {path}")
    print(out.timings.summary())
    return 0


def _generate_overlapped(args: argparse.Namespace, paths: list[Path], adapters: list) -> int:
    """Several prompts through the stage-overlap engine: prompt i's AR runs while earlier prompts denoise.
    Same seeds (``--seed`` + i) and so the same images as one pipeline call; every prompt gets the --image
    references. A prompt that fails is reported; the others are still written."""
    from .atomic import save_image_atomic
    from .generation.sampling import SamplingConfig
    from .pipeline.engine import EngineConfig, GenerationRequest, PipelineLoader, run_engine

    n = args.num_images
    requests = [GenerationRequest(str(i), prompt, args.seed + i, args.height, args.width, args.steps, args.guidance,
                                  tuple(args.image), n) for i, prompt in enumerate(args.prompt)]
    sampling = ({"do_sample": False} if args.greedy else
                {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k})
    SamplingConfig(**{k: v for k, v in sampling.items() if v is not None})  # bad values fail before any work
    loader = PipelineLoader(args.model, args.device, tuple(adapters))
    written = set()
    for result in run_engine(requests, loader, EngineConfig(), args.device, sampling):
        i = int(result.request.key)
        if result.error is not None:
            print(f"error: --prompt {i} ({result.request.prompt[:60]!r}): {result.error}", file=sys.stderr)
            continue
        for path, image in zip(paths[i * n:(i + 1) * n], result.images):
            save_image_atomic(image, path)
            print(f"wrote {path}")
        print(f"prompt {i}: {result.timings.summary()}")
        written.add(i)
    missing = sorted(set(range(len(requests))) - written)
    if missing:
        print(f"error: --prompt {', '.join(map(str, missing))} not generated (see above)", file=sys.stderr)
    return 1 if missing else 0


def output_paths(out: Path, count: int) -> list[Path]:
    """``out`` for one image, ``out-<i>`` suffixes for several."""
    return [out] if count == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(count)]


def check_output_paths(paths: list[Path], overwrite: bool) -> None:
    """Every problem of ``--out`` found before the model loads, named by the user's path."""
    import tempfile

    from .atomic import image_format

    for path in paths:
        try:
            image_format(path)
        except ValueError as err:
            raise ValueError(f"--out {err}") from None
        if path.is_dir():
            raise ValueError(f"--out {path} is a folder; give a file name, e.g. {path / 'out.png'}")
        if path.exists() and not overwrite:
            raise FileExistsError(f"--out {path} already exists; pass --overwrite to replace it, or choose another name")
        folder = path.parent
        while not folder.exists():  # parents that do not exist yet are created when the image is saved
            folder = folder.parent
        if not folder.is_dir():
            raise ValueError(f"--out {path}: {folder} is a file, not a folder")
        try:
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as err:
            raise PermissionError(f"--out {path}: cannot write in {folder} ({err.strerror})") from err


def _prepare_data(args: argparse.Namespace) -> int:
    from .pipeline.glm_image_pipeline import GlmImagePipeline
    from .runtime import default_compute_dtype, setup_runtime
    from .training.data import PrepareDataConfig, PreparedDataset, prepare_dataset, read_dataset

    config = PrepareDataConfig(resolution=args.resolution, min_side=args.min_side, max_aspect=args.max_aspect,
                               shard_size=args.shard_size)
    config.validate()
    read_dataset(args.data)  # a wrong path or an empty dataset fails before the model loads
    device = setup_runtime(args.device)
    pipe = GlmImagePipeline.from_pretrained(args.model, dtype=default_compute_dtype(device))
    out = prepare_dataset(args.data, args.model, args.out, config, pipe=pipe, overwrite=args.overwrite)
    ds = PreparedDataset(out)
    buckets = ", ".join(f"{h}x{w}{f' with {refs} reference(s)' if refs else ''}: {len(i)}"
                        for (h, w, refs, *_), i in sorted(ds.buckets().items()))
    print(f"prepared {len(ds)} samples in {out} (buckets {buckets}); skipped {len(ds.skipped)}")
    for item in ds.skipped:
        print(f"  skipped {item['id']}: {item['reason']}")
    return 0


def _merge_lora(args: argparse.Namespace) -> int:
    from .runtime import setup_runtime
    from .training.lora import merge_adapters_into_folder, parse_lora_arg

    setup_runtime(args.device)
    for source, scale, component in merge_adapters_into_folder(args.model, [parse_lora_arg(v) for v in args.lora],
                                                               args.out):
        print(f"LoRA {source} x{scale:g} merged into {component}")
    print(f"wrote the merged model to {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .runtime import setup_runtime
    from .training.export import export_checkpoint

    setup_runtime(args.device)
    print(f"exported to {export_checkpoint(args.checkpoint, args.out, args.ema)}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import os
    from pathlib import Path

    from .serving.settings import ServerConfig

    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServerConfig)
                 if getattr(args, f.name, None) is not None}
    overrides.setdefault("api_key", os.environ.get("MINDGLM_API_KEY") or None)
    values = json.loads(Path(args.config).read_text(encoding="utf-8")) if args.config else {}
    cfg = ServerConfig.from_dict({**values, **{k: v for k, v in overrides.items() if v is not None}})
    from .serving.app import serve

    return serve(cfg, log_level=args.log_level)


def _train_dit(args: argparse.Namespace) -> int:
    from .jobs.job_args import config_from_args
    from .jobs.train_dit import train_dit
    from .training.config import TrainConfig

    train_dit(config_from_args(TrainConfig, args))
    return 0


#: pipeline argument -> command-line flag, for error messages
CLI_NAMES = {"prompt": "--prompt", "height": "--height", "width": "--width", "num_inference_steps": "--steps",
             "guidance_scale": "--guidance", "seed": "--seed", "num_images_per_prompt": "--num-images"}


def _train_ar(args: argparse.Namespace) -> int:
    from .jobs.job_args import config_from_args
    from .jobs.train_ar import train_ar
    from .training.config import TrainConfig

    train_ar(config_from_args(TrainConfig, args))
    return 0


def _train_vae(args: argparse.Namespace) -> int:
    from .jobs.job_args import config_from_args
    from .jobs.train_vae import train_vae
    from .training.config import TrainConfig

    train_vae(config_from_args(TrainConfig, args))
    return 0


def _train_vq(args: argparse.Namespace) -> int:
    from .jobs.job_args import config_from_args
    from .jobs.train_vq import train_vq
    from .training.config import TrainConfig

    train_vq(config_from_args(TrainConfig, args))
    return 0


def _train_demo(args: argparse.Namespace) -> int:
    from .demo.recipe import DemoRecipeConfig, run_recipe

    cfg = DemoRecipeConfig.from_json_file(args.config)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    print(f"the demo model is in {run_recipe(cfg, args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .weights.safetensors_io import FLOAT_TAGS

    defaults = argparse.ArgumentDefaultsHelpFormatter  # --help shows every default
    parser = argparse.ArgumentParser(prog="mindglm-image", description=__doc__, formatter_class=defaults)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("generate", help="text-to-image, or image-to-image with --image", formatter_class=defaults)
    p.add_argument("--model", default=None, help="model folder (official Hugging Face layout or converted); "
                   "None: the built-in demo model (synthetic shapes, 128 px)")
    p.add_argument("--prompt", required=True, action="append", help="prompt; repeat for a batch")
    p.add_argument("--image", action="append", default=[], help="reference image (repeat for several)")
    p.add_argument("--lora", action="append", default=[], metavar="PATH[:SCALE]",
                   help="PEFT LoRA adapter folder for the DiT or the AR model, scale 1 by default (repeat for several)")
    p.add_argument("--height", type=int, default=None, help="pixels, a multiple of 32; None: the model's own "
                   "size (its VAE sample_size: 128 for the demo model), else 1024")
    p.add_argument("--width", type=int, default=None, help="pixels, a multiple of 32; None: as --height")
    p.add_argument("--steps", type=int, default=50, help="denoising steps")
    p.add_argument("--guidance", type=float, default=1.5, help="classifier-free guidance scale")
    p.add_argument("--num-images", type=int, default=1, help="images per prompt (one AR prior, different noise)")
    p.add_argument("--seed", type=int, default=0, help="seed of the AR sampling and the initial noise; the i-th "
                   "--prompt uses SEED + i, so its image is the one it gives alone with that seed")
    p.add_argument("--temperature", type=float, default=None, help="None: the checkpoint's generation_config")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling; None: the checkpoint's")
    p.add_argument("--top-k", type=int, default=None, help="top-k sampling; None: the checkpoint's")
    p.add_argument("--greedy", action="store_true", help="greedy AR decoding instead of sampling")
    p.add_argument("--device", default=None, help="CPU or Ascend; None: $MINDGLM_DEVICE, else CPU")
    p.add_argument("--out", default="out.png", help="image path, format from the extension: .png, .jpg, .webp ... "
                   "(several images: out-0.png, out-1.png, ...)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=True,
                   help="several prompts: run the AR stage of later prompts while earlier ones denoise (stage "
                        "workers, see README); every prompt gets the --image references")
    p.set_defaults(func=_generate)
    p = sub.add_parser("convert", help="convert a whole model folder between Hugging Face and MindSpore layouts",
                       formatter_class=defaults)
    p.add_argument("--from", dest="src_format", choices=("hf", "ms"), required=True, help="layout of --src")
    p.add_argument("--src", required=True, help="model folder holding model_index.json")
    p.add_argument("--dst", required=True, help="output folder (written atomically; must not exist or be empty)")
    p.add_argument("--overwrite", action="store_true", help="replace --dst if it is a model folder (never another folder)")
    p.add_argument("--dtype", choices=FLOAT_TAGS, default=None, help="cast weights; None: keep")
    p.add_argument("--max-shard-gb", type=float, default=5.0, help="size of output shards")
    p.set_defaults(func=_convert)
    p = sub.add_parser("verify", help="check a converted folder against its checksum manifests", formatter_class=defaults)
    p.add_argument("dir", help="converted model folder")
    p.add_argument("--source", default=None, help="also re-hash the source folder it was converted from")
    p.add_argument("--dtype", choices=FLOAT_TAGS, default=None, help="also require every tensor to be this dtype")
    p.set_defaults(func=_verify)
    p = sub.add_parser("make-tiny", help="write a tiny random GLM-Image model folder (official layout) for tests and demos",
                       formatter_class=defaults)
    p.add_argument("dir", help="output folder (written atomically; must not exist or be empty)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the weights")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it is a model folder (never another folder)")
    p.set_defaults(func=_make_tiny)
    p = sub.add_parser("make-demo-data", help="write the synthetic shapes dataset of the demo model (.jsonl + PNGs)", formatter_class=defaults)
    p.add_argument("dir", help="output folder")
    p.add_argument("--config", default=None, help="DemoDataConfig JSON (default: the built-in one)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--train", dest="train_size", type=int, default=None, help="text-to-image training items")
    p.add_argument("--heldout", dest="heldout_size", type=int, default=None, help="held-out text-to-image items")
    p.add_argument("--edit-train", dest="edit_train_size", type=int, default=None, help="training edit pairs")
    p.add_argument("--edit-heldout", dest="edit_heldout_size", type=int, default=None, help="held-out edit pairs")
    p.add_argument("--overwrite", action="store_true", help="replace a folder that holds another config's dataset")
    p.set_defaults(func=_make_demo_data)
    p = sub.add_parser("check-demo", help="score demo images with the classical checker and print the report", formatter_class=defaults)
    p.add_argument("jsonl", help="demo .jsonl (records with spec, caption or prompt)")
    p.add_argument("--images", default=None, help="folder of <id>.png to score (default: the records' own images)")
    p.set_defaults(func=_check_demo)
    p = sub.add_parser("prepare-data", help="pre-encode a training dataset (.jsonl or image folder) into shards", formatter_class=defaults)
    p.add_argument("--data", required=True, help=".jsonl (image+caption, or source+instruction+target) or a folder "
                                                 "of images with same-named .txt captions")
    p.add_argument("--model", required=True, help="model folder whose cells encode the data")
    p.add_argument("--out", required=True, help="output folder (resumed if a run was killed)")
    p.add_argument("--resolution", type=int, default=1024, help="bucket area is about RESOLUTION^2 pixels")
    p.add_argument("--min-side", type=int, default=256, help="skip images whose shorter side is smaller")
    p.add_argument("--max-aspect", type=float, default=3.0, help="widest bucket aspect ratio")
    p.add_argument("--shard-size", type=int, default=64, help="samples per shard (and per resume point)")
    p.add_argument("--overwrite", action="store_true", help="replace a prepared dataset of other data/options")
    p.add_argument("--device", default=None, help="CPU or Ascend (None: $MINDGLM_DEVICE, else CPU)")
    p.set_defaults(func=_prepare_data)
    p = sub.add_parser("merge-lora", help="write a model folder (official layout) with LoRA adapters merged in", formatter_class=defaults)
    p.add_argument("--model", required=True, help="model folder (official Hugging Face layout or converted)")
    p.add_argument("--lora", required=True, action="append", metavar="PATH[:SCALE]",
                   help="PEFT LoRA adapter folder for the DiT or the AR model (repeat for several)")
    p.add_argument("--out", required=True, help="output model folder (written atomically)")
    p.add_argument("--device", default=None, help="CPU or Ascend (None: $MINDGLM_DEVICE, else CPU)")
    p.set_defaults(func=_merge_lora)
    p = sub.add_parser("export", help="export a training checkpoint: LoRA -> PEFT adapter, full -> model folder",
                       formatter_class=defaults)
    p.add_argument("checkpoint", help="a checkpoint folder (<out_dir>/checkpoints/step-N) or a job's out_dir (newest)")
    p.add_argument("--out", default=None, help="folder for adapter/ or model/ (None: the job's out_dir)")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                   help="export the EMA weights (None: as the job's export_ema says)")
    p.add_argument("--device", default=None, help="CPU or Ascend (None: $MINDGLM_DEVICE, else CPU)")
    p.set_defaults(func=_export)
    p = sub.add_parser("serve", help="OpenAI-compatible images server (/v1/images/generations, /v1/images/edits)", formatter_class=defaults)
    p.add_argument("--config", default=None, help="JSON file of ServerConfig fields (flags override it)")
    p.add_argument("--model", help="model folder (official Hugging Face layout or converted)")
    p.add_argument("--model-name", dest="model_name", help="model id clients send (default glm-image)")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 8000)")
    p.add_argument("--api-key", dest="api_key", help="require 'Authorization: Bearer KEY' (default: $MINDGLM_API_KEY)")
    p.add_argument("--device", help="CPU or Ascend (None: $MINDGLM_DEVICE, else CPU)")
    p.add_argument("--output-dir", dest="output_dir", help="folder for response_format=url images")
    p.add_argument("--queue-size", dest="queue_size", type=int, help="waiting requests before 429 (default 16)")
    p.add_argument("--max-batch-images", dest="max_batch_images", type=int, help="images per pipeline call")
    p.add_argument("--request-timeout", dest="request_timeout_s", type=float, help="seconds before 504")
    p.add_argument("--shutdown-grace", dest="shutdown_grace_s", type=float, help="seconds queued requests still run "
                   "after SIGTERM")
    p.add_argument("--min-side", dest="min_side", type=int, help="smallest generated side (default 256)")
    p.add_argument("--max-side", dest="max_side", type=int, help="largest generated side (default 2048)")
    p.add_argument("--default-size", dest="default_size", help="size when a request gives none (WxH)")
    p.add_argument("--default-steps", dest="default_steps", type=int, help="steps when a request gives none")
    p.add_argument("--warmup", action="store_true", default=None, help="compile every batch size at --default-size "
                   "before reporting ready")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=_serve)
    from .jobs.job_args import add_config_flags
    from .training.config import TrainConfig

    for name, text, func in (
            ("train-dit", "fine-tune the DiT decoder on a prepared dataset (resumes from out_dir)", _train_dit),
            ("train-ar", "SFT of the AR generator (full or LoRA) on a prepared dataset (resumes from out_dir)", _train_ar),
            ("train-vae", "train the VAE from the images of a .jsonl or folder (resumes from out_dir)", _train_vae),
            ("train-vq", "train the AR model's vision encoder + VQ codebook from images (resumes from out_dir)",
             _train_vq)):
        p = sub.add_parser(name, help=text, formatter_class=defaults)
        add_config_flags(p, TrainConfig)
        p.set_defaults(func=func)
    p = sub.add_parser("train-demo", help="train the demo model, every component, on synthetic shapes (resumes; skips finished stages)", formatter_class=defaults)
    p.add_argument("--config", default="configs/jobs/train_demo.json", help="DemoRecipeConfig JSON")
    p.add_argument("--work-dir", dest="work_dir", default=None, help="stage folders (default: the config's work_dir)")
    p.add_argument("--out", default=None, help="copy the finished model folder here")
    p.set_defaults(func=_train_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as err:  # CheckpointError / ConfigError / ProcessorError are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
