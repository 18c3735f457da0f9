"""benchmarks/ is scripts over one shared package (benchmarks/common): no script imports another,
none touches sys.path, and they use the product's public names only, patching none of them."""

import ast
import os

from import_graph import ROOT

BENCH = os.path.join(ROOT, "benchmarks")


def _sources():
    for folder in (BENCH, os.path.join(BENCH, "common")):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path) as f:
                    yield os.path.relpath(path, ROOT), ast.parse(f.read())


def _imports(tree, scripts):
    """(breaches, the names bound to the product's modules and objects) of the imports in *tree*."""
    out, product = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in scripts:
                    out.append((node.lineno, "imports the script " + a.name))
                if a.name.startswith("edgetool"):
                    product.add((a.asname or a.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in scripts:
                out.append((node.lineno, "imports the script " + node.module))
            if node.module.startswith("edgetool"):
                out += [(node.lineno, "imports the private name " + a.name) for a in node.names if a.name[0] == "_"]
                product |= {a.asname or a.name for a in node.names}
    return out, product


def problems(rel, tree, scripts):
    """What breaks the rules in one parsed file: "path:line: what"."""
    out, product = _imports(tree, scripts)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
            continue
        if node.value.id == "sys" and node.attr == "path":
            out.append((node.lineno, "uses sys.path"))
        if node.value.id in product and node.attr.startswith("_") and not node.attr.startswith("__"):
            out.append((node.lineno, "uses the private name {}.{}".format(node.value.id, node.attr)))
        if node.value.id in product and isinstance(node.ctx, ast.Store):
            out.append((node.lineno, "patches {}.{}".format(node.value.id, node.attr)))
    return ["{}:{}: {}".format(rel, line, what) for line, what in out]


def test_benchmarks_keep_the_rules():
    scripts = {n[:-3] for n in os.listdir(BENCH) if n.endswith(".py")}
    assert {"fair_verdict", "paper_experiments", "routing_arbiter"} <= scripts
    found = [p for rel, tree in _sources() for p in problems(rel, tree, scripts)]
    assert found == []


def test_the_rule_check_finds_each_kind_of_breach():
    code = """
import sys
import routing_arbiter
from paper_experiments import mean_se
from edgetool.toolchain.train import qat
from edgetool.toolchain.routing.learn import _fit
sys.path.insert(0, ".")
qat._key(1)
qat.INPUTS = 3
"""
    found = problems("x.py", ast.parse(code), {"routing_arbiter", "paper_experiments"})
    kinds = sorted(p.split(": ", 1)[1].split(" ")[0] + " " + p.split(": ", 1)[1].split(" ")[1] for p in found)
    assert kinds == [
        "imports the",
        "imports the",
        "imports the",
        "patches qat.INPUTS",
        "uses sys.path",
        "uses the",
    ], found


def missing_names(tree):
    """The `from edgetool... import NAME` of *tree* (at any depth, inside functions too) that do
    not resolve: a module without that name, or a module that is not there."""
    import importlib

    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "edgetool":
            try:
                module = importlib.import_module(node.module)
            except ImportError:
                out.append((node.lineno, node.module))
                continue
            for a in node.names:
                if not hasattr(module, a.name):
                    try:
                        importlib.import_module(node.module + "." + a.name)
                    except ImportError:
                        out.append((node.lineno, node.module + "." + a.name))
    return out


def test_every_product_name_a_benchmark_imports_exists():
    found = ["{}:{}: {}".format(rel, line, name) for rel, tree in _sources() for line, name in missing_names(tree)]
    assert found == []


def test_the_name_check_finds_a_moved_name():
    code = "def f():\n    from edgetool.runtime.machine import machine_name, gone\n    from edgetool.nowhere import x\n"
    assert missing_names(ast.parse(code)) == [(2, "edgetool.runtime.machine.gone"), (3, "edgetool.nowhere")]
