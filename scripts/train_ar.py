"""msrun entry point: AR SFT (full or LoRA), data parallel over the workers (each reads its own shard).

    # one process (CPU or one NPU)
    python scripts/train_ar.py --config configs/jobs/train_ar_tiny.json
    # 8 NPUs of one Atlas 800T A2; rerun the same command to resume from the newest checkpoint
    msrun --worker_num=8 --local_worker_num=8 --master_port=8118 --log_dir=logs --join=True \\
        scripts/train_ar.py --config configs/jobs/train_ar.json --model /data/GLM-Image --data /data/prepared
"""
from __future__ import annotations

import sys

from mindglm_image.jobs.job_args import job_main
from mindglm_image.jobs.train_ar import train_ar
from mindglm_image.training.config import TrainConfig

if __name__ == "__main__":
    sys.exit(job_main(TrainConfig, train_ar, __doc__))
