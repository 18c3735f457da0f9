"""The ``manifest.sig`` file a signed bundle carries: its name, its schema and a reader.

Signing and verifying need the ``cryptography`` package and live with deploy
(:mod:`edgetool.runtime.deploy.signing`); reading which key signed a bundle needs neither,
so ``inspect`` can say it on any machine.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Optional

from ..errors import SignatureError

SIGNATURE = "manifest.sig"
SCHEMA = "edgetool.signature/1"


def read_signature(path: str) -> dict:
    """The parsed ``manifest.sig`` at PATH with its raw signature bytes under ``raw``;
    a malformed file raises :class:`SignatureError`."""
    try:
        with open(path, "rb") as f:
            sig = json.loads(f.read(4096).decode("utf-8"))
        raw = base64.b64decode(sig["signature"], validate=True)
        if sig.get("schema") != SCHEMA or sig.get("algorithm") != "ed25519" or len(raw) != 64:
            raise ValueError("unknown schema or algorithm")
        return dict(sig, raw=raw)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise SignatureError("{}: malformed signature ({})".format(path, exc)) from None


def signature_key_id(bundle_dir: str) -> Optional[str]:
    """The key id a bundle's ``manifest.sig`` names (None: unsigned); checking the signature is
    the device's work.  A malformed file raises :class:`SignatureError`."""
    path = os.path.join(bundle_dir, SIGNATURE)
    return str(read_signature(path)["key_id"]) if os.path.isfile(path) else None
