"""How the workstation runs ``edgetool target ...`` on a device: over OpenSSH, or locally.

Commands are argv lists end to end. ssh joins the remote argv into one string for the
remote shell, so each argument is quoted with :func:`shlex.quote` first; host names are
checked so that none can pass for an ssh option. Host keys are always checked: unknown
hosts are refused unless the user opts into ``accept-new``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from typing import List, Optional, Sequence

from ..errors import UsageError

HOST_RE = re.compile(r"^(?:[A-Za-z0-9._][A-Za-z0-9._-]*@)?[A-Za-z0-9_\[][A-Za-z0-9._:\[\]%-]*$")


def check_host(host: str) -> str:
    if not HOST_RE.match(host or "") or host.startswith("-"):
        raise UsageError("invalid host {!r}: expected [user@]host (letters, digits, '.', '-', '_', ':')".format(host))
    return host


def check_option_path(value: str, what: str) -> str:
    """A path handed to ssh inside an ``-o Key=Value`` option: ssh splits those on whitespace."""
    if any(c.isspace() or c in "\"'\\" for c in value):
        raise UsageError("{} {!r}: ssh options cannot carry spaces or quotes; use another path".format(what, value))
    return value


class Transport:
    """Runs edgetool on the target with an argv list; subclasses say how."""

    label = ""
    root: Optional[str] = None  # a target's own deploy root (local targets); None: the shared --root

    def argv(self, args: Sequence[str]) -> List[str]:
        raise NotImplementedError

    # Each command runs in a session of its own: Ctrl-C at the terminal (SIGINT to the whole
    # foreground process group) reaches the driver only, which stops the hosts at safe points
    # (parallel.Stop) instead of the device side dying in the middle of a step.
    def run(self, args: Sequence[str], timeout: Optional[float] = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
            timeout=timeout,
            start_new_session=True,
        )

    def popen(self, args: Sequence[str]) -> subprocess.Popen:
        return subprocess.Popen(
            self.argv(args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )


class LocalTransport(Transport):
    """``deploy --to DIR``: the same device-side commands, run on this machine."""

    def __init__(self, edgetool: Optional[str] = None, root: Optional[str] = None, label: str = "local"):
        # -I: isolated from the working folder (a checkout named edgetool/ there is not imported)
        self.edgetool = shlex.split(edgetool) if edgetool else [sys.executable, "-I", "-m", "edgetool"]
        self.label = label
        self.root = root

    def argv(self, args: Sequence[str]) -> List[str]:
        return self.edgetool + [str(a) for a in args]


class SSHTransport(Transport):
    def __init__(
        self,
        host: str,
        edgetool: str = "edgetool",
        port: Optional[int] = None,
        identity: Optional[str] = None,
        known_hosts: Optional[str] = None,
        ssh_config: Optional[str] = None,
        accept_new_host_key: bool = False,
        connect_timeout: int = 15,
    ):
        self.host = check_host(host)
        self.label = host
        self.edgetool = shlex.split(edgetool)
        if not self.edgetool:
            raise UsageError("--remote-edgetool is empty")
        opts = [
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout={}".format(int(connect_timeout)),
            "-o",
            "StrictHostKeyChecking={}".format("accept-new" if accept_new_host_key else "yes"),
        ]
        if ssh_config:
            opts = ["-F", os.path.abspath(ssh_config)] + opts
        if port is not None:
            if not 0 < int(port) < 65536:
                raise UsageError("--port {} out of range".format(port))
            opts += ["-p", str(int(port))]
        if identity:
            opts += ["-i", os.path.abspath(identity), "-o", "IdentitiesOnly=yes"]
        if known_hosts:
            opts += ["-o", "UserKnownHostsFile=" + check_option_path(os.path.abspath(known_hosts), "--known-hosts")]
        self.opts = opts

    def argv(self, args: Sequence[str]) -> List[str]:
        remote = " ".join(shlex.quote(str(a)) for a in self.edgetool + list(args))
        return ["ssh"] + self.opts + ["--", self.host, remote]
