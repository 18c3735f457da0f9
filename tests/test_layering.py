"""Hard rules 1-3: the device side runs without torch, imports no upper layer, and stays Python 3.8."""
import ast
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

BLOCK_TORCH = r"""
import sys
class _BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'torchvision'):
            raise ModuleNotFoundError('torch is blocked in this test: ' + name, name=name)
        return None
sys.meta_path.insert(0, _BlockTorch())
"""


def run_blocked(code, *args):
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=300)


def py_files(folder):
    for root, _, files in os.walk(os.path.join(ROOT, folder)):
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(root, f)


def imported_modules(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:  # relative: resolve against edgetool.runtime
                rel = os.path.relpath(os.path.dirname(path), os.path.join(ROOT, "runtime")).replace(os.sep, ".")
                parts = ["edgetool", "runtime"] + ([] if rel == "." else rel.split("."))
                parts = parts[: len(parts) - (node.level - 1)]
                mod = ".".join(parts + ([mod] if mod else []))
            yield mod, node.lineno


def test_runtime_imports_no_torch_and_no_upper_layer():
    bad = []
    for path in py_files("runtime"):
        for mod, line in imported_modules(path):
            top = mod.split(".")[0]
            if top in ("torch", "torchvision") or mod.startswith(("edgetool.toolchain", "edgetool.export")):
                bad.append("{}:{} imports {}".format(os.path.relpath(path, ROOT), line, mod))
    assert not bad, bad


def test_cli_root_imports_only_the_bottom_layer():
    for mod, line in imported_modules(os.path.join(ROOT, "edgetool", "cli.py")):
        assert not mod.startswith(("torch", "edgetool.toolchain", "edgetool.export")), (mod, line)


def test_blocker_really_blocks_torch():
    proc = run_blocked("import torch")
    assert proc.returncode != 0 and "blocked" in proc.stderr


def test_help_and_device_commands_without_torch(tiny_bundle, sample_pngs):
    code = "from edgetool.cli import main; main(sys.argv[1:])"
    proc = run_blocked(code, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "classify" in proc.stdout
    proc = run_blocked(code, "inspect", tiny_bundle)
    assert proc.returncode == 0, proc.stderr
    proc = run_blocked(code, "classify", tiny_bundle, *sample_pngs[:3])
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 4
    # a workstation command says which extra is missing, in one line
    proc = run_blocked(code, "demo")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == ["error: torch is not installed; install it with: pip install 'edgetool[train]'"]


def test_runtime_api_without_torch(tiny_bundle):
    code = """
import numpy as np
import edgetool.runtime.bundle, edgetool.runtime.classifier, edgetool.runtime.codecs, edgetool.runtime.weights
from edgetool.runtime.bundle import Bundle
from edgetool.runtime.backends import load_backend
from edgetool.runtime.classifier import SuperSubClassifier
b = Bundle.open(sys.argv[1])
with load_backend('onnxruntime', b) as be:
    preds = SuperSubClassifier(be, policy='per-image').classify(b.samples())
print(len(preds), 'torch' in sys.modules)
"""
    proc = run_blocked(code, tiny_bundle)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["8", "False"]


def test_runtime_is_python38_compatible():
    vermin = shutil.which("vermin")
    if vermin is None:
        pytest.skip("vermin is not installed (pip install 'edgetool[test]')")
    proc = subprocess.run([vermin, "-t=3.8-", "--no-tips", "--violations", "--eval-annotations",
                           os.path.join(ROOT, "runtime"), os.path.join(ROOT, "edgetool")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
