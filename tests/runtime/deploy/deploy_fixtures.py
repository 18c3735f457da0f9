"""Shared by the deploy tests: small real bundles (untrained networks, exported by the real writer) and keys."""

import copy
import json
import os
import shutil
import sys

import numpy as np
import pytest

from conftest import run_cli

SUPERS = ["a", "b"]
SUBS = [["a1", "a2"], ["b1", "b2", "b3"]]


def make_bundle(out, seed=0, size=28, channels=1, samples=True, release=0):
    """A real bundle: resnet-tiny, int8 Q/DQ base.onnx and two deltas, from an untrained network
    (release 0 unless given: the kit's bundles do not outrank each other)."""
    torch = pytest.importorskip("torch")
    from edgetool.export.bundle import write_bundle
    from edgetool.toolchain.train import models
    from edgetool.toolchain.hierarchy.spec import Hierarchy
    from edgetool.toolchain.train.qat import from_float

    torch.manual_seed(seed)
    hier = Hierarchy(SUPERS, SUBS)
    base = from_float(models.build("resnet-tiny", channels, hier.head_width), [torch.randn(2, channels, 16, 16)])
    sub = copy.deepcopy(base)  # same frozen scales; the first conv's codes move
    with torch.no_grad():
        for p in sub.parameters():
            if p.dim() == 4:
                p.mul_(1.05)
                break
    spec = {
        "name": "input",
        "shape": [channels, size, size],
        "layout": "NCHW",
        "dtype": "float32",
        "scale": 1.0 / 255.0,
        "mean": [0.5] * channels,
        "std": [0.25] * channels,
        "color": "gray" if channels == 1 else "rgb",
        "classes": [c for s in SUBS for c in s],
    }
    x = np.random.RandomState(seed).rand(4, channels, size, size).astype(np.float32) if samples else None
    write_bundle(str(out), base, [base, sub], hier, spec, codec="zstd", samples=x, release=release)
    return str(out)


def tamper_one_byte(bundle_dir):
    """Change one byte of manifest.json (a digit of its creation time): still valid JSON, same file hashes."""
    path = os.path.join(bundle_dir, "manifest.json")
    data = bytearray(open(path, "rb").read())
    i = data.index(b'"created": "') + len(b'"created": "') + 3
    data[i] = ord("0") if data[i] != ord("0") else ord("1")
    open(path, "wb").write(bytes(data))
    json.loads(bytes(data).decode())


@pytest.fixture(scope="session", name="deploy_kit")
def deploy_kit_fixture(tmp_path_factory):
    """Keys (trusted, untrusted) and signed bundles v1..v3, a v2 without samples, an oversized one."""
    pytest.importorskip("cryptography")
    from edgetool.runtime.bundle.signature import keygen, sign_bundle

    d = tmp_path_factory.mktemp("deploykit")
    keys = {"good": keygen(str(d / "good")), "evil": keygen(str(d / "evil"))}
    kit = {"dir": str(d), "keys": keys}
    for name, kw in (
        ("v1", {"seed": 1}),
        ("v2", {"seed": 2}),
        ("v3", {"seed": 3}),
        ("nosamples", {"seed": 4, "samples": False}),
        ("big", {"seed": 5, "size": 1024, "channels": 3, "samples": False}),
    ):
        kit[name] = make_bundle(d / name, **kw)
        sign_bundle(kit[name], keys["good"]["private"])
    kit["untrusted"] = str(d / "untrusted")
    shutil.copytree(kit["v3"], kit["untrusted"])
    sign_bundle(kit["untrusted"], keys["evil"]["private"])
    kit["tampered"] = str(d / "tampered")
    shutil.copytree(kit["v3"], kit["tampered"])
    tamper_one_byte(kit["tampered"])
    return kit


def version_of(bundle_dir):
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.deploy.driver import Source

    with Bundle.open(bundle_dir) as b:
        return Source(b).version


def snapshot(root):
    """What serves on a target: the current link, the installed versions, the state file."""
    cur = os.path.join(root, "current")
    state = os.path.join(root, "state.json")
    return (
        os.readlink(cur) if os.path.islink(cur) else None,
        sorted(os.listdir(os.path.join(root, "versions"))) if os.path.isdir(os.path.join(root, "versions")) else [],
        open(state, "rb").read() if os.path.exists(state) else None,
    )


def edgetool_cmd():
    """The edgetool of this interpreter's environment, as the device side runs it."""
    exe = os.path.join(os.path.dirname(sys.executable), "edgetool")
    return exe if os.access(exe, os.X_OK) else "{} -m edgetool".format(sys.executable)


def deploy(bundle, root, *extra):
    return run_cli("deploy", bundle, "--to", root, "--device-profile", "cpu", *extra)


def status(root):
    proc = run_cli("status", "--to", root, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])
