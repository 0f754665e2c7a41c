"""How far the demo checker can be trusted: its accuracy on degraded renders of known scenes, and how
often it rejects an image in which exactly one attribute is wrong (the target of a one-attribute edit,
scored against the source scene). Renders are blurred, noised and JPEG-compressed (``demo.degrade``).

    .venv/bin/python scripts/validate_demo_checker.py --n 300
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np
from tqdm import tqdm

from mindglm_image.demo.checker import rejects, report, score
from mindglm_image.demo.degrade import degrade
from mindglm_image.demo.synthetic import DemoDataConfig, caption, render, sample_edit, sample_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="scenes (and as many one-attribute edits)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-probability", type=float, default=0.5)
    args = parser.parse_args()

    cfg = DemoDataConfig(seed=args.seed, text_probability=args.text_probability)
    scores, rejected = [], defaultdict(list)
    for i in tqdm(range(args.n), desc="checker"):
        rng = np.random.default_rng(np.random.SeedSequence(args.seed, spawn_key=(7, i)))
        scene = sample_scene(rng, cfg)
        scores.append(score(caption(scene, i, i // 5), degrade(render(scene), i)))
        edit = sample_edit(rng, scene, cfg)
        verdict = rejects(edit, degrade(render(edit.target), args.n + i))
        if verdict is not None:
            rejected[edit.attribute].append(verdict)
    print(json.dumps({
        "degraded_renders": report(scores),
        "one_wrong_attribute_rejected": {k: {"images": len(v), "rejected": float(np.mean(v))}
                                         for k, v in sorted(rejected.items())},
    }, indent=2))


if __name__ == "__main__":
    main()
