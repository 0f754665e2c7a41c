"""A tiny random GLM-Image model folder in the official Hugging Face layout (``mindglm-image make-tiny DIR``).

The folder has every part of ``zai-org/GLM-Image`` (``model_index.json``, ``vision_language_encoder/``,
``text_encoder/``, ``transformer/``, ``vae/``, ``scheduler/``, ``tokenizer/``, ``processor/``) with the same
file names, config keys and parameter names, so both our loaders and the unmodified
``diffusers.GlmImagePipeline.from_pretrained`` open it. Sizes come from ``configs/tiny/*.json`` (one file per
part, written verbatim as that part's config); weights are random bf16, deterministic in ``seed``.

Weights are drawn so that a forward pass is finite and not degenerate: norms have weight 1 and bias 0,
embeddings ~N(0, 1), other weights ~N(0, 1/sqrt(fan_in)), other biases ~N(0, 0.02). Layers that diffusers
zero-initialises (adaLN modulation, output projections) are random too, so the tiny model draws a
non-trivial image.

One deliberate structure, so a random AR model behaves like a trained one at sampling time: its
``lm_head`` covers the whole vision vocabulary (160 ids) but only the first ``vq num_embeddings`` (128)
are image codes the DiT can embed; 128/129 are the image start/end markers and the rest are unused. The
residual stream's channel 0 is a constant (every token embedding has ``+4`` there and no layer writes to
it: row 0 of every ``o_proj``/``down_proj`` is zero), and ``lm_head`` gives every non-code id ``-10`` on
that channel, so their logits sit ~20 below the codes' and are never sampled in practice.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .atomic import atomic_dir, check_destination, write_json_atomic
from .weights.components import COMPONENTS, build_cell
from .weights.safetensors_io import TensorData, write_safetensors

#: the tiny configs, one JSON per part (``configs/tiny/`` at the repository root)
TINY_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "tiny"

MODEL_INDEX = {
    "_class_name": "GlmImagePipeline",
    "_diffusers_version": "0.42.1",
    "processor": ["transformers", "GlmImageProcessor"],
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "ByT5Tokenizer"],
    "transformer": ["diffusers", "GlmImageTransformer2DModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "vision_language_encoder": ["transformers", "GlmImageForConditionalGeneration"],
}

#: weight components in writing order (each gets its own random stream, so one never shifts another)
WEIGHT_PARTS = ("vision_language_encoder", "text_encoder", "transformer", "vae")
#: shards are cut at this many bytes, so the bigger parts get several ``*-0000i-of-0000n`` files
MAX_SHARD_BYTES = 100_000

_NORM_MARKERS = ("norm",)  # module names of norm layers (layer_norm, input_layernorm, group_norm, norm1 ...)
_EMBEDDINGS = ("embed_tokens", "shared", "position_embedding", "embedding", "prior_token_embedding",
               "relative_attention_bias")
_AR_MARKER = 4.0         # constant value of residual channel 0 in every AR token embedding
_AR_NON_CODE_LOGIT = -10.0  # lm_head weight on that channel for ids that are not VQ codes


class TinyModelError(ValueError):
    """The tiny configs contradict each other or the tokenizer."""


def load_tiny_configs(config_dir: str | os.PathLike = TINY_CONFIG_DIR) -> dict[str, dict]:
    """``{name: dict}`` for every JSON in ``config_dir`` (vision_language_encoder, generation_config, ...)."""
    config_dir = Path(config_dir)
    names = ("vision_language_encoder", "generation_config", "text_encoder", "transformer", "vae", "scheduler",
             "image_processor")
    missing = [n for n in names if not (config_dir / f"{n}.json").is_file()]
    if missing:
        raise TinyModelError(f"{config_dir}: missing tiny config(s) {[m + '.json' for m in missing]}; "
                             "restore configs/tiny/ from the repository")
    return {n: json.loads((config_dir / f"{n}.json").read_text(encoding="utf-8")) for n in names}


def check_consistency(configs: dict[str, dict], tokenizer) -> None:
    """Raise ``TinyModelError`` naming the values when the parts would not fit together."""
    ar, dit, vae, t5 = (configs[n] for n in ("vision_language_encoder", "transformer", "vae", "text_encoder"))
    text, vq = ar["text_config"], ar["vq_config"]
    codes = vq["num_embeddings"]
    checks = [
        (ar["image_start_token_id"] == codes and ar["image_end_token_id"] == codes + 1,
         f"image_start/end_token_id ({ar['image_start_token_id']}, {ar['image_end_token_id']}) must be "
         f"vq num_embeddings ({codes}) and the next id"),
        (text["eos_token_id"] == ar["image_end_token_id"], "text_config.eos_token_id must be image_end_token_id"),
        (text["vision_vocab_size"] > ar["image_end_token_id"], "vision_vocab_size must include the image markers"),
        (text["vocab_size"] >= tokenizer.get_vocab_size(),
         f"text_config.vocab_size={text['vocab_size']} does not cover the tokenizer ({tokenizer.get_vocab_size()} ids)"),
        (text["pad_token_id"] == tokenizer.token_to_id("<|endoftext|>"),
         f"text_config.pad_token_id must be the id of <|endoftext|> ({tokenizer.token_to_id('<|endoftext|>')})"),
        (ar["image_token_id"] == tokenizer.token_to_id("<|image|>"),
         f"image_token_id must be the id of <|image|> ({tokenizer.token_to_id('<|image|>')})"),
        (tokenizer.token_to_id(f"<|dit_token_{ar['image_start_token_id']}|>") == ar["image_start_token_id"],
         "the tokenizer's vision ids must start at 0"),
        (vq["latent_channels"] == ar["vision_config"]["hidden_size"], "vq latent_channels must equal vision hidden_size"),
        (dit["prior_vq_quantizer_codebook_size"] == codes, "transformer prior codebook must equal vq num_embeddings"),
        (dit["text_embed_dim"] == t5["d_model"], "transformer text_embed_dim must equal the T5 d_model"),
        (dit["in_channels"] == dit["out_channels"] == vae["latent_channels"],
         "transformer in/out channels must equal the VAE latent_channels"),
        (len(vae["block_out_channels"]) == 4, "the pipeline assumes a VAE scale factor of 8 (4 blocks)"),
        (t5["vocab_size"] == 384, "a ByT5 tokenizer has 384 ids (3 specials + 256 bytes + 125 extra ids)"),
    ]
    problems = [msg for ok, msg in checks if not ok]
    if problems:
        raise TinyModelError("tiny configs are inconsistent: " + "; ".join(problems) + " (fix configs/tiny/)")


def _random_tensor(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    parts = name.split(".")
    owner, leaf = (parts[-2] if len(parts) > 1 else ""), parts[-1]
    if any(m in owner for m in _NORM_MARKERS) and len(shape) == 1:
        return np.full(shape, 1.0 if leaf == "weight" else 0.0, np.float32)
    if leaf == "bias" or len(shape) == 1:
        return (0.02 * rng.standard_normal(shape)).astype(np.float32)
    if owner in _EMBEDDINGS:
        return rng.standard_normal(shape).astype(np.float32)
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def _ar_structure(name: str, value: np.ndarray, num_codes: int) -> np.ndarray:
    """Constant residual channel 0 carrying a penalty on the non-code ids (see the module docstring)."""
    if name.endswith("language_model.embed_tokens.weight"):
        value[:, 0] = _AR_MARKER
    elif name.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight")):
        value[0, :] = 0.0
    elif name == "lm_head.weight":
        value[:, 0] = 0.0
        value[num_codes:, 0] = _AR_NON_CODE_LOGIT
    return value


def random_tensors(name: str, config: dict, seed: int) -> list[TensorData]:
    """Every parameter of component ``name`` (names are the Hugging Face ones), random bf16."""
    spec = COMPONENTS[name]
    cell = build_cell(spec, spec.config_class().from_dict(config))
    rng = np.random.default_rng([seed, WEIGHT_PARTS.index(name)])
    tensors = []
    for hf_name, param in cell.parameters_dict().items():
        value = _random_tensor(hf_name, tuple(param.shape), rng)
        if name == "vision_language_encoder":
            value = _ar_structure(hf_name, value, config["vq_config"]["num_embeddings"])
        tensors.append(TensorData.from_array(hf_name, value, "BF16"))
    return tensors


def write_weights(part: Path, stem: str, tensors: list[TensorData], max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
    """``stem.safetensors``, or ``stem-0000i-of-0000n.safetensors`` shards + ``stem.safetensors.index.json``."""
    shards: list[list[TensorData]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    if len(shards) == 1:
        write_safetensors(part / f"{stem}.safetensors", shards[0], metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        fname = f"{stem}-{i:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(part / fname, shard, metadata={"format": "pt"})
        weight_map.update({t.name: fname for t in shard})
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors)}, "weight_map": dict(sorted(weight_map.items()))}
    write_json_atomic(part / f"{stem}.safetensors.index.json", index)


def write_byt5_tokenizer(folder: Path, extra_ids: int = 125) -> None:
    """``tokenizer_config.json`` + ``added_tokens.json`` of a ByT5 tokenizer, as transformers saves them."""
    def entry(content: str, special: bool) -> dict:
        return {"content": content, "lstrip": not special, "normalized": not special, "rstrip": not special,
                "single_word": False, "special": special}

    extra = [f"<extra_id_{i}>" for i in range(extra_ids)]
    decoder = {"0": entry("<pad>", False), "1": entry("</s>", False), "2": entry("<unk>", False)}
    decoder.update({str(259 + i): entry(tok, True) for i, tok in enumerate(extra)})
    write_json_atomic(folder / "tokenizer_config.json", {
        "added_tokens_decoder": decoder, "backend": "custom", "eos_token": "</s>", "extra_ids": 0,
        "extra_special_tokens": extra, "model_max_length": int(1e30), "pad_token": "<pad>",
        "tokenizer_class": "ByT5Tokenizer", "unk_token": "<unk>"})
    write_json_atomic(folder / "added_tokens.json", dict(sorted({tok: 259 + i for i, tok in enumerate(extra)}.items())))


def make_tiny_model(folder: str | os.PathLike, seed: int = 0, overwrite: bool = False, progress: bool = True,
                    config_dir: str | os.PathLike = TINY_CONFIG_DIR) -> Path:
    """Write the tiny model to ``folder`` (built in ``.<name>.partial`` beside it, then moved into place).

    ``overwrite`` replaces an existing model folder (one with ``model_index.json``), never another folder.
    """
    from ckpt_convert.model_index import is_model_folder
    from .processor.tiny_tokenizer import build_tokenizer, write_processor_files

    folder = Path(folder)
    check_destination(folder, overwrite, is_model_folder, "model folder",
                      "overwrite=True (`mindglm-image make-tiny DIR --overwrite`)")
    configs = load_tiny_configs(config_dir)
    ar = configs["vision_language_encoder"]
    check_consistency(configs, build_tokenizer(ar["text_config"]["vision_vocab_size"]))

    steps = [*WEIGHT_PARTS, "processor", "tokenizer", "scheduler"]
    with atomic_dir(folder) as work:
        for name in tqdm(steps, desc="make-tiny", unit="part", disable=not progress):
            part = work / name
            if name in WEIGHT_PARTS:
                write_json_atomic(part / "config.json", configs[name])
                write_weights(part, COMPONENTS[name].hf_stem, random_tensors(name, configs[name], seed))
                if name == "vision_language_encoder":
                    write_json_atomic(part / "generation_config.json", configs["generation_config"])
            elif name == "processor":
                write_processor_files(part, ar["text_config"]["vision_vocab_size"], ar["image_start_token_id"],
                                      ar["image_end_token_id"], configs["image_processor"])
            elif name == "tokenizer":
                write_byt5_tokenizer(part)
            else:
                write_json_atomic(part / "scheduler_config.json", configs["scheduler"])
        write_json_atomic(work / "model_index.json", MODEL_INDEX)
    return folder
