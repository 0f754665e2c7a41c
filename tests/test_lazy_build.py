"""The real-size model's cells are built without allocating weights (they stream in at load time)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
import json, sys
import numpy as np
from pathlib import Path
from mindglm_image.weights.components import COMPONENTS, build_cell, load_config
spec = COMPONENTS["vision_language_encoder"]
cell = build_cell(spec, load_config(spec, Path(sys.argv[1])))
params = cell.parameters_dict()
# VmHWM is this process image's own peak (ru_maxrss would include the forking parent's, kept across exec)
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split(":")[1]
print(json.dumps({"count": int(sum(int(np.prod(p.shape)) for p in params.values())), "tensors": len(params),
                  "peak_rss_mb": int(hwm.split()[0]) / 1024}))
"""


def test_real_size_ar_model_builds_without_weight_memory():
    folder = ROOT / "configs" / "glm_image" / "vision_language_encoder"
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(folder)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    # 40 text layers + 40 vision blocks + embeddings + VQ + lm_head: about 10.1 B parameters (40 GB in fp32)
    assert stats["count"] == 10_114_245_632
    assert stats["tensors"] > 800
    assert stats["peak_rss_mb"] < 2048, f"building the real-size cells used {stats['peak_rss_mb']:.0f} MB"
