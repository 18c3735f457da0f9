"""Ed25519 signatures over a bundle's ``manifest.json``: the ``manifest.sig`` file, its reader,
and keys, signing and verifying (those three need the ``cryptography`` package).

``manifest.sig`` sits beside ``manifest.json`` and signs its exact bytes; the manifest in turn
pins every other file by sha256, so one signature covers the whole bundle.  ``export --sign``
signs on the workstation, ``keygen`` makes the key pair, the device verifies against its trusted
keys (``edgetool target``); reading which key signed a bundle needs no crypto, so ``inspect``
says it on any machine.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any, Dict, Optional

from .. import commands
from ..errors import SignatureError, UsageError, require
from ..files import write_bytes_atomic

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


def _crypto():
    require("cryptography", "deploy")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return serialization, ed25519


def raw_bytes(public_key) -> bytes:
    serialization, _ = _crypto()
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key) -> str:
    return raw_key_id(raw_bytes(public_key))


def keygen(prefix: str) -> Dict[str, str]:
    """Write PREFIX.key (private, mode 0600) and PREFIX.pub; refuse to overwrite either."""
    serialization, ed25519 = _crypto()
    paths = {"private": prefix + ".key", "public": prefix + ".pub"}
    for p in paths.values():
        if os.path.exists(p):
            raise UsageError("{}: exists; refusing to overwrite a key".format(p))
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    write_bytes_atomic(paths["private"], private, mode=0o600)
    write_bytes_atomic(paths["public"], public)
    return dict(paths, key_id=key_id(key.public_key()))


def load_private(path: str):
    return _load_key(path, private=True)


def load_public(path: str):
    return _load_key(path, private=False)


def _load_key(path: str, private: bool):
    """An Ed25519 key from a PEM file, or one UsageError line that says what is wrong with it."""
    serialization, ed25519 = _crypto()
    if private:
        load, kind = (lambda b: serialization.load_pem_private_key(b, password=None)), "signing key"
        pem, cls, hint = (
            "an unencrypted PEM private key",
            ed25519.Ed25519PrivateKey,
            "key (make one with `{}`)".format(commands.keygen()),
        )
    else:
        load, kind = serialization.load_pem_public_key, "public key"
        pem, cls, hint = "a PEM public key", ed25519.Ed25519PublicKey, "public key"
    try:
        with open(path, "rb") as f:
            key = load(f.read())
    except OSError as exc:
        raise UsageError("{}: cannot read {} ({})".format(path, kind, exc.strerror)) from None
    except (ValueError, TypeError) as exc:
        raise UsageError("{}: not {} ({})".format(path, pem, exc)) from None
    if not isinstance(key, cls):
        raise UsageError("{}: not an Ed25519 {}".format(path, hint))
    return key


def sign_bundle(bundle_dir: str, key_path: str) -> dict:
    """Sign BUNDLE_DIR/manifest.json with the private key at KEY_PATH; write manifest.sig."""
    key = load_private(key_path)
    with open(os.path.join(bundle_dir, "manifest.json"), "rb") as f:
        data = f.read()
    sig = {
        "schema": SCHEMA,
        "algorithm": "ed25519",
        "key_id": key_id(key.public_key()),
        "manifest_sha256": hashlib.sha256(data).hexdigest(),
        "signature": base64.b64encode(key.sign(data)).decode("ascii"),
    }
    write_bytes_atomic(os.path.join(bundle_dir, SIGNATURE), (json.dumps(sig, indent=1) + "\n").encode("utf-8"))
    return sig


# An Ed25519 SubjectPublicKeyInfo in DER is this fixed header and the 32 raw key bytes.
_SPKI_ED25519 = bytes.fromhex("302a300506032b6570032100")
_PEM_BEGIN, _PEM_END = "-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----"
MAX_KEY_FILE = 64 * 1024


def raw_public_key(data: bytes, path: str) -> bytes:
    """The 32 raw bytes of the Ed25519 public key in PEM *data* (what ``keygen`` writes); one
    :class:`UsageError` naming *path* where it is anything else.  No crypto needed: this is how a
    key file's fingerprint is read wherever it is stored, for trust, revocation and status alike."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise UsageError("{}: not a PEM public key (not text)".format(path)) from None
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) < 3 or lines[0] != _PEM_BEGIN or lines[-1] != _PEM_END:
        raise UsageError("{}: not a PEM public key (no {} block)".format(path, _PEM_BEGIN))
    try:
        der = base64.b64decode("".join(lines[1:-1]), validate=True)
    except ValueError as exc:
        raise UsageError("{}: not a PEM public key ({})".format(path, exc)) from None
    if len(der) != len(_SPKI_ED25519) + 32 or not der.startswith(_SPKI_ED25519):
        raise UsageError("{}: not an Ed25519 public key".format(path))
    return der[len(_SPKI_ED25519) :]


def raw_key_id(raw: bytes) -> str:
    """A key's id: the first 16 hex digits of the sha256 of its 32 raw bytes (its fingerprint)."""
    return hashlib.sha256(raw).hexdigest()[:16]


def canonical_pem(raw: bytes) -> bytes:
    body = base64.b64encode(_SPKI_ED25519 + raw).decode("ascii")
    return "{}\n{}\n{}\n".format(_PEM_BEGIN, body, _PEM_END).encode("ascii")


def trust_store(trust_dir: str) -> Dict[str, Dict[str, Any]]:
    """key id -> {"raw": its 32 bytes, "files": every ``*.pub`` of TRUST_DIR that holds it}.

    A key is trusted by its content, whatever its file is called, so every reader of the trust
    folder (verifying, ``status``, ``prepare``, ``untrust``) goes through here and they agree.
    A ``*.pub`` that is not an Ed25519 public key raises :class:`UsageError` naming it."""
    keys: Dict[str, Dict[str, Any]] = {}
    if not os.path.isdir(trust_dir):
        return keys
    for name in sorted(os.listdir(trust_dir)):
        path = os.path.join(trust_dir, name)
        if not name.endswith(".pub") or not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_KEY_FILE + 1)
        except OSError as exc:
            raise UsageError("{}: cannot read trusted key ({})".format(path, exc.strerror)) from None
        if len(data) > MAX_KEY_FILE:
            raise UsageError("{}: not a PEM public key (over {} bytes)".format(path, MAX_KEY_FILE))
        raw = raw_public_key(data, path)
        entry = keys.setdefault(raw_key_id(raw), {"raw": raw, "files": []})
        entry["files"].append(path)
    return keys


def trusted_keys(trust_dir: str) -> Dict[str, object]:
    """key id -> public key object, for every key held by a ``*.pub`` in TRUST_DIR."""
    _, ed25519 = _crypto()
    return {kid: ed25519.Ed25519PublicKey.from_public_bytes(e["raw"]) for kid, e in trust_store(trust_dir).items()}


def verify_bundle(bundle_dir: str, trust_dir: str, accept_unsigned: bool = False) -> Optional[str]:
    """Check manifest.sig against the trusted keys; return the signer's key id (None: unsigned, accepted)."""
    sig_path = os.path.join(bundle_dir, SIGNATURE)
    if not os.path.isfile(sig_path):
        if accept_unsigned:
            return None
        raise SignatureError(
            "{}: bundle is unsigned and this device accepts only signed bundles "
            "(sign it with `{}`, and trust KEY.pub on the device with `{}`)".format(
                bundle_dir, commands.export_signed(), commands.target_trust()
            )
        )
    sig = read_signature(sig_path)
    keys = trusted_keys(trust_dir)
    key: Any = keys.get(str(sig.get("key_id")))
    if key is None:
        raise SignatureError(
            "{}: signed by key {} which this device does not trust (trusted: {}); on the device: `{}`".format(
                sig_path, sig.get("key_id"), ", ".join(sorted(keys)) or "none", commands.target_trust()
            )
        )
    with open(os.path.join(bundle_dir, "manifest.json"), "rb") as f:
        data = f.read()
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(sig["raw"], data)
    except InvalidSignature:
        raise SignatureError(
            "{}: signature does not match manifest.json (modified after signing?)".format(
                os.path.join(bundle_dir, "manifest.json")
            )
        ) from None
    return sig["key_id"]
