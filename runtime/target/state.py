"""A deploy root on the device and its state: the folders, the policy, ``current``, and
``state.json`` (read and checked before anything changes, rebuilt by ``repair``, a cut switch
finished by ``heal``).

Layout of a deployment root::

    ROOT/versions/<version>/   installed, verified bundles
    ROOT/staging/<version>/    a version being received (resumable: complete files are kept)
    ROOT/current               symlink -> versions/<version>, switched by one rename
    ROOT/trust/*.pub           Ed25519 keys whose signatures this device accepts
    ROOT/config.json           {"accept_unsigned": false}
    ROOT/state.json            current, previous, highest release, history, last doctor result
"""

from __future__ import annotations

import os
import re
import time
from typing import Dict, List, Optional

from .. import commands
from ..bundle.signature import signature_key_id
from ..camera.served import serving
from ..errors import DeployError, SignatureError, UsageError
from .fsutil import Lock, atomic_json, atomic_symlink, read_json

VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_version(version: str) -> str:
    if not VERSION_RE.match(version or ""):
        raise UsageError("invalid version name {!r} (letters, digits, '.', '_', '-')".format(version))
    return version


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class DeviceRoot:
    """The folders of a deploy root, its policy, ``current`` and ``state.json``."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)

    def p(self, *parts) -> str:
        return os.path.join(self.root, *parts)

    def init(self) -> None:
        for d in ("versions", "staging", "trust"):
            os.makedirs(self.p(d), exist_ok=True)

    def config(self) -> Dict:
        return read_json(self.p("config.json"), {}) or {}

    def current(self) -> Optional[str]:
        link = self.p("current")
        if not os.path.islink(link):
            return None
        return os.path.basename(os.readlink(link))

    def trusted(self) -> List[str]:
        try:
            return sorted(f[:-4] for f in os.listdir(self.p("trust")) if f.endswith(".pub"))
        except OSError:
            return []

    def state(self) -> Dict:
        """ROOT/state.json, checked: one DeployError that names the way out when it cannot be used."""
        path = self.p("state.json")
        try:
            st = read_json(path, {})
        except (OSError, DeployError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else str(exc).split(": ", 1)[-1]
            raise DeployError(
                "{}: cannot be used ({}); nothing was changed. `{}` rebuilds it from the versions on disk".format(
                    path, why, commands.target_repair(self.root)
                )
            ) from None
        if st is None:
            return {}
        if not isinstance(st, dict) or not isinstance(st.get("history", []), list):
            raise DeployError(
                "{}: not a deploy state; nothing was changed. `{}` rebuilds it".format(
                    path, commands.target_repair(self.root)
                )
            )
        return st

    def release_of(self, folder: str) -> int:
        """The release number in a verified bundle folder's manifest (0 where it has none)."""
        data = read_json(os.path.join(folder, "manifest.json"), {}) or {}
        r = data.get("release", 0)
        return r if isinstance(r, int) and not isinstance(r, bool) and r >= 0 else 0

    def repair(self) -> Dict:
        """Rebuild state.json from the versions on disk: current from the ``current`` link (or the
        newest version), the highest release from their manifests; the history starts anew."""
        self.init()
        with Lock(self.p(".lock")):
            versions = sorted(v for v in os.listdir(self.p("versions")) if VERSION_RE.match(v))
            current = self.current()
            if current not in versions:
                current = versions[-1] if versions else None
                if current:
                    atomic_symlink(os.path.join("versions", current), self.p("current"))
            others = [v for v in versions if v != current]
            releases = [self.release_of(self.p("versions", v)) for v in versions]
            st = {
                "current": current,
                "previous": others[-1] if others else None,
                "highest_release": max(releases) if releases else 0,
                "history": [{"action": "repair", "version": current, "at": now(), "previous": None}],
            }
            atomic_json(self.p("state.json"), st)
        return st

    def heal(self) -> Optional[str]:
        """Finish a switch a crash interrupted: point ``current`` at the state's version when they
        differ and that version is installed.  Returns the version it switched to, if any."""
        if not os.path.isfile(self.p("state.json")):
            return None
        want = self.state().get("current")
        if want and want != self.current() and os.path.isdir(self.p("versions", want)):
            atomic_symlink(os.path.join("versions", want), self.p("current"))
            return want
        return None

    def signer(self, version: Optional[str]) -> Optional[str]:
        """The key id that signed installed *version* ("unsigned"; None: no such version)."""
        if not version or not os.path.isdir(self.p("versions", version)):
            return None
        try:
            return signature_key_id(self.p("versions", version)) or "unsigned"
        except SignatureError as exc:
            return str(exc)

    def record_check(self, version: str, name: str, ok: bool, detail: str) -> None:
        with Lock(self.p(".lock")):
            st = self.state()
            st.setdefault("checks", {})[name] = {"version": version, "ok": ok, "detail": detail, "at": now()}
            atomic_json(self.p("state.json"), st)

    def status(self) -> Dict:
        try:
            if os.path.isfile(self.p("state.json")):
                with Lock(self.p(".lock")):
                    self.heal()  # a switch a power cut interrupted is finished before it is reported
            st = self.state()
            state_error = None
        except DeployError as exc:
            st, state_error = {}, str(exc)
        versions = (
            sorted(v for v in os.listdir(self.p("versions")) if VERSION_RE.match(v))
            if os.path.isdir(self.p("versions"))
            else []
        )
        staging = sorted(os.listdir(self.p("staging"))) if os.path.isdir(self.p("staging")) else []
        trusted, current = self.trusted(), self.current()
        return {
            "root": self.root,
            "current": current,
            "current_signed_by": self.signer(current),
            "serving": serving(self.root),
            "previous": st.get("previous"),
            "versions": versions,
            "staging": staging,
            "checks": st.get("checks", {}),
            "trusted_keys": trusted,
            "accept_unsigned": bool(self.config().get("accept_unsigned")),
            "last": (st.get("history") or [None])[-1],
            "highest_release": st.get("highest_release", 0),
            "downgrades": [e for e in st.get("history", []) if e.get("downgrade_allowed")],
            "state_error": state_error,
        }
