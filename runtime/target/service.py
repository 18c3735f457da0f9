"""A systemd unit that runs ``edgetool serve`` on a deploy root (``edgetool target service``).

The unit is written to a file for the user to install; nothing is enabled here.  It runs the
same Python as this command, isolated (``-I``) as the deploy's device side is, in the directory
the unit was written from with absolute ROOT, INPUT and OUTPUT paths, restarts on a failure, and
stops with SIGTERM, on which the camera loop ends after its frame and writes its summary.
"""

from __future__ import annotations

import getpass
import os
import re
import sys
from typing import Optional, Sequence

from .. import commands
from ..errors import UsageError

UNIT = """[Unit]
Description={description}
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={user}
WorkingDirectory={workdir}
ExecStart={command}
Restart=on-failure
RestartSec=2
KillSignal=SIGTERM
TimeoutStopSec=20

[Install]
WantedBy=multi-user.target
"""


SAFE_WORD = re.compile(r"^[A-Za-z0-9_@+=:,./-]+$")
USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")


def _checked(value: str, what: str) -> str:
    """*value* as one unit-file value: a control character (a newline would start a new setting,
    ``ExecStartPre=`` say) is refused with one error line."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise UsageError("{} {!r}: a control character (newline, tab, ...) cannot go into a unit".format(what, value))
    return value


def systemd_word(arg: str) -> str:
    """*arg* as one word of a systemd command line: double-quoted, with backslash and quote escaped,
    ``%`` (a specifier) doubled and ``$`` (an environment variable) doubled, so systemd passes it
    to the program exactly as given."""
    if SAFE_WORD.match(arg):
        return arg
    body = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return '"' + body + '"'


def local_path(arg: str) -> str:
    """*arg* made absolute when it names a local file or folder (a path, or ``file://`` one); camera
    URIs (``csi://0``, ``rtsp://...``, ``display://0``, ``rtp://...``) unchanged."""
    if arg.startswith("file://"):
        return "file://" + os.path.abspath(arg[len("file://") :])
    return arg if "://" in arg else os.path.abspath(arg)


def unit_text(
    root: str,
    input_uri: str,
    output: Optional[str],
    serve_args: Sequence[str],
    user: Optional[str] = None,
    workdir: Optional[str] = None,
) -> str:
    """The unit file's text; *serve_args*: more options of ``edgetool serve``.  ROOT, and INPUT and
    OUTPUT when they are local paths, are made absolute; the service runs in *workdir* (default: this
    directory), so a relative path in *serve_args* means what it means here.  Every value is
    checked (no control characters) and escaped for systemd: ROOT, INPUT, OUTPUT and the options
    reach ``edgetool serve`` byte for byte, whatever they hold (``%``, ``$``, quotes, spaces)."""
    root = os.path.abspath(root)
    workdir = os.path.abspath(workdir or os.getcwd())
    argv = [sys.executable, "-I", "-m", "edgetool", "serve", root, local_path(input_uri)]
    argv += ([local_path(output)] if output else []) + list(serve_args)
    for a in argv:
        _checked(a, "ROOT" if a == root else "argument")
    _checked(workdir, "working directory")
    if workdir != workdir.strip():
        raise UsageError("working directory {!r}: systemd would drop its leading or trailing blanks".format(workdir))
    user = user or getpass.getuser()
    if not USER_RE.match(user):
        raise UsageError("--user {!r}: not a user name".format(user))
    command = " ".join(systemd_word(a) for a in argv)
    description = commands.line("serve", root).replace("%", "%%")  # control characters were refused above
    return UNIT.format(description=description, user=user, workdir=workdir.replace("%", "%%"), command=command)
