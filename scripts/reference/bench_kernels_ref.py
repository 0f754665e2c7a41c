"""Reference half of scripts/bench_kernels.py: the PyTorch op for each benchmarked operator (CPU, fp32).

argv: SPEC_JSON REPEATS. SPEC_JSON maps case name -> {"op": ..., "shapes": {...}[, "layout": "BSND"]}. Prints one JSON line
{case: best seconds}.
"""
import json
import sys
import time

import torch
import torch.nn.functional as F

specs, repeats = json.loads(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)


def case(op, shapes, layout="BNSD"):
    t = {name: torch.randn(shape) for name, shape in shapes.items()}
    if op == "attention":
        scale = t["q"].shape[-1] ** -0.5
        bias = t.get("bias")
        q, k, v = (t[n].transpose(1, 2) if layout == "BSND" else t[n] for n in "qkv")  # BSND: as diffusers does
        return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale, enable_gqa=True)
    if op == "gelu":
        return lambda: F.gelu(t["x"], approximate="tanh")
    if op == "layer_norm":
        return lambda: F.layer_norm(t["x"], (t["x"].shape[-1],), eps=1e-6)
    if op == "rms_norm":
        return lambda: F.rms_norm(t["x"], (t["x"].shape[-1],), t["w"], 1e-6)
    if op == "add_rms_norm":
        return lambda: (F.rms_norm(t["x"] + t["r"], (t["x"].shape[-1],), t["w"], 1e-6), t["x"] + t["r"])
    if op == "ada_layer_norm":
        return lambda: (F.layer_norm(t["x"], (t["x"].shape[-1],), eps=1e-5) * (1 + t["scale"].unsqueeze(1))
                        + t["shift"].unsqueeze(1))
    if op == "gated_residual":  # diffusers' block: hidden_states + gate.unsqueeze(1) * output
        return lambda: t["x"] + t["gate"].unsqueeze(1) * t["y"]
    if op == "rotary":
        def rotate():
            x1, x2 = t["x"].chunk(2, -1)
            return t["x"] * t["cos"] + torch.cat((-x2, x1), -1) * t["sin"]
        return rotate
    if op == "swiglu":
        def swiglu():
            gate, up = t["x"].chunk(2, -1)
            return F.silu(gate) * up
        return swiglu
    if op == "linear":
        return lambda: F.linear(t["x"], t["w"], t.get("b"))
    if op == "sample_step":  # transformers' order: temperature, top-p (top-k off), softmax, one multinomial draw,
        # then generate()'s bookkeeping: finished rows emit the end id, the token is appended, finished updated
        unfinished = torch.ones(1, dtype=torch.long)
        tokens = torch.zeros(1, 1, dtype=torch.long)

        def sample():
            scores = t["logits"] / 0.9
            ascending, order = scores.sort(-1)
            drop = ascending.softmax(-1).cumsum(-1) <= 1 - 0.75
            drop[..., -1] = False
            scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
            token = torch.multinomial(scores.softmax(-1), 1)[:, 0]
            token = token * unfinished + 2 * (1 - unfinished)
            return torch.cat((tokens, token[:, None]), -1), unfinished & (token != 2)
        return sample
    if op == "guided_euler_step":  # diffusers: the guidance mix of the two halves, then the scheduler's x + dt * v
        def euler_step():
            cond, uncond = t["output"].chunk(2)
            return t["latents"] + -0.05 * (uncond + 1.5 * (cond - uncond))
        return euler_step
    if op == "conv2d":
        return lambda: F.conv2d(t["x"], t["w"], t["b"], padding=1)
    raise ValueError(op)


out = {}
with torch.inference_mode():
    for name, spec in specs.items():
        fn = case(spec["op"], spec["shapes"], spec.get("layout", "BNSD"))
        fn()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        out[name] = best
print(json.dumps(out))
