"""Loss and gradients of chosen parameters in one compiled graph (tests of loss cells)."""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops


class LossAndGrads(nn.Cell):
    """``construct(*batch) -> (loss, grads of params)`` with MindSpore's GradOperation in graph mode."""

    def __init__(self, loss: nn.Cell, params):
        super().__init__()
        self.loss = loss
        self.params = ms.ParameterTuple(params)
        self.grad = ops.GradOperation(get_by_list=True)

    def construct(self, *batch):
        return self.loss(*batch), self.grad(self.loss, self.params)(*batch)
