"""The file the Mender client runs as the update module ``edgetool-bundle`` (``edgetool mender
install-module`` writes it into the client's modules folder).

It is a short POSIX shell script: it answers the client's two questions itself (rollback: yes;
reboot: no; no Python starts for them) and hands every other state to the module in the package
(:mod:`.module`), run by the same Python as the command that wrote it, isolated (``-I``) as the
deploy's device side is, with the deploy root, the device profile and the versions to keep.
"""

from __future__ import annotations

import os
import shlex
import sys

from ..errors import UsageError
from .module import ANSWERS

DEFAULT_DIR = "/usr/share/mender/modules/v3"


def _checked(value: str, what: str) -> str:
    if not value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise UsageError("{} {!r}: empty, or a control character (newline, tab, ...)".format(what, value))
    return value


def module_argv(root: str, profile: str, keep: int):
    """The command the script runs, before the client's STATE and FILE_TREE."""
    argv = [sys.executable, "-I", "-m", "edgetool", "mender", "module", "--root", root]
    return argv + ["--device-profile", profile, "--keep", str(keep), "--"]


def script_text(root: str, profile: str, keep: int) -> str:
    """The module script for deploy root *root* (made absolute) and device *profile* (a name, or a JSON
    file made absolute); every value is checked and shell-quoted."""
    root = os.path.abspath(_checked(root, "ROOT"))
    _checked(profile, "--device-profile")
    if profile.endswith(".json"):
        profile = os.path.abspath(profile)
    if keep < 2:
        raise UsageError("--keep must be >= 2 (current and previous always stay)")
    answers = "".join("    {}) echo {}; exit 0 ;;\n".format(state, word) for state, word in sorted(ANSWERS.items()))
    command = " ".join(shlex.quote(a) for a in module_argv(root, profile, keep))
    return (
        "#!/bin/sh\n"
        "# Mender update module edgetool-bundle: installs edgetool bundles with the device side of deploy.\n"
        'case "$1" in\n' + answers + 'esac\nexec {} "$@"\n'.format(command)
    )
