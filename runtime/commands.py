"""Every edgetool command line the product prints for a user to run, built here and nowhere else.

A message that tells the user what to run ("sign it with `edgetool export RUN --out BUNDLE --sign
KEY`") takes the command from one of these builders.  Each is registered with example arguments,
and ``tests/test_printed_commands.py`` parses every one against the real command-line interface
(the arguments and options each command requires, the choices it takes), runs the ones that can run
in a test, and fails on an ``edgetool <command> <argument>`` written anywhere else in the product.

Words in capitals (RUN, BUNDLE, KEY, ROOT, FOLDER, NEW) stand for the user's own path; everything
else is meant to be typed as printed.  Values are shell-quoted.
"""

from __future__ import annotations

import os
import shlex
from typing import Callable, Dict, Tuple

PROG = "edgetool"
BUILDERS: Dict[str, Tuple[Callable[..., str], tuple]] = {}  # name -> (builder, example arguments)


def _printed(*example):
    """Register a builder with example arguments, for the test that parses every printed command."""

    def register(f):
        BUILDERS[f.__name__] = (f, example)
        return f

    return register


def line(*argv) -> str:
    """``edgetool ARGV...``, each argument shell-quoted."""
    return " ".join(shlex.quote(str(a)) for a in (PROG,) + argv)


@_printed("runs/digits", "flat")
def export_model(run: str, model: str, out: str = "") -> str:
    """Export *model* (``flat``, ``flat-wide``) of training run *run*, to *out* (default: beside the run,
    ``RUN-MODEL``)."""
    return line("export", run, "--out", out or os.path.normpath(run) + "-" + model, "--model", model)


@_printed()
def export_signed() -> str:
    return line("export", "RUN", "--out", "BUNDLE", "--sign", "KEY.key")


@_printed("/var/lib/edgetool")
def target_trust(root: str = "ROOT", key: str = "KEY.pub") -> str:
    return line("target", "trust", root, key)


@_printed("/var/lib/edgetool")
def target_reset_counter(root: str = "ROOT") -> str:
    return line("target", "reset-counter", root)


@_printed("/var/lib/edgetool")
def target_repair(root: str) -> str:
    return line("target", "repair", root)


@_printed("/var/lib/edgetool", "orin-nano")
def mender_install_module(root: str = "ROOT", profile: str = "PROFILE") -> str:
    """Install the Mender update module on a device, for deploy root *root* and device *profile*."""
    return line("mender", "install-module", root, "--device-profile", profile)


@_printed()
def keygen() -> str:
    return line("keygen", "KEY")


@_printed("bundles/v3")
def engine_build(bundle: str = "BUNDLE") -> str:
    return line("engine", "build", bundle)


@_printed("bundles/v3", 0)
def engine_onnx_dla(bundle: str = "BUNDLE", core: int = 0) -> str:
    return line("engine", "onnx", bundle, "engine.onnx", "--dla-core", core)


@_printed("runs/digits", "qat")
def train(run: str, modes: str = "") -> str:
    """Train (or resume) run *run*, only the networks of *modes* when given."""
    return line("train", run, *(("--modes", modes) if modes else ()))


@_printed("sample")
def train_new_run(data: str = "DATA") -> str:
    return line("train", "RUN", "--data", data)


@_printed("runs/digits")
def train_from(run: str) -> str:
    """A new run that reuses *run*'s flat and superclass networks."""
    return line("train", "NEW", "--from", run)


@_printed("runs/digits")
def hierarchy_learn(run: str = "RUN", out: str = "HIERARCHY.json") -> str:
    return line("hierarchy", "learn", run, "--out", out)


@_printed("cifar10", "data/cifar10")
def data_download(name: str, folder: str) -> str:
    return line("data", "download", name, "--dir", folder)


@_printed("try/")
def data_sample_images(folder: str) -> str:
    return line("data", "sample-images", folder)


@_printed("images/")
def classify(images: str, bundle: str = "BUNDLE") -> str:
    return line("classify", bundle, images)


@_printed("sticky")
def camera_folder(policy: str) -> str:
    """The stream loop on an image folder, under stream policy *policy*."""
    return line("camera", "BUNDLE", "FOLDER", "--policy", policy)


@_printed()
def doctor() -> str:
    return line("doctor", "BUNDLE")
