"""Config dataclasses of a training job (``configs/jobs/train_*.json``), on the repo's ``HFConfig`` base."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from ..config.base import ConfigError, HFConfig


@dataclasses.dataclass
class OptimizerConfig(HFConfig):
    """AdamW with decoupled weight decay (torch.optim.AdamW's maths), an EMA and global-norm clipping."""

    lr: float = 1e-4                                # peak learning rate (reached after warmup)
    betas: tuple[float, float] = (0.9, 0.999)       # Adam moment decays (beta1, beta2)
    eps: float = 1e-8                               # added to sqrt(second moment) in the denominator
    weight_decay: float = 0.0                       # decoupled: w -= lr * weight_decay * w before the Adam step
    ema_decay: float = 0.999                        # ema = decay * ema + (1 - decay) * w after every step; 0 = no EMA
    max_grad_norm: float = 1.0                      # clip the global L2 norm of all gradients to this; 0 = no clipping
    shard_state: bool = False                       # ZeRO-1: N workers keep 1/N of master/moments/EMA each; 1: no-op
    shard_grads: bool = False                       # ZeRO-2 (with shard_state): also 1/N of the fp32 gradient sums each

    def validate(self) -> None:
        if self.lr <= 0 or self.eps <= 0:
            raise ConfigError(f"optimizer: lr={self.lr} and eps={self.eps} must be positive")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optimizer.betas={list(self.betas)} must be two numbers in [0, 1)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"optimizer.ema_decay={self.ema_decay} must be in [0, 1) (0 turns the EMA off)")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError("optimizer: weight_decay and max_grad_norm must not be negative")
        if self.shard_grads and not self.shard_state:
            raise ConfigError("optimizer.shard_grads shards the gradient sums over the optimizer state's pieces; "
                              "set optimizer.shard_state=true with it")


@dataclasses.dataclass
class ScheduleConfig(HFConfig):
    """Learning rate: linear warmup from 0, then cosine (or constant) decay to ``min_lr_ratio * lr``."""

    warmup_steps: int = 0        # optimizer steps of linear warmup (step 1 gets lr / warmup_steps)
    total_steps: int = 1000      # optimizer steps of the whole run; the job stops after this many
    min_lr_ratio: float = 0.0    # final learning rate as a fraction of the peak
    cosine: bool = True          # cosine decay after warmup; False keeps the peak learning rate

    def validate(self) -> None:
        if self.total_steps < 1 or self.warmup_steps < 0:
            raise ConfigError(f"schedule: total_steps={self.total_steps} must be >= 1 and warmup_steps >= 0")
        if self.warmup_steps > self.total_steps:
            raise ConfigError(f"schedule: warmup_steps={self.warmup_steps} exceeds total_steps={self.total_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"schedule.min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")


@dataclasses.dataclass
class DiTLossConfig(HFConfig):
    """Sampling of the flow-matching loss terms for the DiT (see ``training/dit_loss.py``)."""

    prior_drop_prob: float = 0.1    # per sample: drop the prior tokens (the unconditional CFG branch)
    glyph_drop_prob: float = 0.1    # per sample: replace the glyph embeddings with those of "" (CFG)
    min_timestep: int = 1           # timesteps are drawn uniformly from the integers [min, max] ...
    max_timestep: int = 1000        # ... of the scheduler's range; sigma = shift(t / 1000, mu(image size))
    text_bucket: int = 32           # glyph lengths padded (masked) to a multiple of this, as the sampler pads them:
                                    # batches of other quoted-text lengths reuse one compiled step (0: the longest)

    def validate(self) -> None:
        for name in ("prior_drop_prob", "glyph_drop_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"dit_loss.{name}={getattr(self, name)} must be a probability in [0, 1]")
        if self.text_bucket < 0:
            raise ConfigError(f"dit_loss.text_bucket={self.text_bucket} must be >= 0")
        if not 1 <= self.min_timestep <= self.max_timestep:
            raise ConfigError(f"dit_loss: need 1 <= min_timestep ({self.min_timestep}) <= max_timestep "
                              f"({self.max_timestep})")


@dataclasses.dataclass
class VAELossConfig(HFConfig):
    """The VAE job's loss (``training/vae_loss.py``)."""

    kl_weight: float = 1e-3   # weight of the KL term; both terms are element means, so it is size-independent
    crop: int = 64            # side of the random square crop of each image a step trains on (multiple of 8)

    def validate(self) -> None:
        if self.kl_weight < 0 or self.crop < 8:
            raise ConfigError(f"vae_loss: kl_weight={self.kl_weight} must be >= 0 and crop={self.crop} >= 8")


@dataclasses.dataclass
class VQLossConfig(HFConfig):
    """The image tokenizer job's loss (``training/vq_loss.py``)."""

    commitment: float = 0.25   # beta: weight of the commitment term (features pulled towards their code)
    target_side: int = 4       # the auxiliary head reconstructs each patch box-averaged to this side
    sizes: list = dataclasses.field(default_factory=lambda: [64, 256])  # square pixel sides images are tokenised at (grid * patch: full and preview grids of 128-px images)

    def validate(self) -> None:
        if self.commitment < 0 or self.target_side < 1 or not self.sizes:
            raise ConfigError(f"vq_loss: commitment={self.commitment} >= 0, target_side={self.target_side} >= 1 and "
                              f"a non-empty sizes list are needed")


@dataclasses.dataclass
class TrainConfig(HFConfig):
    """A training job: what to train on, for how long, and where to write checkpoints and logs."""

    nested: ClassVar[dict[str, type[HFConfig]]] = {"optimizer": OptimizerConfig, "schedule": ScheduleConfig,
                                                   "dit_loss": DiTLossConfig, "vae_loss": VAELossConfig,
                                                   "vq_loss": VQLossConfig}

    model: str = ""                              # model folder (official layout or converted)
    data: str = ""                               # prepared dataset folder (``mindglm-image prepare-data``)
    out_dir: str = "outputs/train"               # checkpoints, metrics.jsonl and TensorBoard events go here
    batch_size: int = 1                          # samples per micro-batch per worker (one aspect bucket each)
    grad_accum_steps: int = 1                    # micro-batches summed into one optimizer step
    checkpoint_every: int = 100                  # optimizer steps between checkpoints (the last step always saves)
    keep_last: int = 3                           # checkpoints kept; older ones are deleted after a new one lands
    recompute: bool = False                      # recompute each block's activations in backward (less memory)
    seed: int = 0                                # data order, noise, timesteps and dropout all derive from it
    log_every: int = 1                           # optimizer steps between metric lines
    device: str | None = None                    # CPU or Ascend (default: $MINDGLM_DEVICE or CPU)
    dtype: str = "auto"                          # compute dtype: auto (bf16 on Ascend, fp32 on CPU), float32, bfloat16
    lora: dict[str, Any] | None = None           # training.lora.LoraConfig fields; None = full fine-tune
    export: bool = True                          # at the end: LoRA -> <out_dir>/adapter (PEFT), full -> <out_dir>/model
    export_ema: bool = False                     # export the trained weights' EMA (needs ema_decay > 0); false: the raw final weights
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)  # see OptimizerConfig
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)     # see ScheduleConfig
    dit_loss: DiTLossConfig = dataclasses.field(default_factory=DiTLossConfig)       # used by train-dit only
    vae_loss: VAELossConfig = dataclasses.field(default_factory=VAELossConfig)       # used by train-vae only
    vq_loss: VQLossConfig = dataclasses.field(default_factory=VQLossConfig)          # used by train-vq only

    def validate(self) -> None:
        for name in ("batch_size", "grad_accum_steps", "checkpoint_every", "keep_last", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train: {name}={getattr(self, name)} must be at least 1")
        for name in ("model", "data"):
            if not getattr(self, name):
                raise ConfigError(f"the job needs '{name}' (set it in the job config or pass --{name})")
        if self.export_ema and self.optimizer.ema_decay == 0:
            raise ConfigError("train: export_ema=true needs an EMA; set optimizer.ema_decay > 0 or export_ema=false")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ConfigError(f"train.dtype={self.dtype!r}: use auto, float32 or bfloat16")
