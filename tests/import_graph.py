"""The import graph of the package, read from the source (for tests/test_layering.py).

Every module's imports come from its AST, imports inside functions included (lazy imports hide
dependencies just as well); a relative import is resolved against the module's package.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# source folder -> installed package (setup.cfg package_dir)
PARTS = {
    "edgetool": "edgetool",
    "device_profiles": "edgetool.device_profiles",
    "runtime": "edgetool.runtime",
    "export": "edgetool.export",
    "toolchain": "edgetool.toolchain",
}


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
