"""One configurable ResNet-style family, and its flat op list (the "IR").

``ResNet`` is the float training network (conv + BatchNorm).  ``ResNet.to_ir()`` returns a
flat op list plus the raw conv weights and BatchNorm states.  The op list is executed by
:class:`edgetool.toolchain.train.qat.QATNet` during QAT and emitted op by op by the ONNX
exporter, so training and deployment run the very same graph.

The op schema (every key, its default, the tensors each op owns, and what it becomes in ONNX)
is :mod:`edgetool.toolchain.train.ops`'s; a ResNet uses:

* ``conv``: name, x, y, k, stride, pad (ints), act ("relu" or None), eps; tensors
  ``<name>.weight`` and the BatchNorm ``<name>.bn.{weight,bias,running_mean,running_var}``
  (deployed as a per-channel float ``<name>.scale`` and ``<name>.bias``)
* ``maxpool``: x, y, k, stride, pad (the ImageNet stem)
* ``add``: a, b, y, act ("relu")
* ``gap``: x, y (global average pool + flatten)
* ``fc``: name, x, y                                   weights ``<name>.weight/.bias``
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Tuple, Union, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ops.builder import IRBuilder


class ConvBN(nn.Module):
    def __init__(self, cin, cout, k, stride, relu=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = relu
        self.k, self.stride, self.pad = k, stride, k // 2

    def forward(self, x):
        y = self.bn(self.conv(x))
        return F.relu(y) if self.relu else y

    def folded(self) -> Tuple[torch.Tensor, torch.Tensor]:
        w = self.conv.weight.detach()
        bn = self.bn
        running_mean = cast(torch.Tensor, bn.running_mean)  # BatchNorm2d(track_running_stats=True): never None
        running_var = cast(torch.Tensor, bn.running_var)
        inv = bn.weight.detach() / torch.sqrt(running_var + bn.eps)
        return (w * inv.reshape(-1, 1, 1, 1)).clone(), (bn.bias.detach() - running_mean * inv).clone()


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = ConvBN(cin, cout, 3, stride)
        self.conv2 = ConvBN(cout, cout, 3, 1, relu=False)
        self.down = ConvBN(cin, cout, 1, stride, relu=False) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        s = self.down(x) if self.down is not None else x
        return F.relu(self.conv2(self.conv1(x)) + s)

    def convs(self):
        return [("conv1", self.conv1), ("conv2", self.conv2)]


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        cout = planes * 4
        self.conv1 = ConvBN(cin, planes, 1, 1)
        self.conv2 = ConvBN(planes, planes, 3, stride)
        self.conv3 = ConvBN(planes, cout, 1, 1, relu=False)
        self.down = ConvBN(cin, cout, 1, stride, relu=False) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        s = self.down(x) if self.down is not None else x
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + s)

    def convs(self):
        return [("conv1", self.conv1), ("conv2", self.conv2), ("conv3", self.conv3)]


ARCHS = {
    # name: (block, blocks per stage, stage widths, stem)
    "resnet-tiny": (BasicBlock, (1, 1, 1), (16, 32, 64), "cifar"),
    "resnet8": (BasicBlock, (1, 1, 1), (16, 32, 64), "cifar"),
    "resnet14": (BasicBlock, (2, 2, 2), (16, 32, 64), "cifar"),
    "resnet20": (BasicBlock, (3, 3, 3), (16, 32, 64), "cifar"),
    "resnet18-cifar": (BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512), "cifar"),
    "resnet18": (BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512), "imagenet"),
    "resnet34": (BasicBlock, (3, 4, 6, 3), (64, 128, 256, 512), "imagenet"),
    "resnet50": (Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), "imagenet"),
}


class ResNet(nn.Module):
    """ResNet family: CIFAR stem (3x3 conv) or ImageNet stem (7x7/2 conv + maxpool)."""

    def __init__(
        self,
        in_channels=1,
        head=10,
        blocks: Sequence[int] = (1, 1, 1),
        widths: Sequence[int] = (16, 32, 64),
        stem="cifar",
        block=BasicBlock,
        width_mult=1.0,
    ):
        super().__init__()
        widths = [max(4, int(round(w * width_mult))) for w in widths]
        self.config = dict(
            in_channels=in_channels, head=head, blocks=list(blocks), widths=widths, stem=stem, block=block.__name__
        )
        if stem == "cifar":
            self.stem = ConvBN(in_channels, widths[0], 3, 1)
            self.pool = None
            cin = widths[0]
        else:
            self.stem = ConvBN(in_channels, 64 if widths[0] >= 64 else widths[0], 7, 2)
            self.pool = nn.MaxPool2d(3, 2, 1)
            cin = 64 if widths[0] >= 64 else widths[0]
        stages = []
        for si, (n, w) in enumerate(zip(blocks, widths)):
            layers = []
            for bi in range(n):
                stride = 2 if (bi == 0 and si > 0) else 1
                blk = block(cin, w, stride)
                cin = w * block.expansion
                layers.append(blk)
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(cin, head)

    def forward(self, x):
        x = self.stem(x)
        if self.pool is not None:
            x = self.pool(x)
        for st in self.stages:
            x = st(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    @torch.no_grad()
    def to_ir(self) -> Tuple[List[dict], Dict[str, torch.Tensor]]:
        """Return (ops, tensors): raw conv weights, BatchNorm states, fc weight and bias."""
        ir = IRBuilder()

        def conv(name, m: ConvBN, x):
            act = "relu" if m.relu else None
            return ir.conv(name, m.conv, m.bn, x, k=m.k, stride=m.stride, pad=m.pad, act=act)

        x = conv("stem", self.stem, "input")
        if self.pool is not None:
            x = ir.op(op="maxpool", x=x, k=3, stride=2, pad=1)
        for si, st in enumerate(self.stages):
            for bi, blk in enumerate(cast(Iterable[Union[BasicBlock, Bottleneck]], st)):
                prefix = "s{}.b{}".format(si + 1, bi + 1)
                h = x
                for cname, m in blk.convs():
                    h = conv("{}.{}".format(prefix, cname), m, h)
                s = conv(prefix + ".down", blk.down, x) if blk.down is not None else x
                x = ir.op(op="add", a=h, b=s, act="relu")
        return ir.head(x, self.fc)


# Families: anything with a ``config`` and ``to_ir()``.  EfficientNet-Lite lives in :mod:`.efficientnet`.
EDGE_ARCHS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
ALL_ARCHS = tuple(ARCHS) + EDGE_ARCHS


def is_edge_backbone(arch: str) -> bool:
    """An EfficientNet-Lite: trained from pretrained weights with a frozen trunk (:mod:`.transfer`)."""
    return arch in EDGE_ARCHS


def build(arch: str, in_channels: int, head: int, width_mult: float = 1.0):
    if is_edge_backbone(arch):
        from .efficientnet import build as build_lite

        if width_mult != 1.0:
            from edgetool.runtime.errors import UsageError

            raise UsageError("{} has a fixed width; --width-mult applies to the ResNets".format(arch))
        return build_lite(arch, in_channels, head)
    if arch not in ARCHS:
        from edgetool.runtime.errors import UsageError

        raise UsageError("unknown model {!r}; choose one of {}".format(arch, ", ".join(ALL_ARCHS)))
    block, blocks, widths, stem = ARCHS[arch]
    return ResNet(in_channels, head, blocks, widths, stem, block, width_mult)


def from_config(cfg: dict):
    if cfg.get("family") == "efficientnet-lite":
        from .efficientnet import from_config as lite_from_config

        return lite_from_config(cfg)
    block = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck}[cfg["block"]]
    return ResNet(cfg["in_channels"], cfg["head"], cfg["blocks"], cfg["widths"], cfg["stem"], block)


def load_trunk(model: torch.nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """Every tensor of the state_dict *state* but its classifier (``fc.``) into *model*, which has
    another head.  Anything else missing or left over is an error: a trunk loads whole or not at all."""
    sd = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(sd, strict=False)  # strict-ok: the head differs on purpose
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError("trunk mismatch: missing {}, unexpected {}".format(missing[:5], list(unexpected)[:5]))


def load_torchvision_weights(model: ResNet, tv_state: Dict[str, torch.Tensor]) -> None:
    """Copy a torchvision ResNet state_dict (ImageNet stem) into ours, by name and shape; the
    head is never taken (:func:`.pretrained.load_into` for the checked load)."""
    from .pretrained import load_into, resnet_key

    load_into(model, {k: v for k, v in tv_state.items() if not k.startswith("fc.")}, resnet_key, partial=True)


def is_transfer(cfg) -> bool:
    """A run of a pretrained edge backbone (:mod:`.transfer`)."""
    return is_edge_backbone(cfg.arch)
