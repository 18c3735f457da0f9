"""Receiving a version on the device: what is already there, then the files, each checked
(size, sha256) and renamed into place when complete, so an interrupted upload resumes."""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import BinaryIO, Dict, List

from ..errors import DeployError, UsageError
from ..files import fault_point, sha256_file
from .fsutil import Lock
from .state import DeviceRoot, check_version

PART_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
CHUNK = 1 << 16
MAX_FILE = 1 << 36  # 64 GiB: no bundle file comes near it
RECEIVE_WAIT = 3600.0  # seconds a second upload of one version waits for the first


def check_rel(rel: str) -> str:
    """A bundle file path: at most 3 plain components, no '..', nothing absolute or hidden."""
    parts = (rel or "").split("/")
    if len(parts) > 3 or not all(PART_RE.match(p) and ".." not in p for p in parts):
        raise UsageError("invalid bundle file name {!r}".format(rel))
    return rel


class Receiver(DeviceRoot):
    """``prepare`` and ``receive`` of a deploy root."""

    def prepare(self, version: str) -> Dict:
        """Report what the workstation must know before it sends a byte: which files of VERSION are
        already here, complete; the signing policy and trusted key ids; the highest release installed.
        Changes nothing on the device (``receive`` makes the folders)."""
        check_version(version)
        fault_point("target:prepare")
        highest, lost = self.counter()  # a state that cannot be parsed stops it here
        try:
            trusted, trust_error = self.trusted(), None
        except UsageError as exc:  # a *.pub that is no key: signed bundles are refused, named
            trusted, trust_error = [], str(exc)
        policy = {
            "accept_unsigned": bool(self.config().get("accept_unsigned")),
            "trusted_keys": trusted,
            "highest_release": highest,
        }
        if trust_error:
            policy["trust_error"] = trust_error
        from .update import installed_bases

        policy["installed_bases"] = installed_bases(self)  # base.onnx sha256 -> version: what updates apply to
        if lost:
            policy["counter_error"] = str(self.counter_refusal(lost))
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
        upload keeps what it finished and a re-run sends only the rest.  One upload into a root at
        a time (``ROOT/.receive.lock``, which ``install`` takes too): a second (another workstation,
        or the same root named twice) waits for the first to end, then writes the same checked
        files again, so neither fails halfway.
        """
        check_version(version)
        self.init()
        with self.receiving():
            return self._receive_stream(version, stream)

    def receiving(self) -> Lock:
        """The lock of the staging folders: held by a receive, and by an install while it moves."""
        return Lock(self.p(".receive.lock"), timeout=RECEIVE_WAIT)

    def _receive_stream(self, version: str, stream: BinaryIO) -> Dict:
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
