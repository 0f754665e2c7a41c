"""The real checkpoint's small files (configs/glm_image/) against the reference: every component built at
real size without weights has the reference's parameter count; the real processor and scheduler configs
give the reference's outputs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mindglm_image.pipeline.vae_image import size_for_grid
from mindglm_image.processor.image_processing import GlmImageImageProcessorConfig, preprocess_images
from mindglm_image.scheduler.flow_match import FlowMatchEulerScheduler, image_seq_len

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "glm_image"
pytestmark = pytest.mark.parity

# Builds each component from its real config under no_init_parameters, in a fresh process (peak memory
# of its own); prints parameter counts and the peak RSS. scripts/memory_plan.py uses the same counting.
_PROBE = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from memory_plan import real_parameter_counts
counts, _ = real_parameter_counts(Path(sys.argv[1]))  # (per component, trained tensor sizes)
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split(":")[1]
print(json.dumps({"counts": counts, "peak_rss_mb": int(hwm.split()[0]) / 1024}))
"""


@pytest.fixture(scope="module")
def ref(reference_fixture):
    folder = reference_fixture("real_configs")
    return folder, dict(np.load(folder / "real_configs.npz")), json.loads((folder / "cases.json").read_text())


def test_every_component_at_real_size_has_the_reference_parameter_count(ref):
    folder, _, _ = ref
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(CONFIGS), str(ROOT / "scripts")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = json.loads((folder / "param_counts.json").read_text())
    assert stats["counts"] == expected
    assert expected["transformer"] == 6_926_882_880 and expected["vision_language_encoder"] == 10_114_245_632
    assert stats["peak_rss_mb"] < 2048, f"building the real-size cells used {stats['peak_rss_mb']:.0f} MB"


def test_real_processor_config_gives_the_reference_outputs(ref):
    folder, data, cases = ref
    config = GlmImageImageProcessorConfig.from_pretrained(CONFIGS / "processor")
    assert (config.shortest_edge, config.longest_edge, config.patch_size, config.merge_size) == (262144, 4194304, 16, 1)
    for h, w in cases["photos"]:
        out = preprocess_images(folder / f"photo_{h}x{w}.png", config)
        np.testing.assert_array_equal(out.image_grid_thw, data[f"photo_{h}x{w}_grid"], err_msg=f"{h}x{w}")
        if f"photo_{h}x{w}_pixels" in data:
            np.testing.assert_array_equal(out.pixel_values, data[f"photo_{h}x{w}_pixels"], err_msg=f"{h}x{w}")
    # a 4000 x 3000 phone photo: 48 x 64 AR tokens, VAE-encoded at 1536 x 2048 (VAE factor 8 x DiT patch 2)
    (_, grid_h, grid_w), = data["photo_3000x4000_grid"]
    assert (grid_h, grid_w) == (48, 64) and size_for_grid(grid_h, grid_w, 16) == (1536, 2048)


def test_real_scheduler_config_gives_the_reference_schedule(ref):
    _, data, cases = ref
    scheduler = FlowMatchEulerScheduler.from_folder(CONFIGS / "scheduler")
    for h, w, steps in cases["schedules"]:
        timesteps = scheduler.set_timesteps(steps, image_seq_len(h, w))
        np.testing.assert_array_equal(timesteps, data[f"schedule_{h}x{w}x{steps}_timesteps"])
        np.testing.assert_array_equal(scheduler.sigmas, data[f"schedule_{h}x{w}x{steps}_sigmas"])
