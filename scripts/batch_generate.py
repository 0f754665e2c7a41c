"""msrun entry point: batch generation over a prompts file on every worker (resumable, sharded by rank).

    # one process (CPU or one NPU)
    python scripts/batch_generate.py --config configs/jobs/batch_tiny.json
    # 8 NPUs of one Atlas 800T A2 (each worker takes every 8th prompt; rerun to resume; with overlap, each
    # rank overlaps its AR and DiT stages on its NPU's streams)
    msrun --worker_num=8 --local_worker_num=8 --master_port=8118 --log_dir=logs --join=True \\
        scripts/batch_generate.py --config configs/jobs/batch.json --model /data/GLM-Image --prompts prompts.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys

from mindglm_image.jobs.batch_generate import BatchJobConfig, distributed_rank, read_items, run_batch
from mindglm_image.jobs.job_args import add_config_flags, config_from_args


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except (ValueError, OSError) as err:  # ConfigError, CheckpointError, a missing file: a message, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, BatchJobConfig)
    cfg = config_from_args(BatchJobConfig, parser.parse_args(argv))
    items, problems = read_items(cfg.prompts, cfg.base_seed)  # every item checked before the model loads
    for message in problems:
        print(f"warning: {message}", file=sys.stderr)
    if not items:
        raise ValueError(f"{cfg.prompts}: no usable item (see the warnings above)")

    from mindglm_image.runtime import setup_runtime

    setup_runtime(cfg.device)  # msrun gives each worker its device; init() follows set_device
    rank, world = distributed_rank()
    # the model loads in run_batch: in this process (overlap false) or in the engine's stage workers
    print(json.dumps(run_batch(cfg, rank=rank, world=world, items=items)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
