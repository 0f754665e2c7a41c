"""Score a demo model on the held-out demo prompts with the classical checker (issue 12's figures).

    .venv/bin/python scripts/eval_demo.py --model outputs/demo/model --data outputs/demo/data --out outputs/demo/eval

Generates ``<id>.png`` for the first ``--n`` records of ``heldout.jsonl`` (text-to-image, seed = record
number) and, with ``--edits``, of ``edit_heldout.jsonl`` (the source image + the instruction), at 128 x
128, then prints ``check-demo``'s report of each set as JSON and writes it to ``<out>/report.json``, with
the VAE's mean reconstruction error (0-255) over the same held-out images and the checker's report of
those reconstructions (``vae``: what the VAE alone lets through).
Images already written are kept, so a killed run resumes.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from mindglm_image.atomic import save_image_atomic, write_json_atomic, write_text_atomic
from mindglm_image.demo.checker import check_records


def _records(jsonl: Path, n: int) -> list[dict]:
    return [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines() if line.strip()][:n]


def _score(out: Path, name: str, records: list[dict]) -> dict:
    """The checker's report of ``<out>/<name>/<id>.png`` against ``records`` (written to ``<out>/<name>.jsonl``,
    the scored subset)."""
    subset = out / f"{name}.jsonl"
    write_text_atomic(subset, "".join(json.dumps(r) + "\n" for r in records))
    return check_records(subset, out / name)[0]


def vae_reconstruction_error(pipe, data: Path, records: list[dict], folder: Path) -> float:
    """Mean absolute error (0-255 pixels) of VAE encode (posterior mode) + decode over the records' images;
    the reconstructions are written to ``folder`` as ``<id>.png`` so the checker can score them (the ceiling
    the VAE alone sets)."""
    import numpy as np

    from mindglm_image.models.vae.processing import normalize_images, postprocess_images, to_uint8

    folder.mkdir(parents=True, exist_ok=True)
    errors = []
    for record in records:
        pixels = np.asarray(Image.open(data / record["image"]).convert("RGB"))
        latents = pipe.vae.encode_mode(normalize_images(pixels.transpose(2, 0, 1)[None].astype(np.float32) / 255))
        decoded = to_uint8(postprocess_images(pipe.vae.decode(latents)))[0]
        save_image_atomic(Image.fromarray(decoded), folder / f"{record['id']}.png")
        errors.append(np.abs(decoded.astype(np.float32) - pixels).mean())
    return round(float(np.mean(errors)), 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="demo model folder")
    parser.add_argument("--data", required=True, help="make-demo-data folder (heldout.jsonl, edit_heldout.jsonl)")
    parser.add_argument("--out", required=True, help="folder for the images and report.json")
    parser.add_argument("--n", type=int, default=50, help="records of each set")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps")
    parser.add_argument("--guidance", type=float, default=1.5, help="classifier-free guidance scale")
    parser.add_argument("--edits", action="store_true", help="also score image-to-image edits")
    parser.add_argument("--temperature", type=float, help="AR sampling temperature (default: the model's generation_config)")
    parser.add_argument("--top-p", type=float, help="AR nucleus sampling mass (default: the model's generation_config)")
    parser.add_argument("--greedy", action="store_true", help="greedy AR decoding instead of sampling")
    parser.add_argument("--target-prior", action="store_true",
                        help="text-to-image from the VQ ids of each held-out image instead of the AR's tokens: "
                             "the score of the DiT, VAE and tokenizer alone (the ceiling a perfect AR reaches)")
    args = parser.parse_args()

    from mindglm_image.pipeline.glm_image_pipeline import GlmImagePipeline
    from mindglm_image.runtime import setup_runtime

    setup_runtime()  # graph mode, $MINDGLM_DEVICE or CPU
    pipe = GlmImagePipeline.from_pretrained(args.model)
    data, out = Path(args.data), Path(args.out)
    heldout = _records(data / "heldout.jsonl", args.n)
    reports = {"vae_reconstruction": vae_reconstruction_error(pipe, data, heldout, out / "vae")}
    reports["vae"] = _score(out, "vae", heldout)
    for name, edits in (("heldout", False), ("edit_heldout", True)):
        if edits and not args.edits:
            continue
        records = _records(data / f"{name}.jsonl", args.n)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, record in enumerate(records):
            path = folder / f"{record['id']}.png"
            if path.exists():
                continue
            prompt = record["instruction"] if edits else record["caption"]
            image = [Image.open(data / record["images"][0]).convert("RGB")] if edits else None
            prior = None
            if args.target_prior and not edits:
                _, _, upsampled = pipe.encode_references([[Image.open(data / record["image"]).convert("RGB")]])
                prior = upsampled[0][0][None]
            sampling = pipe.sampling_config(seed=i, temperature=args.temperature, top_p=args.top_p,
                                            do_sample=False if args.greedy else None)
            result = pipe(prompt, image=image, height=128, width=128, num_inference_steps=args.steps,
                          guidance_scale=args.guidance, seed=i, sampling=sampling, prior_token_ids=prior, progress=False)
            save_image_atomic(result.images[0], path)
        reports[name] = _score(out, name, records)
    write_json_atomic(out / "report.json", reports)
    print(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
