"""An update carries a stored TensorRT engine across by refitting a copy of it (no rebuild), with fakes
of TensorRT on the CPU: which tensors are handed over, with what, and what is refused.  On a device,
``deploy --doctor`` proves the refitted engine against ONNX Runtime."""

import hashlib
import json
import os
import sys

import numpy as np
import pytest

from conftest import run_cli
from trt_fakes import install

# the update kit and the staging helper live with the deploy tests
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy"))
from deploy_fixtures import deploy_kit_fixture  # noqa: E402, F401  (fixture)
from test_update import stage  # noqa: E402
from update_fixtures import update_kit_fixture  # noqa: E402, F401  (fixture)

pytest.importorskip("cryptography")
META = {"precision": "int8", "device_profile": "orin-nano", "tensorrt": "10.3.0", "device": "Fake GPU"}


def device_with_engine(update_kit, tmp_path, flags=("REFIT",), marked=()):
    """A root serving v1 whose version holds a (fake) engine plan of its base.onnx."""
    from edgetool.runtime.bundle.onnx_weights import read_initializers
    from edgetool.runtime.trt.engine_store import add_engine

    root = tmp_path / "device"
    assert run_cli("target", "trust", root, update_kit["keys"]["good"]["public"]).returncode == 0
    assert run_cli("deploy", update_kit["v1"], "--to", root, "--device-profile", "cpu").returncode == 0
    current = os.path.realpath(str(root / "current"))
    names = sorted(read_initializers(open(os.path.join(current, "base.onnx"), "rb").read()))
    plan = json.dumps({"flags": list(flags), "marked": list(marked), "weights": names}).encode()
    return str(root), add_engine(current, plan, dict(META, weights="int8"))


def test_the_engine_is_a_refitted_copy_holding_the_new_weights(update_kit, tmp_path, monkeypatch):
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.target.install import Target

    trt = install(monkeypatch, "10.3.0")
    root, old = device_with_engine(update_kit, tmp_path)
    version = stage(root, update_kit["u2"])
    Target(root).install(version)
    assert trt.builds == []  # nothing was built
    folder = os.path.join(root, "versions", version)
    with Bundle.open(folder) as b, Bundle.open(update_kit["full2"]) as full:
        (entry,) = b.manifest["engines"]
        assert entry["refitted_from"] == old["sha256"] and entry["file"] != old["file"]
        refit = json.loads(b.read_file(entry))["refits"][-1]
        new = full.layout.views(b.layout.pack({t.name: v for t, v in zip(b.layout.tensors, _arrays(full))}))
    changed = json.load(open(os.path.join(update_kit["u2"], "manifest.json")))["base_delta"]["changed"]
    assert sorted(refit) == sorted(changed)
    for name in changed:
        assert refit[name] == hashlib.sha256(np.ascontiguousarray(new[name]).tobytes()).hexdigest()


def _arrays(bundle):
    from edgetool.runtime.bundle.onnx_weights import read_initializers

    inits = read_initializers(bundle.base_onnx())
    return [inits[t.name] for t in bundle.layout.tensors]


def test_an_engine_that_cannot_take_the_new_weights_refuses_the_update(update_kit, tmp_path, monkeypatch):
    from edgetool.runtime.errors import DeployError
    from edgetool.runtime.target.install import Target

    install(monkeypatch, "10.3.0")
    root, _ = device_with_engine(update_kit, tmp_path, flags=("REFIT", "REFIT_INDIVIDUAL"), marked=("conv1.weight",))
    before = os.readlink(os.path.join(root, "current"))
    version = stage(root, update_kit["u2"])
    with pytest.raises(DeployError, match="cannot carry the engine across the update.*fc.weight"):
        Target(root).install(version)
    assert os.readlink(os.path.join(root, "current")) == before
    assert not os.path.exists(os.path.join(root, "versions", version))
