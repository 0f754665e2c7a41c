"""The denoising loop's sampler step on the device: classifier-free guidance, the flow-match Euler step and the
non-finite record, one operator so a denoising step adds one kernel after the DiT instead of ~20."""
from __future__ import annotations

import mindspore as ms
from mindspore import mint, ops


def guided_euler_step(output, latents, dt, index, guidance, record):
    """``output`` the DiT's velocity for ``latents`` (B, ...): (B, ...) unguided, or (2B, ...) [cond | uncond]
    rows, mixed ``uncond + guidance * (cond - uncond)`` in fp32; then ``latents + dt * velocity``. ``dt`` () float32
    the step's ``sigmas[index + 1] - sigmas[index]`` (a per-step input, not the sigma table: the graph stays the
    same for any step count), ``index`` () int32 the step, ``guidance`` () float32, ``record`` (2,) int32: the
    first step whose latents were not finite and how many values, (-1, 0) while all are. Returns the new
    latents, the next DiT input (the latents, twice when guided) and the record."""
    velocity = output.astype(ms.float32)
    guided = output.shape[0] != latents.shape[0]  # static shapes: decided while compiling
    if guided:
        cond, uncond = mint.chunk(velocity, 2, 0)
        velocity = uncond + guidance * (cond - uncond)
    latents = latents + dt * velocity
    bad = mint.logical_not(mint.isfinite(latents)).sum().astype(ms.int32)
    first = mint.logical_and(bad > 0, record[0] < 0)
    record = mint.where(first, ops.stack((index, bad)), record)
    model_input = mint.cat((latents, latents)) if guided else latents
    return latents, model_input, record
