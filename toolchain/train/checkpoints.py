"""Stage checkpoints of a run: plain tensors and lists, loadable with ``weights_only=True``."""

from __future__ import annotations

import os

import torch

from edgetool.runtime.files import atomic_path

from . import models


def save_checkpoint(obj, path):
    """Atomically (:func:`~edgetool.runtime.files.atomic_path`): the old checkpoint or the new one."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def float_state(model: torch.nn.Module) -> dict:
    return {"config": model.config, "state_dict": model.state_dict()}


def float_from_state(state) -> models.ResNet:
    m = models.from_config(state["config"])
    m.load_state_dict(state["state_dict"])
    m.eval()
    return m
