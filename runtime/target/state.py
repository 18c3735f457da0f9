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
from typing import Dict, List, Optional, Tuple

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


def _shown(value) -> str:
    """A state value as a message quotes it: short, one line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
        """The ids (fingerprints) of the keys the ``*.pub`` files in ``trust/`` hold, whatever their
        names: what verifying a signature accepts.  A file that is no key raises UsageError."""
        from ..bundle.signature import trust_store

        return sorted(trust_store(self.p("trust")))

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

    def installed(self) -> List[str]:
        """The versions on disk (``ROOT/versions/*``), sorted."""
        try:
            return sorted(v for v in os.listdir(self.p("versions")) if VERSION_RE.match(v))
        except OSError:
            return []

    def counter(self, st: Optional[Dict] = None) -> Tuple[Optional[int], Optional[str]]:
        """The anti-rollback counter, ``(highest release, None)``, or ``(None, why)`` where it cannot
        be trusted.  The rule (fail closed):

        - a root never initialised (no ``state.json`` or no counter in it, no version installed, no
          ``current``) has counter 0: its first install creates it;
        - a counter that is missing while versions are installed was lost (a deleted or emptied
          state): unknown;
        - a counter that is not a non-negative integer (a string, a float, NaN, a boolean, a list,
          null, a negative number) is corrupt: unknown.

        An unknown counter refuses every install not explicitly allowed (``--allow-downgrade``, or
        ``edgetool target reset-counter``).  A state that cannot be parsed at all raises, as
        :meth:`state` does."""
        st = self.state() if st is None else st
        path = self.p("state.json")
        if "counter_lost" in st:
            return None, "{}: {}".format(path, st["counter_lost"])
        if "highest_release" in st:
            value = st["highest_release"]
            if type(value) is int and value >= 0:
                return value, None
            return None, "{}: highest_release is {} (not a release number)".format(path, _shown(value))
        installed = self.installed()
        if installed or os.path.islink(self.p("current")):
            return None, "{} {} while {} version(s) are installed (deleted or emptied?)".format(
                path, "has no highest_release" if os.path.isfile(path) else "is missing", len(installed)
            )
        return 0, None

    def counter_refusal(self, why: str) -> DeployError:
        return DeployError(
            "{}: the anti-rollback counter cannot be trusted ({}); refusing to install, since an older "
            "release could slip in. `{}` sets it from the versions installed "
            "here, or deploy --allow-downgrade installs this version anyway (recorded)".format(
                self.root, why, commands.target_reset_counter(self.root)
            )
        )

    def reset_counter(self, release: Optional[int] = None) -> Dict:
        """Set the anti-rollback counter to *release* (default: the highest release of the versions
        installed here); an operator's explicit choice, recorded in the history."""
        if release is not None and (type(release) is not int or release < 0):
            raise UsageError("--release must be an integer >= 0")
        self.init()
        with Lock(self.p(".lock")):
            st = self.state()
            was = _shown(st["highest_release"]) if "highest_release" in st else st.get("counter_lost", "missing")
            disk = self.highest_on_disk()
            value = disk if release is None else release
            if "current" not in st:
                st["current"] = self.current()
            st["highest_release"] = value
            st.pop("counter_lost", None)
            event = {"action": "reset-counter", "version": st.get("current"), "at": now(), "previous": None}
            event.update(release=value, was=was)
            st["history"] = (st.get("history", []) + [event])[-50:]
            self.save_state(st)
        return {"root": self.root, "highest_release": value, "was": was, "from_disk": disk}

    def highest_on_disk(self) -> int:
        """The highest release among the versions installed here (0: none)."""
        return max([self.release_of(self.p("versions", v)) for v in self.installed()] + [0])

    def save_state(self, st: Dict) -> None:
        """Write ROOT/state.json atomically.  A corrupt counter is not written back as it was (NaN
        is not JSON): it is dropped, with what it held kept under ``counter_lost``, so it stays
        unknown (refused) until an install allowed by the operator or ``reset-counter`` sets it."""
        value = st.get("highest_release", 0)
        if "highest_release" in st and not (type(value) is int and value >= 0):
            st = dict(st)
            st["counter_lost"] = "highest_release was {}".format(_shown(st.pop("highest_release")))
        atomic_json(self.p("state.json"), st)

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
            try:  # a counter that can still be read is kept where it is higher than the versions'
                kept, _ = self.counter()
            except DeployError:
                kept = None
            versions = self.installed()
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
                "highest_release": max(releases + [kept or 0]),
                "history": [{"action": "repair", "version": current, "at": now(), "previous": None}],
            }
            self.save_state(st)
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
            self.save_state(st)

    def status(self) -> Dict:
        try:
            if os.path.isfile(self.p("state.json")):
                with Lock(self.p(".lock")):
                    self.heal()  # a switch a power cut interrupted is finished before it is reported
            st = self.state()
            state_error = None
            highest, counter_error = self.counter(st)
        except DeployError as exc:
            st, state_error = {}, str(exc)
            highest, counter_error = None, state_error
        versions = self.installed()
        staging = sorted(os.listdir(self.p("staging"))) if os.path.isdir(self.p("staging")) else []
        try:
            trusted, trust_error = self.trusted(), None
        except UsageError as exc:
            trusted, trust_error = [], str(exc)
        current = self.current()
        from .update import lineage

        return {
            "root": self.root,
            "current": current,
            "model": lineage(self.p("versions", current), current) if current else None,
            "current_signed_by": self.signer(current),
            "serving": serving(self.root),
            "previous": st.get("previous"),
            "versions": versions,
            "staging": staging,
            "checks": st.get("checks", {}),
            "trusted_keys": trusted,
            "trust_error": trust_error,
            "accept_unsigned": bool(self.config().get("accept_unsigned")),
            "last": (st.get("history") or [None])[-1],
            "highest_release": highest,
            "counter_error": counter_error,
            "downgrades": [e for e in st.get("history", []) if e.get("downgrade_allowed")],
            "state_error": state_error,
        }
