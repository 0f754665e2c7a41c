"""Device-memory plan of the real GLM-Image model from its configs: weights per component (parameter
counts of the cells built at real size under ``no_init_parameters``, no weight memory) and the largest
activations of each stage, for one image of the given size.

    .venv/bin/python scripts/memory_plan.py --height 1024 --width 1024 [--dtype-bytes 2] [--device-gb 64]

Stages and what must be resident: AR prior (AR model + its static KV cache), glyph text (T5), I2I
reference encode (VAE encoder), denoising (DiT; two CFG calls of batch 1 each step), VAE decode.
Activations are estimates of the dominant buffers (stated per line), not measurements.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GB = 1024**3  # GiB


def _config_file(folder: Path) -> Path:
    """``config.json``, or the labelled stand-in (``config.RECONSTRUCTED.json``) where the real one is not public."""
    exact = folder / "config.json"
    return exact if exact.is_file() else next(folder.glob("config.*.json"))


def real_configs(configs: Path) -> dict:
    from mindglm_image.weights.components import COMPONENTS

    return {name: spec.config_class().from_json_file(_config_file(configs / name)) for name, spec in COMPONENTS.items()}


def real_parameter_counts(configs: Path) -> dict[str, int]:
    """Parameters per component, from cells built at real size without allocating their weights."""
    import numpy as np

    from mindglm_image.weights.components import COMPONENTS, build_cell

    counts = {}
    for name, config in real_configs(configs).items():
        cell = build_cell(COMPONENTS[name], config)
        counts[name] = int(sum(int(np.prod(p.shape)) for p in cell.get_parameters()))
        del cell
    return counts


def activation_estimates(configs: dict, height: int, width: int, dtype_bytes: int, glyph_tokens: int) -> dict:
    """Dominant activation bytes per stage (name -> (bytes, what))."""
    from mindglm_image.processor.prompt import TargetGrid

    ar, dit, vae = configs["vision_language_encoder"].text_config, configs["transformer"], configs["vae"]
    grid = TargetGrid.for_size(height, width)
    ar_tokens = 512 + grid.height * grid.width + grid.preview_height * grid.preview_width  # prompt budget 512
    kv = 2 * ar.num_hidden_layers * ar.num_key_value_heads * ar.resolved_head_dim * ar_tokens * dtype_bytes
    factor = 2 ** (len(vae.block_out_channels) - 1)
    seq = glyph_tokens + (height // factor // dit.patch_size) * (width // factor // dit.patch_size)
    # scores fp32 + probabilities fp32 + their compute-dtype copy, all heads at once (no fused attention)
    attention = dit.num_attention_heads * seq * seq * (4 + 4 + dtype_bytes)
    # VAE decode in fp32 (force_upcast); the largest feature map (block i: its channels at 1/2^i size), ~4 alive
    decode = 4 * max(c * (height // 2**i) * (width // 2**i)
                     for i, c in enumerate(vae.block_out_channels)) * 4
    return {"vision_language_encoder": (kv, f"static KV cache, {ar_tokens} tokens"),
            "transformer": (attention, f"one attention call over {seq} tokens x {dit.num_attention_heads} heads"),
            "vae": (decode, "decoder feature maps (fp32)"), "text_encoder": (0, "negligible")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=Path, default=ROOT / "configs" / "glm_image")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--dtype-bytes", type=int, default=2, help="2: bf16 weights (the checkpoint's dtype)")
    parser.add_argument("--glyph-tokens", type=int, default=256, help="quoted-text bytes of a long prompt")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    counts = real_parameter_counts(args.configs)
    acts = activation_estimates(real_configs(args.configs), args.height, args.width, args.dtype_bytes,
                                args.glyph_tokens)
    weights = {n: c * args.dtype_bytes for n, c in counts.items()}
    print(f"{'component':26s} {'parameters':>15s} {'weights GiB':>10s} {'activations GiB':>14s}  (dominant buffer)")
    for name, count in counts.items():
        print(f"{name:26s} {count:15,d} {weights[name] / GB:10.2f} {acts[name][0] / GB:14.2f}  ({acts[name][1]})")
    total = sum(weights.values())
    all_resident = total + max(a for a, _ in acts.values())
    stages = {"AR prior": ["vision_language_encoder"], "denoise": ["transformer", "text_encoder"], "VAE decode": ["vae"]}
    sequential = {s: sum(weights[n] + acts[n][0] for n in names) for s, names in stages.items()}
    print(f"\n{args.height}x{args.width}, {args.dtype_bytes}-byte weights: all weights {total / GB:.1f} GiB")
    print(f"all components resident: peak {all_resident / GB:.1f} GiB")
    print("one stage resident at a time (load/unload per stage): peak "
          f"{max(sequential.values()) / GB:.1f} GiB (" + ", ".join(f"{s} {b / GB:.1f}" for s, b in sequential.items()) + ")")


if __name__ == "__main__":
    main()
