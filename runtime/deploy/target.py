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
from ..files import sha256_file
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

    def state(self) -> Dict:
        return read_json(self.p("state.json"), {}) or {}

    def current(self) -> Optional[str]:
        link = self.p("current")
        if not os.path.islink(link):
            return None
        return os.path.basename(os.readlink(link))

    # -- receiving ----------------------------------------------------------------------
    def prepare(self, version: str) -> Dict:
        """Make the staging folder; report which files are already there, complete."""
        check_version(version)
        self.init()
        if os.path.isdir(self.p("versions", version)) and not os.path.isdir(self.p("staging", version)):
            return {"version": version, "installed": True, "present": {}}
        staging = self.p("staging", version)
        os.makedirs(staging, exist_ok=True)
        present = {}
        for dirpath, _, files in os.walk(staging):
            for f in files:
                if ".part" in f:
                    continue
                full = os.path.join(dirpath, f)
                present[os.path.relpath(full, staging)] = sha256_file(full)
        return {"version": version, "installed": False, "present": present}

    def receive(self, version: str, rel: str, size: int, sha256: str, stream: BinaryIO) -> Dict:
        """Write exactly SIZE bytes from STREAM to staging/VERSION/REL, checked against SHA256."""
        check_version(version)
        check_rel(rel)
        staging = self.p("staging", version)
        if not os.path.isdir(staging):
            raise DeployError("{}: no staging folder; run prepare first".format(staging))
        dest = os.path.join(staging, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        part = dest + ".part"
        h = hashlib.sha256()
        got = 0
        with open(part, "wb") as f:
            while got < size:
                chunk = stream.read(min(CHUNK, size - got))
                if not chunk:
                    break
                got += len(chunk)
                h.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if got != size or h.hexdigest() != sha256:
            os.unlink(part)
            raise DeployError(
                "{}: received {} bytes{}, expected {} (transfer interrupted or corrupted)".format(
                    dest, got, "" if got != size else " with a different sha256", size
                )
            )
        os.replace(part, dest)
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
            done.append(self.receive(version, rel, size, sha, stream)["file"])

    # -- installing ---------------------------------------------------------------------
    def verify_staged(self, version: str) -> Dict:
        """Signature first, then every file against the manifest; nothing is moved on failure."""
        from ..bundle import Bundle
        from .signing import verify_bundle

        staging = self.p("staging", version)
        signer = verify_bundle(staging, self.p("trust"), bool(self.config().get("accept_unsigned")))
        b = Bundle.open(staging)
        try:
            return {"signer": signer, "files": len(b.files()) + 1}
        finally:
            b.close()

    def install(self, version: str, keep: int = 3) -> Dict:
        check_version(version)
        self.init()
        with Lock(self.p(".lock")):
            staged, final = self.p("staging", version), self.p("versions", version)
            info: Dict[str, Any] = {"version": version, "signer": None, "files": 0}
            if os.path.isdir(staged):
                try:
                    info.update(self.verify_staged(version))
                except EdgetoolError:
                    shutil.rmtree(staged)  # refused: drop what was received, change nothing else
                    raise
                if os.path.isdir(final):  # a re-run of an installed version: keep the installed copy
                    shutil.rmtree(staged)
                else:
                    os.replace(staged, final)
            elif not os.path.isdir(final):
                raise DeployError("{}: nothing staged for version {}".format(self.root, version))
            info["previous"] = self._switch(version, "install", {"signer": info["signer"]})
            info["pruned"] = self._prune(keep)
        return info

    def _switch(self, version: str, action: str, extra: Optional[Dict] = None) -> Optional[str]:
        old = self.current()
        atomic_symlink(os.path.join("versions", version), self.p("current"))
        st = self.state()
        if old != version:
            st["previous"] = old
        st["current"] = version
        event = dict(extra or {}, action=action, version=version, at=now(), previous=old)
        st["history"] = (st.get("history", []) + [event])[-50:]
        atomic_json(self.p("state.json"), st)
        return old

    def rollback(self, to: Optional[str] = None, reason: str = "rollback") -> Dict:
        if not os.path.isdir(self.p("versions")):
            raise DeployError("{}: nothing deployed here".format(self.root))
        with Lock(self.p(".lock")):
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
        if os.path.islink(self.p("current")):
            os.unlink(self.p("current"))
        st = self.state()
        st["history"] = (
            st.get("history", []) + [{"action": reason, "version": None, "at": now(), "previous": st.get("current")}]
        )[-50:]
        st["current"] = None
        atomic_json(self.p("state.json"), st)

    def _prune(self, keep: int) -> list:
        """Drop the oldest versions beyond KEEP, never current or previous."""
        st = self.state()
        order = [e["version"] for e in st.get("history", []) if e.get("version")]
        present = [v for v in os.listdir(self.p("versions")) if VERSION_RE.match(v)]
        ranked = sorted(present, key=lambda v: max([i for i, x in enumerate(order) if x == v] + [-1]), reverse=True)
        protect = {st.get("current"), st.get("previous")}
        pruned = [v for v in ranked[max(keep, 2) :] if v not in protect]
        for v in pruned:
            shutil.rmtree(self.p("versions", v))
        return pruned

    def record_check(self, version: str, name: str, ok: bool, detail: str) -> None:
        with Lock(self.p(".lock")):
            st = self.state()
            st.setdefault("checks", {})[name] = {"version": version, "ok": ok, "detail": detail, "at": now()}
            atomic_json(self.p("state.json"), st)

    def status(self) -> Dict:
        st = self.state()
        versions = (
            sorted(v for v in os.listdir(self.p("versions")) if VERSION_RE.match(v))
            if os.path.isdir(self.p("versions"))
            else []
        )
        staging = sorted(os.listdir(self.p("staging"))) if os.path.isdir(self.p("staging")) else []
        try:
            trusted = sorted(f[:-4] for f in os.listdir(self.p("trust")) if f.endswith(".pub"))
        except OSError:
            trusted = []
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
        }
