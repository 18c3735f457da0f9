"""Which TensorRT API names the code uses, on which version paths, and which names a version lacks.

:func:`collect` reads one module with :mod:`ast`.  A name is *used* when it is

* an attribute in a chain rooted at the module variable (``trt.BuilderFlag.REFIT``: ``BuilderFlag``,
  ``REFIT``), or at a TensorRT object: a name or ``self.x`` attribute assigned from such an
  expression anywhere in its function or class (``network = builder.create_network(flags)``,
  ``self.engine = self.runtime.deserialize_cuda_engine(plan)``), or a parameter named in
  :data:`RECEIVERS`;
* the string of ``hasattr(obj, "name")`` (or ``getattr`` with a default) on a TensorRT object: a
  *probe*, which must name something that exists in at least one version checked.

Each use carries the conditions it runs under: enclosing ``if`` tests and conditional expressions,
the operands before it in an ``and``/``or``, earlier ``if ...: raise/return`` guards in its block.
:meth:`Module.reachable` evaluates them for one version: ``hasattr(<TensorRT object>, "X")`` is true
where it has X, ``trt_version(...)`` is the version, a name or ``self.x`` assigned once (in its
function or class) is its value, a call of a module function whose body is one ``return`` is that
expression.  Any other condition may go either way.
"""

from __future__ import annotations

import ast
import operator
from typing import Dict, List, NamedTuple, Optional, Set, Tuple

ROOTS = {"trt"}  # the module variable; names bound by ``import tensorrt [as x]`` are added per module
# Parameters that hold TensorRT objects (the build steps of runtime/trt/loader.py take them; EngineRunner takes an
# engine or a callable that makes one).
RECEIVERS = ("builder", "network", "config", "logger", "engine_or_maker")
# Set by the tensorrt package in Python, not registered by the bindings: used, never looked up.
SPECIAL = {"__version__"}
UNKNOWN = object()
_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt}
_CMP.update({ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not})
_CMP.update({ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b})


class Usage(NamedTuple):
    path: str
    line: int
    name: str
    probe: bool
    conds: Tuple[Tuple[ast.expr, bool], ...]
    scope: "Scope"
    module: "Module"


class ClassInfo:
    def __init__(self):
        self.attrs: Dict[str, List[Tuple[Optional[ast.expr], "Scope"]]] = {}
        self.trt: Set[str] = set()


class Scope:
    """A function (or the module body): what its names are assigned, and which hold TensorRT objects."""

    def __init__(self, node: ast.AST, cls: Optional[ClassInfo]):
        self.node, self.cls = node, cls
        self.stores: Dict[str, List[Optional[ast.expr]]] = {}
        self.trt: Set[str] = set()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            for arg in a.posonlyargs + a.args + a.kwonlyargs + [x for x in (a.vararg, a.kwarg) if x]:
                self.stores.setdefault(arg.arg, []).append(None)
                if arg.arg in RECEIVERS:
                    self.trt.add(arg.arg)
        paired: Set[int] = set()
        for n in _own_nodes(node):
            if isinstance(n, (ast.Assign, ast.AnnAssign)) and n.value is not None:
                for t in n.targets if isinstance(n, ast.Assign) else [n.target]:
                    self._bind(t, n.value, paired)
        for n in _own_nodes(node):
            if isinstance(n, (ast.Name, ast.Attribute)) and isinstance(n.ctx, ast.Store) and id(n) not in paired:
                self._bind(n, None, paired)

    def _bind(self, target, value, paired: Set[int]) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            same = isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts)
            for i, t in enumerate(target.elts):
                self._bind(t, value.elts[i] if same else None, paired)
            return
        paired.add(id(target))
        if isinstance(target, ast.Name):
            self.stores.setdefault(target.id, []).append(value)
        elif _is_self_attr(target) and self.cls is not None:
            self.cls.attrs.setdefault(target.attr, []).append((value, self))


def _is_self_attr(node) -> bool:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"


def _own_nodes(node):
    """The nodes of *node*'s body, without the bodies of the functions and classes it defines."""
    todo = list(ast.iter_child_nodes(node))
    while todo:
        n = todo.pop()
        yield n
        if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(n))


def _exits(body) -> bool:
    return bool(body) and isinstance(body[-1], (ast.Raise, ast.Return, ast.Continue, ast.Break))


class Module:
    """One source file: its scopes, the TensorRT objects in them, and the TensorRT names it uses."""

    def __init__(self, source: str, path: str):
        self.path, self.tree = path, ast.parse(source, path)
        self.roots = set(ROOTS)
        for n in ast.walk(self.tree):
            if isinstance(n, ast.Import):
                self.roots |= {a.asname or a.name for a in n.names if a.name == "tensorrt"}
        self.functions = {f.name: f for f in self.tree.body if isinstance(f, ast.FunctionDef)}
        self.scopes: Dict[ast.AST, Scope] = {self.tree: Scope(self.tree, None)}
        for n in ast.walk(self.tree):
            if isinstance(n, ast.ClassDef):
                info = ClassInfo()
                for f in n.body:
                    if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        self.scopes[f] = Scope(f, info)
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n not in self.scopes:
                self.scopes[n] = Scope(n, None)
        self._propagate()
        self.usages: List[Usage] = []
        self._walk(self.tree, (), self.scopes[self.tree])

    # -- which expressions are TensorRT objects -------------------------------------------------
    def is_trt(self, expr, scope: Scope) -> bool:
        while True:
            if isinstance(expr, ast.Attribute):
                if expr.attr in SPECIAL:
                    return False
                if _is_self_attr(expr) and scope.cls is not None:
                    return expr.attr in scope.cls.trt
                expr = expr.value
            elif isinstance(expr, ast.Call):
                expr = expr.func
            elif isinstance(expr, ast.Subscript):
                expr = expr.value
            elif isinstance(expr, ast.IfExp):
                return self.is_trt(expr.body, scope) or self.is_trt(expr.orelse, scope)
            elif isinstance(expr, ast.BoolOp):
                return any(self.is_trt(v, scope) for v in expr.values)
            else:
                return isinstance(expr, ast.Name) and (expr.id in self.roots or expr.id in scope.trt)

    def _propagate(self) -> None:
        changed = True
        while changed:
            changed = False
            for scope in self.scopes.values():
                for name, values in scope.stores.items():
                    if name not in scope.trt and any(v is not None and self.is_trt(v, scope) for v in values):
                        scope.trt.add(name)
                        changed = True
                cls = scope.cls
                for attr, entries in cls.attrs.items() if cls else ():
                    if attr not in cls.trt and any(v is not None and self.is_trt(v, s) for v, s in entries):
                        cls.trt.add(attr)
                        changed = True

    # -- the names used, with their conditions -----------------------------------------------------
    def _walk(self, node, conds, scope: Scope) -> None:
        if node in self.scopes and node is not self.tree:
            self._block(node.body, (), self.scopes[node])
            return
        if isinstance(node, (ast.If, ast.IfExp)):
            self._walk(node.test, conds, scope)
            for part, want in ((node.body, True), (node.orelse, False)):
                sub = conds + ((node.test, want),)
                self._block(part, sub, scope) if isinstance(part, list) else self._walk(part, sub, scope)
            return
        if isinstance(node, ast.BoolOp):
            want = isinstance(node.op, ast.And)
            for i, v in enumerate(node.values):
                self._walk(v, conds + tuple((w, want) for w in node.values[:i]), scope)
            return
        self._record(node, conds, scope)
        for _, value in ast.iter_fields(node):
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                self._block(value, conds, scope)
            else:
                for v in value if isinstance(value, list) else [value]:
                    if isinstance(v, ast.AST):
                        self._walk(v, conds, scope)

    def _block(self, stmts, conds, scope: Scope) -> None:
        for stmt in stmts:
            self._walk(stmt, conds, scope)
            if isinstance(stmt, ast.If) and not stmt.orelse and _exits(stmt.body):
                conds = conds + ((stmt.test, False),)  # the statements after a guard run when it did not fire

    def _record(self, node, conds, scope: Scope) -> None:
        use = None
        if isinstance(node, ast.Attribute) and node.attr not in SPECIAL and self.is_trt(node.value, scope):
            use = (node.attr, False)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr"):
            a = node.args
            if len(a) >= 2 and isinstance(a[1], ast.Constant) and isinstance(a[1].value, str):
                if self.is_trt(a[0], scope):
                    use = (a[1].value, node.func.id == "hasattr" or len(a) == 3)
        if use is not None:
            self.usages.append(Usage(self.path, node.lineno, use[0], use[1], conds, scope, self))

    # -- version gates ------------------------------------------------------------------------
    def value(self, expr, scope: Scope, table, depth: int = 0):
        """The value of *expr* on the version of *table*, or UNKNOWN."""
        if depth > 12:
            return UNKNOWN
        if isinstance(expr, ast.Constant):
            return expr.value
        if isinstance(expr, ast.Tuple):
            vals = [self.value(e, scope, table, depth + 1) for e in expr.elts]
            return UNKNOWN if any(v is UNKNOWN for v in vals) else tuple(vals)
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
            return self._call_value(expr, scope, table, depth)
        if isinstance(expr, ast.Name):
            values = scope.stores.get(expr.id, [])
            once = len(values) == 1 and values[0] is not None
            return self.value(values[0], scope, table, depth + 1) if once else UNKNOWN
        if _is_self_attr(expr) and scope.cls is not None:
            entries = scope.cls.attrs.get(expr.attr, [])
            once = len(entries) == 1 and entries[0][0] is not None
            return self.value(entries[0][0], entries[0][1], table, depth + 1) if once else UNKNOWN
        if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.Not):
            v = self.value(expr.operand, scope, table, depth + 1)
            return UNKNOWN if v is UNKNOWN else not v
        if isinstance(expr, ast.BoolOp):
            vals = [self.value(v, scope, table, depth + 1) for v in expr.values]
            decisive = isinstance(expr.op, ast.Or)  # the truth value that settles the whole expression
            if any(v is not UNKNOWN and bool(v) == decisive for v in vals):
                return decisive
            return UNKNOWN if any(v is UNKNOWN for v in vals) else not decisive
        if isinstance(expr, ast.Compare):
            return self._compare(expr, scope, table, depth)
        return UNKNOWN

    def _call_value(self, expr: ast.Call, scope: Scope, table, depth: int):
        fn, args = expr.func.id, expr.args
        if fn == "hasattr" and len(args) == 2 and isinstance(args[1], ast.Constant) and self.is_trt(args[0], scope):
            return table.find(args[1].value) is not None
        if fn == "trt_version":
            return table.vtuple[:2]
        f = self.functions.get(fn)
        body = [s for s in f.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))] if f else []
        if len(body) == 1 and isinstance(body[0], ast.Return) and body[0].value is not None:
            return self.value(body[0].value, self.scopes[f], table, depth + 1)
        return UNKNOWN

    def _compare(self, expr: ast.Compare, scope: Scope, table, depth: int):
        left = self.value(expr.left, scope, table, depth + 1)
        for op, comp in zip(expr.ops, expr.comparators):
            right = self.value(comp, scope, table, depth + 1)
            if left is UNKNOWN or right is UNKNOWN or type(op) not in _CMP:
                return UNKNOWN
            try:
                if not _CMP[type(op)](left, right):
                    return False
            except TypeError:
                return UNKNOWN
            left = right
        return True

    def reachable(self, use: Usage, table) -> bool:
        for expr, want in use.conds:
            v = self.value(expr, use.scope, table)
            if v is not UNKNOWN and bool(v) != want:
                return False
        return True


def collect(source: str, path: str) -> List[Usage]:
    return Module(source, path).usages


def versions_reaching(use: Usage, tables) -> List[str]:
    return [v for v, t in tables.items() if use.module.reachable(use, t)]


def check(usages: List[Usage], tables) -> Tuple[List[str], List[str]]:
    """(violations, names found only as a tail), one line each, in source order."""
    problems: List[str] = []
    tails: List[str] = []
    for use in usages:
        where = "{}:{}: {}".format(use.path, use.line, use.name)
        if use.probe:
            if not any(t.find(use.name) for t in tables.values()):
                problems.append("{} (probed with hasattr/getattr) missing from every TensorRT checked".format(where))
            continue
        for version in versions_reaching(use, tables):
            found = tables[version].find(use.name)
            if found is None:
                problems.append("{} missing from TensorRT {}".format(where, version))
            elif found == "tail":
                tails.append("{} found as a tail in TensorRT {}".format(where, version))
    return list(dict.fromkeys(problems)), list(dict.fromkeys(tails))
