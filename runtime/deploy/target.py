"""The device side of a deploy: stage, verify, switch ``current`` atomically, keep the previous, roll back.

Layout of a deployment root::

    ROOT/versions/<version>/   installed, verified bundles
    ROOT/staging/<version>/    a version being received (resumable: complete files are kept)
    ROOT/current               symlink -> versions/<version>, switched by one rename
    ROOT/trust/*.pub           Ed25519 keys whose signatures this device accepts
    ROOT/config.json           {"accept_unsigned": false}
    ROOT/state.json            current, previous, history, last doctor result
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from typing import Any, BinaryIO, Dict, List, Optional

from ..errors import DeployError, EdgetoolError, UsageError
from ..files import fault_point, sha256_file
from .fsutil import Lock, atomic_json, atomic_symlink, atomic_write, read_json

VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PART_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
CHUNK = 1 << 16
MAX_FILE = 1 << 36  # 64 GiB: no bundle file comes near it


def check_version(version: str) -> str:
    if not VERSION_RE.match(version or ""):
        raise UsageError("invalid version name {!r} (letters, digits, '.', '_', '-')".format(version))
    return version


def check_rel(rel: str) -> str:
    """A bundle file path: at most 3 plain components, no '..', nothing absolute or hidden."""
    parts = (rel or "").split("/")
    if len(parts) > 3 or not all(PART_RE.match(p) and ".." not in p for p in parts):
        raise UsageError("invalid bundle file name {!r}".format(rel))
    return rel


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Target:
    def __init__(self, root: str):
        self.root = os.path.abspath(root)

    def p(self, *parts) -> str:
        return os.path.join(self.root, *parts)

    # -- setup --------------------------------------------------------------------------
    def init(self) -> None:
        for d in ("versions", "staging", "trust"):
            os.makedirs(self.p(d), exist_ok=True)

    def config(self) -> Dict:
        return read_json(self.p("config.json"), {}) or {}

    def set_config(self, **kw) -> Dict:
        self.init()
        with Lock(self.p(".lock")):
            cfg = dict(self.config(), **kw)
            atomic_json(self.p("config.json"), cfg)
        return cfg

    def trust(self, pub_path: str) -> str:
        from .signing import key_id, load_public

        key = load_public(pub_path)
        kid = key_id(key)
        self.init()
        with open(pub_path, "rb") as f:
            data = f.read()
        atomic_write(self.p("trust", kid + ".pub"), data)
        return kid

    def untrust(self, kid: str) -> str:
        """Revoke key *kid*: bundles it signed are refused from now on (installed ones stay)."""
        if not re.match(r"^[0-9a-f]{4,64}$", kid or ""):
            raise UsageError("invalid key id {!r} (hex digits, as `edgetool target status` lists them)".format(kid))
        path = self.p("trust", kid + ".pub")
        if not os.path.isfile(path):
            raise UsageError(
                "{}: key {} is not trusted here (trusted: {})".format(
                    self.root, kid, ", ".join(self.trusted()) or "none"
                )
            )
        with Lock(self.p(".lock")):
            os.remove(path)
        return kid

    def state(self) -> Dict:
        """ROOT/state.json, checked: one DeployError that names the way out when it cannot be used."""
        path = self.p("state.json")
        try:
            st = read_json(path, {})
        except (OSError, DeployError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else str(exc).split(": ", 1)[-1]
            raise DeployError(
                "{}: cannot be used ({}); nothing was changed. `edgetool target repair {}` rebuilds it from "
                "the versions on disk".format(path, why, self.root)
            ) from None
        if st is None:
            return {}
        if not isinstance(st, dict) or not isinstance(st.get("history", []), list):
            raise DeployError(
                "{}: not a deploy state; nothing was changed. `edgetool target repair {}` rebuilds it".format(
                    path, self.root
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

    def current(self) -> Optional[str]:
        link = self.p("current")
        if not os.path.islink(link):
            return None
        return os.path.basename(os.readlink(link))

    # -- receiving ----------------------------------------------------------------------
    def trusted(self) -> List[str]:
        try:
            return sorted(f[:-4] for f in os.listdir(self.p("trust")) if f.endswith(".pub"))
        except OSError:
            return []

    def prepare(self, version: str) -> Dict:
        """Report what the workstation must know before it sends a byte: which files of VERSION are
        already here, complete; the signing policy and trusted key ids; the highest release installed.
        Changes nothing on the device (``receive`` makes the folders)."""
        check_version(version)
        fault_point("target:prepare")
        st = self.state() if os.path.isfile(self.p("state.json")) else {}
        policy = {
            "accept_unsigned": bool(self.config().get("accept_unsigned")),
            "trusted_keys": self.trusted(),
            "highest_release": st.get("highest_release", 0),
        }
        if os.path.isdir(self.p("versions", version)) and not os.path.isdir(self.p("staging", version)):
            return {"version": version, "installed": True, "present": {}, "policy": policy}
        staging = self.p("staging", version)
        present = {}
        for dirpath, _, files in os.walk(staging):
            for f in files:
                if ".part" in f:
                    continue
                full = os.path.join(dirpath, f)
                present[os.path.relpath(full, staging)] = sha256_file(full)
        return {"version": version, "installed": False, "present": present, "policy": policy}

    def receive(self, version: str, rel: str, size: int, sha256: str, stream: BinaryIO) -> Dict:
        """Write exactly SIZE bytes from STREAM to staging/VERSION/REL, checked against SHA256."""
        check_version(version)
        check_rel(rel)
        self.init()
        fault_point("target:receive:start")
        staging = self.p("staging", version)
        dest = os.path.join(staging, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        part = dest + ".part"
        h = hashlib.sha256()
        got = 0
        try:
            with open(part, "wb") as f:
                while got < size:
                    chunk = stream.read(min(CHUNK, size - got))
                    if not chunk:
                        break
                    got += len(chunk)
                    h.update(chunk)
                    f.write(chunk)
                    fault_point("target:receive:mid-file")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # a full disk or a lost folder: no partial file stays behind
            if os.path.exists(part):
                os.unlink(part)
            raise DeployError(
                "{}: cannot write ({}); the partial file was removed".format(dest, exc.strerror)
            ) from None
        if got != size or h.hexdigest() != sha256:
            os.unlink(part)
            raise DeployError(
                "{}: received {} bytes{}, expected {} (transfer interrupted or corrupted)".format(
                    dest, got, "" if got != size else " with a different sha256", size
                )
            )
        fault_point("target:receive:before-rename")
        os.replace(part, dest)
        fault_point("target:receive:after-rename")
        return {"file": rel, "size": got}

    def receive_stream(self, version: str, stream: BinaryIO) -> Dict:
        """Files framed as one JSON header line ({"file", "size", "sha256"}) then SIZE bytes, until EOF.

        Each file is complete (renamed into place) as soon as it has arrived, so an interrupted
        upload keeps what it finished and a re-run sends only the rest.
        """
        done: List[str] = []
        while True:
            line = stream.readline(4096)
            if not line.strip():
                return {"version": version, "received": done}
            try:
                head = json.loads(line.decode("utf-8"))
                rel, size, sha = str(head["file"]), int(head["size"]), str(head["sha256"])
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                raise DeployError("malformed upload header {!r}".format(line[:120])) from None
            if size < 0 or size > MAX_FILE:
                raise DeployError("{}: size {} out of range".format(rel, size))
            fault_point("target:receive:header")
            done.append(self.receive(version, rel, size, sha, stream)["file"])

    # -- installing ---------------------------------------------------------------------
    def verify_staged(self, version: str) -> Dict:
        """Signature first, then every file against the manifest; nothing is moved on failure."""
        from ..bundle import Bundle
        from .signing import verify_bundle

        staging = self.p("staging", version)
        signer = verify_bundle(staging, self.p("trust"), bool(self.config().get("accept_unsigned")))
        fault_point("target:verify:signed")
        b = Bundle.open(staging)
        try:
            return {"signer": signer, "files": len(b.files()) + 1}
        finally:
            b.close()

    def install(self, version: str, keep: int = 3, allow_downgrade: bool = False) -> Dict:
        check_version(version)
        self.init()
        with Lock(self.p(".lock")):
            fault_point("target:install:locked")
            self.state()  # a state that cannot be used stops the install before anything changes
            self.heal()
            staged, final = self.p("staging", version), self.p("versions", version)
            info: Dict[str, Any] = {"version": version, "signer": None, "files": 0}
            if os.path.isdir(staged):
                try:
                    info.update(self.verify_staged(version))
                    fault_point("target:install:verified")
                    self._check_release(staged, allow_downgrade)
                except EdgetoolError:
                    shutil.rmtree(staged)  # refused: drop what was received, change nothing else
                    raise
                if os.path.isdir(final):  # a re-run of an installed version: keep the installed copy
                    shutil.rmtree(staged)
                else:
                    os.replace(staged, final)
                    fault_point("target:install:moved")
            elif not os.path.isdir(final):
                raise DeployError("{}: nothing staged for version {}".format(self.root, version))
            else:
                self._check_release(final, allow_downgrade)
            info["release"] = self.release_of(final)
            extra = {"signer": info["signer"], "release": info["release"]}
            if allow_downgrade and info["release"] < self.state().get("highest_release", 0):
                extra["downgrade_allowed"] = True
            info["previous"] = self._switch(version, "install", extra)
            fault_point("target:install:switched")
            info["pruned"] = self._prune(keep)
            fault_point("target:install:pruned")
        return info

    def _check_release(self, folder: str, allow_downgrade: bool) -> None:
        """Anti-rollback: a release lower than the highest this device installed is refused."""
        release, highest = self.release_of(folder), self.state().get("highest_release", 0)
        if release < highest and not allow_downgrade:
            raise DeployError(
                "release {} is older than release {} installed here before (a replayed old bundle?); "
                "deploy --allow-downgrade installs it anyway".format(release, highest)
            )

    def _switch(self, version: str, action: str, extra: Optional[Dict] = None) -> Optional[str]:
        """The new state is written first, then ``current`` is switched: a crash between the two
        leaves a state that names the new version, which :meth:`heal` finishes on the next call."""
        st = self.state()
        old = self.current()
        if old != version:
            st["previous"] = old
        st["current"] = version
        release = (extra or {}).get("release")
        if isinstance(release, int):
            st["highest_release"] = max(release, st.get("highest_release", 0))
        event = dict(extra or {}, action=action, version=version, at=now(), previous=old)
        st["history"] = (st.get("history", []) + [event])[-50:]
        fault_point("target:{}:before-state".format(action.split(":")[0]))
        atomic_json(self.p("state.json"), st)
        fault_point("target:{}:after-state".format(action.split(":")[0]))
        atomic_symlink(os.path.join("versions", version), self.p("current"))
        fault_point("target:{}:after-link".format(action.split(":")[0]))
        return old

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

    def rollback(self, to: Optional[str] = None, reason: str = "rollback") -> Dict:
        if not os.path.isdir(self.p("versions")):
            raise DeployError("{}: nothing deployed here".format(self.root))
        with Lock(self.p(".lock")):
            fault_point("target:rollback:locked")
            self.heal()
            return self._rollback(to, reason)

    def _rollback(self, to: Optional[str], reason: str) -> Dict:
        st = self.state()
        target = to or st.get("previous")
        if target is None:
            raise DeployError("{}: no previous version to roll back to".format(self.root))
        check_version(target)
        if not os.path.isdir(self.p("versions", target)):
            raise DeployError("{}: version {} is not on this device".format(self.root, target))
        old = self._switch(target, reason)
        return {"version": target, "previous": old}

    def unlink_current(self, reason: str) -> None:
        """A failed first install: no version serves rather than an unchecked one."""
        st = self.state()
        st["history"] = (
            st.get("history", []) + [{"action": reason, "version": None, "at": now(), "previous": st.get("current")}]
        )[-50:]
        st["current"] = None
        atomic_json(self.p("state.json"), st)
        if os.path.islink(self.p("current")):
            os.unlink(self.p("current"))

    def _prune(self, keep: int) -> list:
        """Drop the oldest versions beyond KEEP, never current or previous."""
        st = self.state()
        order = [e["version"] for e in st.get("history", []) if e.get("version")]
        present = [v for v in os.listdir(self.p("versions")) if VERSION_RE.match(v)]
        ranked = sorted(present, key=lambda v: max([i for i, x in enumerate(order) if x == v] + [-1]), reverse=True)
        protect = {st.get("current"), st.get("previous")}
        pruned = [v for v in ranked[max(keep, 2) :] if v not in protect]
        for v in pruned:
            fault_point("target:prune:before-remove")
            shutil.rmtree(self.p("versions", v))
        return pruned

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
        trusted = self.trusted()
        return {
            "root": self.root,
            "current": self.current(),
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
