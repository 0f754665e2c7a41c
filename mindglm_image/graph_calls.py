"""Calling a compiled graph in a hot loop (a decode step, a denoising step) without MindSpore's per-call checks.

In graph mode ``Cell.__call__`` re-derives the argument key and sets ``compile_phase`` on every sub-cell before
each run (``mindspore/graph/api.py``, ``compile``): Python work that grows with the cell tree and, for a small
model's decode step, rivals the step's own kernel time. MindSpore's predict mode, made for LLM decoding,
skips it: a cell whose ``phase`` is ``"increment"`` runs its compiled graph directly from the second call on
(``Cell._predict``). That graph is the one compiled at the first call, whatever later inputs look like, so
``StaticGraph`` keeps one such cell per input signature (shapes, dtypes, and the values of non-tensor arguments).
"""
from __future__ import annotations

from typing import Any

from mindspore import Tensor, nn

_PREDICT_PHASE = "increment"  # one of the two phases Cell._predict serves ("prefill" is the other)


class _PredictCell(nn.Cell):
    """``cell.method`` under MindSpore's predict fast path; ``auto_prefix=False`` keeps its parameter names."""

    def __init__(self, cell: nn.Cell, method: str):
        super().__init__(auto_prefix=False)
        self.cell = cell
        self.method = method
        self.phase = _PREDICT_PHASE

    def construct(self, *args):
        return getattr(self.cell, self.method)(*args)


def _signature(value: Any) -> Any:
    if isinstance(value, Tensor):
        return tuple(value.shape), value.dtype
    if isinstance(value, (tuple, list)):
        return tuple(_signature(v) for v in value)
    return value  # None and Python scalars are graph constants: their values select the graph


class StaticGraph:
    """Calls ``cell`` (or its graph-traceable ``method``) with positional arguments through one predict-mode cell
    per input signature."""

    def __init__(self, cell: nn.Cell, method: str = "construct"):
        self.cell = cell
        self.method = method
        self._graphs: dict[Any, _PredictCell] = {}

    def __call__(self, *args):
        key = _signature(args)
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._graphs[key] = _PredictCell(self.cell, self.method)
        return graph(*args)

    @property
    def compiled_graphs(self) -> int:
        """How many graphs MindSpore compiled for this cell through here (one per input signature)."""
        return sum(len(graph.compile_cache) for graph in self._graphs.values())


def static_graph(cell: nn.Cell, method: str = "construct", wrapper: type[nn.Cell] | None = None) -> StaticGraph:
    """``cell``'s ``StaticGraph`` of ``method``, made on first use and kept on the cell, so that it lives as long as
    the cell (a model passed to a stateless loop function keeps its compiled graphs from one call to the next).
    ``wrapper``: a Cell class built once around the cell (``wrapper(cell)``, e.g. a loop step that adds work
    around one of the model's methods), whose graph is kept instead."""
    graphs = cell.__dict__.get("_static_graphs")
    if graphs is None:
        graphs = {}
        object.__setattr__(cell, "_static_graphs", graphs)  # a plain attribute: not a sub-cell, not compiled
    key = wrapper or method
    if key not in graphs:
        graphs[key] = StaticGraph(wrapper(cell)) if wrapper is not None else StaticGraph(cell, method)
    return graphs[key]
