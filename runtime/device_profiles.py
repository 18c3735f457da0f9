"""The loader of the device profiles: one JSON data file per target device, in ``edgetool.device_profiles``.

The profiles themselves are data (precision, workspace, batch, JetPack); this module reads,
validates and detects them on the device side.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

import edgetool.device_profiles as _data

from .errors import UsageError

HERE = os.path.dirname(os.path.abspath(_data.__file__))
DEFAULT = "desktop-gpu"
REQUIRED = ("name", "display", "int8", "fp16", "workspace_mb", "max_batch", "precision")


def names() -> List[str]:
    return sorted(f[:-5] for f in os.listdir(HERE) if f.endswith(".json"))


def load(name_or_path: str) -> Dict:
    """A profile by name (``orin-nano``) or from a JSON file path."""
    path = name_or_path if name_or_path.endswith(".json") else os.path.join(HERE, name_or_path + ".json")
    if not os.path.isfile(path):
        raise UsageError("unknown device profile {!r}; choose one of {}".format(name_or_path, ", ".join(names())))
    try:
        with open(path) as f:
            p = json.load(f)
    except ValueError as exc:
        raise UsageError("{}: not valid JSON ({})".format(path, exc)) from None
    missing = [k for k in REQUIRED if k not in p]
    if missing:
        raise UsageError("{}: device profile misses {}".format(path, ", ".join(missing)))
    if p["precision"] == "int8" and not p["int8"]:
        raise UsageError("{}: precision int8 on a device without int8".format(path))
    return p


def resolve(name_or_path: Optional[str]) -> Dict:
    """The profile given on the command line, else the detected Jetson's, else ``desktop-gpu``."""
    return load(name_or_path or detect() or DEFAULT)


def detect() -> Optional[str]:
    """The profile of the Jetson this runs on, from /proc/device-tree/model (None elsewhere)."""
    try:
        with open("/proc/device-tree/model", "rb") as f:
            model = f.read().decode("utf-8", "replace").strip("\x00").lower()
    except OSError:
        return None
    table = [("agx thor", "thor"), ("thor", "thor"), ("agx orin", "orin-agx"), ("orin nx", "orin-nx"),
             ("orin nano", "orin-nano"), ("agx xavier", "xavier-agx"), ("xavier nx", "xavier-nx"),
             ("tx2", "tx2"), ("nano", "nano")]
    for key, name in table:
        if key in model:
            return name
    return None
