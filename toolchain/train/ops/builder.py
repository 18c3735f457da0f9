"""Building an op list: :class:`IRBuilder`, shared by every model family's ``to_ir()``."""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn as nn


class IRBuilder:
    """Builds an op list and its raw tensors: activations named t1, t2, ... in order, each layer's
    tensors copied by name (the op format of :mod:`.ops`)."""

    def __init__(self):
        self.ops: List[dict] = []
        self.weights: Dict[str, torch.Tensor] = {}
        self.count = 0

    def tensor(self) -> str:
        self.count += 1
        return "t{}".format(self.count)

    def op(self, **op) -> str:
        """Append *op* (its output named here unless given); return its output."""
        op.setdefault("y", self.tensor())
        self.ops.append(op)
        return op["y"]

    def conv(self, name: str, conv: nn.Conv2d, bn: nn.BatchNorm2d, x: str, **attrs) -> str:
        """A convolution with its BatchNorm; *attrs*: k, stride, pad, groups, act."""
        self.weights[name + ".weight"] = conv.weight.detach().clone()
        for key in ("weight", "bias", "running_mean", "running_var"):
            self.weights["{}.bn.{}".format(name, key)] = getattr(bn, key).detach().clone()
        return self.op(op="conv", name=name, x=x, eps=bn.eps, **attrs)

    def head(self, x: str, fc: nn.Linear) -> Tuple[List[dict], Dict[str, torch.Tensor]]:
        """Global average pooling and the classifier; the finished (ops, tensors)."""
        y = self.op(op="gap", x=x)
        self.weights["fc.weight"] = fc.weight.detach().clone()
        self.weights["fc.bias"] = fc.bias.detach().clone()
        self.op(op="fc", name="fc", x=y, y="logits")
        return self.ops, self.weights
