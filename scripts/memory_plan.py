"""Device-memory plan of the real GLM-Image model from its configs: weights per component (parameter
counts of the cells built at real size under ``no_init_parameters``, no weight memory) and the largest
activations of each stage, for one image of the given size; then the per-device plan of full fine-tuning
of the DiT and the AR model on ``--world`` data-parallel devices, whole or sharded (ZeRO-1 ``shard_state``,
ZeRO-2 ``shard_grads``).

    .venv/bin/python scripts/memory_plan.py --height 1024 --width 1024 [--dtype-bytes 2] [--world 8] [--attention fused]

Stages and what must be resident: AR prior (AR model + its static KV cache), glyph text (T5), I2I
reference encode (VAE encoder), denoising (DiT; batched CFG: one call over 2 rows each step), VAE decode.
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


def real_parameter_counts(configs: Path) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Parameters per component, and the sizes of the tensors a full fine-tune trains (all of the DiT; the AR
    model's text decoder and head), from cells built at real size without allocating their weights."""
    import numpy as np

    from mindglm_image.training.ar_loss import ar_trainable_parameters
    from mindglm_image.weights.components import COMPONENTS, build_cell

    counts, trained = {}, {}
    for name, config in real_configs(configs).items():
        cell = build_cell(COMPONENTS[name], config)
        counts[name] = int(sum(int(np.prod(p.shape)) for p in cell.get_parameters()))
        if name in ("transformer", "vision_language_encoder"):
            params = cell.get_parameters() if name == "transformer" else ar_trainable_parameters(cell)
            trained[name] = [int(np.prod(p.shape)) for p in params]
        del cell
    return counts, trained


def activation_estimates(configs: dict, height: int, width: int, dtype_bytes: int, glyph_tokens: int,
                         fused_attention: bool = True) -> dict:
    """Dominant activation bytes per stage (name -> (bytes, what)); ``fused_attention``: the Ascend selection of
    the ops layer (``ops/attention.py``), else the composite attention that materialises the scores."""
    from mindglm_image.processor.prompt import TargetGrid

    ar, dit, vae = configs["vision_language_encoder"].text_config, configs["transformer"], configs["vae"]
    grid = TargetGrid.for_size(height, width)
    ar_tokens = 512 + grid.height * grid.width + grid.preview_height * grid.preview_width  # prompt budget 512
    kv = 2 * ar.num_hidden_layers * ar.num_key_value_heads * ar.resolved_head_dim * ar_tokens * dtype_bytes
    factor = 2 ** (len(vae.block_out_channels) - 1)
    seq = glyph_tokens + (height // factor // dit.patch_size) * (width // factor // dit.patch_size)
    rows = 2  # batched CFG: one DiT call over the conditional and unconditional rows
    hidden = dit.num_attention_heads * dit.attention_head_dim
    if fused_attention:  # Ascend flash_attention_score keeps no score matrix: one block's q, k, v, output,
        # residual stream and the feed-forward's hidden and activated halves (4x hidden each)
        attention = rows * seq * (5 * hidden + 2 * 4 * hidden) * dtype_bytes
        what = f"one DiT block, fused attention, {rows} x {seq} tokens"
    else:  # composite attention (the CPU path): scores fp32 + probabilities fp32 + their compute-dtype copy
        attention = rows * dit.num_attention_heads * seq * seq * (4 + 4 + dtype_bytes)
        what = f"composite attention scores, {rows} x {seq} tokens x {dit.num_attention_heads} heads"
    # VAE decode in fp32 (force_upcast); the largest feature map (block i: its channels at 1/2^i size), ~4 alive
    decode = 4 * max(c * (height // 2**i) * (width // 2**i)
                     for i, c in enumerate(vae.block_out_channels)) * 4
    return {"vision_language_encoder": (kv, f"static KV cache, {ar_tokens} tokens"),
            "transformer": (attention, what),
            "vae": (decode, "decoder feature maps (fp32)"), "text_encoder": (0, "negligible")}


def training_plan(configs: dict, counts: dict[str, int], trained: dict[str, list[int]], height: int, width: int,
                  world: int, glyph_tokens: int) -> dict[str, dict[str, float]]:
    """Bytes per device of a full fine-tune (bf16 compute, ``recompute: true``, batch 1 per device) of the DiT
    and of the AR model, with ``shard_state`` over ``world`` devices (what ``TrainStep`` allocates)."""
    from mindglm_image.processor.prompt import TargetGrid

    ar, dit, vae = configs["vision_language_encoder"].text_config, configs["transformer"], configs["vae"]
    grid = TargetGrid.for_size(height, width)
    factor = 2 ** (len(vae.block_out_channels) - 1)
    dit_tokens = glyph_tokens + (height // factor // dit.patch_size) * (width // factor // dit.patch_size)
    ar_tokens = 512 + grid.height * grid.width + grid.preview_height * grid.preview_width
    dit_hidden = dit.num_attention_heads * dit.attention_head_dim
    shapes = {  # name: (component, tokens, hidden, feed-forward width, blocks, fp32 logits per token)
        "DiT": ("transformer", dit_tokens, dit_hidden, 4 * dit_hidden, dit.num_layers, 0),
        "AR": ("vision_language_encoder", ar_tokens, ar.hidden_size, ar.intermediate_size, ar.num_hidden_layers,
               ar.vocab_size)}
    plan = {}
    for model, (component, tokens, hidden, ffn, blocks, vocab) in shapes.items():
        n = sum(trained[component])
        piece = sum(-(-size // world) for size in trained[component])  # each tensor flattened, padded, split
        state = 4 + 4 + 4 + (4 if model == "DiT" else 0)  # fp32 master, both moments, EMA (the AR keeps it off)
        # recompute: each block's bf16 input is kept; one block's working set (q, k, v, attention output, the
        # feed-forward's hidden and activated halves; Ascend's fused attention keeps no score matrix) is alive
        # twice in its backward; the AR adds fp32 logits and their gradient
        acts = tokens * hidden * 2 * blocks + 2 * tokens * (4 * hidden + 2 * ffn) * 2 + 2 * tokens * vocab * 4
        plan[model] = {"trained parameters": n, "bf16 weights (whole component)": 2 * counts[component],
                       "fp32 gradient sums (TrainStep.grad_sums)": 4 * n,
                       f"fp32 gradient sums sharded / {world}": 4 * piece,
                       "optimizer state unsharded": state * n, f"optimizer state sharded / {world}": state * piece,
                       "activations (recompute, batch 1)": acts}
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=Path, default=ROOT / "configs" / "glm_image")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--dtype-bytes", type=int, default=2, help="2: bf16 weights (the checkpoint's dtype)")
    parser.add_argument("--glyph-tokens", type=int, default=256, help="quoted-text bytes of a long prompt")
    parser.add_argument("--world", type=int, default=8, help="data-parallel devices of the fine-tuning plan")
    parser.add_argument("--attention", choices=("fused", "composite"), default="fused",
                        help="fused: Ascend flash attention (no score matrix); composite: scores materialised")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    counts, trained = real_parameter_counts(args.configs)
    acts = activation_estimates(real_configs(args.configs), args.height, args.width, args.dtype_bytes,
                                args.glyph_tokens, args.attention == "fused")
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

    plan = training_plan(real_configs(args.configs), counts, trained, args.height, args.width, args.world,
                         args.glyph_tokens)
    print(f"\nfull fine-tune per device on {args.world} devices (bf16, recompute, batch 1), GiB:")
    print(f"{'':42s}" + "".join(f"{m:>16s}" for m in plan))
    print(f"{'trained parameters':42s}" + "".join(f"{p['trained parameters']:16,d}" for p in plan.values()))
    rows = [k for k in next(iter(plan.values())) if k != "trained parameters"]
    for row in rows:
        print(f"{row:42s}" + "".join(f"{p[row] / GB:16.2f}" for p in plan.values()))
    w = args.world
    totals = {"total, no sharding": ("fp32 gradient sums (TrainStep.grad_sums)", "optimizer state unsharded"),
              "total, shard_state: true (ZeRO-1)": ("fp32 gradient sums (TrainStep.grad_sums)",
                                                    f"optimizer state sharded / {w}"),
              "total, + shard_grads: true (ZeRO-2)": (f"fp32 gradient sums sharded / {w}",
                                                            f"optimizer state sharded / {w}")}
    for label, (grads, state) in totals.items():
        print(f"{label:42s}" + "".join(
            f"{(p['bf16 weights (whole component)'] + p[grads] + p[state] + p['activations (recompute, batch 1)']) / GB:16.2f}"
            for p in plan.values()))
    print("(plus the bf16 gradients of one backward pass while they are added to the sums: "
          + ", ".join(f"{m} up to {2 * p['trained parameters'] / GB:.2f}" for m, p in plan.items()) + ")")

if __name__ == "__main__":
    main()
