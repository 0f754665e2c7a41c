"""GELU: the DiT feed-forward's tanh form and the glyph projector's exact (erf) form."""
from __future__ import annotations

from mindspore import ops


def gelu(x, approximate: str):
    """The built-in GeLU kernel (``approximate``: "tanh" or "none", the erf form) on every device; the oracle."""
    return ops.gelu(x, approximate=approximate)
