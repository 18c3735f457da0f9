"""Hard rules 1-3: the device side runs without torch, imports no upper layer, and stays Python 3.8.

The import graph of the package is read from the AST of every module (imports inside
functions included, since lazy imports hide dependencies just as well): it has no cycles,
and every arrow between parts points down.
"""

import ast
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# source folder -> installed package (setup.cfg package_dir)
PARTS = {
    "edgetool": "edgetool",
    "device_profiles": "edgetool.device_profiles",
    "runtime": "edgetool.runtime",
    "export": "edgetool.export",
    "toolchain": "edgetool.toolchain",
}
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
# Inside the runtime: foundation < backend interface < backends < backend registry < applications.
RUNTIME_RANK = {
    "errors": 0,
    "choices": 0,
    "log": 0,
    "files": 0,
    "machine": 0,
    "weights": 0,
    "codecs": 0,
    "onnx_weights": 0,
    "preprocess": 0,
    "bundle": 0,
    "device_profiles": 0,
    "options": 0,
    "signature": 0,
    "backends.base": 1,
    "backends.ort": 2,
    "trt": 2,
    "backends": 3,
    "classifier": 4,
    "doctor": 4,
    "cli": 4,
    "camera": 5,
    "deploy": 5,
    "profile": 5,
}

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
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + code] + [str(a) for a in args], capture_output=True, text=True, timeout=300
    )


def py_files(folder):
    for root, _, files in os.walk(os.path.join(ROOT, folder)):
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(root, f)


def module_name(path):
    rel = os.path.relpath(path, ROOT)
    folder, rest = rel.split(os.sep, 1)
    parts = rest[:-3].split(os.sep)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PARTS[folder]] + parts), parts == [] or rest.endswith("__init__.py")


def import_graph():
    """Module -> {imported edgetool module: first line}, for every module of the package."""
    graph = {}
    for folder in PARTS:
        for path in py_files(folder):
            if folder == "edgetool" and os.path.dirname(path) != os.path.join(ROOT, "edgetool"):
                continue
            name, is_pkg = module_name(path)
            edges = graph.setdefault(name, {})
            for mod, line in resolved_imports(path, name, is_pkg):
                if mod.startswith("edgetool") and mod != name:
                    edges.setdefault(mod, line)
    known = set(graph)
    for edges in graph.values():  # `from pkg import module` names a module; keep the longest known name
        for mod in list(edges):
            if mod not in known:
                parent = mod.rsplit(".", 1)[0]
                line = edges.pop(mod)
                if parent in known:
                    edges.setdefault(parent, line)
    return graph


def resolved_imports(path, name, is_pkg):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            for a in node.names:  # `from . import doctor` imports a module
                yield base + "." + a.name, node.lineno


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def part_of(module):
    return max((p for p in PART_RANK if module == p or module.startswith(p + ".")), key=len)


def runtime_rank(module):
    rest = module[len("edgetool.runtime.") :] if module.startswith("edgetool.runtime.") else None
    keys = [k for k in RUNTIME_RANK if rest is not None and (rest == k or rest.startswith(k + "."))]
    return RUNTIME_RANK[max(keys, key=len)] if keys else None


def test_import_graph_has_no_cycles():
    graph = import_graph()
    assert "edgetool.runtime.trt.backend" in graph and "edgetool.toolchain.pipeline" in graph
    assert cycles(graph) == []


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


def test_arrows_inside_the_runtime_point_down():
    bad = []
    for mod, edges in import_graph().items():
        for dep, line in edges.items():
            a, b = runtime_rank(mod), runtime_rank(dep)
            if a is not None and b is not None and b > a:
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
