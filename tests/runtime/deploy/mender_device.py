"""A device for the Mender tests: the real Mender client (Debian's mender-client) in standalone mode, on a
scratch root that touches nothing of the machine's own.

Every client command runs in a private mount namespace (``unshare -m``) in which the scratch folders
are bind-mounted over ``/etc/mender`` (``mender.conf``, ``artifact_info`` with its ``artifact_name=``
line) and over the client's module folder ``/usr/share/mender/modules/v3`` (where ``edgetool mender
install-module`` writes the module); the client's state (``device_type``, its database, the module's
file trees) lives in a scratch folder given with ``--data`` instead of ``/var/lib/mender``.  The
deploy root is a scratch folder too.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

DEVICE_TYPE = "jetson-test"
MODULES = "/usr/share/mender/modules/v3"
NAMESPACE = """set -e
mount --make-rprivate /
mount --bind "$ETC" /etc/mender
mount --bind "$MODULES_SCRATCH" "$MODULES"
exec "$@"
"""


def skip_reason():
    """Why the client cannot run here (None: it can)."""
    missing = [t for t in ("mender", "mender-artifact", "unshare") if shutil.which(t) is None]
    if missing:
        return "{} not installed (Debian: apt-get install mender-client mender-artifact)".format(", ".join(missing))
    if os.geteuid() != 0:
        return "the Mender client runs as root (bind mounts in a private mount namespace)"
    if not os.path.isdir(MODULES):
        return "{} is missing (mender-client installs it)".format(MODULES)
    proc = subprocess.run(["unshare", "-m", "sh", "-c", "mount --make-rprivate /"], capture_output=True, text=True)
    if proc.returncode != 0:
        return "no private mount namespace here: {}".format(proc.stderr.strip()[-200:])
    return None


def needs_client():
    reason = skip_reason()
    if reason:
        pytest.skip(reason)


class MenderDevice:
    """The scratch device: its Mender client, its deploy root (``self.root``) and its update module."""

    def __init__(self, folder, trusted_pub, profile="cpu"):
        self.dir = str(folder)
        self.etc = os.path.join(self.dir, "etc-mender")
        self.modules = os.path.join(self.dir, "modules")
        self.data = os.path.join(self.dir, "data", "mender")
        self.root = os.path.join(self.dir, "edgetool-root")
        for d in (self.etc, self.modules, self.data):
            os.makedirs(d)
        with open(os.path.join(self.data, "device_type"), "w") as f:
            f.write("device_type={}\n".format(DEVICE_TYPE))
        with open(os.path.join(self.etc, "artifact_info"), "w") as f:
            f.write("artifact_name=factory-image\n")
        with open(os.path.join(self.etc, "mender.conf"), "w") as f:
            json.dump({"ModuleTimeoutSeconds": 600}, f)
        edgetool = [sys.executable, "-m", "edgetool"]
        proc = self.ns(*edgetool, "mender", "install-module", self.root, "--device-profile", profile)
        assert proc.returncode == 0, proc.stderr
        self.install_output = proc.stdout
        proc = self.ns(*edgetool, "target", "trust", self.root, trusted_pub)
        assert proc.returncode == 0, proc.stderr

    def ns(self, *argv, env=None):
        """*argv* in a new private mount namespace with the scratch folders mounted (a process of its own:
        a power cut between two calls leaves only what is on disk)."""
        e = dict(os.environ, ETC=self.etc, MODULES_SCRATCH=self.modules, MODULES=MODULES)
        e.update(env or {})
        cmd = ["unshare", "-m", "sh", "-c", NAMESPACE, "sh"] + [str(a) for a in argv]
        return subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=600)

    def mender(self, *args, env=None):
        fallback = os.path.join(self.dir, "no-fallback.conf")
        return self.ns("mender", "--data", self.data, "--no-syslog", "--fallback-config", fallback, *args, env=env)

    def module_lines(self, proc):
        """The lines the update module wrote to the client's log (stderr), as the client quotes them."""
        marker = '/edgetool-bundle\\": '
        return [ln.split(marker, 1)[1].rstrip('"') for ln in proc.stderr.splitlines() if marker in ln]

    def provides(self):
        proc = self.mender("show-provides")
        assert proc.returncode == 0, proc.stderr
        return dict(ln.split("=", 1) for ln in proc.stdout.splitlines() if "=" in ln)

    def current(self):
        link = os.path.join(self.root, "current")
        return os.path.basename(os.readlink(link)) if os.path.islink(link) else None

    def on_disk(self):
        """What serves: the current link, the installed versions, the staging folder, the state file."""
        state = os.path.join(self.root, "state.json")
        return (
            self.current(),
            sorted(os.listdir(os.path.join(self.root, "versions"))),
            sorted(os.listdir(os.path.join(self.root, "staging"))),
            open(state, "rb").read() if os.path.exists(state) else None,
        )
