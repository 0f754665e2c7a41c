"""LoRA for our cells: injection by module-name targets, merge/unmerge, PEFT-format adapters.

A targeted ``Linear`` (``y = x W^T + b``) becomes a ``LoraLinear`` computing
``y = x W^T + b + scaling * B(A(dropout(x)))`` with ``A`` (r, in) and ``B`` (out, r), ``B`` zero at start,
``scaling = lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA). The base weight keeps its parameter name, so a
model with LoRA still loads every checkpoint of the plain model.

Adapters are read and written in PEFT's layout: ``adapter_config.json`` (PEFT's field names) and
``adapter_model.safetensors`` with keys ``base_model.model.<module>.lora_A.weight`` /
``...lora_B.weight``, module names as in the reference (PyTorch) model, so an adapter made by PEFT on
the reference model loads here and ours loads into PEFT.
"""
from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn
from mindspore.common.initializer import HeUniform, Zero, initializer

from ..atomic import atomic_dir, check_destination, copy_file, write_json_atomic
from ..config.base import ConfigError, HFConfig
from ..models.layers import Linear
from ..weights.checkpoint import ShardedCheckpoint
from ..weights.components import COMPONENTS, MS_STEM, ComponentSpec, build_cell, load_component, load_config
from ..weights.safetensors_io import CheckpointError, SafetensorsFile, TensorData, write_safetensors

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."

#: default targets per component: the DiT's attention projections and feed-forward, the AR's attention
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "transformer": ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"),
    "vision_language_encoder": ("q_proj", "k_proj", "v_proj", "o_proj"),
}


@dataclasses.dataclass
class LoraConfig(HFConfig):
    """LoRA hyper-parameters under PEFT's ``LoraConfig`` names, so it reads/writes ``adapter_config.json``."""

    r: int = 16                                       # rank of A (r, in) and B (out, r)
    lora_alpha: float = 16.0                          # scaling = lora_alpha / r
    lora_dropout: float = 0.0                         # dropout on the LoRA branch input while training
    target_modules: list[str] | str | None = None     # module-name suffixes, or one regex (full match); None: defaults
    use_rslora: bool = False                          # scaling = lora_alpha / sqrt(r) instead
    alpha_pattern: dict = dataclasses.field(default_factory=dict)  # module-name regex -> alpha for those modules
    bias: str = "none"                                # PEFT's bias mode; only "none" is supported
    use_dora: bool = False                            # DoRA adapters are not supported
    fan_in_fan_out: bool = False                      # transposed (Conv1D) weights are not supported

    def validate(self) -> None:
        if self.r < 1:
            raise ConfigError(f"lora: r={self.r} must be a positive integer")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora: lora_dropout={self.lora_dropout} must be in [0, 1)")
        unsupported = {"bias": self.bias != "none", "use_dora": self.use_dora, "fan_in_fan_out": self.fan_in_fan_out}
        bad = [k for k, v in unsupported.items() if v]
        if bad:
            raise ConfigError(f"lora: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)} is not supported; "
                              "use plain LoRA (bias='none', use_dora=false, fan_in_fan_out=false)")
        if self.extra.get("peft_type", "LORA") != "LORA":
            raise ConfigError(f"adapter peft_type={self.extra['peft_type']!r} is not LoRA; only LoRA adapters load")

    def scaling(self, module: str, rank: int) -> float:
        """PEFT's scaling of one module: its alpha (``alpha_pattern`` first) over r (or sqrt(r))."""
        alpha = self.lora_alpha
        for pattern, value in self.alpha_pattern.items():
            if re.match(rf"(.*\.)?({pattern})$", module):
                alpha = value
                break
        return alpha / (math.sqrt(rank) if self.use_rslora else rank)


class LoraLinear(nn.Cell):
    """A ``Linear`` plus a low-rank update; owns the base weight/bias under their original names."""

    def __init__(self, base: Linear, r: int, scaling: float, dropout: float = 0.0):
        super().__init__()
        out_features, in_features = base.weight.shape
        dtype = base.weight.dtype
        self.weight = base.weight
        self.bias = base.bias
        self.linear = base.linear
        self.lora_A = Linear(in_features, r, bias=False, dtype=dtype)
        self.lora_B = Linear(r, out_features, bias=False, dtype=dtype)
        # PEFT's initialisation: A kaiming-uniform (a=sqrt(5), torch.nn.Linear's default), B zero
        self.lora_A.weight.set_data(initializer(HeUniform(math.sqrt(5)), (r, in_features), dtype))
        self.lora_B.weight.set_data(initializer(Zero(), (out_features, r), dtype))
        self.scaling = scaling
        # 1 while the update is applied in the forward, 0 once merged into ``weight``: a parameter rather
        # than a Python flag so merge/unmerge take effect without recompiling the graph
        self.lora_gate = Parameter(Tensor(1.0, dtype), name="lora_gate", requires_grad=False)
        self.dropout = mint.nn.Dropout(dropout) if dropout > 0 else None

    def construct(self, x):
        y = self.linear(x, self.weight, self.bias)
        h = x if self.dropout is None else self.dropout(x)
        return y + self.lora_B(self.lora_A(h)) * (self.lora_gate * self.scaling)

    def delta(self) -> np.ndarray:
        """scaling * B @ A, the update of ``weight`` (float32)."""
        return np.float32(self.scaling) * (_f32(self.lora_B.weight) @ _f32(self.lora_A.weight))

    @property
    def merged(self) -> bool:
        return float(_f32(self.lora_gate)) == 0.0

    def merge(self) -> None:
        if not self.merged:
            _add_to_weight(self.weight, self.delta())
            self.lora_gate.set_data(Tensor(0.0, self.lora_gate.dtype))

    def unmerge(self) -> None:
        if self.merged:
            _add_to_weight(self.weight, -self.delta())
            self.lora_gate.set_data(Tensor(1.0, self.lora_gate.dtype))


def _f32(param: Parameter) -> np.ndarray:
    """Host float32 copy (numpy has no bf16: such weights are cast on the device side first)."""
    return param.float().asnumpy() if param.dtype == ms.bfloat16 else param.asnumpy().astype(np.float32)


def _add_to_weight(weight: Parameter, delta: np.ndarray) -> None:
    """weight += delta in float32, stored back in the weight's dtype (bf16 on Ascend)."""
    weight.set_data(Tensor(_f32(weight) + delta, weight.dtype))


def _linear_modules(cell: nn.Cell) -> dict[str, nn.Cell]:
    return {name: sub for name, sub in cell.cells_and_names() if name and isinstance(sub, (Linear, LoraLinear))}


def matches(module: str, targets: list[str] | tuple[str, ...] | str) -> bool:
    """PEFT's rule: a string target is a regex matched against the whole name; a list holds names or suffixes."""
    if isinstance(targets, str):
        return re.fullmatch(targets, module) is not None
    return any(module == t or module.endswith("." + t) for t in targets)


def resolve_targets(cell: nn.Cell, targets: list[str] | tuple[str, ...] | str) -> list[str]:
    """Names of the ``Linear`` modules ``targets`` selects; an error names any target that selects none."""
    modules = _linear_modules(cell)
    singles = [targets] if isinstance(targets, str) else list(targets)
    unmatched = [t for t in singles if not any(matches(m, t if isinstance(targets, str) else [t]) for m in modules)]
    if unmatched:
        examples = sorted({".".join(m.split(".")[-2:]) if m[-1].isdigit() else m.split(".")[-1] for m in modules})
        raise ValueError(f"LoRA target(s) {unmatched} name no Linear module of {type(cell).__name__}; "
                         f"targets are module-name suffixes (or one regex), e.g. {examples[:12]}")
    return [m for m in modules if matches(m, targets)]


def _set_child(root: nn.Cell, path: str, child: nn.Cell) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = root
    for part in parent_path.split(".") if parent_path else []:
        parent = parent[int(part)] if isinstance(parent, nn.CellList) else getattr(parent, part)
    if isinstance(parent, nn.CellList):
        parent[int(leaf)] = child
    else:
        setattr(parent, leaf, child)


def _after_surgery(cell: nn.Cell) -> None:
    """Give every parameter its full dotted path again (a replaced child keeps only its local names), and
    drop the compiled graphs of ``cell`` and its children.

    Graph mode keys a cell's compiled graph by its creation time and id, not its structure: a model
    called before injection would otherwise keep running its old graph without the LoRA branch.
    Wrappers built around the model before injection (decode sessions) must be rebuilt.
    """
    for name, param in cell.parameters_and_names():
        param.name = name
    stamp = time.time_ns()
    for _, sub in cell.cells_and_names():
        object.__setattr__(sub, "_create_time", stamp)


def inject_lora(cell: nn.Cell, config: LoraConfig, component: str) -> list[str]:
    """Replace the targeted ``Linear`` modules of ``cell`` by ``LoraLinear``; returns their names.

    ``component`` ("transformer" or "vision_language_encoder") picks the default targets.
    """
    targets = config.target_modules if config.target_modules is not None else DEFAULT_TARGETS[component]
    names = resolve_targets(cell, targets)
    modules = _linear_modules(cell)
    already = [n for n in names if isinstance(modules[n], LoraLinear)]
    if already:
        raise ValueError(f"LoRA is already injected into {already[:4]}; inject once per model")
    for name in names:
        _set_child(cell, name, LoraLinear(modules[name], config.r, config.scaling(name, config.r), config.lora_dropout))
    _after_surgery(cell)
    return names


def lora_modules(cell: nn.Cell) -> dict[str, LoraLinear]:
    return {name: sub for name, sub in cell.cells_and_names() if isinstance(sub, LoraLinear)}


def lora_parameters(cell: nn.Cell) -> list[Parameter]:
    """The trainable parameters of a LoRA fine-tune (every lora_A / lora_B weight), in module order."""
    return [p for m in lora_modules(cell).values() for p in (m.lora_A.weight, m.lora_B.weight)]


def merge_lora(cell: nn.Cell) -> None:
    for module in lora_modules(cell).values():
        module.merge()


def unmerge_lora(cell: nn.Cell) -> None:
    for module in lora_modules(cell).values():
        module.unmerge()


def merged_state(cell: nn.Cell) -> dict[str, np.ndarray]:
    """The plain model's parameters (original names, float32) with every unmerged LoRA update folded in."""
    lora = lora_modules(cell)
    out = {}
    for name, param in cell.parameters_and_names():
        if name.endswith((".lora_A.weight", ".lora_B.weight", ".lora_gate")):
            continue
        module, _, leaf = name.rpartition(".")
        value = _f32(param)
        if module in lora and leaf == "weight" and not lora[module].merged:
            value = value + lora[module].delta()
        out[name] = value
    return out


# ----------------------------------------------------------------------------------------- PEFT files

@dataclasses.dataclass
class LoraAdapter:
    """A loaded adapter: its config and per module (reference naming) the float32 (A, B) pair."""

    config: LoraConfig
    weights: dict[str, tuple[np.ndarray, np.ndarray]]
    source: str

    def delta(self, module: str) -> np.ndarray:
        a, b = self.weights[module]
        return np.float32(self.config.scaling(module, a.shape[0])) * (b @ a)


def save_adapter(cell: nn.Cell, folder: str | Path, config: LoraConfig, component: str,
                 base_model_name_or_path: str | None = None) -> Path:
    """Write the LoRA weights of ``cell`` as a PEFT adapter folder (replaced atomically)."""
    modules = lora_modules(cell)
    if not modules:
        raise ValueError(f"{type(cell).__name__} has no LoRA modules to save; call inject_lora first")
    folder = Path(folder)
    tensors = []
    for name, module in modules.items():
        key = PEFT_PREFIX + name
        tensors.append(TensorData.from_array(f"{key}.lora_A.weight", _f32(module.lora_A.weight)))
        tensors.append(TensorData.from_array(f"{key}.lora_B.weight", _f32(module.lora_B.weight)))
    targets = config.target_modules if config.target_modules is not None else list(DEFAULT_TARGETS[component])
    peft_config = {"peft_type": "LORA", "task_type": None, "base_model_name_or_path": base_model_name_or_path,
                   "inference_mode": True, "init_lora_weights": True, "modules_to_save": None,
                   **config.to_dict(), "target_modules": targets}
    with atomic_dir(folder) as work:
        write_safetensors(work / ADAPTER_WEIGHTS, tensors, metadata={"format": "pt"})
        write_json_atomic(work / ADAPTER_CONFIG, peft_config)
    return folder


def load_adapter(folder: str | Path) -> LoraAdapter:
    """Read a PEFT LoRA adapter folder (ours or PEFT's); errors name the file and the unsupported part."""
    folder = Path(folder)
    cfg_path, weights_path = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not cfg_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"{folder} is not a PEFT adapter folder: it needs {ADAPTER_CONFIG} and "
                                f"{ADAPTER_WEIGHTS} (save with PEFT's save_pretrained or our save_adapter)")
    config = LoraConfig.from_json_file(cfg_path)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for t in SafetensorsFile(weights_path):
        m = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.default)?\.weight", t.name)
        if m is None:
            raise CheckpointError(f"{weights_path}: tensor {t.name} is not a LoRA A/B weight; only Linear-layer "
                                  "LoRA adapters without modules_to_save or bias are supported")
        pairs.setdefault(m.group(1), {})[m.group(2)] = t.array().astype(np.float32)
    weights = {}
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise CheckpointError(f"{weights_path}: module {module} has lora_{''.join(ab)} but not both A and B")
        a, b = ab["A"], ab["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise CheckpointError(f"{weights_path}: module {module} has lora_A {a.shape} and lora_B {b.shape}; "
                                  "expected (r, in) and (out, r)")
        weights[module] = (a, b)
    if not weights:
        raise CheckpointError(f"{weights_path} holds no LoRA weights")
    return LoraAdapter(config, weights, str(folder))


def adapter_component(adapter: LoraAdapter, cells: dict[str, nn.Cell]) -> str:
    """Which of ``cells`` (component name -> cell) the adapter's modules belong to."""
    for component, cell in cells.items():
        params = dict(cell.parameters_and_names())
        if all(f"{m}.weight" in params for m in adapter.weights):
            return component
    raise ValueError(f"adapter {adapter.source}: its modules (e.g. {sorted(adapter.weights)[:3]}) are in none of "
                     f"{sorted(cells)}; it was made for another model")


def apply_adapter(cell: nn.Cell, adapter: LoraAdapter, component: str, scale: float = 1.0) -> None:
    """Merge ``scale`` x the adapter's update into the weights of ``cell`` (inference: no extra compute).

    Every module and shape is checked before any weight changes."""
    # names from the cell tree: a Parameter's own name gains a prefix once the cell is wrapped (loss cell)
    params = dict(cell.parameters_and_names())
    plan = []
    for module in adapter.weights:
        name = f"{module}.weight"
        param = params.get(name)
        if param is None:
            raise ValueError(f"adapter {adapter.source}: module {module} is not a layer of the {component} model")
        a, b = adapter.weights[module]
        if tuple(param.shape) != (b.shape[0], a.shape[1]):
            raise ValueError(f"adapter {adapter.source}: module {module} updates a {b.shape[0]}x{a.shape[1]} weight, "
                             f"the model's is {tuple(param.shape)}; the adapter was made for another model size")
        plan.append((param, module))
    for param, module in plan:
        _add_to_weight(param, np.float32(scale) * adapter.delta(module))


def apply_adapters(cells: dict[str, nn.Cell], lora: Sequence[tuple[str | Path, float]]) -> list[tuple[str, float, str]]:
    """Merge ``(folder, scale)`` adapters into ``cells`` (component name -> cell), each into the component its
    modules belong to. Every adapter is read and matched first, so a bad one fails before any weight
    changes. Returns (source, scale, component) per adapter."""
    loaded = []
    for path, scale in lora:
        adapter = load_adapter(path)
        loaded.append((adapter, float(scale), adapter_component(adapter, cells)))
    for adapter, scale, component in loaded:
        apply_adapter(cells[component], adapter, component, scale)
    return [(adapter.source, scale, component) for adapter, scale, component in loaded]


def load_adapter_into(cell: nn.Cell, adapter: LoraAdapter, component: str) -> None:
    """Inject LoRA modules matching the adapter and set their A/B weights (to train on or evaluate unmerged)."""
    ranks = {a.shape[0] for a, _ in adapter.weights.values()}
    if len(ranks) != 1:
        raise ValueError(f"adapter {adapter.source}: modules have different ranks {sorted(ranks)}; "
                         "load it for inference with apply_adapter instead")
    names = {m: m for m in adapter.weights}
    config = dataclasses.replace(adapter.config, r=ranks.pop(), target_modules=rf"({'|'.join(map(re.escape, names))})")
    inject_lora(cell, config, component)
    for name, module in lora_modules(cell).items():
        a, b = adapter.weights[names[name]]
        module.scaling = adapter.config.scaling(names[name], a.shape[0])
        module.lora_A.weight.set_data(Tensor(a, module.lora_A.weight.dtype))
        module.lora_B.weight.set_data(Tensor(b, module.lora_B.weight.dtype))


def parse_lora_arg(value: str) -> tuple[str, float]:
    """``PATH[:SCALE]`` -> (path, scale); a path that itself holds ':' needs an explicit scale."""
    path, sep, scale = value.rpartition(":")
    if sep and path:
        try:
            return path, float(scale)
        except ValueError:
            pass
    return value, 1.0


# --------------------------------------------------------------------------------------- merged model

def save_merged_model(src: str | Path, dst: str | Path, cells: dict[str, nn.Cell],
                      max_shard_bytes: int = 5 * 1024**3, overwrite: bool = False) -> Path:
    """Write the model folder ``src`` to ``dst`` (official Hugging Face layout) with the weights of
    ``cells`` (component name -> cell, LoRA folded in); other components are copied. Atomic: ``dst``
    appears only when complete, and keeps each tensor's dtype from ``src``. ``overwrite`` lets a finished
    model folder at ``dst`` be replaced (by the complete new one), never another kind of folder."""
    from ..tiny_model import write_weights

    from ckpt_convert.convert import MANIFEST
    from ckpt_convert.model_index import is_model_folder

    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ValueError("merged model: the destination must differ from the source folder")
    check_destination(dst, overwrite, is_model_folder, "merged model folder", "a new --out")
    with atomic_dir(dst) as work:
        for f in sorted(src.rglob("*")):
            rel = f.relative_to(src)
            # weights of merged components are rewritten below; manifests describe the source, not the merge
            if (not f.is_file() or rel.parts[0].startswith(".") or f.name == MANIFEST
                    or (rel.parts[0] in cells and ".safetensors" in f.name)):
                continue
            copy_file(f, work / rel)
        for component, cell in cells.items():
            spec = COMPONENTS[component]
            dtypes = _source_dtypes(spec, src / component)
            tensors = [TensorData.from_array(n, v.astype(np.float32)).cast(dtypes.get(n, "F32"))
                       for n, v in merged_state(cell).items()]
            write_weights(work / component, spec.hf_stem, tensors, max_shard_bytes)
    return dst


def merge_adapters_into_folder(model: str | Path, lora: Sequence[tuple[str | Path, float]],
                               out: str | Path) -> list[tuple[str, float, str]]:
    """Write ``model`` with the adapters merged into ``out`` (official layout). Only the components the
    adapters touch are loaded (fp32, merged exactly, then stored in the source dtype)."""
    model = Path(model)
    # parameter names and shapes only: cells built without weights say which component each adapter fits
    shapes = {name: build_cell(COMPONENTS[name], load_config(COMPONENTS[name], model / name)) for name in DEFAULT_TARGETS}
    needed = {adapter_component(load_adapter(path), shapes) for path, _ in lora}
    cells = {name: load_component(COMPONENTS[name], model / name) for name in sorted(needed)}
    applied = apply_adapters(cells, lora)
    save_merged_model(model, out, cells)
    return applied


def _source_dtypes(spec: ComponentSpec, folder: Path) -> dict[str, str]:
    """Our parameter name -> dtype tag of that tensor in the source folder (either layout)."""
    if any(folder.glob(f"{MS_STEM}*.safetensors*")):
        ckpt = ShardedCheckpoint(folder, MS_STEM)
    else:
        ckpt = ShardedCheckpoint(folder, spec.hf_stem)
    return {n: ckpt.info(n).dtype for n in ckpt.keys()}

