"""A systemd unit that runs ``edgetool serve`` on a deploy root (``edgetool target service``).

The unit is written to a file for the user to install; nothing is enabled here.  It runs the
same Python as this command, isolated (``-I``) as the deploy's device side is, restarts on a
failure, and stops with SIGTERM, on which the camera loop ends after its frame and writes its
summary.
"""

from __future__ import annotations

import getpass
import os
import shlex
import sys
from typing import Optional, Sequence

from .. import commands

UNIT = """[Unit]
Description={description}
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={user}
ExecStart={command}
Restart=on-failure
RestartSec=2
KillSignal=SIGTERM
TimeoutStopSec=20

[Install]
WantedBy=multi-user.target
"""


def unit_text(
    root: str, input_uri: str, output: Optional[str], serve_args: Sequence[str], user: Optional[str] = None
) -> str:
    """The unit file's text; *serve_args*: more options of ``edgetool serve``."""
    root = os.path.abspath(root)
    argv = [sys.executable, "-I", "-m", "edgetool", "serve", root, input_uri] + ([output] if output else [])
    command = " ".join(shlex.quote(a) for a in argv + list(serve_args))
    description = commands.line("serve", root, input_uri, *([output] if output else []))
    return UNIT.format(description=description, user=user or getpass.getuser(), command=command)
