"""Every module stays under 300 lines and every function under 60, outside benchmarks/.

A file keeps a longer module or function only with a one-line reason in it:
``# size-limit: <why this one is kept long>``.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_MODULE, MAX_FUNCTION = 300, 60
SKIP = {".git", "benchmarks", "build", "dist", "__pycache__", ".ruff_cache", ".mypy_cache", ".pytest_cache"}
MARK = "# size-limit:"


def sources():
    for root, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP and not d.endswith(".egg-info") and not d.startswith(".")]
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(root, f)


def oversize(path):
    """Lines of *path* over the limits, unless the file gives a reason to keep them."""
    text = open(path).read()
    if any(line.strip().startswith(MARK) and line.strip()[len(MARK) :].strip() for line in text.splitlines()):
        return []
    rel = os.path.relpath(path, ROOT)
    out = []
    lines = text.count("\n")
    if lines > MAX_MODULE:
        out.append("{}: {} lines".format(rel, lines))
    for node in ast.walk(ast.parse(text, path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION:
                out.append("{}:{} {}() has {} lines".format(rel, node.lineno, node.name, n))
    return out


def test_no_module_over_300_lines_and_no_function_over_60():
    paths = list(sources())
    assert any(p.endswith(os.path.join("runtime", "bundle", "reader.py")) for p in paths)
    problems = [p for path in paths for p in oversize(path)]
    assert not problems, problems


def test_oversize_is_found_and_a_reason_exempts_it(tmp_path):
    body = "".join("    x{} = {}\n".format(i, i) for i in range(70))
    long_fn = tmp_path / "long.py"
    long_fn.write_text("def f():\n" + body)
    assert [p.split(" ", 1)[1] for p in oversize(str(long_fn))] == ["f() has 71 lines"]
    long_fn.write_text(MARK + " generated table\n" + "def f():\n" + body)
    assert oversize(str(long_fn)) == []
    empty_reason = tmp_path / "empty.py"
    empty_reason.write_text(MARK + "\n" + "x = 1\n" * 301)
    assert len(oversize(str(empty_reason))) == 1
