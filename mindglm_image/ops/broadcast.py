"""Explicit broadcasting for the element-wise ops of large activations.

MindSpore 2.10's CPU kernels for broadcasting binary ops (Add, Sub, Mul, ... on operands of different
shapes) build two 8-byte index tables of the output's size when a graph is compiled and keep them as long
as the graph lives: 16 bytes per output element, 64 MB for one add on a 4M-element activation; they were
most of a 512 px DiT graph's memory (README, Memory of one generation). ``BroadcastTo`` followed
by a same-shape op computes the same values (element-wise, bit for bit) with no such tables: its output
is an ordinary pooled buffer, freed when consumed. So every broadcasting op whose output is activation
sized broadcasts its small operand with ``broadcast_like`` first; the cost elsewhere is one extra copy of it.
"""
from __future__ import annotations


def broadcast_like(small, big):
    """``small`` broadcast to ``big``'s shape as its own op (see the module docstring for why)."""
    return small.broadcast_to(big.shape)
