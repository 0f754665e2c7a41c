"""The ops layer: which implementation each operator resolves to, and every CPU twin against its composite."""
from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from mindglm_image.ops import (adamw_ema, ascendc, attention, cpu_twins, euler_step, gated_activation, gated_residual,
                               gelu, layer_norm, linear, registry, rms_norm, rotary, sample_token)
from mindglm_image.ops.attention import MASKED

# operator -> (Ascend implementation, the MindSpore built-in it calls)
ASCEND = {
    "attention": (attention.attention_ascend, ("flash_attention_score", "incre_flash_attention")),
    "rms_norm": (rms_norm.rms_norm_ascend, ("rms_norm",)),
    "add_rms_norm": (rms_norm.add_rms_norm_ascend, ("add_rms_norm",)),
    "layer_norm": (layer_norm.layer_norm_ascend, ()),
    "ada_layer_norm": (layer_norm.ada_layer_norm_ascend, ()),
    "rotary": (rotary.apply_rotary_ascend, ("rotary_position_embedding",)),
    "swiglu": (gated_activation.swiglu_ascend, ("swiglu",)),
    "gated_residual": (gated_residual.gated_residual_ascend, ("addcmul",)),
    "linear": (linear.linear_ascend, ()),
}


@pytest.mark.parametrize("op", sorted(ASCEND))
def test_ascend_resolution(op):
    """On Ascend with fused kernels each op resolves to its built-in wrapper (not called: no NPU here),
    and the MindSpore 2.10 APIs that wrapper names exist in the installed package."""
    impl = registry.resolve(op, device="Ascend", mode="fused")
    fn, builtins = ASCEND[op]
    assert (impl.kind, impl.fn) == ("ascend", fn)
    for name in builtins:
        assert callable(getattr(ms.ops, name)), name
    assert registry.resolve(op, device="Ascend", mode="composite").kind == "composite"


def test_mode_defaults_and_bad_value(monkeypatch):
    """Unset: fused on Ascend; on CPU fused only for cells built inside ``inference_cells`` (the pipeline's),
    in this thread alone; the variable, when set, wins everywhere."""
    import threading

    monkeypatch.delenv("MINDGLM_KERNELS", raising=False)
    assert (registry.kernel_mode("Ascend"), registry.kernel_mode("CPU")) == ("fused", "composite")
    seen = []
    with registry.inference_cells():
        assert (registry.kernel_mode("Ascend"), registry.kernel_mode("CPU")) == ("fused", "fused")
        worker = threading.Thread(target=lambda: seen.append(registry.kernel_mode("CPU")))
        worker.start()
        worker.join()
        monkeypatch.setenv("MINDGLM_KERNELS", "composite")
        assert registry.kernel_mode("CPU") == "composite"
        monkeypatch.delenv("MINDGLM_KERNELS")
    assert seen == ["composite"] and registry.kernel_mode("CPU") == "composite"
    monkeypatch.setenv("MINDGLM_KERNELS", "fastest")
    with pytest.raises(ValueError, match="MINDGLM_KERNELS='fastest' is not one of composite, fused"):
        registry.kernel_mode("CPU")


def test_cpu_fused_resolution():
    """CPU twins where they exist (every op with an Ascend built-in, and GeLU), the composite elsewhere."""
    kinds = {op: registry.kind_of(op, "CPU", "fused")
             for op in (*ASCEND, "gelu", "sample_step", "guided_euler_step", "conv2d", "adamw_ema")}
    assert kinds == {"attention": "cpu_twin", "rms_norm": "cpu_twin", "add_rms_norm": "cpu_twin",
                     "ada_layer_norm": "cpu_twin", "layer_norm": "cpu_twin", "rotary": "cpu_twin",
                     "swiglu": "cpu_twin", "gated_residual": "cpu_twin", "linear": "cpu_twin", "gelu": "cpu_twin", "sample_step": "cpu_twin",
                     "guided_euler_step": "cpu_twin", "conv2d": "composite", "adamw_ema": "composite"}
    assert registry.resolve("gelu", "Ascend", "fused").fn is gelu.gelu  # the built-in kernel there
    assert registry.resolve("sample_step", "Ascend", "fused").fn is sample_token.sample_step  # no fused op
    assert registry.resolve("guided_euler_step", "Ascend", "fused").fn is euler_step.guided_euler_step


def test_missing_compiler_falls_back(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(cpu_twins, "_compiler", lambda: None)
    cpu_twins.library.cache_clear()
    try:
        assert cpu_twins.library() is None
        assert registry.kind_of("rms_norm", "CPU", "fused") == "composite"
        assert "no C++ compiler" in caplog.text
    finally:
        cpu_twins.library.cache_clear()


class _Apply(nn.Cell):
    """Graph-mode call of one operator implementation with constant scalars bound."""

    def __init__(self, fn, *constants):
        super().__init__()
        self.fn = fn
        self.constants = constants

    def construct(self, *args):
        return self.fn(*args, *self.constants)


class _Attention(nn.Cell):
    def __init__(self, fn, scale: float, layout: str = "BNSD"):
        super().__init__()
        self.fn = fn
        self.scale = scale
        self.layout = layout

    def construct(self, query, key, value, bias):
        return self.fn(query, key, value, self.scale, bias, self.layout)


def _both(op, args, *constants):
    composite = _Apply(registry.resolve(op, "CPU", "composite").fn, *constants)(*args)
    twin = _Apply(registry.resolve(op, "CPU", "fused").fn, *constants)(*args)
    return composite, twin


def _close(a, b, tol=2e-6, report=None, name=""):
    """Twin ``b`` within ``tol`` of composite ``a`` (relative to max|a|, at least 1); worst error reported."""
    a, b = (x.asnumpy() for x in (a, b))
    assert a.shape == b.shape
    err = float(np.abs(a - b).max() / max(np.abs(a).max(), 1.0))
    if report is not None:
        report[f"cpu_twin/{name}"] = max(report.get(f"cpu_twin/{name}", 0.0), err)
    assert err <= tol


@pytest.mark.parametrize("shape", [(3, 7, 33), (1, 1, 64), (2, 5, 1)])
def test_norm_twins(shape, parity_report):
    rng = np.random.default_rng(0)
    x, r = (Tensor(rng.standard_normal(shape).astype(np.float32) * 3) for _ in range(2))
    w = Tensor(rng.standard_normal(shape[-1]).astype(np.float32))
    _close(*_both("rms_norm", (x, w), 1e-6), report=parity_report, name="rms_norm")
    (y0, t0), (y1, t1) = _both("add_rms_norm", (x, r, w), 1e-5)
    _close(y0, y1, report=parity_report, name="add_rms_norm")
    _close(t0, t1, 0)
    shift, scale = (Tensor(rng.standard_normal((shape[0], shape[-1])).astype(np.float32)) for _ in range(2))
    _close(*_both("ada_layer_norm", (x + 5, shift, scale), 1e-5), report=parity_report, name="ada_layer_norm")
    b = Tensor(rng.standard_normal(shape[-1]).astype(np.float32))
    for affine in ((), (w,), (w, b)):  # qk-norm (none), weight only, weight and bias
        composite = _Apply(layer_norm.layer_norm, 1e-6, *affine)(x + 5)
        _close(composite, _Apply(registry.resolve("layer_norm", "CPU", "fused").fn, 1e-6, *affine)(x + 5),
               report=parity_report, name="layer_norm")


@pytest.mark.parametrize("shape", [(2, 9, 4096 + 3), (1, 5), (70000,)])  # odd tails, one vector, threaded chunks
def test_gelu_twin(shape, parity_report):
    """The tanh form by the kernel against the built-in, over inputs from -12 to 12 (both saturated ends);
    the erf form stays the built-in."""
    x = Tensor(np.linspace(-12, 12, int(np.prod(shape)), dtype=np.float32).reshape(shape))
    composite, twin = _both("gelu", (x,), "tanh")
    _close(composite, twin, report=parity_report, name="gelu_tanh")
    _close(*_both("gelu", (x,), "none"), 0)


@pytest.mark.parametrize("x_shape, n", [((1, 1, 1024), 4096),   # a decode step: the kernel
                                        ((3, 1, 1029), 1031),   # odd K, N and rows: every tail of the kernel
                                        ((16, 515), 520),       # the most rows the kernel takes
                                        ((17, 515), 520),       # one more: the composite
                                        ((2, 4, 64), 96)])      # a small weight: the composite
def test_linear_twin(x_shape, n, parity_report):
    """The Linear kernel (with and without bias) against the composite MatMul where it runs, and the
    composite itself, bit for bit, outside its range."""
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal(x_shape).astype(np.float32))
    w = Tensor(rng.standard_normal((n, x_shape[-1])).astype(np.float32) * 0.05)
    b = Tensor(rng.standard_normal(n).astype(np.float32))
    kernel = cpu_twins.linear_uses_kernel(x_shape, (n, x_shape[-1]))
    assert kernel == (x_shape[-1] >= 515 and x_shape[0] != 17)
    for args in ((x, w), (x, w, b)):
        composite, twin = _both("linear", args)
        assert twin.shape == x_shape[:-1] + (n,)
        _close(composite, twin, 2e-6 if kernel else 0, report=parity_report, name="linear")


@pytest.mark.parametrize("x_shape, table_shape", [((2, 4, 5, 16), (2, 1, 5, 8)),   # AR: partial, one table per head
                                                  ((2, 7, 3, 8), (7, 1, 8)),       # DiT: whole head, no batch axis
                                                  ((1, 2, 3, 11), (1, 1, 3, 6))])  # odd head dim
def test_rotary_and_swiglu_twins(x_shape, table_shape, parity_report):
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal(x_shape).astype(np.float32))
    angle = rng.uniform(0, 6.3, table_shape).astype(np.float32)
    cos, sin = Tensor(np.cos(angle)), Tensor(np.sin(angle))
    _close(*_both("rotary", (x, cos, sin)), report=parity_report, name="rotary")
    gate_up = Tensor(rng.standard_normal(x_shape[:-1] + (2 * x_shape[-1],)).astype(np.float32) * 4)
    composite, twin = _both("swiglu", (gate_up,))
    assert twin.shape == x_shape
    _close(composite, twin, report=parity_report, name="swiglu")


@pytest.mark.parametrize("shape", [(2, 5, 16), (1, 3, 7), (2, 130, 300)])  # odd sizes; the last is multi-threaded
def test_gated_residual_twin(shape, parity_report):
    """x + y * gate: each sample's gate row scales every one of its tokens, as the composite."""
    rng = np.random.default_rng(5)
    x, y = (Tensor(rng.standard_normal(shape).astype(np.float32)) for _ in range(2))
    gate = Tensor(rng.standard_normal((shape[0], shape[2])).astype(np.float32))
    composite, twin = _both("gated_residual", (x, y, gate))
    assert twin.shape == shape
    expected = x.asnumpy() + y.asnumpy() * gate.asnumpy()[:, None, :]
    np.testing.assert_allclose(composite.asnumpy(), expected, rtol=0, atol=0)
    _close(composite, twin, report=parity_report, name="gated_residual")


@pytest.mark.parametrize("vocab", [7, 264, 1031])  # odd sizes; 264: the tiny model's image vocabulary
def test_sample_step_twin(vocab):
    """The SampleStep kernel picks the composite's token for every row of 64 random logits under each
    filter setting (sampling, top-k, top-k + top-p, greedy), with and without a limit, and keeps the same
    books: finished rows (some already, some by sampling the end marker), the non-finite flags (rows with
    NaN / inf among ids the limit excludes; a first occurrence already flagged is kept) and the token buffer."""
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((64, vocab)).astype(np.float32) * 3
    logits[3, -1], logits[5, -2:] = np.nan, np.inf  # past the limit below: never picked, still counted
    logits[7, 2] = 50.0  # row 7 picks the end marker (id 2) under every setting
    steps, end = 5, 2
    uniforms = Tensor(rng.random((64, steps)).astype(np.float32))
    finished = Tensor((np.arange(64) % 9 == 0).astype(np.int32))
    buffer = Tensor(rng.integers(0, vocab, (64, steps)).astype(np.int32))
    settings = [(0.9, 0, 0.75, 1), (1.0, 5, 1.0, 1), (0.7, 10, 0.5, 1), (1.3, 0, 0.9, 1), (1.0, 0, 1.0, 0)]
    for temperature, top_k, top_p, sample in settings:
        params = Tensor(np.array([temperature, top_k, top_p, sample], np.float32))
        for limit, flags in ((vocab, (0, 0, 0)), (vocab - 3, (0, 0, 0)), (vocab - 3, (2, 7, 0))):
            limits = np.full(steps, vocab, np.int32)
            limits[3] = limit
            args = (Tensor(logits if limit < vocab else np.nan_to_num(logits)), Tensor(np.array([3], np.int32)),
                    uniforms, params, Tensor(limits), finished, Tensor(np.array(flags, np.int32)), buffer)
            composite, twin = _both("sample_step", args, end)
            for a, b in zip(composite, twin):
                assert a.dtype == b.dtype == ms.int32
                np.testing.assert_array_equal(b.asnumpy(), a.asnumpy())
            token, now_finished, new_flags, tokens = (t.asnumpy() for t in twin)
            assert token[:, 0].max() < limit and token[7, 0] == end and (token[::9, 0] == end).all()
            assert now_finished[7] == 1 and (tokens[:, 3] == token[:, 0]).all()
            assert (np.delete(tokens, 3, axis=1) == np.delete(buffer.asnumpy(), 3, axis=1)).all()
            if limit < vocab:
                assert new_flags.tolist()[:2] == ([4, 3] if flags[0] == 0 else [2, 7])


@pytest.mark.parametrize("guided", [True, False])
@pytest.mark.parametrize("shape", [(1, 4, 6, 6), (2, 3, 5, 7)])  # odd sizes, one and two samples
def test_guided_euler_step_twin(shape, guided, parity_report):
    """The GuidedEulerStep kernel equals the composite bit for bit (new latents, the next DiT input, the record):
    the guidance mix and the Euler step against numpy's, a first non-finite step recorded, an earlier one kept."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape).astype(np.float32)
    out = rng.standard_normal(((2 if guided else 1) * shape[0],) + shape[1:]).astype(np.float32)
    sigmas = np.linspace(1.0, 0.0, 6).astype(np.float32) ** 1.3
    g = np.float32(2.5)
    v = out[shape[0]:] + g * (out[:shape[0]] - out[shape[0]:]) if guided else out
    expected = x + (sigmas[3] - sigmas[2]) * v
    for bad_values, record, want in ((0, (-1, 0), (-1, 0)), (3, (-1, 0), (2, 3)), (3, (1, 9), (1, 9))):
        out_bad = out.copy()
        out_bad.reshape(-1)[:bad_values] = np.nan
        args = (Tensor(out_bad), Tensor(x), Tensor(sigmas[3] - sigmas[2]), Tensor(2, ms.int32), Tensor(g),
                Tensor(np.array(record, np.int32)))
        composite, twin = _both("guided_euler_step", args)
        for a, b in zip(composite, twin):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(b.asnumpy(), a.asnumpy())
        latents, model_input, new_record = (t.asnumpy() for t in twin)
        assert new_record.tolist() == list(want)
        np.testing.assert_array_equal(model_input, np.concatenate([latents] * (2 if guided else 1)))
        if not bad_values:
            np.testing.assert_array_equal(latents, expected)
            _close(composite[0], twin[0], 0, report=parity_report, name="guided_euler_step")
        else:
            assert np.isnan(latents).sum() == bad_values


def _causal(batch, seq, keys, valid):
    """AR mask: query s sits at slot keys - seq + s; invalid slots (left padding, empty cache) masked."""
    slot = np.arange(keys)[None, :] <= (keys - seq + np.arange(seq))[:, None]
    return np.where(slot[None, None] & valid[:, None, None, :], 0, MASKED).astype(np.float32)


@pytest.mark.parametrize("shape", [(2, 5, 17, 23, 3, 3, 1, 1), (1, 8, 16, 16, 4, 3, 2, 0), (1, 3, 9, 12, 6, 1, 1, 0),
                                   (2, 4, 8, 8, 2, 3, 2, 1)])
def test_conv2d_equals_a_direct_convolution(shape):
    """The ops-layer conv2d (one form on every device: the built-in) against a numpy sum over the kernel
    window, at odd sizes, stride 2, padding 0/1 and 1x1 filters; also the same on CPU in both kernel modes."""
    batch, channels, height, width, out_channels, k, stride, padding = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((batch, channels, height, width)).astype(np.float32)
    w = rng.standard_normal((out_channels, channels, k, k)).astype(np.float32)
    b = rng.standard_normal(out_channels).astype(np.float32)
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_h, out_w = (height + 2 * padding - k) // stride + 1, (width + 2 * padding - k) // stride + 1
    expected = np.zeros((batch, out_channels, out_h, out_w)) + b[None, :, None, None]
    for i in range(k):
        for j in range(k):
            window = padded[:, :, i:i + stride * out_h:stride, j:j + stride * out_w:stride]
            expected += np.einsum("bchw,oc->bohw", window, w[:, :, i, j])
    for mode in ("composite", "fused"):
        assert registry.kind_of("conv2d", "CPU", mode) == "composite"
    ours = _Apply(registry.resolve("conv2d", "CPU").fn, stride, padding)(Tensor(x), Tensor(w), Tensor(b)).asnumpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("case", ["prefill_gqa", "decode_static_kv", "decode_masked_tiles", "dit_text_padding",
                                  "vision_2d", "t5_bias", "no_bias"])
def test_attention_twin(case, parity_report):
    rng = np.random.default_rng(1)
    b, h, hkv, s, k, d = {"prefill_gqa": (2, 4, 2, 5, 5, 12), "decode_static_kv": (2, 6, 2, 1, 131, 8),
                          "decode_masked_tiles": (2, 4, 2, 1, 200, 8),
                          "dit_text_padding": (2, 3, 3, 9, 13, 16), "vision_2d": (1, 2, 2, 7, 7, 5),
                          "t5_bias": (2, 2, 2, 6, 6, 4), "no_bias": (1, 1, 1, 3, 70, 3)}[case]
    q = rng.standard_normal((b, h, s, d)).astype(np.float32)
    kv = [rng.standard_normal((b, hkv, k, d)).astype(np.float32) for _ in range(2)]
    valid = np.ones((b, k), bool)
    bias = None
    if case == "prefill_gqa":
        valid[1, :2] = False  # left padding, so two query rows of sample 1 see nothing real
        bias = _causal(b, s, k, valid)
    elif case == "decode_static_kv":
        valid[:, 40:] = False  # empty cache slots
        valid[0, :3] = False
        bias = _causal(b, s, k, valid)
    elif case == "decode_masked_tiles":  # whole 64-key tiles masked (the twin skips them), and a sample that
        valid[:, 150:] = False         # sees no key at all (it keeps them: uniform weights, as the composite)
        valid[0, :70] = False
        valid[1] = False
        bias = _causal(b, s, k, valid)
    elif case == "dit_text_padding":
        bias = np.zeros((b, 1, 1, k), np.float32)
        bias[0, ..., :4] = MASKED
    elif case == "vision_2d":
        image = np.array([0, 0, 0, 1, 1, 1, 1])
        bias = np.where(image[:, None] == image[None, :], 0, MASKED).astype(np.float32)
    elif case == "t5_bias":
        bias = rng.standard_normal((1, h, s, k)).astype(np.float32)
    outputs = [_Attention(registry.resolve("attention", "CPU", mode).fn, d ** -0.5)(
        Tensor(q), Tensor(kv[0]), Tensor(kv[1]), None if bias is None else Tensor(bias))
        for mode in ("composite", "fused")]
    _close(*outputs, 5e-6, report=parity_report, name=f"attention_{case}")
    # the same in BSND (the DiT's layout): both modes read and write (B, S, H, d), equal to BNSD transposed
    bsnd = [Tensor(a.transpose(0, 2, 1, 3).copy()) for a in (q, *kv)]
    for mode in ("composite", "fused"):
        out = _Attention(registry.resolve("attention", "CPU", mode).fn, d ** -0.5, "BSND")(
            *bsnd, None if bias is None else Tensor(bias))
        _close(outputs[0], Tensor(out.asnumpy().transpose(0, 2, 1, 3)), 5e-6, report=parity_report,
               name=f"attention_bsnd_{case}")


def test_ascendc_selected_when_installed(monkeypatch):
    """Our AscendC AdaLayerNorm replaces the built-in path on Ascend once its package is on the op path;
    its ops.Custom registration builds here (it is never launched on CPU)."""
    monkeypatch.delenv("ASCEND_CUSTOM_OPP_PATH", raising=False)
    assert registry.kind_of("ada_layer_norm", "Ascend", "fused") == "ascend"
    monkeypatch.setenv("ASCEND_CUSTOM_OPP_PATH", "/opt/ops/vendors/mindglm")
    impl = registry.resolve("ada_layer_norm", "Ascend", "fused")
    assert impl.kind == "ascendc" and isinstance(impl.fn, ascendc.AdaLayerNormAscendC)
    assert registry.kind_of("rms_norm", "Ascend", "fused") == "ascend"
    adamw = registry.resolve("adamw_ema", "Ascend", "fused", beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
                             ema_decay=0.999)
    assert adamw.kind == "ascendc" and isinstance(adamw.fn.kernel, ms.ops.Custom)
    assert {a["name"]: a["value"] for a in adamw.fn.kernel.reg_info["attr"]} == {
        "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 0.01, "ema_decay": 0.999}


def test_ascendc_sources_agree():
    """Op definitions parse and name the inputs the registration passes; the host tiling plans (CANN-free
    C++) compile with g++ and their coverage/alignment/Unified-Buffer checks pass."""
    root = Path(__file__).resolve().parents[1] / "kernels" / "ascendc"
    ada = json.loads((root / "ada_layer_norm" / "ada_layer_norm.json").read_text())[0]
    assert [d["name"] for d in ada["input_desc"]] == ["x", "shift", "scale", "epsilon"]
    adamw = json.loads((root / "adamw_ema" / "adamw_ema.json").read_text())[0]
    assert [d["name"] for d in adamw["input_desc"]] == ["param", "grad", "exp_avg", "exp_avg_sq", "ema",
                                                        "step_scalars"]
    assert [a["name"] for a in adamw["attr"]] == ["beta1", "beta2", "epsilon", "weight_decay", "ema_decay"]
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "check"
        subprocess.run(["g++", "-std=c++17", "-O1", "-I", str(root), str(root / "tiling_plan_check.cpp"), "-o",
                        str(exe)], check=True)
        result = subprocess.run([str(exe)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "tiling plans: ok", result.stdout


def test_adamw_ema_composite():
    """The ops layer's AdamW+EMA step (what the trainer's optimizer runs) equals the update written out in numpy
    (torch.optim.AdamW's maths), and the registry gives the composite on CPU in both modes."""
    rng = np.random.default_rng(2)
    p, g, m, ema = (rng.standard_normal((5, 3)).astype(np.float32) for _ in range(4))
    v = np.abs(rng.standard_normal((5, 3))).astype(np.float32)
    lr, b1, b2, eps, wd, decay, step = 1e-2, 0.9, 0.99, 1e-8, 0.1, 0.95, 3
    scalars = np.array([lr, lr / (1 - b1 ** step), np.sqrt(1 - b2 ** step)], np.float32)
    for mode in ("composite", "fused"):
        impl = registry.resolve("adamw_ema", "CPU", mode, beta1=b1, beta2=b2, eps=eps, weight_decay=wd,
                                ema_decay=decay)
        assert impl.kind == "composite" and isinstance(impl.fn, adamw_ema.AdamWEma)
    out = impl.fn(*(Tensor(a) for a in (p, g, m, v, ema, scalars)))
    m2 = b1 * m + (1 - b1) * g
    v2 = b2 * v + (1 - b2) * g * g
    p2 = p * (1 - lr * wd) - lr * (m2 / (1 - b1 ** step)) / (np.sqrt(v2 / (1 - b2 ** step)) + eps)
    for got, want in zip(out, (p2, m2, v2, decay * ema + (1 - decay) * p2)):
        np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-5, atol=1e-6)


def test_model_cells_take_the_twins(monkeypatch):
    """Cells resolve when built: under MINDGLM_KERNELS=fused a DiT block holds the C++ twins."""
    from mindglm_image.models.dit.transformer import GlmImageTransformerBlock

    monkeypatch.setenv("MINDGLM_KERNELS", "fused")
    block = GlmImageTransformerBlock(16, 2, 8, 8)
    assert isinstance(block.attn1.attention, cpu_twins.AttentionTwin)
    assert isinstance(block.ada_layer_norm, cpu_twins.AdaLayerNormTwin)
    assert isinstance(block.ff.net[0].gelu, cpu_twins.GeluTwin)
    assert isinstance(block.attn1.layer_norm, cpu_twins.LayerNormTwin)
    monkeypatch.setenv("MINDGLM_KERNELS", "composite")
    assert GlmImageTransformerBlock(16, 2, 8, 8).attn1.attention is attention.attention


def test_memory_lean_forms_are_bit_exact():
    """The CPU forms that keep no per-element index tables in a compiled graph (bias added as a same-shape
    operand, head axis moved by per-head slices) give exactly the fused linear and the plain permutes."""
    from mindglm_image.ops.layout import heads_first, heads_second

    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((2, 33, 64)).astype(np.float32))
    weight = Tensor(rng.standard_normal((96, 64)).astype(np.float32))
    bias = Tensor(rng.standard_normal(96).astype(np.float32))
    lean = _Apply(linear.linear)(x, weight, bias).asnumpy()
    np.testing.assert_array_equal(lean, _Apply(linear.linear_ascend)(x, weight, bias).asnumpy())
    np.testing.assert_allclose(lean, x.asnumpy() @ weight.asnumpy().T + bias.asnumpy(), rtol=1e-5, atol=1e-5)
    heads = Tensor(rng.standard_normal((2, 5, 4, 8)).astype(np.float32))  # (B, S, H, d)
    first = _Apply(heads_first)(heads).asnumpy()
    np.testing.assert_array_equal(first, heads.asnumpy().transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(_Apply(heads_second)(Tensor(first)).asnumpy(), heads.asnumpy())


@pytest.mark.parametrize("first, exported, policy, for_reference", [
    ("", None, "passive", None),                    # the package's default, not handed to the reference
    ("", "active", "active", "active"),             # a user's value is kept, everywhere
    ("import mindspore; ", None, None, None),       # too late once MindSpore loaded libgomp: left unset
])
def test_openmp_wait_policy_default(first, exported, policy, for_reference):
    """Importing the package first makes OpenMP threads sleep between kernels unless the user chose otherwise;
    the benchmarks' reference processes get the environment without that default."""
    import os
    import sys

    code = (f"{first}import os, mindglm_image; from mindglm_image.runtime import reference_env; "
            "print(os.environ.get('OMP_WAIT_POLICY'), reference_env().get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if exported:
        env["OMP_WAIT_POLICY"] = exported
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split()[-2:] == [str(policy), str(for_reference)]


def test_training_refuses_forward_only_twins(monkeypatch):
    """A model built with the twins (as a pipeline's are on CPU) is refused by the shared train step with the fix
    named, before MindSpore would fail inside the gradient graph; the composite model is accepted."""
    from mindglm_image.models.dit.transformer import GlmImageTransformerBlock
    from mindglm_image.training.config import OptimizerConfig
    from mindglm_image.training.train_step import TrainStep

    monkeypatch.delenv("MINDGLM_KERNELS", raising=False)
    with registry.inference_cells():
        block = GlmImageTransformerBlock(16, 2, 8, 8)
    with pytest.raises(ValueError, match=r"forward-only CPU twins \(.*AttentionTwin.*\).*MINDGLM_KERNELS=composite"):
        TrainStep(block, list(block.get_parameters()), OptimizerConfig())
    monkeypatch.setenv("MINDGLM_KERNELS", "composite")
    with registry.inference_cells():
        block = GlmImageTransformerBlock(16, 2, 8, 8)
    registry.check_trainable(block)
