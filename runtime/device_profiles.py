"""The loader of the device profiles: one JSON data file per target device, in ``edgetool.device_profiles``.

The profiles themselves are data (precision, workspace, batch, JetPack); this module reads,
validates and detects them on the device side.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

import edgetool.device_profiles as _data

from .errors import UsageError
from .machine import device_tree_model

HERE = os.path.dirname(os.path.abspath(_data.__file__))
DEFAULT = "desktop-gpu"


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
    return validate(p, path)


PRECISIONS = ("int8", "fp16")
# field -> (types, required)
FIELDS: Dict[str, Tuple[Any, bool]] = {
    "name": (str, True),
    "display": (str, True),
    "gpu": (bool, True),
    "int8": (bool, True),
    "fp16": (bool, True),
    "precision": (str, True),
    "workspace_mb": (int, True),
    "max_batch": (int, True),
    "memory_budget_mb": (int, True),
    "runtime_overhead_mb": (int, True),
    "sm": ((int, type(None)), False),
    "memory_gb": ((int, float, type(None)), False),
    "dla": (int, False),
    "jetpack": (list, False),
}


def validate(p, source: str) -> Dict:
    """Return profile *p* if every field is present and sensible; else raise UsageError naming SOURCE."""

    def bad(msg):
        raise UsageError("{}: device profile {}".format(source, msg))

    if not isinstance(p, dict):
        bad("is not a JSON object")
    missing = [k for k, (_, req) in FIELDS.items() if req and k not in p]
    if missing:
        bad("misses {}".format(", ".join(missing)))
    for k, (types, _) in FIELDS.items():
        if k in p and (not isinstance(p[k], types) or (isinstance(p[k], bool) and bool not in _tuple(types))):
            bad("field {!r} has the wrong type ({})".format(k, type(p[k]).__name__))
    if p["precision"] not in PRECISIONS:
        bad("precision {!r} is not one of {}".format(p["precision"], ", ".join(PRECISIONS)))
    if not p[p["precision"]]:
        bad("precision {} on a device without {}".format(p["precision"], p["precision"]))
    if p["max_batch"] < 1 or p["workspace_mb"] < 0 or p["runtime_overhead_mb"] < 0:
        bad("needs max_batch >= 1 and non-negative workspace_mb and runtime_overhead_mb")
    if p["gpu"] and p["workspace_mb"] < 1:
        bad("is a GPU device with no engine workspace")
    if p["memory_budget_mb"] <= p["runtime_overhead_mb"] + p["workspace_mb"]:
        bad("memory_budget_mb {} leaves nothing after runtime overhead and workspace".format(p["memory_budget_mb"]))
    mem = p.get("memory_gb")
    if mem is not None and p["memory_budget_mb"] > mem * 1024:
        bad("memory_budget_mb {} exceeds the device's {} GB".format(p["memory_budget_mb"], mem))
    return p


def _tuple(types):
    return types if isinstance(types, tuple) else (types,)


def load_dir(folder: str) -> List[Dict]:
    """Every ``*.json`` profile of FOLDER, validated; the file name must match the profile name."""
    out = []
    for f in sorted(os.listdir(folder)):
        if not f.endswith(".json"):
            continue
        path = os.path.join(folder, f)
        try:
            with open(path) as fh:
                p = json.load(fh)
        except ValueError as exc:
            raise UsageError("{}: not valid JSON ({})".format(path, exc)) from None
        validate(p, path)
        if p["name"] != f[:-5]:
            raise UsageError("{}: profile name {!r} differs from its file name".format(path, p["name"]))
        out.append(p)
    return out


def resolve(name_or_path: Optional[str]) -> Dict:
    """The profile given on the command line, else the detected Jetson's, else ``desktop-gpu``."""
    return load(name_or_path or detect() or DEFAULT)


def detect() -> Optional[str]:
    """The profile of the Jetson this runs on, from /proc/device-tree/model (None elsewhere)."""
    model = device_tree_model().lower()
    if not model:
        return None
    table = [
        ("agx thor", "thor"),
        ("thor", "thor"),
        ("agx orin", "orin-agx"),
        ("orin nx", "orin-nx"),
        ("orin nano", "orin-nano"),
        ("agx xavier", "xavier-agx"),
        ("xavier nx", "xavier-nx"),
        ("tx2", "tx2"),
        ("nano", "nano"),
    ]
    for key, name in table:
        if key in model:
            return name
    return None
