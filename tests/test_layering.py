"""Hard rules 1-3: the device side runs without torch, imports no upper layer, and stays Python 3.8.

The import graph of the package is read from the AST of every module (imports inside
functions included, since lazy imports hide dependencies just as well): it has no cycles,
and every arrow between parts points down.
"""

import os
import shutil
import subprocess
import sys

import pytest

from import_graph import ROOT, cycles, import_graph, py_files, resolved_imports

# Allowed direction between parts: a part imports only parts of a lower rank (or itself).
# The package root (``edgetool``: version) and the profile data sit at the bottom; the CLI
# root (``edgetool.cli``) imports only the runtime and loads the rest by name.
PART_RANK = {
    "edgetool": 0,
    "edgetool.device_profiles": 0,
    "edgetool.runtime": 1,
    "edgetool.cli": 2,
    "edgetool.__main__": 3,
    "edgetool.export": 2,
    "edgetool.toolchain": 3,
}
# Inside a part: a module imports modules of its own rank or lower.  Every module of the runtime
# and the toolchain has a rank (the longest matching key), and a new module must be given one.
# The runtime: foundation < inputs < the bundle format < shared CLI options < backend interface <
# backends < backend registry < classifier and device checks < applications < the workstation's
# deploy driver (it prints the device's status text).
RUNTIME_RANK = {
    "errors": 0,
    "choices": 0,
    "commands": 0,
    "log": 0,
    "files": 0,
    "machine": 0,
    "signals": 0,
    "check_status": 0,
    "preprocess": 1,
    "prediction": 1,
    "device_profiles": 1,
    "folder_eval": 1,
    "bundle": 2,
    "options": 3,
    "backends.base": 4,
    "backends.ort": 5,
    "trt": 5,
    "backends": 6,
    "policies": 6,
    "classifier": 7,
    "doctor": 7,
    "doctor_trt": 7,
    "cli": 7,
    "camera": 8,
    "profile": 8,
    "target": 8,
    "deploy": 9,
    "mender": 9,
}
# The toolchain: data and hierarchies < training < evaluation and the router search < the run's
# orchestration (its flat controls, its export, Run itself) < the commands.
TOOLCHAIN_RANK = {
    "config_check": 0,
    "train_help": 0,
    "hierarchy": 1,
    "hierarchy.spec": 0,
    "data": 1,
    "train": 2,
    "evaluate": 3,
    "routing": 3,
    "train.controls": 4,
    "run_export": 5,
    "train.run": 6,
    "evaluate.report": 7,
    "demo": 7,
    "export_cli": 7,
    "hierarchy.cli": 7,
    "data.cli": 7,
    "cli": 8,
    "evaluate.cli": 9,
}
RANKS = {"edgetool.runtime.": RUNTIME_RANK, "edgetool.toolchain.": TOOLCHAIN_RANK}

# Runs before the code under test: any import of torch or torchvision fails, and is recorded in
# TORCH_TRIED (the modules asked for), so a test can assert that nothing even tried to import them.
BLOCK_TORCH = r"""
import sys
TORCH_TRIED = []
class _BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'torchvision'):
            TORCH_TRIED.append(name)
            raise ModuleNotFoundError('torch is blocked in this test: ' + name, name=name)
        return None
sys.meta_path.insert(0, _BlockTorch())
"""


def run_blocked(code, *args):
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + code] + [str(a) for a in args], capture_output=True, text=True, timeout=300
    )


def part_of(module):
    return max((p for p in PART_RANK if module == p or module.startswith(p + ".")), key=len)


def rank(module):
    """(part, rank) of a runtime or toolchain module by its longest key; None elsewhere or unranked."""
    for prefix, table in RANKS.items():
        if module.startswith(prefix):
            rest = module[len(prefix) :]
            keys = [k for k in table if rest == k or rest.startswith(k + ".")]
            return (prefix, table[max(keys, key=len)]) if keys else None
    return None


def test_import_graph_has_no_cycles():
    graph = import_graph()
    assert "edgetool.runtime.trt.backend" in graph and "edgetool.toolchain.train.run" in graph
    assert cycles(graph) == []


def test_the_two_sides_of_deploy_meet_only_in_the_status_text():
    """The workstation's driver runs ``edgetool target`` on a device and reads its JSON: of the
    device side it imports the status text alone, and the device side imports nothing of it."""
    graph = import_graph()
    drive = {m for m in graph if m.startswith("edgetool.runtime.deploy")}
    device = {m for m in graph if m.startswith("edgetool.runtime.target")}
    assert drive and device
    assert {t for m in drive for t in graph[m] if t in device} == {"edgetool.runtime.target.status"}
    assert not {t for m in device for t in graph[m] if t in drive}


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_arrows_between_parts_point_down():
    bad = []
    for mod, edges in import_graph().items():
        for dep, line in edges.items():
            src, dst = part_of(mod), part_of(dep)
            if src != dst and PART_RANK[dst] >= PART_RANK[src]:
                bad.append("{}:{} imports {}".format(mod, line, dep))
    assert not bad, bad


def test_every_runtime_and_toolchain_module_has_a_rank():
    graph = import_graph()
    unranked = [m for m in graph if m.startswith(tuple(RANKS)) and rank(m) is None]
    assert not unranked, unranked


def test_an_unranked_module_is_caught():
    assert rank("edgetool.runtime.bundle.reader") == ("edgetool.runtime.", 2)
    assert rank("edgetool.toolchain.train.run") == ("edgetool.toolchain.", 6)
    assert rank("edgetool.toolchain.newcomer") is None and rank("edgetool.runtime.newcomer") is None


def test_arrows_inside_the_runtime_and_the_toolchain_point_down():
    bad = []
    for mod, edges in import_graph().items():
        for dep, line in edges.items():
            a, b = rank(mod), rank(dep)
            if a is not None and b is not None and a[0] == b[0] and b[1] > a[1]:
                bad.append("{}:{} imports {}".format(mod, line, dep))
    assert not bad, bad


def test_device_profiles_are_data():
    folder = os.path.join(ROOT, "device_profiles")
    assert list(resolved_imports(os.path.join(folder, "__init__.py"), "edgetool.device_profiles", True)) == []
    assert any(f.endswith(".json") for f in os.listdir(folder))


def imported_modules(path):
    """The modules a runtime file imports, relative imports resolved against its package."""
    rel = os.path.relpath(path, os.path.join(ROOT, "runtime"))[: -len(".py")].split(os.sep)
    is_pkg = rel[-1] == "__init__"
    name = ".".join(["edgetool", "runtime"] + (rel[:-1] if is_pkg else rel))
    return resolved_imports(path, name, is_pkg)


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
    proc = run_blocked("try:\n    import torchvision.models\nexcept ImportError:\n    pass\nprint(TORCH_TRIED)")
    assert proc.stdout.strip() == "['torchvision']", proc.stderr  # a caught import is still recorded


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
    assert proc.stderr.strip().splitlines() == [
        "error: torch is not installed; install it with: pip install 'edgetool[train]'"
    ]


def test_runtime_api_without_torch(tiny_bundle):
    code = """
import numpy as np
import edgetool.runtime.bundle.reader, edgetool.runtime.bundle.codecs, edgetool.runtime.bundle.weights
import edgetool.runtime.classifier
from edgetool.runtime.bundle.reader import Bundle
from edgetool.runtime.backends import load_backend
from edgetool.runtime.classifier import SuperSubClassifier
b = Bundle.open(sys.argv[1])
with load_backend('onnxruntime', b) as be:
    preds = SuperSubClassifier(be, policy='per-image').classify(b.samples())
print(len(preds), TORCH_TRIED)
"""
    proc = run_blocked(code, tiny_bundle)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "8 []"  # nothing on the way even tried to import torch


def test_runtime_is_python38_compatible():
    vermin = shutil.which("vermin")
    if vermin is None:
        pytest.skip("vermin is not installed (pip install 'edgetool[test]')")
    proc = subprocess.run(
        [
            vermin,
            "-t=3.8-",
            "--no-tips",
            "--violations",
            "--eval-annotations",
            os.path.join(ROOT, "runtime"),
            os.path.join(ROOT, "edgetool"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
