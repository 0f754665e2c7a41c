"""Reference for the Glyph-byT5 path: tiny T5 encoder, ByT5 tokenizer, and the pipeline's glyph method.

Writes text_encoder/ (sharded HF layout), tokenizer/, glyph.npz (encoder inputs/outputs, glyph
embeddings per case, relative position buckets), tokenizer.json (reference ids for tricky texts) and
cases.json (the prompts, so the tests need not import this torch script).
"""
from __future__ import annotations

import json

import torch
from common import out_dir, save_arrays, seed_all
from diffusers.pipelines.glm_image.pipeline_glm_image import GlmImagePipeline
from transformers import ByT5Tokenizer, T5Config, T5EncoderModel
from transformers.models.t5.modeling_t5 import T5Attention

CASES = {
    "no_quotes": ["a quiet harbour at dawn, no words anywhere"],
    "one_span": ["a shop sign that reads 'OPEN' in red neon"],
    "two_spans": ['a poster titled "Grand Opening" with the line \'50% off\' below'],
    "three_spans": ["a banner with 「東京タワー」 on top, “你好，世界” in the middle and 'Café Ünïcødé' below"],
    "batch": ["a mug printed with 'Hi'", 'a billboard: "Summer Sale" and 「夏祭り」 and \'today only!\''],
}
TRUNCATED = ("truncated", ["a long banner 'the quick brown fox jumps over the lazy dog' in gold"], 12)

TOKENIZER_TEXTS = [
    "", "a", "hello world", "Café 東京 🙂", "x</s>", "a </s>  b <unk>c<extra_id_0><extra_id_124> ",
    "  <pad>  spaced  ", "<pad></s><unk>", "<extra_id_12>3<extra_id_1>", "tab\t<unk>\nnl", "plain text ",
]


def main() -> None:
    out = out_dir()
    seed_all(0)
    config = T5Config(vocab_size=384, d_model=32, d_kv=8, num_heads=4, num_layers=2, d_ff=64,
                      feed_forward_proj="gated-gelu", dropout_rate=0.0)
    model = T5EncoderModel(config).eval()
    with torch.no_grad():  # norms start at 1: perturb them so their weights are exercised
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(out / "text_encoder", max_shard_size="20KB")
    ByT5Tokenizer().save_pretrained(out / "tokenizer")
    tokenizer = ByT5Tokenizer.from_pretrained(out / "tokenizer")

    recorded: list[dict] = []
    model.register_forward_pre_hook(
        lambda mod, args, kwargs: recorded.append({"input_ids": args[0].clone(), "mask": kwargs["attention_mask"].clone()}),
        with_kwargs=True)

    class Host:  # the pipeline's glyph methods need only these attributes
        get_glyph_texts = GlmImagePipeline.get_glyph_texts
        _get_glyph_embeds = GlmImagePipeline._get_glyph_embeds
        encode_prompt = GlmImagePipeline.encode_prompt
        _execution_device = torch.device("cpu")
        text_encoder = model

    Host.tokenizer = tokenizer
    host = Host()
    arrays: dict = {}
    with torch.no_grad():
        for case, prompts in CASES.items():
            recorded.clear()
            pos, neg = host.encode_prompt(prompts, do_classifier_free_guidance=True, device=torch.device("cpu"),
                                          dtype=torch.float32)
            arrays[f"{case}/embeds"] = pos
            arrays[f"{case}/negative"] = neg
            arrays[f"{case}/spans"] = json.dumps(host.get_glyph_texts(prompts), ensure_ascii=False)
            n_pos = len(prompts)
            for i, rec in enumerate(recorded[:n_pos]):
                arrays[f"{case}/input_ids{i}"] = rec["input_ids"]
                arrays[f"{case}/mask{i}"] = rec["mask"]
        name, prompts, max_len = TRUNCATED
        recorded.clear()
        arrays[f"{name}/embeds"] = host._get_glyph_embeds(prompts, max_len, torch.device("cpu"), torch.float32)
        arrays[f"{name}/input_ids0"] = recorded[0]["input_ids"]

        # the encoder alone on a right-padded batch, every position kept (padded rows too)
        lengths = [40, 25, 7]
        ids = torch.randint(3, 384, (3, 40))
        mask = torch.tensor([[1] * n + [0] * (40 - n) for n in lengths])
        ids = ids * mask
        arrays["encoder/input_ids"] = ids
        arrays["encoder/attention_mask"] = mask
        arrays["encoder/last_hidden_state"] = model(ids, attention_mask=mask).last_hidden_state

    for length, buckets, dist in ((300, 32, 128), (60, 8, 20), (200, 64, 50)):
        pos = torch.arange(length)
        arrays[f"bucket/{length}_{buckets}_{dist}"] = T5Attention._relative_position_bucket(
            pos[None, :] - pos[:, None], bidirectional=True, num_buckets=buckets, max_distance=dist)
    save_arrays(out / "glyph.npz", **arrays)

    tok_out = []
    for text in TOKENIZER_TEXTS:
        for kwargs in ({}, {"max_length": 5, "truncation": True}, {"max_length": 1, "truncation": True}):
            tok_out.append({"text": text, "kwargs": kwargs, "out": dict(tokenizer(text, **kwargs))})
    tok_out.append({"text": TOKENIZER_TEXTS, "kwargs": {"padding": True},
                    "out": dict(tokenizer(TOKENIZER_TEXTS, padding=True))})
    (out / "tokenizer.json").write_text(json.dumps(tok_out, ensure_ascii=False, indent=1), encoding="utf-8")
    cases = {"cases": CASES, "truncated": {"prompts": TRUNCATED[1], "max_length": TRUNCATED[2]}}
    (out / "cases.json").write_text(json.dumps(cases, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
