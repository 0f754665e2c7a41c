"""Reference GlmImageProcessor on our tiny processor files: chat template + grid markers -> ids."""
# fixture-depends: mindglm_image/processor/tiny_tokenizer.py
import json

from transformers import AutoProcessor

from common import out_dir
from mindglm_image.processor.tiny_tokenizer import write_processor_files

out = out_dir()
image_processor = {"image_processor_type": "GlmImageImageProcessor", "patch_size": 16, "merge_size": 1,
                   "temporal_patch_size": 1, "size": {"shortest_edge": 1024, "longest_edge": 65536}}
write_processor_files(out / "processor", vision_vocab_size=160, image_start_id=128, image_end_id=129,
                      image_processor=image_processor)
processor = AutoProcessor.from_pretrained(out / "processor")
cases = []
for prompts, (h, w) in [(["a red cat holds a sign"], (256, 384)), (["a photo of a lake"], (1024, 1024)),
                        (["draw a bird", "make the sky purple and add a moon"], (512, 288)),
                        (["sign that says 'hello world'"], (2048, 1536))]:
    messages = [[{"role": "user", "content": [{"type": "text", "text": p}]}] for p in prompts]
    enc = processor.apply_chat_template(messages, tokenize=True, padding=len(prompts) > 1, target_h=h, target_w=w,
                                        return_dict=True, return_tensors="np")
    cases.append({"prompts": prompts, "height": h, "width": w, "input_ids": enc["input_ids"].tolist(),
                  "attention_mask": enc["attention_mask"].tolist(), "image_grid_thw": enc["image_grid_thw"].tolist(),
                  "images_per_sample": enc["images_per_sample"].tolist()})
(out / "cases.json").write_text(json.dumps(cases, indent=1))
