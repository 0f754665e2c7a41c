"""``mindglm-image`` command line: generate images, convert and verify checkpoints, make a tiny test model."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _convert(args: argparse.Namespace) -> int:
    from ckpt_convert.convert import ConversionConfig
    from ckpt_convert.model_folder import convert_model_folder

    cfg = ConversionConfig(direction=f"{args.src_format}2{'ms' if args.src_format == 'hf' else 'hf'}", dtype=args.dtype,
                           max_shard_bytes=int(args.max_shard_gb * 1024**3), progress=True)
    out = convert_model_folder(args.src, args.dst, cfg)
    print(f"converted {args.src} -> {out}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ckpt_convert.verify import verify_model_folder

    problems = verify_model_folder(args.dir, args.source)
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"verified {args.dir}: every tensor matches its conversion manifest")
    return 0


def _make_tiny(args: argparse.Namespace) -> int:
    import time

    from .tiny_model import make_tiny_model

    start = time.perf_counter()
    out = make_tiny_model(args.dir, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote a tiny random GLM-Image model to {out} in {time.perf_counter() - start:.1f} s")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .generation.sampling import SamplingConfig
    from .pipeline.glm_image_pipeline import GlmImagePipeline, check_request, save_images
    from .runtime import default_compute_dtype, setup_runtime

    # before the model loads, with the flags' names in the messages
    check_request(args.prompt, args.height, args.width, args.steps, args.guidance, args.seed, args.num_images,
                  names=CLI_NAMES)
    device = setup_runtime(args.device)
    pipe = GlmImagePipeline.from_pretrained(args.model, dtype=default_compute_dtype(device))
    sampling = pipe.sampling_config(seed=args.seed, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    if args.greedy:
        sampling = SamplingConfig(do_sample=False, seed=args.seed)
    out = pipe(args.prompt, image=args.image or None, height=args.height, width=args.width,
               num_inference_steps=args.steps, guidance_scale=args.guidance, sampling=sampling,
               seed=[args.seed + i for i in range(len(args.prompt))],  # per prompt: batch-invariant images
               num_images_per_prompt=args.num_images)
    for path in save_images(out.images, Path(args.out)):
        print(f"wrote {path}")
    print(out.timings.summary())
    return 0


#: pipeline argument -> command-line flag, for error messages
CLI_NAMES = {"prompt": "--prompt", "height": "--height", "width": "--width", "num_inference_steps": "--steps",
             "guidance_scale": "--guidance", "seed": "--seed", "num_images_per_prompt": "--num-images"}


def build_parser() -> argparse.ArgumentParser:
    defaults = argparse.ArgumentDefaultsHelpFormatter  # --help shows every default
    parser = argparse.ArgumentParser(prog="mindglm-image", description=__doc__, formatter_class=defaults)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("generate", help="text-to-image, or image-to-image with --image", formatter_class=defaults)
    p.add_argument("--model", required=True, help="model folder (official Hugging Face layout or converted)")
    p.add_argument("--prompt", required=True, action="append", help="prompt; repeat for a batch")
    p.add_argument("--image", action="append", default=[], help="reference image (repeat for several)")
    p.add_argument("--height", type=int, default=1024, help="pixels, a multiple of 32")
    p.add_argument("--width", type=int, default=1024, help="pixels, a multiple of 32")
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
    p.add_argument("--out", default="out.png", help="PNG path (several prompts: out-0.png, out-1.png, ...)")
    p.set_defaults(func=_generate)
    p = sub.add_parser("convert", help="convert a whole model folder between Hugging Face and MindSpore layouts",
                       formatter_class=defaults)
    p.add_argument("--from", dest="src_format", choices=("hf", "ms"), required=True, help="layout of --src")
    p.add_argument("--src", required=True, help="model folder holding model_index.json")
    p.add_argument("--dst", required=True, help="output folder (written atomically)")
    p.add_argument("--dtype", choices=("F32", "F16", "BF16"), default=None, help="cast weights; None: keep")
    p.add_argument("--max-shard-gb", type=float, default=5.0, help="size of output shards")
    p.set_defaults(func=_convert)
    p = sub.add_parser("verify", help="check a converted folder against its checksum manifests", formatter_class=defaults)
    p.add_argument("dir", help="converted model folder")
    p.add_argument("--source", default=None, help="also re-hash the source folder it was converted from")
    p.set_defaults(func=_verify)
    p = sub.add_parser("make-tiny", help="write a tiny random GLM-Image model folder (official layout) for tests and demos",
                       formatter_class=defaults)
    p.add_argument("dir", help="output folder (written atomically; must not exist or be empty)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the weights")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty folder")
    p.set_defaults(func=_make_tiny)
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
