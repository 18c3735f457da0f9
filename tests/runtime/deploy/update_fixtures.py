"""Shared by the update tests: real bundles of one network and of its retrained weights (same graph,
same frozen scales), the update bundles between them, and broken ones."""

import copy
import os
import shutil

import numpy as np
import pytest

from deploy_fixtures import SUBS, SUPERS

SPEC = {
    "name": "input",
    "shape": [1, 28, 28],
    "layout": "NCHW",
    "dtype": "float32",
    "scale": 1.0 / 255.0,
    "mean": [0.5],
    "std": [0.25],
    "color": "gray",
}


def networks(seed=0):
    """(base, subclass network b): an untrained resnet-tiny, int8, and a copy whose first conv moved."""
    torch = pytest.importorskip("torch")
    from edgetool.toolchain.train import models
    from edgetool.toolchain.train.qat import from_float

    torch.manual_seed(seed)
    base = from_float(models.build("resnet-tiny", 1, 3), [torch.randn(2, 1, 16, 16)])
    sub = copy.deepcopy(base)
    with torch.no_grad():
        next(p for p in sub.parameters() if p.dim() == 4).mul_(1.05)
    return base, sub


def retrained(net, seed, scale=0.01):
    """*net* with its head moved a little: the same graph and frozen scales, other int8 codes."""
    import torch

    out = copy.deepcopy(net)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head = [p for p in out.parameters() if p.dim() == 2][-1]
        head.add_(scale * torch.randn(head.shape, generator=g))
    return out


def write(out, base, subs, release):
    from edgetool.export.bundle import write_bundle
    from edgetool.toolchain.hierarchy.spec import Hierarchy

    x = np.random.RandomState(0).rand(4, 1, 28, 28).astype(np.float32)
    write_bundle(str(out), base, subs, Hierarchy(SUPERS, SUBS), SPEC, samples=x, release=release)
    return str(out)


@pytest.fixture(scope="session", name="update_kit")
def update_kit_fixture(deploy_kit, tmp_path_factory):
    """Signed full bundles (v1; full2 and full15: two retrains of it; other: another network) and the
    signed updates of v1 to full2 (u2, release 20) and to full15 (u15, release 15); u_other updates other."""
    from edgetool.export.update import write_update
    from edgetool.runtime.bundle.signature import sign_bundle

    d = tmp_path_factory.mktemp("updatekit")
    key = deploy_kit["keys"]["good"]["private"]
    base, sub = networks(0)
    other, other_sub = networks(9)
    kit = {"dir": str(d), "keys": deploy_kit["keys"]}
    kit["v1"] = write(d / "v1", base, [base, sub], 10)
    new = retrained(base, 1)
    kit["full2"] = write(d / "full2", new, [new, sub], 20)
    new15 = retrained(base, 2)
    kit["full15"] = write(d / "full15", new15, [new15, sub], 15)
    kit["other"] = write(d / "other", other, [other, other_sub], 5)
    kit["other2"] = write(d / "other2", retrained(other, 3), [retrained(other, 3), other_sub], 20)
    for name, full, of in (("u2", "full2", "v1"), ("u15", "full15", "v1"), ("u_other", "other2", "other")):
        write_update(kit[full], kit[of], str(d / name))
        kit[name] = str(d / name)
    for name in ("v1", "full2", "full15", "other", "other2", "u2", "u15", "u_other"):
        sign_bundle(kit[name], key)
    return kit


def variant(kit, name, tmp_path, change):
    """A copy of update *name* under tmp_path, changed by *change(folder)*."""
    out = str(tmp_path / (name + "-variant"))
    shutil.copytree(kit[name], out)
    change(out)
    return out


def flip_byte(path, at=-10):
    data = bytearray(open(path, "rb").read())
    data[at] ^= 0xFF
    open(path, "wb").write(bytes(data))


def base_delta(folder):
    return os.path.join(folder, "update", "base.zst")
