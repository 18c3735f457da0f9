"""Safe file names and atomic writers: write a temporary sibling, then rename over the target."""

from __future__ import annotations

import json
import os
import re


def slug(name: str) -> str:
    """*name* as a file-name part: letters, digits, ``._-`` only."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return s or "superclass"


def write_bytes_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path: str, obj) -> None:
    write_bytes_atomic(path, json.dumps(obj, indent=1).encode("utf-8"))
