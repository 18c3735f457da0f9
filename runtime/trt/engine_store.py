"""Engines stored in a bundle: pick the one built for this device, or add one built here.

A plan only loads into the TensorRT version and GPU that built it, so :func:`select_engine`
picks the bundle's engine for this device or says which one to build.  :func:`add_engine`
writes a device-built plan into the bundle and lists it in the manifest, both atomically.
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Optional, Sequence

from ..bundle import MANIFEST
from ..errors import BundleError, DeviceError
from ..files import slug, write_bytes_atomic, write_json_atomic
from ..weights import sha256_bytes


def select_engine(
    entries: Sequence[Mapping], tensorrt: str, device: str, precision: Optional[str] = None, bundle: str = "BUNDLE"
) -> Optional[Mapping]:
    """The stored engine built by TensorRT *tensorrt* on GPU *device* (of *precision*, if given).

    ``None`` when the bundle has no engine of that precision: the caller builds one. When it
    has engines but none from this TensorRT and GPU, loading one would fail inside
    TensorRT, so this raises one line that lists them and names the command to run.
    """
    candidates = [e for e in entries if precision is None or e.get("precision") == precision]
    if not candidates:
        return None
    for e in candidates:
        if e.get("tensorrt") == tensorrt and e.get("device") == device:
            return e
    have = ", ".join(
        "{} ({}, TensorRT {})".format(e.get("file"), e.get("device", "?"), e.get("tensorrt", "?")) for e in candidates
    )
    raise DeviceError(
        "no engine in the bundle was built on this {} with TensorRT {} (it has: {}); run: "
        "edgetool engine build {}".format(device, tensorrt, have, bundle)
    )


def add_engine(bundle_dir: str, plan: bytes, meta: dict) -> dict:
    """Save a device-built engine into the bundle and list it in the manifest.

    An engine of the same device profile and precision is replaced; nothing else is touched.
    """
    path = os.path.join(bundle_dir, MANIFEST)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        raise BundleError(path, "cannot read the manifest ({})".format(exc)) from None
    os.makedirs(os.path.join(bundle_dir, "engines"), exist_ok=True)
    rel = "engines/{}-{}.plan".format(slug(meta.get("device_profile", "device")), meta.get("precision", "int8"))
    write_bytes_atomic(os.path.join(bundle_dir, rel), plan)
    entry = dict(meta, file=rel, size=len(plan), sha256=sha256_bytes(plan))
    manifest["engines"] = [e for e in manifest.get("engines", []) if e.get("file") != rel] + [entry]
    write_json_atomic(path, manifest)
    return entry
