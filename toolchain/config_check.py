"""Training config files: read one JSON object, and check every field's type before a run uses it."""

from __future__ import annotations

import json
import os
from dataclasses import fields

from edgetool.runtime.errors import UsageError


def read_json(path: str, what: str = "config file") -> dict:
    if not os.path.isfile(path):
        raise UsageError("{}: no such {}".format(path, what))
    try:
        with open(path) as f:
            d = json.load(f)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise UsageError("{}: not valid JSON ({})".format(path, str(exc)[:120])) from None
    if not isinstance(d, dict):
        raise UsageError("{}: a {} holds one JSON object".format(path, what))
    return d


def check_types(cfg, source: str = "config") -> None:
    """Every field has its default's type (ints for counts, numbers for rates, text for names)."""
    for f in fields(cfg):
        v, d = getattr(cfg, f.name), f.default
        if v is None and (d is None or f.name == "data"):
            continue
        kind = (int, float) if isinstance(d, float) else type(d) if d is not None else str
        kind = int if f.name == "image_size" else kind
        if isinstance(v, bool) != isinstance(d, bool) or not isinstance(v, kind):
            name = kind.__name__ if isinstance(kind, type) else "a number"
            raise UsageError("{}: {} = {} is not {}".format(source, f.name, ascii(v)[:40], name))
