"""Helpers for the hostile-input tests: edit a bundle, and prove nothing else changed."""

import hashlib
import json
import os
import stat
import tempfile

import pytest

from edgetool.runtime.bundle import codecs
from edgetool.runtime.bundle.weights import sha256_bytes


def snapshot(*roots):
    """{path: (kind, digest or link target)} of every entry under *roots* (links not followed)."""
    out = {}
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            for name in dirs + files:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode):
                    out[p] = ("link", os.readlink(p))
                elif stat.S_ISREG(st.st_mode) and st.st_size > (64 << 20):
                    out[p] = ("big file", st.st_size, st.st_mtime_ns)
                elif stat.S_ISREG(st.st_mode):
                    with open(p, "rb") as f:
                        out[p] = ("file", hashlib.sha256(f.read()).hexdigest())
                else:
                    out[p] = ("other", stat.S_IFMT(st.st_mode))
    return out


@pytest.fixture()
def private_tmp(tmp_path, monkeypatch):
    """tempfile's folder for this test only, so leftovers can be counted."""
    d = tmp_path / "tmpdir"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    monkeypatch.setenv("TMPDIR", str(d))
    return str(d)


def load_manifest(root):
    with open(os.path.join(root, "manifest.json")) as f:
        return json.load(f)


def save_manifest(root, m):
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(m, f)


def write_listed(root, entry, data, size_key="size"):
    """Replace the file of manifest *entry* with *data*, updating its size and sha256 (a "valid" hostile file)."""
    path = os.path.join(root, entry["file"])
    with open(path, "wb") as f:
        f.write(data)
    entry[size_key] = len(data)
    entry["sha256"] = sha256_bytes(data)


def to_codec(root, codec):
    """Re-encode every delta of the bundle at *root* with *codec* (same raw bytes)."""
    from edgetool.runtime.bundle.reader import Bundle

    with Bundle.open(root) as b:
        raws = [b.read_delta(k).tobytes() for k in range(b.num_superclasses)]
    m = load_manifest(root)
    for d, raw in zip(m["deltas"], raws):
        os.remove(os.path.join(root, d["file"]))
        d["file"] = os.path.splitext(d["file"])[0] + "." + codecs.EXTENSIONS[codec]
        d["codec"] = codec
        write_listed(root, d, codecs.encode(codec, raw), "stored_size")
    save_manifest(root, m)
    return m
