"""Starting weights: a torchvision ResNet state_dict file, or ``imagenet``: torchvision's published
ImageNet weights of the architecture, taken from (or downloaded into) torch's cache, as
jetson-inference's ``train.py`` starts from a pretrained backbone."""

from __future__ import annotations

import os
from typing import Dict

import torch

from edgetool.runtime.errors import UsageError

IMAGENET = "imagenet"
# Our architecture -> torchvision's weights enum of the same depth (the CIFAR stem's first
# convolution has another shape; every other tensor is taken).
WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet18-cifar": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
}


def imagenet_weights(arch: str):
    """torchvision's ImageNet weights entry for *arch*; one error line for an architecture without."""
    if arch not in WEIGHTS:
        raise UsageError(
            "--pretrained imagenet: torchvision publishes no ImageNet weights for {} (it has them for {}); "
            "give a state_dict file instead".format(arch, ", ".join(sorted(WEIGHTS)))
        )
    import torchvision.models as tvm

    return getattr(tvm, WEIGHTS[arch]).IMAGENET1K_V1


def cache_path(weights) -> str:
    """Where torch's cache keeps the file of *weights* (``$TORCH_HOME/hub/checkpoints``)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))


def load_state(pretrained: str, arch: str) -> Dict[str, torch.Tensor]:
    """The state_dict *pretrained* names: a file, or ``imagenet`` (from torch's cache, downloaded
    there when missing and the machine is online)."""
    if pretrained != IMAGENET:
        if not os.path.isfile(pretrained):
            raise UsageError("{}: no such pretrained checkpoint (or use --pretrained imagenet)".format(pretrained))
        state = torch.load(pretrained, map_location="cpu", weights_only=True)
        return state["state_dict"] if isinstance(state, dict) and "state_dict" in state else state
    weights = imagenet_weights(arch)
    path = cache_path(weights)
    if os.path.isfile(path):
        return torch.load(path, map_location="cpu", weights_only=True)
    try:
        return torch.hub.load_state_dict_from_url(weights.url, map_location="cpu", progress=True, check_hash=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise UsageError(
            "cannot download the ImageNet weights of {} ({}: {}); on a machine without internet, put the file "
            "{} at {}".format(arch, weights.url, getattr(exc, "reason", exc), os.path.basename(path), path)
        ) from None
