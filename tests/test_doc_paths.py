"""Every Python file the documentation names (a test to run, a benchmark behind a figure, a module) exists."""

import os
import re

from conftest import ROOT

NAMED = re.compile(r"\b(?:tests|benchmarks|examples|runtime|toolchain|export|edgetool)/[A-Za-z0-9_./-]+\.py\b")
SKIP = {"build", "dist", "node_modules", "edgetool-out"}


def markdown_files(root=ROOT):
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP and not d.endswith(".egg-info") and not d.startswith(".")]
        for name in files:
            if name.endswith(".md"):
                yield os.path.join(dirpath, name)


def missing_paths(text):
    """The repository paths of Python files *text* names that do not exist."""
    return sorted({p for p in NAMED.findall(text) if not os.path.isfile(os.path.join(ROOT, p))})


def test_the_check_finds_a_missing_file():
    text = "run `python -m pytest tests/toolchain/train/test_device.py tests/toolchain/test_device.py`"
    assert missing_paths(text) == ["tests/toolchain/test_device.py"]


def test_every_python_file_named_in_the_docs_exists():
    files = list(markdown_files())
    assert os.path.join(ROOT, "README.md") in files and len(files) > 10
    missing = {os.path.relpath(f, ROOT): missing_paths(open(f, encoding="utf-8").read()) for f in files}
    assert {f: m for f, m in missing.items() if m} == {}
