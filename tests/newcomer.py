"""The newcomer's dataset and run, shared by tests/test_newcomer_path.py and
tests/toolchain/evaluate/test_newcomer_report.py: 12x12 grayscale PNGs in train/ and test/ ImageFolder trees
(a bright bar per class, with noise), a three-superclass hierarchy, a tiny training run whose
stderr went to a log file (not a terminal), and its exported bundle."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

HIERARCHY = {"tops": ["shirt", "coat"], "feet": ["boot", "sandal"], "misc": ["bag", "hat"]}
TINY = ["--image-size", "12", "--epochs", "2", "--base-epochs", "1", "--ft-epochs", "1", "--qat-epochs", "1"]
TINY += ["--batch", "16"]
STAGES = ["flat network", "superclass network", "vanilla subclass [tops]", "QAT superclass network"]
STAGES += ["QAT subclass [misc]"]


def make_gray_folder(root, per_class=(10, 4), mode="L"):
    """train/ and test/ ImageFolder trees of 12x12 grayscale PNGs (a bar per class), and hierarchy.json."""
    rng = np.random.default_rng(0)
    names = [c for cs in HIERARCHY.values() for c in cs]
    for split, n in zip(("train", "test"), per_class):
        for ci, c in enumerate(names):
            os.makedirs(os.path.join(root, split, c), exist_ok=True)
            for i in range(n):
                a = np.zeros((12, 12))
                a[:, 2 * ci : 2 * ci + 2] = 200
                a = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
                Image.fromarray(a, "L").convert(mode).save(os.path.join(root, split, c, "{}.png".format(i)))
    with open(os.path.join(root, "hierarchy.json"), "w") as f:
        json.dump({"superclasses": [{"name": k, "subclasses": v} for k, v in HIERARCHY.items()]}, f)
    return str(root)


def edgetool(*args, stderr_file=None):
    """The CLI in a subprocess; stderr to a real file when *stderr_file* is given (not a terminal)."""
    env = dict(os.environ, EDGETOOL_THREADS="2")
    cmd = [sys.executable, "-m", "edgetool"] + [str(a) for a in args]
    if stderr_file is None:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    with open(stderr_file, "w") as err:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, timeout=600)
    with open(stderr_file) as f:
        proc.stderr = f.read()
    return proc


@pytest.fixture(scope="session", name="newcomer")
def newcomer_fixture(tmp_path_factory):
    """A trained run and its bundle on the grayscale folder; train's stderr went to a log file."""
    tmp = tmp_path_factory.mktemp("newcomer")
    data = make_gray_folder(str(tmp / "data"))
    run, log = tmp / "run", tmp / "train.log"
    proc = edgetool("train", run, "--data", data, *TINY, stderr_file=log)
    assert proc.returncode == 0, proc.stderr
    bundle = tmp / "bundle"
    exported = edgetool("export", run, "--out", bundle)
    assert exported.returncode == 0, exported.stderr
    return {"data": data, "run": str(run), "bundle": str(bundle), "log": proc.stderr, "export": exported.stdout}
